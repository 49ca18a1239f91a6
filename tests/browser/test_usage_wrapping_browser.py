"""Figures with a unit and timestamps stay on one line (QA): the Usage page's cost
("0.000000 USD") and time at 1280 px, an external deployment's "Who served" share ("40.0 %") at
390 px."""

from __future__ import annotations

import os
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from catalog.models import CatalogModel
from deployments.external import external_deployment_create
from projects.keys import api_key_create
from tests.browser.conftest import sign_in
from tests.conftest import TEST_OUTPUT
from tests.gateway.conftest import make_deployment
from tests.gateway.test_devhub_views import record

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# How many lines each matching cell's text takes on screen (distinct tops of its line boxes).
LINES = """(selector) => Array.from(document.querySelectorAll(selector)).filter(c => c.offsetParent).map(c => {
  const range = document.createRange(); range.selectNodeContents(c);
  const tops = new Set(Array.from(range.getClientRects()).filter(r => r.width > 0).map(r => Math.round(r.top)));
  return [c.textContent.trim(), tops.size]; })"""


def _one_line(page, selector: str) -> list:
    cells = page.evaluate(LINES, selector)
    assert cells, f"nothing matches {selector}"
    return [text for text, lines in cells if lines != 1]


def test_usage_costs_and_times_keep_to_one_line_at_1280(phone_and_desktop, tenants, live_server):  # noqa: F811
    key, _ = api_key_create(user=tenants.member, organization=tenants.org, name="customer-support-bot-production")
    for n, name in enumerate(["qwen-chat-assistant-prod", "llama-3-8b-instruct-rag", "embed"]):
        deployment = make_deployment(tenants.project, name)
        for i in range(3):
            record(deployment, key, cost=Decimal("0.00000000"), currency="USD", route="chat.completions", stream=True,
                   created_at=timezone.now() - timedelta(minutes=n * 3 + i))  # fmt: skip
    page = phone_and_desktop("desktop")
    sign_in(page, live_server, "member")
    page.goto(f"{live_server.url}/hub/usage/")
    page.screenshot(path=os.path.join(TEST_OUTPUT, "usage-1280.png"), full_page=True)
    assert _one_line(page, "#usage-table tbody td:first-child") == []
    assert _one_line(page, "#usage-table tbody td:last-child") == []
    assert _one_line(page, "#by-deployment tbody td:last-child, #by-key tbody td:last-child") == []
    # The per-key table names the key over its prefix and still fits its half-width card.
    assert "customer-support" in page.locator("#by-key tbody").inner_text()
    assert page.locator("#by-key tbody .key-prefix").first.inner_text() == f"{key.prefix}…"
    card = page.locator(".card.flush:has(#by-key)")
    assert card.evaluate("e => e.scrollWidth <= e.clientWidth"), card.evaluate("e => [e.scrollWidth, e.clientWidth]")


def test_who_served_keeps_the_share_and_its_percent_together_on_a_phone(phone_and_desktop, tenants, live_server, public_example_com):  # noqa: F811
    model = CatalogModel.objects.create(organization=tenants.org, name="onprem", source="huggingface", repo_id="acme/onprem")
    external = external_deployment_create(user=tenants.owner, project=tenants.project, model=model, name="ext-qa",
                                          url="https://llm.example.com/v1")  # fmt: skip
    key, _ = api_key_create(user=tenants.member, organization=tenants.org, name="support-bot")
    for served_by in ["external"] * 3 + [""] * 2:
        record(external, key, served_by=served_by)
    page = phone_and_desktop("phone")
    sign_in(page, live_server, "owner")
    page.goto(f"{live_server.url}{external.get_absolute_url()}")
    page.locator("tr[data-served-by='external']").scroll_into_view_if_needed()
    page.screenshot(path=os.path.join(TEST_OUTPUT, "who-served-390.png"))
    shares = page.evaluate(LINES, "tr[data-served-by] td:nth-child(3)")
    assert sorted(text for text, _ in shares) == ["40.0\xa0%", "60.0\xa0%"]
    assert _one_line(page, "tr[data-served-by] td:nth-child(3)") == []
