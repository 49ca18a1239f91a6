"""The Budgets page's members and keys tables as server-side lists (console.paging): one page of
rows in a constant number of queries whatever the organization's size, search, sort by name /
budget / spent this month, each table's own URL parameters (member_, key_), a budget POST that
returns to the same page, and GET /api/v1/budgets/ still listing everything."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.utils import timezone

from gateway.models import UsageRecord
from projects.keys import api_key_create
from projects.models import APIKey, Membership, Role
from projects.services import api_key_budget_set, member_budget_set
from tests.conftest import login
from tests.factories import MembershipFactory, UserFactory, rest_api_client

pytestmark = pytest.mark.django_db

MEMBER_ROWS = re.compile(r'<tr id="member-budget-\d+"><td data-label="Member"><span class="truncate" title="([^"]+)">')
KEY_ROWS = re.compile(r'<tr id="key-budget-\d+"><td data-label="Key"><span class="truncate" title="([^"]+)">')


def _crowd(tenants, first: int, last: int) -> None:
    """Members u<first>..u<last-1> (email u<i>@crowd.test), each with a key k<i>; member i has a
    budget of 100 + i and spent i × 0.5 this month on the key (member 0 nothing); key i's budget is i + 1."""
    for i in range(first, last):
        user = UserFactory(username=f"u{i:04d}", email=f"u{i:04d}@crowd.test")
        membership = MembershipFactory(organization=tenants.org, role=Role.MEMBER, user=user)
        member_budget_set(user=tenants.owner, membership=membership, amount=str(100 + i))
        key, _ = api_key_create(user=user, organization=tenants.org, name=f"k{i:04d}")
        api_key_budget_set(user=user, key=key, amount=str(i + 1))
        if i:
            UsageRecord.objects.create(
                request_id=f"crowd-{i}", organization=tenants.org, user=user, api_key_id=key.pk, api_key_prefix=key.prefix,
                route="chat.completions", status_code=200, latency_ms=5.0, cost=Decimal(i) / 2, currency="USD",
                created_at=timezone.now(),
            )  # fmt: skip


def test_a_large_organization_renders_one_page_of_each_table_in_constant_queries(
    tenants, pinned_budget_month, django_assert_max_num_queries
):
    client = login(tenants.owner)
    _crowd(tenants, 0, 10)
    client.get("/hub/budgets/")  # sessions and caches warm up outside the count
    with django_assert_max_num_queries(30) as few:
        client.get("/hub/budgets/")
    _crowd(tenants, 10, 200)
    with django_assert_max_num_queries(len(few.captured_queries)):
        html = client.get("/hub/budgets/").content.decode()
    assert len(MEMBER_ROWS.findall(html)) == 25 and len(KEY_ROWS.findall(html)) == 25
    assert "1–25 of 203" in html and "1–25 of 200" in html  # members: 200 + owner, member, viewer
    # The REST list is not paged: every member and key, as before.
    listed = rest_api_client(tenants.owner).get("/api/v1/budgets/").json()
    assert len(listed["members"]) == 203 and len(listed["keys"]) == 200


def test_each_table_searches_sorts_and_pages_with_its_own_parameters(tenants, pinned_budget_month):
    _crowd(tenants, 0, 60)
    client = login(tenants.owner)
    # Spent this month, most first, over the whole list: page 2 of the members starts at u0034.
    html = client.get("/hub/budgets/", {"member_sort": "-spent", "member_page": 2, "key_q": "k0042"}).content.decode()
    assert MEMBER_ROWS.findall(html) == [f"u{i:04d}" for i in range(34, 9, -1)]
    assert KEY_ROWS.findall(html) == ["k0042"]  # the keys' search leaves the members' list alone
    row = re.search(r'<tr id="member-budget-\d+"><td data-label="Member"><span class="truncate" title="u0034">.*?</tr>', html, re.S).group(0)
    assert "17.00" in row and 'value="134.00"' in row
    # Each table's links keep the other's state, and its own sort.
    nxt = re.search(r'<nav class="pager".*?rel="next" href="([^"]+)"', html, re.S).group(1).replace("&amp;", "&")
    assert nxt == "/hub/budgets/?key_q=k0042&member_sort=-spent&member_page=3"
    assert 'name="key_q" value="k0042"' in html
    assert '<input type="hidden" name="member_sort" value="-spent">' in html  # in the keys' search form
    # Search: a member by email, a key by its prefix; sort by budget and by name.
    found = client.get("/hub/budgets/", {"member_q": "u0007@crowd"}).content.decode()
    assert MEMBER_ROWS.findall(found) == ["u0007"]
    prefix = APIKey.objects.get(name="k0051").prefix
    assert KEY_ROWS.findall(client.get("/hub/budgets/", {"key_q": prefix}).content.decode()) == ["k0051"]
    by_budget = client.get("/hub/budgets/", {"key_sort": "-budget", "key_per_page": 10}).content.decode()
    assert KEY_ROWS.findall(by_budget) == [f"k{i:04d}" for i in range(59, 49, -1)]
    by_name = client.get("/hub/budgets/", {"key_sort": "-name", "key_per_page": 10, "key_page": 6}).content.decode()
    assert KEY_ROWS.findall(by_name) == [f"k{i:04d}" for i in range(9, -1, -1)]


