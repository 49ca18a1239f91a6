"""Budgets in the console (Developer Hub → Budgets) and over REST (/api/v1/budgets/): one service,
field errors for bad amounts, roles, 404 across organizations, audit."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse

from projects.models import APIKey, Membership
from projects.services import api_key_budget_set, member_budget_set, organization_budget_set
from sharing.models import AuditEntry
from tests.conftest import login
from tests.factories import rest_api_client
from tests.gateway.conftest import make_key

pytestmark = pytest.mark.django_db

BAD_AMOUNTS = [
    ("-1", "can't be negative"),
    ("ten dollars", "is not an amount"),
    ("NaN", "finite"),
    ("0.00001", "at most 4 decimal places"),
    ("1e20", "too large"),
]


@pytest.mark.parametrize(("amount", "words"), BAD_AMOUNTS)
def test_a_bad_amount_is_a_field_error_in_the_console(tenants, amount, words):
    response = login(tenants.owner).post(
        "/hub/budgets/", {"level": "organization", "monthly_budget": amount, "budget_currency": "USD"}
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert 'id="organization-budget-error"' in page and words in page.replace("&#x27;", "'")
    tenants.org.refresh_from_db()
    assert tenants.org.monthly_budget is None


@pytest.mark.parametrize("amount", ["-1", "abc", True, [1], {"a": 1}, "Infinity"])
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
    assert "above its owner's monthly budget of 10 EUR" in r.json()["monthly_budget"][0]
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
    assert "billing-bot" in page and 'value="1.5000"' in page and "20.0000 USD" in page
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
    assert 'value="7.5000"' in page
    members = rest_api_client(tenants.owner).get("/api/v1/members/").json()
    rows = members["results"] if isinstance(members, dict) else members
    assert {m["username"]: m["monthly_budget"] for m in rows}["member"] == "7.5000"
    # Members see the amount, not the form.
    assert 'aria-label="Monthly budget of member"' not in login(tenants.member).get(reverse("org:members")).content.decode()
