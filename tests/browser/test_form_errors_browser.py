"""A form that comes back with errors shows them: htmx swaps the form in place, so without help
the page keeps the scroll of the submit button at the bottom and the "Not saved" banner and field
errors above stay out of view (QA: a refused Update form looked as if nothing happened)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import sign_in
from tests.browser.test_deploy_browser import sandbox_catalog, sandbox_cluster  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("width", [1280, 390])
def test_a_refused_form_scrolls_to_its_first_error(page, live_server, tenants, sandbox_catalog, screenshot, width):  # noqa: F811
    page.set_viewport_size({"width": width, "height": 900 if width > 400 else 844})
    sign_in(page, live_server, "owner")
    page.goto(f"{live_server.url}/deployments/new/")
    page.fill("#id_name", "Not A Valid Name!")
    submit = page.locator("#deploy-submit")
    submit.scroll_into_view_if_needed()
    assert page.evaluate("window.scrollY") > 1000  # the button is far below the top of the form
    submit.click()
    banner = page.locator("#form-errors")
    expect(banner).to_contain_text("Not saved")
    expect(banner).to_be_in_viewport()
    assert page.evaluate("document.activeElement.id") == "form-errors"
    page.screenshot(path=screenshot(f"form-error-shown-{width}").replace(".png", "-viewport.png"))

    # Typing into a field validates it as you type: that must not move the page or the focus.
    page.locator("#id_description").scroll_into_view_if_needed()
    before = page.evaluate("window.scrollY")
    page.fill("#id_description", "x")
    page.locator("#id_description").press("Tab")
    page.wait_for_timeout(1200)  # the field's validation answer (delay 600 ms) has been swapped in
    assert page.evaluate("window.scrollY") == before
