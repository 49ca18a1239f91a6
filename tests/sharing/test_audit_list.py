"""The audit log page as a server-side list (console.paging): sort by when / who / action / object
across every page, the filter form, sort, page size and page together in the URL, the htmx swap of
#audit-results, a constant number of queries, and REST's `?sort=` reading the same columns."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from sharing.audit import audit_record
from sharing.models import AuditEntry
from tests.conftest import login
from tests.sharing import factories as f

pytestmark = pytest.mark.django_db

WHO = re.compile(r'<td data-label="Who">([^<]*)</td>')
ACTION = re.compile(r'<td data-label="Action"><span class="badge plain">([^<]*)</span>')


def _log(tenants, count: int, name: str = "llama-chat") -> None:
    """`count` entries, oldest first: actors member, viewer, owner in turn; update and deactivate in turn."""
    row = f.deployment(tenants.project, name=name)
    actors = [tenants.member, tenants.viewer, tenants.owner]
    for i in range(count):
        audit_record(actor=actors[i % 3], organization=tenants.org, action="update" if i % 2 == 0 else "deactivate",
                     obj=row, before={"replicas": i}, after={"replicas": i + 1})  # fmt: skip


def test_sorting_by_who_orders_every_page_not_just_the_rows_on_screen(tenants):
    _log(tenants, 30)
    client = login(tenants.viewer)
    url = reverse("sharing:audit")
    newest = client.get(url, {"per_page": 10}).content.decode()
    assert WHO.findall(newest)[:3] == ["owner", "viewer", "member"]  # newest first by default
    pages = [client.get(url, {"sort": "who", "per_page": 10, "page": n}).content.decode() for n in (1, 2, 3)]
    assert [set(WHO.findall(html)) for html in pages] == [{"member"}, {"owner"}, {"viewer"}]
    assert "21–30 of 30" in pages[2]
    assert 'aria-sort="ascending"><a href="/audit/?sort=-who&amp;per_page=10">Who</a>' in pages[0]
    last = client.get(url, {"sort": "-who", "per_page": 10}).content.decode()
    assert set(WHO.findall(last)) == {"viewer"}
    actions = client.get(url, {"sort": "action", "per_page": 10, "page": 2}).content.decode()
    assert ACTION.findall(actions) == ["Deactivate"] * 5 + ["Update"] * 5


def test_filters_sort_page_size_and_page_travel_together_in_the_url(tenants):
    _log(tenants, 30)
    client = login(tenants.owner)
    first = client.get(reverse("sharing:audit"), {"action": "update", "sort": "-who", "per_page": 10}).content.decode()
    assert WHO.findall(first) == ["viewer"] * 5 + ["owner"] * 5 and set(ACTION.findall(first)) == {"Update"}
    assert "1–10 of 15" in first
    nxt = re.search(r'rel="next" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    assert nxt == "/audit/?action=update&sort=-who&per_page=10&page=2"
    second = client.get(nxt).content.decode()
    assert WHO.findall(second) == ["member"] * 5 and set(ACTION.findall(second)) == {"Update"}
    # The sort headers keep the filters; changing the sort starts again at page 1.
    assert 'href="/audit/?action=update&amp;sort=when&amp;per_page=10">When</a>' in second
    # The filter form sends the sort and page size along, never the page.
    carried = re.findall(r'<input type="hidden" form="audit-filters" name="(\w+)" value="([^"]*)">', second)
    assert carried == [("sort", "-who"), ("per_page", "10")]
    # A page past the end is the last one; an unknown sort is newest first, not an error.
    assert "Page 2 of 2" in client.get(reverse("sharing:audit"), {"action": "update", "per_page": 10, "page": 9}).content.decode()
    response = client.get(reverse("sharing:audit"), {"sort": "object_repr; drop table"})
    assert response.status_code == 200 and WHO.findall(response.content.decode())[0] == "owner"


def test_the_htmx_swap_answers_the_sorted_results_fragment(tenants):
    _log(tenants, 12)
    response = login(tenants.owner).get(reverse("sharing:audit"), {"sort": "who", "actor": "viewer"},
                                        HTTP_HX_REQUEST="true", HTTP_HX_TARGET="audit-results")  # fmt: skip
    html = response.content.decode()
    assert html.lstrip().startswith("{#") is False and "<aside" not in html and 'id="audit-filters"' not in html
    assert 'id="audit-results" hx-boost="true" hx-target="#audit-results"' in html
    assert WHO.findall(html) == ["viewer"] * 4
    assert '<input type="hidden" form="audit-filters" name="sort" value="who">' in html


def test_the_audit_page_reads_a_constant_number_of_queries(tenants, django_assert_max_num_queries):
    _log(tenants, 10)
    client = login(tenants.owner)
    url = reverse("sharing:audit")
    client.get(url)
    with django_assert_max_num_queries(20) as few:
        client.get(url, {"sort": "object", "action": "update"})
    _log(tenants, 200, name="embedder")
    with django_assert_max_num_queries(len(few.captured_queries)):
        html = client.get(url, {"sort": "object", "action": "update"}).content.decode()
    assert html.count('<tr data-entry=') == 50 and "1–50 of 105" in html


def test_rest_sorts_by_the_same_columns(tenants):
    _log(tenants, 9)
    other = f.deployment(tenants.other_project, name="globex-secret")
    audit_record(actor=tenants.outsider, organization=tenants.other_org, action="update", obj=other,
                 before={"replicas": 1}, after={"replicas": 2})  # fmt: skip
    client = login(tenants.owner)
    url = reverse("audit-entry-list")
    default = client.get(url).json()["results"]
    assert [e["id"] for e in default] == list(
        AuditEntry.objects.filter(organization=tenants.org).order_by("-created_at", "-id").values_list("id", flat=True)
    )
    by_who = client.get(url, {"sort": "who"}).json()["results"]
    assert [e["actor_repr"] for e in by_who] == ["member"] * 3 + ["owner"] * 3 + ["viewer"] * 3
    assert [e["actor_repr"] for e in client.get(url, {"sort": "-who", "limit": 3}).json()["results"]] == ["viewer"] * 3
    bad = client.get(url, {"sort": "password"})
    assert bad.status_code == 400 and "sort" in bad.json()
