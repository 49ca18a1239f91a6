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


def test_a_refused_scale_keeps_the_replicas_asked_and_names_the_field(page, live_server, tenants, screenshot):
    """QA: the Scale card came back with the old 1–1 after a refusal (what was asked was lost), and
    an empty field said "This field is required. This field is required." without saying which."""
    from tests.gateway.conftest import make_deployment

    deployment = make_deployment(tenants.project, "chat")
    sign_in(page, live_server, "owner")
    page.goto(f"{live_server.url}/deployments/{deployment.pk}/")

    def scale(lo: str, hi: str) -> None:
        page.fill("#id_replicas_min", lo)
        page.fill("#id_replicas_max", hi)
        page.locator("form:has(#id_replicas_min) button:has-text('Scale')").click()
        page.locator("#confirm-dialog [data-confirm-ok]").click()
        page.wait_for_load_state("networkidle")

    scale("2", "20")  # 20 GPUs: over the project's quota of 8
    expect(page.locator(".messages")).to_contain_text("quota of 8 GPUs")
    expect(page.locator("#id_replicas_min")).to_have_value("2")
    expect(page.locator("#id_replicas_max")).to_have_value("20")
    screenshot("scale-refused-keeps-input")

    scale("", "")
    expect(page.locator(".messages")).to_contain_text(
        "Minimum replicas: Give a whole number from 0 to 100. Maximum replicas: Give a whole number from 1 to 100."
    )
    scale("3", "4")
    expect(page.locator(".messages")).to_contain_text("scaled to 3–4 replicas")
    expect(page.locator("#id_replicas_max")).to_have_value("4")
    deployment.refresh_from_db()
    assert deployment.spec()["replicas"] == {"min": 3, "max": 4}
