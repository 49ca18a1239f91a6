"""On a phone (390 px) the controls of a table's rows are on screen, no sideways scrolling inside
a card to find them: every GPU and resource quota's input and Save button, a MaaS rule's move and
Delete buttons. The dashboard's GPU card keeps its figures inside the card (they ran past its
right edge)."""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import expect

from catalog.models import ProfileBundle
from catalog.services import bundles_builtin_ensure, mapping_create
from tests.browser.conftest import sign_in
from tests.conftest import TEST_OUTPUT

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# The right edge of every visible element matching the selector, and the viewport's width.
RIGHT_EDGES = """(selector) => ({vw: document.documentElement.clientWidth,
  edges: Array.from(document.querySelectorAll(selector)).filter(e => e.offsetParent)
    .map(e => [e.getAttribute('aria-label') || e.textContent.trim(), Math.round(e.getBoundingClientRect().right)])})"""


@pytest.fixture
def phone(phone_and_desktop):
    return phone_and_desktop("phone")


def _assert_on_screen(page, *selectors: str) -> None:
    for selector in selectors:
        found = page.evaluate(RIGHT_EDGES, selector)
        assert found["edges"], f"nothing matched {selector}"
        off = [(label, right) for label, right in found["edges"] if right > found["vw"]]
        assert not off, f"{selector}: past the screen's right edge ({found['vw']} px): {off}"


def test_every_quota_input_and_save_button_is_on_a_phones_screen(phone, tenants, live_server):
    sign_in(phone, live_server, "owner")
    phone.goto(f"{live_server.url}/quotas/")
    expect(phone.locator("#quota-table")).to_be_visible()
    _assert_on_screen(phone, "#quota-table input[name=gpu_quota]", "#quota-table button", "#quota-limits input",
                      "#quota-limits button")  # fmt: skip
    phone.screenshot(path=os.path.join(TEST_OUTPUT, "quotas-390px.png"), full_page=True)


def test_a_maas_rules_buttons_and_bundle_are_on_a_phones_screen(phone, tenants, live_server):
    bundles_builtin_ensure()  # transactional tests flush the migration's rows
    bundle = ProfileBundle.objects.get(organization__isnull=True, name="vllm")
    for task in ("text-generation", "feature-extraction"):
        mapping_create(user=None, project=tenants.project, source="huggingface", bundle=bundle, task=task,
                       name_pattern="meta-llama/*-Instruct", license="llama3.1")  # fmt: skip
    sign_in(phone, live_server, "owner")
    phone.goto(f"{live_server.url}/catalog/projects/{tenants.project.pk}/mappings/")
    expect(phone.locator("#rules-table tbody tr")).to_have_count(2)
    _assert_on_screen(phone, "#rules-table button", "#rules-table td a")
    phone.screenshot(path=os.path.join(TEST_OUTPUT, "maas-rules-390px.png"), full_page=True)


def test_the_dashboards_gpu_figures_stay_inside_their_card_on_a_phone(phone, tenants, live_server):
    sign_in(phone, live_server, "owner")
    phone.goto(f"{live_server.url}/")
    figures = phone.locator(".card.stat .quota .figures").first
    expect(figures).to_be_visible()
    card = phone.locator(".card.stat").first.bounding_box()
    box = figures.bounding_box()
    assert box["x"] + box["width"] <= card["x"] + card["width"], (box, card)