def test_a_budget_post_returns_to_the_same_page_sort_and_search(tenants, pinned_budget_month):
    _crowd(tenants, 0, 40)
    client = login(tenants.owner)
    where = "/hub/budgets/?member_sort=-budget&member_page=2&key_q=k003"
    target = Membership.objects.get(user__username="u0005")
    response = client.post(where, {"level": "member", "target": target.user_id, "monthly_budget": "7"})
    assert response.status_code == 302 and response["Location"] == where
    target.refresh_from_db()
    assert target.monthly_budget == Decimal("7")
    page = client.get(response["Location"]).content.decode()
    assert "Budget saved" in page and KEY_ROWS.findall(page) == [f"k003{i}" for i in range(10)]
    # A refused amount on a row of the current page is shown on that row, with the list as it was.
    key = APIKey.objects.get(name="k0031")
    refused = client.post(where, {"level": "key", "target": key.pk, "monthly_budget": "-1"})
    assert refused.status_code == 400
    row = re.search(rf'<tr id="key-budget-{key.pk}">.*?</tr>', refused.content.decode(), re.S).group(0)
    assert 'aria-invalid="true"' in row and "negative" in row


def test_a_member_sees_only_their_own_row_and_keys(tenants, pinned_budget_month):
    _crowd(tenants, 0, 30)
    user = Membership.objects.get(user__username="u0003").user
    html = login(user).get("/hub/budgets/", {"key_q": "k"}).content.decode()
    assert MEMBER_ROWS.findall(html) == ["u0003"]
    assert KEY_ROWS.findall(html) == ["k0003"]
    assert "u0004" not in html and 'name="member_q"' not in html


def test_spend_counts_folded_and_unfolded_records_once_each(tenants, pinned_budget_month):
    """The Budgets page reads the hourly key rollups plus the records not folded yet (as the usage
    pages do): a fold between two requests neither hides a record nor counts it twice, and last
    month's spend and another currency's stay out."""
    from datetime import timedelta

    from gateway.reports import budget_keys, budget_members, budget_organization_row
    from gateway.rollup import fold

    _crowd(tenants, 1, 4)  # keys k0001..k0003 spent 0.5, 1.0 and 1.5
    key = APIKey.objects.get(name="k0002")

    def spend(amount: str, *, when=None, currency="USD") -> None:
        UsageRecord.objects.create(
            request_id=f"r{UsageRecord.objects.count()}", organization=tenants.org, user=key.user, api_key_id=key.pk,
            api_key_prefix=key.prefix, route="chat.completions", status_code=200, latency_ms=5.0,
            cost=Decimal(amount), currency=currency, created_at=when or timezone.now(),
        )  # fmt: skip

    spend("5", when=pinned_budget_month - timedelta(seconds=1))  # last month
    spend("7", currency="EUR")
    assert fold() > 0  # these and the crowd's are in the rollups now
    spend("0.25")  # not folded yet

    def shown() -> tuple:
        keys = {k.name: k.spent for k in budget_keys(tenants.owner, tenants.org, admin=True)}
        members = {m.user.username: m.spent for m in budget_members(tenants.owner, tenants.org, admin=True)}
        return keys["k0002"], members["u0002"], budget_organization_row(tenants.org)["spent"]

    assert shown() == (Decimal("1.25"), Decimal("1.25"), Decimal("3.25"))
    fold()
    assert shown() == (Decimal("1.25"), Decimal("1.25"), Decimal("3.25"))  # the same after the fold
    ordered = [k.name for k in budget_keys(tenants.owner, tenants.org, admin=True).order_by("-spent", "pk")]
    assert ordered == ["k0003", "k0002", "k0001"]  # sorted in the database by the same sum
