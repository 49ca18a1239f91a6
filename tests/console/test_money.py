"""Amounts of money read the same on every page (console.money.money_text): the Usage pages, the
Developer Hub's models, budgets, members and a deployment's pricing; the CSV keeps the record's
8 decimal places."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from console.money import money_text
from gateway.models import UsageRecord
from projects.keys import api_key_create
from projects.models import Membership
from projects.services import member_budget_set, organization_budget_set
from tests.conftest import login
from tests.gateway.conftest import make_deployment

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (25, "25.00"), ("0.5", "0.50"), (Decimal("0.0125"), "0.0125"), (Decimal("0.012505"), "0.0125"),
        (Decimal("0.0100000000000000"), "0.01"), (Decimal("0E-8"), "0.00"), (0, "0.00"), (None, ""),
        # Below 4 places: the first two significant digits, so a request's cost never reads 0.00.
        (Decimal("0.00000500"), "0.000005"), (Decimal("0.00001234"), "0.000012"), (Decimal("0.00000001"), "0.00000001"),
    ],
)  # fmt: skip
def test_money_text_shows_2_to_4_places_and_small_costs_to_their_first_digits(value, text):
    assert money_text(value) == text


def test_every_page_shows_an_amount_with_the_same_places(tenants):
    """QA: 0.0125 spent read 0.01 on the Usage page's total, 0.012500 in its tables, 0.0125 on
    Budgets; a price stored as "0.5" read 0.5 beside budgets of 7.50."""
    deployment = make_deployment(
        tenants.project, "llama", pricing={"currency": "USD", "input_per_million": "0.5", "output_per_million": "2"}
    )
    key, _ = api_key_create(user=tenants.member, organization=tenants.org, name="bot")
    for n, cost in enumerate(("0.0125", "0.000005")):
        UsageRecord.objects.create(
            request_id=f"req-{n}", deployment=deployment, deployment_name="llama", organization=tenants.org,
            user=tenants.member, api_key_id=key.pk, api_key_prefix=key.prefix, route="chat.completions",
            status_code=200, latency_ms=3.0, cost=Decimal(cost), currency="USD", created_at=timezone.now(),
        )  # fmt: skip
    organization_budget_set(user=tenants.owner, organization=tenants.org, amount="20")
    member_budget_set(user=tenants.owner, membership=Membership.objects.get(user=tenants.member), amount="7.5")
    owner, member = login(tenants.owner), login(tenants.member)

    for url in (reverse("devhub:usage"), reverse("devhub:organization_usage"),
                reverse("devhub:deployment_usage", args=[deployment.pk])):  # fmt: skip
        page = member.get(url).content.decode()
        assert 'id="stat-cost">0.0125<' in page, url  # 0.012505 in all
        table = page[page.index('id="by-deployment"'):page.index('id="by-key"')]
        assert '<td class="num nowrap">0.0125</td>' in table, url
        recent = page[page.index('id="usage-table"'):]
        assert ">0.0125 USD<" in recent and ">0.000005 USD<" in recent, url

    budgets = owner.get(reverse("devhub:budgets")).content.decode()
    assert "0.0125 / 20.00 USD" in budgets
    row = re.search(rf'<tr id="member-budget-{tenants.member.pk}">.*?</tr>', budgets, re.S).group(0)
    assert ">0.0125 <" in row and 'value="7.50"' in row
    assert 'value="7.50"' in owner.get(reverse("org:members")).content.decode()
    assert "7.50 USD" in member.get(reverse("org:members")).content.decode()

    assert "0.50 / 2.00 USD per 1M input / output tokens" in member.get(reverse("devhub:models")).content.decode()
    assert "USD 0.50 in / 2.00 out per 1M tokens" in member.get(deployment.get_absolute_url()).content.decode()

    csv = b"".join(owner.get(reverse("devhub:organization_usage"), {"format": "csv"}).streaming_content).decode()
    header, *rows = (line.split(",") for line in csv.splitlines())
    assert sorted(r[header.index("cost")] for r in rows) == ["0.00000500", "0.01250000"]  # as recorded
