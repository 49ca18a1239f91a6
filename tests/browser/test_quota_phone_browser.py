"""On a phone (390 px) every GPU and resource quota an admin sets is on screen, no sideways
scrolling inside a card to find its input or Save button, and the dashboard's GPU card keeps its
figures inside the card (they ran past its right edge)."""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import sign_in
from tests.conftest import TEST_OUTPUT

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# The right edge of every visible element matching the selector, and the viewport's width.
RIGHT_EDGES = """(selector) => ({vw: document.documentElement.clientWidth,
  edges: Array.from(document.querySelectorAll(selector)).filter(e => e.offsetParent)
    .map(e => [e.getAttribute('aria-label') || e.textContent.trim(), Math.round(e.getBoundingClientRect().right)])})"""


@pytest.fixture
def phone(browser):
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def test_every_quota_input_and_save_button_is_on_a_phones_screen(phone, tenants, live_server):
    sign_in(phone, live_server, "owner")
    phone.goto(f"{live_server.url}/quotas/")
    expect(phone.locator("#quota-table")).to_be_visible()
    for selector in ("#quota-table input[name=gpu_quota]", "#quota-table button", "#quota-limits input",
                     "#quota-limits button"):  # fmt: skip
        found = phone.evaluate(RIGHT_EDGES, selector)
        assert found["edges"], f"nothing matched {selector}"
        off = [(label, right) for label, right in found["edges"] if right > found["vw"]]
        assert not off, f"{selector}: past the screen's right edge ({found['vw']} px): {off}"
    phone.screenshot(path=os.path.join(TEST_OUTPUT, "quotas-390px.png"), full_page=True)


def test_the_dashboards_gpu_figures_stay_inside_their_card_on_a_phone(phone, tenants, live_server):
    sign_in(phone, live_server, "owner")
    phone.goto(f"{live_server.url}/")
    figures = phone.locator(".card.stat .quota .figures").first
    expect(figures).to_be_visible()
    card = phone.locator(".card.stat").first.bounding_box()
    box = figures.bounding_box()
    assert box["x"] + box["width"] <= card["x"] + card["width"], (box, card)
