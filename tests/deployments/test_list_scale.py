"""Deployment lists stay constant in the number of rows: pages, sort and filter in the URL,
a status poll over the page's rows only (204 while none changed), REST lists with a fixed
number of queries."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from django.urls import reverse

from deployments.external import external_deployment_create
from deployments.kube import network
from deployments.models import DeploymentState, ModelDeployment
from deployments.services import deployment_deactivate, state_claim

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


def _poll(html: str) -> tuple[str, int]:
    """The list's status poll: its URL and how often it asks (seconds)."""
    div = re.search(r'<div hx-get="([^"]+)" hx-trigger="every (\d+)s"[^>]* id="status-poll"', html)
    return div.group(1).replace("&amp;", "&"), int(div.group(2))


def _poll_url(html: str) -> str:
    return _poll(html)[0]


def _polled_ids(poll_url: str) -> list[int]:
    ids = parse_qs(urlsplit(poll_url).query).get("ids", [""])[0]
    return [int(part.split(".")[0]) for part in ids.split(",") if part]


def test_status_poll_watches_every_row_on_the_page_and_nothing_else(owner_client, many):
    rows = many(12)
    ModelDeployment.objects.filter(pk__in=[r.pk for r in rows]).update(state=DeploymentState.RUNNING)
    url = reverse("deployments:list")
    html = owner_client.get(url, {"sort": "name", "per_page": 10}).content.decode()
    poll_url = _poll_url(html)
    # Every row of the page, Running ones included (they can still change), none of page 2; the
    # poll reads the page the user is on.
    assert _polled_ids(poll_url) == [r.pk for r in rows[:10]]
    assert "sort=name" in poll_url and "per_page=10" in poll_url
    quiet = owner_client.get(poll_url, HTTP_HX_REQUEST="true")
    assert quiet.status_code == 204 and quiet.content == b""
    # A page rendered before rows carried versions (bare ids) gets its rows and the versions.
    bare = ",".join(str(r.pk) for r in rows[:10])
    old = owner_client.get(f"{url}?ids={bare}&sort=name&per_page=10", HTTP_HX_REQUEST="true")
    body = old.content.decode()
    assert old.status_code == 200 and body.count('hx-swap-oob="true"') == 11  # ten rows, the poll
    assert owner_client.get(_poll_url(body), HTTP_HX_REQUEST="true").status_code == 204


def test_status_poll_is_fast_only_while_a_row_on_the_page_is_in_transition(owner_client, tenants, many):
    rows = many(3)  # Pending: pushed soon
    url = reverse("deployments:list")
    poll_url, every = _poll(owner_client.get(url).content.decode())
    assert every == 3
    # Every row settles (the status sync's writes): the poll that sees it slows down.
    for row in rows:
        state_claim(row, expect=row.state, state=DeploymentState.RUNNING, reason="1/1 replicas ready")
    poll_url, every = _poll(owner_client.get(poll_url, HTTP_HX_REQUEST="true").content.decode())
    assert every == 15
    assert _poll(owner_client.get(url).content.decode())[1] == 15  # the page drawn now, too
    # One is deactivated elsewhere: final too, still slow; one starts rolling out: fast again.
    deployment_deactivate(user=tenants.owner, deployment=rows[0])
    poll_url, every = _poll(owner_client.get(poll_url, HTTP_HX_REQUEST="true").content.decode())
    assert every == 15
    state_claim(rows[1], expect=DeploymentState.RUNNING, state=DeploymentState.DEPLOYING,
                reason="Rolling out revision 2; revision 1 keeps serving until it is ready.")  # fmt: skip
    poll_url, every = _poll(owner_client.get(poll_url, HTTP_HX_REQUEST="true").content.decode())
    assert every == 3
    # A row in transition on another page doesn't count.
    html = owner_client.get(url, {"sort": "name", "per_page": 10, "state": "running"}).content.decode()
    assert _poll(html)[1] == 15


def test_status_poll_shows_a_deployment_added_elsewhere_on_the_page_the_user_is_on(owner_client, many):
    rows = many(3, prefix="a")
    ModelDeployment.objects.filter(pk__in=[r.pk for r in rows]).update(state=DeploymentState.RUNNING)
    url = reverse("deployments:list")
    newest_first = owner_client.get(url).content.decode()
    by_name = owner_client.get(url, {"sort": "name", "q": "a0"}).content.decode()
    poll_url, by_name_url = _poll_url(newest_first), _poll_url(by_name)
    assert owner_client.get(poll_url, HTTP_HX_REQUEST="true").status_code == 204

    added = many(1, prefix="b")[0]  # another tab, the CLI or the API
    poll = owner_client.get(poll_url, HTTP_HX_REQUEST="true")
    body = poll.content.decode()
    assert poll.status_code == 200 and poll["HX-Trigger"] == "deployments-changed"  # the cards too
    # The table body, the pager and the poll, out of band: the newest first, as the page sorts.
    assert '<tbody id="deployments-body" hx-swap-oob="true">' in body
    assert _names_in(body) == ["b00", "a02", "a01", "a00"]
    assert 'id="deployments-pager" hx-swap-oob="true"' in body and "1–4 of 4" in body
    assert _polled_ids(_poll_url(body)) == [added.pk, *[r.pk for r in reversed(rows)]]
    assert owner_client.get(_poll_url(body), HTTP_HX_REQUEST="true").status_code == 204
    # A page sorted and searched elsewhere keeps its sort and search: b00 is not on it.
    assert owner_client.get(by_name_url, HTTP_HX_REQUEST="true").status_code == 204

    # Deleted elsewhere: gone from the body; the last one gone, the poll goes on (slowly).
    ModelDeployment.objects.filter(pk=rows[1].pk).delete()
    body = owner_client.get(by_name_url, HTTP_HX_REQUEST="true").content.decode()
    assert _names_in(body) == ["a00", "a02"] and "sort=name" in _poll_url(body) and "q=a0" in _poll_url(body)
    ModelDeployment.objects.all().delete()
    last = owner_client.get(_poll_url(body), HTTP_HX_REQUEST="true")
    assert last.status_code == 200 and "No deployment matches these filters." in last.content.decode()
    assert _poll(last.content.decode()) == (f"{url}?ids=&q=a0&sort=name", 15)


