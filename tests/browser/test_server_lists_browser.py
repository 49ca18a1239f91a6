"""The audit log and the Budgets page as server-side lists in a real browser: a sort header swaps
the audit results in place (htmx) and the filter form keeps that sort; a phone keeps the sort
links; on the Budgets page a budget saved on page 2 of a sorted, searched table comes back to
that page. Screenshots at 1280 and 390 px wide go to test-output/."""

from __future__ import annotations

import os
import re
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from gateway.models import UsageRecord
from projects.keys import api_key_create
from projects.models import Membership, Role
from projects.services import api_key_budget_set, member_budget_set
from sharing.audit import audit_record
from tests.browser.conftest import sign_in
from tests.conftest import TEST_OUTPUT
from tests.factories import MembershipFactory, UserFactory
from tests.sharing import factories as f

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

def _shot(page, name: str, *, full_page: bool = True, at: str = "") -> None:
    """A screenshot from the top of the page (or with `at` scrolled into view: the viewport only)."""
    if at:
        page.locator(at).scroll_into_view_if_needed()
    else:
        page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=os.path.join(TEST_OUTPUT, f"{name}.png"), full_page=full_page and not at)


def test_the_audit_log_sorts_on_the_server_and_keeps_the_sort_while_filtering(tenants, live_server, phone_and_desktop):
    deployment = f.deployment(tenants.project, name="llama-chat")
    gpu_a, gpu_b = f.pool(tenants.org, name="a100-west"), f.pool(tenants.org, name="h100-east")
    actors = [tenants.member, tenants.viewer, tenants.owner]
    for i in range(60):
        audit_record(actor=actors[i % 3], organization=tenants.org, action="update" if i % 2 else "deactivate",
                     obj=deployment, before={"replicas": i, "pool": gpu_a.pk}, after={"replicas": i + 1, "pool": gpu_b.pk})  # fmt: skip
    page = phone_and_desktop("desktop")
    sign_in(page, live_server, "owner")
    page.goto(f"{live_server.url}/audit/")
    expect(page.locator("#audit-table tbody tr")).to_have_count(50)
    expect(page.locator("#audit-table tbody tr").first.locator("td[data-label='Changes']")).to_contain_text("a100-west → h100-east")
    page.click("#audit-table th >> text=Who")  # htmx: the results box swapped, the address bar follows
    page.wait_for_url(re.compile(r"/audit/\?sort=who$"))
    expect(page.locator("#audit-table th[aria-sort='ascending']")).to_have_text("Who")
    whos = page.locator("#audit-table td[data-label='Who']").all_inner_texts()
    assert whos == ["member"] * 20 + ["owner"] * 20 + ["viewer"] * 10
    page.fill("#audit-filters input[name=actor]", "viewer")  # the filter form sends the sort along
    page.locator("#audit-filters input[name=actor]").dispatch_event("change")
    page.wait_for_url(re.compile(r"actor=viewer"))
    assert "sort=who" in page.url
    expect(page.locator("#audit-table tbody tr")).to_have_count(20)
    _shot(page, "audit-sorted-1280px")

    phone = phone_and_desktop("phone")
    sign_in(phone, live_server, "owner")
    phone.goto(f"{live_server.url}/audit/?sort=-who&per_page=10")
    expect(phone.locator("#audit-table th.server-sort a >> text=Who")).to_be_visible()  # sort links stay on a phone
    assert set(phone.locator("#audit-table td[data-label='Who']").all_inner_texts()) == {"viewer"}
    _shot(phone, "audit-sorted-390px", full_page=False)
    _shot(phone, "audit-sorted-pager-390px", at="#audit-results nav.pager")


def _crowd(tenants, count: int) -> None:
    for i in range(count):
        user = UserFactory(username=f"dev{i:03d}", email=f"dev{i:03d}@example.test")
        membership = MembershipFactory(organization=tenants.org, role=Role.MEMBER, user=user)
        member_budget_set(user=tenants.owner, membership=membership, amount=str(100 + i))
        key, _ = api_key_create(user=user, organization=tenants.org, name=f"svc-{i:03d}")
        api_key_budget_set(user=user, key=key, amount=str(10 + i))
        UsageRecord.objects.create(
            request_id=f"crowd-{i}", organization=tenants.org, user=user, api_key_id=key.pk, api_key_prefix=key.prefix,
            route="chat.completions", status_code=200, latency_ms=5.0, cost=Decimal(i) / 4, currency="USD",
            created_at=timezone.now(),
        )  # fmt: skip


def test_a_budget_saved_on_page_two_of_a_sorted_table_comes_back_there(tenants, live_server, phone_and_desktop):
    _crowd(tenants, 60)
    page = phone_and_desktop("desktop")
    sign_in(page, live_server, "owner")
    page.goto(f"{live_server.url}/hub/budgets/")
    expect(page.locator("#member-budgets-table tbody tr")).to_have_count(25)
    page.click("#member-budgets-table th >> text=Spent this month")
    page.click("#member-budgets-table th >> text=Spent this month")  # again: most first
    page.locator("#member-budgets nav.pager a[rel=next]").click()
    page.wait_for_url(re.compile(r"member_sort=-spent&member_page=2"))
    first = page.locator("#member-budgets-table tbody tr").first
    expect(first.locator("td[data-label='Member']")).to_contain_text("dev034")
    first.locator("input[type=text][name=monthly_budget]").fill("250")
    first.locator("button:has-text('Save')").click()
    expect(page.locator(".messages")).to_contain_text("Budget saved")
    assert page.url.endswith("/hub/budgets/?member_sort=-spent&member_page=2")
    expect(page.locator("#member-budgets-table tbody tr").first.locator("input[type=text][name=monthly_budget]")).to_have_value("250.00")
    assert Membership.objects.get(user__username="dev034").monthly_budget == Decimal("250")
    page.fill("#key-budgets input[name=key_q]", "svc-05")
    page.locator("#key-budgets button:has-text('Search')").click()
    expect(page.locator("#key-budgets-table tbody tr")).to_have_count(10)
    assert "member_page=2" in page.url  # the members' table stays where it was
    _shot(page, "budgets-1280px")

    phone = phone_and_desktop("phone")
    sign_in(phone, live_server, "owner")
    phone.goto(f"{live_server.url}/hub/budgets/?key_sort=-spent&key_per_page=10&member_per_page=10")
    expect(phone.locator("#key-budgets-table th.server-sort a >> text=Spent this month")).to_be_visible()
    expect(phone.locator("#key-budgets-table tbody tr").first.locator("td[data-label='Key']")).to_contain_text("svc-059")
    assert phone.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth") <= 0
    _shot(phone, "budgets-390px", full_page=False)
    _shot(phone, "budgets-keys-390px", at="#key-budgets-table thead")
