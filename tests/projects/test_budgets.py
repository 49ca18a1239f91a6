"""Budgets in the console (Developer Hub → Budgets) and over REST (/api/v1/budgets/): one service,
field errors for bad amounts, roles, 404 across organizations, audit, and spend read in a number of
queries that doesn't grow with the number of budgets."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from gateway import reports
from gateway.models import UsageRecord
from projects.keys import api_key_create
from projects.models import APIKey, Membership, Role
from projects.services import api_key_budget_set, member_budget_set, organization_budget_set
from sharing.models import AuditEntry
from tests.conftest import login
from tests.factories import MembershipFactory, UserFactory, rest_api_client
from tests.gateway.conftest import make_key

pytestmark = pytest.mark.django_db

BAD_AMOUNTS = [
    ("-1", "can't be negative"),
    ("ten dollars", "is not an amount"),
    ("NaN", "finite"),
    ("0.00001", "at most 4 decimal places"),
    ("1e20", "too large"),
    ("1e30", "too large"),
    ("1e309", "too large"),
    ("9" * 40, "too large"),
]


@pytest.mark.parametrize(("amount", "words"), BAD_AMOUNTS)
def test_a_bad_amount_is_a_field_error_in_the_console(tenants, amount, words):
    response = login(tenants.owner).post(
        "/hub/budgets/", {"level": "organization", "monthly_budget": amount, "budget_currency": "USD"}
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert 'id="organization-budget-error"' in page and words in page.replace("&#x27;", "'")
    assert f'value="{escape(amount)}" placeholder="No limit" aria-label="Organization monthly budget"' in page
    tenants.org.refresh_from_db()
    assert tenants.org.monthly_budget is None


@pytest.mark.parametrize("amount", ["-1", "abc", True, [1], {"a": 1}, "Infinity", "1e30", 1e300])
def test_a_bad_amount_is_a_field_error_over_rest(tenants, amount):
    response = rest_api_client(tenants.owner).post(
        "/api/v1/budgets/", {"level": "organization", "monthly_budget": amount}, format="json"
    )
    assert response.status_code == 400, response.content
    assert "monthly_budget" in response.json()


def test_rest_sets_and_lists_budgets_through_the_services(tenants):
    client = rest_api_client(tenants.owner)
    secret_key = make_key(tenants.member, tenants.org)  # noqa: F841 - the member's key is listed
    key = APIKey.objects.get(user=tenants.member)
    r = client.post("/api/v1/budgets/", {"level": "organization", "monthly_budget": "50", "budget_currency": "eur"}, format="json")
    assert r.status_code == 200, r.json()
    assert r.json()["organization"]["monthly_budget"] == "50.0000"
    assert r.json()["organization"]["budget_currency"] == "EUR"
    r = client.post("/api/v1/budgets/", {"level": "member", "target": tenants.member.pk, "monthly_budget": 10}, format="json")
    assert r.status_code == 200
    member_row = next(m for m in r.json()["members"] if m["user"] == tenants.member.pk)
    assert member_row["monthly_budget"] == "10.0000" and member_row["budget_state"] == "ok"
    # The key's owner sets a lower budget on their key; not above their own budget.
    owner_of_key = rest_api_client(tenants.member)
    r = owner_of_key.post("/api/v1/budgets/", {"level": "key", "target": key.pk, "monthly_budget": "11"}, format="json")
    assert r.status_code == 400
    assert "above its owner's monthly budget of 10.00 EUR" in r.json()["monthly_budget"][0]
    r = owner_of_key.post("/api/v1/budgets/", {"level": "key", "target": key.pk, "monthly_budget": "0.05"}, format="json")
    assert r.status_code == 200
    assert [k["monthly_budget"] for k in r.json()["keys"]] == ["0.0500"]
    assert rest_api_client(tenants.member).get(f"/api/v1/keys/{key.pk}/").json()["monthly_budget"] == "0.0500"
    assert client.get(f"/api/v1/organizations/{tenants.org.pk}/").json()["monthly_budget"] == "50.0000"
    assert AuditEntry.objects.filter(action="budget_change").count() == 3


def test_members_cannot_set_the_organizations_or_members_budgets(tenants):
    client = rest_api_client(tenants.member)
    r = client.post("/api/v1/budgets/", {"level": "organization", "monthly_budget": "1"}, format="json")
    assert r.status_code == 403
    r = client.post("/api/v1/budgets/", {"level": "member", "target": tenants.member.pk, "monthly_budget": "100"}, format="json")
    assert r.status_code == 403
    response = login(tenants.member).post("/hub/budgets/", {"level": "organization", "monthly_budget": "1"})
    assert response.status_code == 403
    tenants.org.refresh_from_db()
    assert tenants.org.monthly_budget is None
    # A member sees only their own row and keys.
    listed = client.get("/api/v1/budgets/").json()
    assert [m["username"] for m in listed["members"]] == ["member"]


def test_another_organizations_budgets_are_404(tenants):
    make_key(tenants.member, tenants.org)
    key = APIKey.objects.get(user=tenants.member)
    outsider = rest_api_client(tenants.outsider)
    assert outsider.get(f"/api/v1/budgets/?organization={tenants.org.pk}").status_code == 404
    for body in (
        {"level": "organization", "organization": tenants.org.pk, "monthly_budget": "0"},
        {"level": "member", "organization": tenants.org.pk, "target": tenants.member.pk, "monthly_budget": "0"},
        # In their own organization, a key of Acme's is no key at all.
        {"level": "key", "target": key.pk, "monthly_budget": "0"},
        {"level": "member", "target": tenants.member.pk, "monthly_budget": "0"},
    ):
        assert outsider.post("/api/v1/budgets/", body, format="json").status_code == 404, body
    console = login(tenants.outsider)
    assert console.post("/hub/budgets/", {"level": "key", "target": key.pk, "monthly_budget": "0"}).status_code == 404
    assert console.post("/hub/budgets/", {"level": "member", "target": tenants.member.pk, "monthly_budget": "0"}).status_code == 404
    # Another member's key in the same organization is not a member's to change.
    make_key(tenants.owner, tenants.org, name="admin's")
    admins = APIKey.objects.get(user=tenants.owner)
    assert rest_api_client(tenants.member).post(
        "/api/v1/budgets/", {"level": "key", "target": admins.pk, "monthly_budget": "0"}, format="json"
    ).status_code == 404
    assert APIKey.objects.filter(monthly_budget__isnull=False).count() == 0
    assert Membership.objects.filter(monthly_budget__isnull=False).count() == 0


def test_the_budgets_page_is_a_post_with_csrf_and_shows_each_budget(tenants):
    make_key(tenants.member, tenants.org, name="billing-bot")
    key = APIKey.objects.get(user=tenants.member)
    organization_budget_set(user=tenants.owner, organization=tenants.org, amount="20")
    member_budget_set(user=tenants.owner, membership=Membership.objects.get(user=tenants.member), amount="5")
    api_key_budget_set(user=tenants.member, key=key, amount="1.5")
    client = Client(enforce_csrf_checks=True)
    client.force_login(tenants.member)
    assert client.post("/hub/budgets/", {"level": "key", "target": key.pk, "monthly_budget": "1"}).status_code == 403
    page = client.get("/hub/budgets/").content.decode()
    assert "billing-bot" in page and 'value="1.50"' in page and "20.00 USD" in page
    admin_page = login(tenants.owner).get("/hub/budgets/").content.decode()
    assert 'aria-label="Monthly budget of member"' in admin_page
    key.refresh_from_db()
    assert key.monthly_budget == Decimal("1.5")


def test_an_admin_sets_a_members_budget_from_the_members_page(tenants):
    admin = login(tenants.owner)
    page = admin.get(reverse("org:members")).content.decode()
    assert 'aria-label="Monthly budget of member"' in page
    response = admin.post("/hub/budgets/", {"level": "member", "target": tenants.member.pk, "monthly_budget": "7.5"})
    assert response.status_code == 302
    page = admin.get(reverse("org:members")).content.decode()
    assert 'value="7.50"' in page  # as the Budgets page shows it (console.money)
    members = rest_api_client(tenants.owner).get("/api/v1/members/").json()
    rows = members["results"] if isinstance(members, dict) else members
    assert {m["username"]: m["monthly_budget"] for m in rows}["member"] == "7.5000"
    # Members see the amount, not the form.
    assert 'aria-label="Monthly budget of member"' not in login(tenants.member).get(reverse("org:members")).content.decode()


def _members_with_budgets_and_spend(tenants, first: int, last: int) -> None:
    """Members m<first>..m<last-1>, each with a budget of 50, a gateway key with a budget of 10,
    and i + 1 metered requests of 0.25 on that key this month (and one last month, not counted).
    The tests calling it pin the budget month (pinned_budget_month): "now" may pass midnight."""
    last_month = reports.month_start() - timedelta(days=3)
    for i in range(first, last):
        user = MembershipFactory(organization=tenants.org, role=Role.MEMBER, user=UserFactory(username=f"m{i:02d}")).user
        member_budget_set(user=tenants.owner, membership=Membership.objects.get(user=user), amount="50")
        key, _ = api_key_create(user=user, organization=tenants.org, name=f"bot-{i:02d}")
        api_key_budget_set(user=user, key=key, amount="10")
        for n, at in [(n, timezone.now()) for n in range(i + 1)] + [(99, last_month)]:
            UsageRecord.objects.create(
                request_id=f"req-{i}-{n}", organization=tenants.org, user=user, api_key_id=key.pk,
                api_key_prefix=key.prefix, route="chat.completions", status_code=200, latency_ms=5.0,
                cost=Decimal("0.25"), currency="USD", created_at=at,
            )  # fmt: skip


def _queries(client, url: str) -> tuple[int, object]:
    client.get(url)  # sessions, caches and the like warm up outside the count
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200
    return len(ctx), response


def test_the_budgets_page_and_rest_list_read_spend_in_a_constant_number_of_queries(tenants, pinned_budget_month):
    organization_budget_set(user=tenants.owner, organization=tenants.org, amount="1000")
    page, api = login(tenants.owner), rest_api_client(tenants.owner)
    _members_with_budgets_and_spend(tenants, 0, 2)
    few = {url: _queries(client, url)[0] for url, client in (("/hub/budgets/", page), ("/api/v1/budgets/", api))}
    _members_with_budgets_and_spend(tenants, 2, 20)
    many = {url: _queries(client, url) for url, client in (("/hub/budgets/", page), ("/api/v1/budgets/", api))}
    assert {url: n for url, (n, _) in many.items()} == few  # 2 or 20 members and keys: the same queries

    listed = many["/api/v1/budgets/"][1].json()
    # m07 made 8 requests of 0.25 this month (last month's doesn't count): 2 of a 10 budget, 4 of 50.
    assert listed["organization"]["spent"] == f"{Decimal('0.25') * sum(range(1, 21)):.8f}"  # 52.5
    member = next(m for m in listed["members"] if m["username"] == "m07")
    assert (member["spent"], member["percent"], member["budget_state"]) == ("2.00000000", 4, "ok")
    key = next(k for k in listed["keys"] if k["name"] == "bot-07")
    assert (key["spent"], key["percent"], key["budget_state"]) == ("2.00000000", 20, "ok")
    # m19: 20 × 0.25 = 5, half of the key's budget; the owner spent nothing.
    assert next(k for k in listed["keys"] if k["name"] == "bot-19")["percent"] == 50
    assert next(m for m in listed["members"] if m["username"] == "owner")["spent"] == "0.00000000"
    html = many["/hub/budgets/"][1].content.decode()
    row = re.search(r'<tr id="key-budget-\d+"><td data-label="Key"><span class="truncate" title="bot-07">.*?</tr>', html, re.S).group(0)
    assert "2.00" in row and ">20%<" in row
    row = re.search(r'<tr id="member-budget-\d+"><td data-label="Member"><span class="truncate" title="m19">.*?</tr>', html, re.S).group(0)
    assert "5.00" in row and ">10%<" in row
    assert "52.50 / 1000.00 USD (5%)" in html


def test_the_usage_pages_budget_card_reads_spend_in_a_constant_number_of_queries(tenants, pinned_budget_month):
    organization_budget_set(user=tenants.owner, organization=tenants.org, amount="1000")
    owner = login(tenants.owner)
    _members_with_budgets_and_spend(tenants, 0, 2)
    for i in range(2):
        key, _ = api_key_create(user=tenants.owner, organization=tenants.org, name=f"own-{i:02d}")
        api_key_budget_set(user=tenants.owner, key=key, amount="5")
    few = {url: _queries(owner, url)[0] for url in ("/hub/usage/", "/hub/usage/organization/")}
    _members_with_budgets_and_spend(tenants, 2, 20)
    for i in range(2, 20):
        key, _ = api_key_create(user=tenants.owner, organization=tenants.org, name=f"own-{i:02d}")
        api_key_budget_set(user=tenants.owner, key=key, amount="5")
    many = {url: _queries(owner, url) for url in ("/hub/usage/", "/hub/usage/organization/")}
    html = many["/hub/usage/organization/"][1].content.decode()
    assert "52.50 / 1000.00 USD (5%)" in html
    assert re.search(r"<strong>Member m07</strong><span class=\"figures\">2\.00 / 50\.00 USD \(4%\)", html)
    assert html.count("<strong>Member m") == 20
    assert many["/hub/usage/"][1].content.decode().count("<strong>Key own-") == 20
    assert {url: n for url, (n, _) in many.items()} == few


def test_a_budget_is_removed_after_a_confirmation_and_a_refused_one_keeps_what_was_typed(tenants):
    member = Membership.objects.get(user=tenants.member)
    member_budget_set(user=tenants.owner, membership=member, amount="5")
    admin = login(tenants.owner)
    page = admin.get("/hub/budgets/").content.decode()
    row = re.search(rf'<tr id="member-budget-{tenants.member.pk}">.*?</tr>', page, re.S).group(0)
    remove = re.search(r'<form method="post" class="inline budget-remove"[^>]*>', row).group(0)
    assert 'data-confirm="Remove member\'s monthly budget of 5.00 USD? The gateway stops enforcing it' in remove
    # Emptying the field and saving asks the same question; rows without a budget ask nothing.
    assert 'data-confirm-field="monthly_budget" data-confirm-value=""' in row
    viewer_row = re.search(rf'<tr id="member-budget-{tenants.viewer.pk}">.*?</tr>', page, re.S).group(0)
    assert 'data-confirm="' not in viewer_row and "Remove" not in viewer_row

    response = admin.post("/hub/budgets/", {"level": "member", "target": tenants.member.pk, "monthly_budget": "-3"})
    assert response.status_code == 400
    row = re.search(rf'<tr id="member-budget-{tenants.member.pk}">.*?</tr>', response.content.decode(), re.S).group(0)
    assert 'value="-3"' in row and "can&#x27;t be negative" in row
    member.refresh_from_db()
    assert member.monthly_budget == Decimal("5")

    assert admin.post("/hub/budgets/", {"level": "member", "target": tenants.member.pk, "monthly_budget": ""}).status_code == 302
    member.refresh_from_db()
    assert member.monthly_budget is None
    row = re.search(rf'<tr id="member-budget-{tenants.member.pk}">.*?</tr>', admin.get("/hub/budgets/").content.decode(), re.S).group(0)
    assert 'value=""' in row and "Remove" not in row


def test_a_budget_currency_no_deployment_is_priced_in_is_refused_in_words(tenants):
    """QA: an organization budget of 0.01 EUR over deployments priced in USD never stopped a
    request (spend is counted per currency) and showed 0.00 EUR spent."""
    from tests.factories import deployment  # noqa: PLC0415 - a priced deployment for this test only

    deployment(tenants.project, name="priced-in-usd")
    response = rest_api_client(tenants.owner).post(
        "/api/v1/budgets/", {"level": "organization", "monthly_budget": "0.01", "budget_currency": "EUR"}, format="json"
    )
    assert response.status_code == 400, response.content
    assert "No deployment of" in response.json()["budget_currency"][0] and "priced in USD" in response.json()["budget_currency"][0]
    tenants.org.refresh_from_db()
    assert (tenants.org.monthly_budget, tenants.org.budget_currency) == (None, "USD")
    ok = rest_api_client(tenants.owner).post(
        "/api/v1/budgets/", {"level": "organization", "monthly_budget": "0.01", "budget_currency": "USD"}, format="json"
    )
    assert ok.status_code == 200, ok.content


def test_the_budgets_page_says_why_a_currency_is_refused(tenants):
    from tests.factories import deployment  # noqa: PLC0415 - a priced deployment for this test only

    deployment(tenants.project, name="priced-in-usd")
    response = login(tenants.owner).post(
        "/hub/budgets/", {"level": "organization", "monthly_budget": "0.01", "budget_currency": "EUR"}
    )
    assert response.status_code == 400
    assert "is priced in EUR (they are priced in USD)" in response.content.decode()


def test_options_documents_the_fields_a_budget_post_reads(tenants):
    """OPTIONS described POST with the overview it answers (organization, members, keys), not
    with the body it reads."""
    for user in (tenants.owner, tenants.member):
        response = rest_api_client(user).options("/api/v1/budgets/")
        assert response.status_code == 200, response.content
        post = response.json()["actions"]["POST"]
        assert set(post) == {"level", "target", "organization", "monthly_budget", "budget_currency"}
        assert [c["value"] for c in post["level"]["choices"]] == ["organization", "member", "key"]
        assert post["level"]["required"] is True and post["target"]["required"] is False
        assert "null: no limit" in post["monthly_budget"]["help_text"]
        assert post["budget_currency"]["max_length"] == 3


def _spend(tenants, user, key, cost: str, n: int = 0) -> None:
    UsageRecord.objects.create(
        request_id=f"spent-{key.pk}-{n}", organization=tenants.org, user=user, api_key_id=key.pk,
        api_key_prefix=key.prefix, route="chat.completions", status_code=200, latency_ms=5.0,
        cost=Decimal(cost), currency="USD", created_at=timezone.now(),
    )  # fmt: skip


def _form(page: str, row_id: str) -> str:
    row = re.search(rf'<(?:tr|div) [^>]*id="{row_id}"[^>]*>.*?</(?:tr|div)>', page, re.S).group(0)
    return re.search(r'<form method="post" class="row"[^>]*>', row).group(0)


def test_a_budget_at_most_what_is_spent_asks_first_in_the_console_and_not_over_rest(tenants, pinned_budget_month):
    """QA: setting a budget to 0, or below what was already spent this month, stopped every request
    at once without a word. The console asks first (the product's confirmation) and says what
    happens; the REST API just does it."""
    key, _ = api_key_create(user=tenants.member, organization=tenants.org, name="support-bot")
    idle, _ = api_key_create(user=tenants.member, organization=tenants.org, name="idle-bot")
    _spend(tenants, tenants.member, key, "0.015")
    member_budget_set(user=tenants.owner, membership=Membership.objects.get(user=tenants.member), amount="5")
    page = login(tenants.owner).get("/hub/budgets/").content.decode()

    member_form = _form(page, f"member-budget-{tenants.member.pk}")
    assert 'data-confirm-field="monthly_budget"' in member_form and 'data-confirm-at-most="0.01500000"' in member_form
    assert (
        'data-confirm-at-most-message="0.015 USD is already spent this month, so a monthly budget of that or less is '
        "used up at once: the gateway refuses every request made with member&#x27;s API keys with 429 "
        '(insufficient_quota) until next month begins (UTC) or the budget is raised. Set it?"'
    ) in member_form
    assert 'data-confirm-at-most-ok="Set budget"' in member_form
    assert "data-confirm=\"Remove member's monthly budget" in member_form.replace("&#x27;", "'")  # emptied: still the removal
    # Nothing spent: only 0 stops it, and the question says so. No budget yet: it still asks.
    idle_form = _form(page, f"key-budget-{idle.pk}")
    assert 'data-confirm-at-most="0E-8"' in idle_form or 'data-confirm-at-most="0"' in idle_form
    assert ("A monthly budget of 0 stops all spending: the gateway refuses every request made with key idle-bot "
            "with 429 (insufficient_quota)") in idle_form  # fmt: skip
    assert 'data-confirm="' not in idle_form  # no budget to remove
    org_form = re.search(r'<div class="card" id="organization-budget">.*?<form method="post" class="row"[^>]*>', page, re.S).group(0)
    assert 'data-confirm-at-most="0.01500000"' in org_form and "made with Acme&#x27;s API keys" in org_form.replace(
        tenants.org.name, "Acme"
    )
    # The Members page's budget field asks the same.
    members_page = login(tenants.owner).get(reverse("org:members")).content.decode()
    assert members_page.count('data-confirm-at-most="0.01500000"') == 1
    assert "0.015 USD is already spent this month" in members_page

    # REST: no question, the budget is set and used up at once.
    r = rest_api_client(tenants.owner).post(
        "/api/v1/budgets/", {"level": "member", "target": tenants.member.pk, "monthly_budget": "0.01"}, format="json"
    )
    assert r.status_code == 200
    row = next(m for m in r.json()["members"] if m["user"] == tenants.member.pk)
    assert (row["monthly_budget"], row["budget_state"]) == ("0.0100", "bad")


def test_a_keys_budget_above_its_owners_lowered_budget_says_the_owners_applies_first(tenants):
    """QA: a key's budget of 10 stayed beside its owner's budget lowered to 5 with nothing saying
    which one the gateway holds the key to. The key keeps its own (raising the owner's brings it
    back); the pages and the API say the owner's applies first."""
    key, _ = api_key_create(user=tenants.member, organization=tenants.org, name="support-bot")
    membership = Membership.objects.get(user=tenants.member)
    member_budget_set(user=tenants.owner, membership=membership, amount="50")
    api_key_budget_set(user=tenants.member, key=key, amount="10")
    admin = login(tenants.owner)
    response = admin.post("/hub/budgets/", {"level": "member", "target": tenants.member.pk, "monthly_budget": "5"}, follow=True)
    page = response.content.decode().replace("&#x27;", "'")
    assert ("Budget saved; the gateway enforces it from the next request. It is lower than the own budget of key "
            "support-bot: this one applies first; theirs stay as set.") in page  # fmt: skip
    key.refresh_from_db()
    assert key.monthly_budget == Decimal("10")  # kept as set
    row = re.search(rf'<tr id="key-budget-{key.pk}">.*?</tr>', page, re.S).group(0)
    assert 'value="10.00"' in row
    assert "The owner's budget of 5.00 USD applies first: it is lower than this key's" in row
    # The key's owner sees it too, and the API says which one applies.
    own = login(tenants.member).get("/hub/budgets/").content.decode().replace("&#x27;", "'")
    assert "The owner's budget of 5.00 USD applies first" in own
    listed = rest_api_client(tenants.member).get("/api/v1/budgets/").json()
    assert listed["keys"][0]["applies_first"] == {"level": "member", "monthly_budget": "5.0000"}
    assert listed["members"][0]["applies_first"] is None

    # The organization's lowered below both: it applies first to the member and the key.
    response = admin.post("/hub/budgets/", {"level": "organization", "monthly_budget": "2", "budget_currency": "USD"}, follow=True)
    page = response.content.decode().replace("&#x27;", "'")
    assert "It is lower than the own budget of member member, key support-bot: this one applies first" in page
    assert "The organization's budget of 2.00 USD applies first: it is lower than this member's" in page
    row = re.search(rf'<tr id="key-budget-{key.pk}">.*?</tr>', page, re.S).group(0)
    assert "The organization's budget of 2.00 USD applies first: it is lower than this key's" in row
    listed = rest_api_client(tenants.owner).get("/api/v1/budgets/").json()
    assert next(k for k in listed["keys"] if k["id"] == key.pk)["applies_first"] == {
        "level": "organization", "monthly_budget": "2.0000",
    }  # fmt: skip
    # Raised again above the key's: the key's own budget is the one that applies, nothing is said.
    organization_budget_set(user=tenants.owner, organization=tenants.org, amount=None)
    member_budget_set(user=tenants.owner, membership=membership, amount="20")
    page = admin.get("/hub/budgets/").content.decode()
    assert 'class="help small applies-first"' not in page


@pytest.mark.parametrize(("level", "target"), [("key", "abc"), ("member", ""), ("nonsense", "1")])
def test_a_budget_post_for_no_row_on_the_page_says_why(tenants, level, target):
    """QA: a stale or edited form (a member who left, a revoked key, a level the page has no row
    for) was a 400 with the page and no error anywhere on it."""
    response = login(tenants.owner).post("/hub/budgets/", {"level": level, "target": target, "monthly_budget": "5"})
    assert response.status_code == 400
    page = response.content.decode()
    errors = re.findall(r'<ul class="messages"><li class="error">([^<]+)</li>', page)
    assert errors and all(e.strip() for e in errors), page[:3000]


def test_the_playground_s_keys_are_not_listed_for_budgets(tenants):
    from projects.keys import playground_key_issue
    from tests.gateway.conftest import make_deployment

    deployment = make_deployment(tenants.project, "qwen", served_model_name="qwen-chat")
    playground_key_issue(user=tenants.member, organization=tenants.org, deployment=deployment)
    by_hand, _ = api_key_create(user=tenants.member, organization=tenants.org, name="Playground · mine")
    listed = rest_api_client(tenants.owner).get("/api/v1/budgets/").json()["keys"]
    assert [k["id"] for k in listed] == [by_hand.pk]