def test_a_deployment_added_to_an_empty_list_draws_the_page(owner_client, many):
    url = reverse("deployments:list")
    html = owner_client.get(url).content.decode()
    assert "No model deployments yet" in html
    poll_url, every = _poll(html)
    assert every == 15 and owner_client.get(poll_url, HTTP_HX_REQUEST="true").status_code == 204
    many(1)
    poll = owner_client.get(poll_url, HTTP_HX_REQUEST="true")
    assert poll.status_code == 200 and poll["HX-Refresh"] == "true"  # no table to fill: the whole page


def _names_in(html: str) -> list[str]:
    return re.findall(r"<strong>([ab]\d\d)</strong>", html)


def test_a_running_row_changes_when_the_deployment_is_changed_elsewhere(owner_client, tenants, many):
    rows = many(3)
    ModelDeployment.objects.filter(pk__in=[r.pk for r in rows]).update(
        state=DeploymentState.RUNNING, state_reason="Revision 1: 1/1 replicas ready."
    )
    url = reverse("deployments:list")
    poll_url = _poll_url(owner_client.get(url).content.decode())
    assert owner_client.get(poll_url, HTTP_HX_REQUEST="true").status_code == 204

    # Deactivated through the service (what the REST API and another tab call).
    deployment_deactivate(user=tenants.owner, deployment=rows[1])
    poll = owner_client.get(poll_url, HTTP_HX_REQUEST="true")
    body = poll.content.decode()
    assert poll.status_code == 200
    row = re.search(rf'<tr id="deployment-row-{rows[1].pk}" hx-swap-oob="true">.*?</tr>', body, re.S)
    assert row and "Deactivated" in row.group(0) and "GPUs released" in row.group(0)
    assert f"deployment-row-{rows[0].pk}" not in body and f"deployment-row-{rows[2].pk}" not in body
    # The summary cards (the whole organization) are read again in a request of their own.
    assert poll["HX-Trigger"] == "deployments-changed"
    stats = owner_client.get(url, {"fragment": "stats"}, HTTP_HX_REQUEST="true").content.decode()
    assert 'id="deployment-stats"' in stats and "0 failed · 1 deactivated" in stats
    # The poll goes on with the new version of that row: quiet again until the next change.
    next_url = _poll_url(body)
    assert _polled_ids(next_url) == _polled_ids(poll_url) and next_url != poll_url
    assert owner_client.get(next_url, HTTP_HX_REQUEST="true").status_code == 204

    # A Running deployment that fails later (the status sync's write) shows too.
    state_claim(rows[0], expect=DeploymentState.RUNNING, state=DeploymentState.FAILED,
                reason="Back-off pulling image")  # fmt: skip
    body = owner_client.get(next_url, HTTP_HX_REQUEST="true").content.decode()
    assert f'id="deployment-row-{rows[0].pk}"' in body and "Failed" in body and "Back-off pulling image" in body


def test_status_poll_queries_are_constant_for_a_full_page(
    owner_client, many, django_assert_max_num_queries
):
    rows = many(100)
    html = owner_client.get(reverse("deployments:list"), {"per_page": 100}).content.decode()
    poll_url = _poll_url(html)
    assert len(_polled_ids(poll_url)) == 100
    # Nothing changed: one query over the page's rows (plus the session and the user).
    with django_assert_max_num_queries(4):
        assert owner_client.get(poll_url, HTTP_HX_REQUEST="true").status_code == 204
    # Every row changed: one more query reads them all, whatever their number.
    ModelDeployment.objects.filter(pk__in=[r.pk for r in rows]).update(state=DeploymentState.RUNNING)
    with django_assert_max_num_queries(5):
        body = owner_client.get(poll_url, HTTP_HX_REQUEST="true").content.decode()
    assert body.count("hx-swap-oob=") == 101 and body.count(">Running<") == 100
    # Other rows on the page (one added elsewhere): the page's reads again, whatever their number.
    many(1, prefix="e")
    with django_assert_max_num_queries(8):
        body = owner_client.get(_poll_url(body), HTTP_HX_REQUEST="true").content.decode()
    assert body.count("<tr id=") == 100 and 'id="deployments-body"' in body


def test_an_external_deployment_shows_no_bundle(owner_client, tenants, model, monkeypatch):
    monkeypatch.setattr(network, "non_public_addresses", lambda host, port: [])
    external = external_deployment_create(user=tenants.owner, project=tenants.project, model=model,
                                          name="onprem", url="https://llm.example.com/v1")  # fmt: skip
    html = owner_client.get(reverse("deployments:list")).content.decode()
    row = re.search(rf'<tr id="deployment-row-{external.pk}".*?</tr>', html, re.S).group(0)
    assert "None" not in row and "—" in row and ">External<" in row


def test_status_poll_never_shows_another_organizations_rows(outsider_client, many):
    rows = many(2)
    poll = outsider_client.get(
        reverse("deployments:list") + f"?ids={rows[0].pk},{rows[1].pk}", HTTP_HX_REQUEST="true"
    )
    body = poll.content.decode()
    assert f"state-{rows[0].pk}" not in body and "No deployment matches" in body


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
