"""An admin sets a member's monthly budget on the Budgets page, sees it beside what the member
spent through the gateway this month, raises it once the gateway refuses, then removes it after
the confirmation; a key's budget emptied and saved asks the same question. A budget at most what
is already spent (0 included) asks first and says every request is refused; a key's budget above
its owner's lowered one says the owner's applies first."""

from __future__ import annotations

from decimal import Decimal

import openai
import pytest
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import expect

from gateway.models import UsageRecord
from gateway.tasks import flush_usage
from projects.models import APIKey, Membership
from sharing.models import AuditEntry
from tests.browser.conftest import sign_in
from tests.gateway.conftest import (  # noqa: F401 - fixtures
    _clean_redis,
    engine,
    engine_server,
    gateway,
    make_deployment,
    make_key,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# 1 prompt + 4 completion tokens at $1,000 per million each way: $0.005 a request.
PRICING = {"currency": "USD", "input_per_million": "1000", "output_per_million": "1000"}


def spend(gateway, secret: str) -> int:  # noqa: F811
    """One metered request with the key: 200, or 429 once a budget is used up."""
    client = openai.OpenAI(api_key=secret, base_url=gateway.base_url, max_retries=0)
    try:
        client.chat.completions.create(model="llama-chat", messages=[{"role": "user", "content": "hello"}], max_tokens=4)
    except openai.RateLimitError as exc:
        assert exc.body["code"] == "budget_user_exceeded"
        return 429
    finally:
        flush_usage()
    return 200


def test_admin_sets_raises_and_removes_a_members_budget(
    page, live_server, tenants, gateway, screenshot, pinned_budget_month  # noqa: F811
):
    make_deployment(tenants.project, "llama", served_model_name="llama-chat", pricing=PRICING)
    secret = make_key(tenants.member, tenants.org, name="support-bot")
    assert [spend(gateway, secret) for _ in range(2)] == [200, 200]  # 0.01 USD this month
    membership = Membership.objects.get(organization=tenants.org, user=tenants.member)
    key = APIKey.objects.get(user=tenants.member, name="support-bot")
    sign_in(page, live_server, "owner")

    page.goto(live_server.url + reverse("devhub:budgets"))
    member_row = page.locator(f"#member-budget-{tenants.member.pk}")
    expect(member_row).to_contain_text("0.01")
    expect(member_row.locator(".badge")).to_have_count(0)  # no budget, no percentage
    expect(member_row.get_by_role("button", name="Remove")).to_have_count(0)
    expect(page.locator("#organization-spent")).to_have_text("Spent this month: 0.01 USD, no limit.")

    # A refused amount stays in its field, as typed, with the reason under it.
    member_row.get_by_label("Monthly budget of member").fill("ten cents")
    member_row.get_by_role("button", name="Save").click()
    expect(member_row.locator(".errorlist")).to_contain_text("“ten cents” is not an amount")
    expect(member_row.get_by_label("Monthly budget of member")).to_have_value("ten cents")

    # Set: 0.0100 of 0.0125 is 80 %, a warning.
    member_row.get_by_label("Monthly budget of member").fill("0.0125")
    member_row.get_by_role("button", name="Save").click()
    expect(page.locator(".messages")).to_contain_text("Budget saved")
    expect(member_row.get_by_label("Monthly budget of member")).to_have_value("0.0125")
    expect(member_row.locator(".badge.warn")).to_have_text("80%")
    membership.refresh_from_db()
    assert membership.monthly_budget == Decimal("0.0125")

    # The gateway follows: a request may cost 0.005, more than the 0.0025 left, so it is refused.
    assert spend(gateway, secret) == 429
    # Raised to 0.015: one more request fits exactly, the next is refused; the page says so.
    member_row.get_by_label("Monthly budget of member").fill("0.015")
    member_row.get_by_role("button", name="Save").click()
    expect(page.locator(".messages")).to_contain_text("Budget saved")
    assert [spend(gateway, secret) for _ in range(2)] == [200, 429]
    page.reload()
    expect(member_row).to_contain_text("0.015")
    expect(member_row.locator(".badge.bad")).to_have_text("100%")
    page.screenshot(path="/tmp/budgets.png", full_page=True)
    screenshot("budgets-member-over-budget")

    # Edit: raised to 0.05, the member is at 30 % and the gateway admits them again.
    member_row.get_by_label("Monthly budget of member").fill("0.05")
    member_row.get_by_role("button", name="Save").click()
    expect(page.locator(".messages")).to_contain_text("Budget saved")
    expect(member_row.locator(".badge")).to_have_text("30%")
    assert spend(gateway, secret) == 200

    # Remove asks first; Cancel keeps the budget, Remove budget clears it.
    dialog = page.locator("#confirm-dialog")
    member_row.get_by_role("button", name="Remove").click()
    expect(dialog).to_contain_text("Remove member's monthly budget of 0.05 USD?")
    screenshot("budgets-remove-confirmation")
    dialog.locator("[data-confirm-cancel]").click()
    expect(dialog).not_to_be_visible()
    membership.refresh_from_db()
    assert membership.monthly_budget == Decimal("0.05")
    member_row.get_by_role("button", name="Remove").click()
    dialog.locator("[data-confirm-ok]").click()
    expect(page.locator(".messages")).to_contain_text("Budget removed")
    expect(member_row.get_by_label("Monthly budget of member")).to_have_value("")
    expect(member_row.locator(".badge")).to_have_count(0)
    expect(member_row).to_contain_text("0.02")
    membership.refresh_from_db()
    assert membership.monthly_budget is None

    # A key's budget: emptying its field and saving is a removal too, and asks the same question.
    key_row = page.locator(f"#key-budget-{key.pk}")
    key_row.get_by_label("Monthly budget of key support-bot").fill("0.04")
    key_row.get_by_role("button", name="Save").click()
    expect(key_row.locator(".badge")).to_have_text("50%")
    key_row.get_by_label("Monthly budget of key support-bot").fill("")
    key_row.get_by_role("button", name="Save").click()
    expect(dialog).to_contain_text("Remove key support-bot's monthly budget of 0.04 USD?")
    dialog.locator("[data-confirm-ok]").click()
    expect(page.locator(".messages")).to_contain_text("Budget removed")
    expect(key_row.locator(".badge")).to_have_count(0)
    key.refresh_from_db()
    assert key.monthly_budget is None

    changes = AuditEntry.objects.filter(action="budget_change").order_by("pk")
    assert [e.diff.get("monthly_budget") for e in changes] == [
        [None, "0.0125"], ["0.0125", "0.0150"], ["0.0150", "0.0500"], ["0.0500", None], [None, "0.0400"],
        ["0.0400", None],
    ]


def test_a_budget_at_most_what_is_spent_asks_first_and_a_lowered_owners_budget_applies_first(
    page, live_server, tenants, screenshot, pinned_budget_month
):
    from projects.keys import api_key_create  # noqa: PLC0415 - keys without the gateway, for this test only

    key, _ = api_key_create(user=tenants.member, organization=tenants.org, name="support-bot")
    idle, _ = api_key_create(user=tenants.member, organization=tenants.org, name="idle-bot")
    UsageRecord.objects.create(
        request_id="spent-1", organization=tenants.org, user=tenants.member, api_key_id=key.pk,
        api_key_prefix=key.prefix, route="chat.completions", status_code=200, latency_ms=5.0,
        cost=Decimal("0.015"), currency="USD", created_at=timezone.now(),
    )  # fmt: skip
    membership = Membership.objects.get(organization=tenants.org, user=tenants.member)
    sign_in(page, live_server, "owner")
    page.goto(live_server.url + reverse("devhub:budgets"))
    dialog = page.locator("#confirm-dialog")
    member_row = page.locator(f"#member-budget-{tenants.member.pk}")
    field = member_row.get_by_label("Monthly budget of member")

    # Below what the member spent: asked first, in words; Cancel posts nothing.
    field.fill("0.01")
    member_row.get_by_role("button", name="Save").click()
    expect(dialog).to_contain_text("0.015 USD is already spent this month, so a monthly budget of that or less is used up at once")
    expect(dialog).to_contain_text("the gateway refuses every request made with member's API keys with 429 (insufficient_quota) "
                                   "until next month begins (UTC) or the budget is raised.")  # fmt: skip
    expect(dialog.locator("[data-confirm-ok]")).to_have_text("Set budget")
    screenshot("budgets-stop-confirmation")
    dialog.locator("[data-confirm-cancel]").click()
    expect(dialog).not_to_be_visible()
    membership.refresh_from_db()
    assert membership.monthly_budget is None
    member_row.get_by_role("button", name="Save").click()
    dialog.locator("[data-confirm-ok]").click()
    expect(page.locator(".messages")).to_contain_text("Budget saved")
    expect(member_row.locator(".badge.bad")).to_have_text("150%")
    membership.refresh_from_db()
    assert membership.monthly_budget == Decimal("0.01")

    # Above what was spent: saved without a question.
    field.fill("1")
    member_row.get_by_role("button", name="Save").click()
    expect(page.locator(".messages")).to_contain_text("Budget saved")
    expect(member_row.locator(".badge")).to_have_text("1%")
    expect(dialog).not_to_be_visible()

    # A key that spent nothing: only 0 asks, and says so.
    idle_row = page.locator(f"#key-budget-{idle.pk}")
    idle_row.get_by_label("Monthly budget of key idle-bot").fill("0")
    idle_row.get_by_role("button", name="Save").click()
    expect(dialog).to_contain_text("A monthly budget of 0 stops all spending: the gateway refuses every request made with key idle-bot")
    dialog.locator("[data-confirm-ok]").click()
    expect(page.locator(".messages")).to_contain_text("Budget saved")
    idle.refresh_from_db()
    assert idle.monthly_budget == Decimal(0)

    # The key's own budget, then its owner's lowered below it: the owner's applies first, said twice.
    key_row = page.locator(f"#key-budget-{key.pk}")
    key_row.get_by_label("Monthly budget of key support-bot").fill("0.5")
    key_row.get_by_role("button", name="Save").click()
    expect(page.locator(".messages")).to_contain_text("Budget saved")
    field.fill("0.2")
    member_row.get_by_role("button", name="Save").click()
    expect(page.locator(".messages")).to_contain_text(
        "It is lower than the own budget of key support-bot: this one applies first; theirs stay as set."
    )
    expect(key_row.get_by_label("Monthly budget of key support-bot")).to_have_value("0.50")
    expect(key_row.locator(".applies-first")).to_have_text(
        "The owner's budget of 0.20 USD applies first: it is lower than this key's, so requests are refused once it is used up."
    )
    screenshot("budgets-owner-applies-first")
