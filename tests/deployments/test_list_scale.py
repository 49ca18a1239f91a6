"""Deployment lists stay constant in the number of rows: pages, sort and filter in the URL,
a status poll for the page's changing rows only, REST lists with a fixed number of queries."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from deployments.models import DeploymentState, ModelDeployment

# A CPU build: GPU builds of vLLM are refused with 0 GPUs.
NO_GPU = {
    "resources": {"cpu": "1", "memory": "1Gi", "gpus": 0},
    "image": "public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.8.5",
}


@pytest.fixture
def many(deploy):
    def _many(count: int, prefix: str = "d") -> list[ModelDeployment]:
        return [deploy(f"{prefix}{i:02d}", spec=NO_GPU) for i in range(count)]

    return _many


def _names(html: str) -> list[str]:
    return re.findall(r"<strong>(d\d\d)</strong>", html)


def test_list_pages_sorts_and_filters_on_the_server(owner_client, many):
    rows = many(12)
    url = reverse("deployments:list")
    first = owner_client.get(url, {"sort": "name", "per_page": 10}).content.decode()
    assert _names(first) == [f"d{i:02d}" for i in range(10)]
    assert "1–10 of 12" in first and 'rel="next"' in first
    # The next link keeps the sort and the page size.
    next_url = re.search(r'rel="next" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    assert "sort=name" in next_url and "per_page=10" in next_url and "page=2" in next_url
    second = owner_client.get(next_url).content.decode()
    assert _names(second) == ["d10", "d11"]
    # Descending by name, a search, and a state filter, all from the URL.
    desc = owner_client.get(url, {"sort": "-name", "per_page": 10}).content.decode()
    assert _names(desc)[:2] == ["d11", "d10"]
    assert _names(owner_client.get(url, {"q": "d07"}).content.decode()) == ["d07"]
    ModelDeployment.objects.filter(pk=rows[3].pk).update(state=DeploymentState.FAILED)
    failed = owner_client.get(url, {"state": "failed"}).content.decode()
    assert _names(failed) == ["d03"] and "1–1 of 1" in failed
    # Nonsense in the URL renders the default list, never a 500.
    odd = owner_client.get(url, {"sort": "password", "page": "x", "state": "nope", "per_page": "-3"})
    assert odd.status_code == 200 and len(_names(odd.content.decode())) == 12


def test_status_poll_asks_only_for_changing_rows_on_the_page(owner_client, many):
    rows = many(12)
    ModelDeployment.objects.filter(pk__in=[r.pk for r in rows]).update(state=DeploymentState.RUNNING)
    changing = rows[:2]
    ModelDeployment.objects.filter(pk__in=[r.pk for r in changing]).update(
        state=DeploymentState.DEPLOYING
    )
    url = reverse("deployments:list")
    html = owner_client.get(url, {"sort": "name", "per_page": 10}).content.decode()
    poll_url = re.search(r'id="status-poll"', html) and re.search(
        r'hx-get="([^"]+)" hx-trigger="every 3s"', html
    ).group(1)
    assert poll_url == f"{url}?ids={changing[0].pk},{changing[1].pk}"
    poll = owner_client.get(poll_url, HTTP_HX_REQUEST="true")
    body = poll.content.decode()
    assert poll.status_code == 200 and body.count('id="state-') == 2
    assert f"ids={changing[0].pk},{changing[1].pk}" in body  # keeps polling the same rows
    ModelDeployment.objects.filter(pk=changing[0].pk).update(state=DeploymentState.RUNNING)
    poll = owner_client.get(poll_url, HTTP_HX_REQUEST="true").content.decode()
    assert f"ids={changing[1].pk}\"" in poll  # the settled row drops out of the next poll
    ModelDeployment.objects.filter(pk=changing[1].pk).update(state=DeploymentState.FAILED)
    last = owner_client.get(poll_url, HTTP_HX_REQUEST="true")
    assert last.status_code == 286 and "Failed" in last.content.decode()
    # A page whose rows are all final doesn't poll at all.
    page2 = owner_client.get(url, {"sort": "name", "per_page": 10, "page": 2}).content.decode()
    assert 'hx-trigger="every 3s"' not in page2


def test_status_poll_never_shows_another_organizations_rows(outsider_client, many):
    rows = many(2)
    poll = outsider_client.get(
        reverse("deployments:list") + f"?ids={rows[0].pk},{rows[1].pk}", HTTP_HX_REQUEST="true"
    )
    assert poll.status_code == 286 and f"state-{rows[0].pk}" not in poll.content.decode()


def test_list_page_queries_do_not_grow_with_rows(owner_client, many, django_assert_max_num_queries):
    many(2, prefix="a")
    url = reverse("deployments:list")
    with django_assert_max_num_queries(15) as few:
        owner_client.get(url)
    many(12, prefix="b")
    with django_assert_max_num_queries(len(few.captured_queries)):
        html = owner_client.get(url).content.decode()
    assert "1–14 of 14" in html


def test_rest_deployment_list_queries_do_not_grow_with_rows(
    owner_client, many, django_assert_max_num_queries
):
    many(2, prefix="a")
    url = "/api/v1/deployments/"
    with django_assert_max_num_queries(15) as few:
        assert owner_client.get(url).json()["count"] == 2
    many(12, prefix="b")
    with django_assert_max_num_queries(len(few.captured_queries)):
        body = owner_client.get(url).json()
    assert body["count"] == 14 and {r["gpus_held"] for r in body["results"]} == {0}
