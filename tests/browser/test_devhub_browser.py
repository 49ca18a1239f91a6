"""Developer Hub in a real browser: create a key, copy the sample, call it, see the call on Usage."""

from __future__ import annotations

import contextlib
import io
import os

import pytest

from gateway.tasks import flush_usage
from tests.browser.conftest import sign_in
from tests.gateway.conftest import (  # noqa: F401 - fixtures shared with the gateway tests
    _clean_redis,
    _fast_password_hashing,
    engine,
    engine_server,
    make_deployment,
    start_console,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def console(engine, settings, transactional_db):  # noqa: F811
    """The whole console (gateway included) under uvicorn: the sample's URL must answer."""
    server = start_console()
    settings.GATEWAY_BASE_URL = server.url
    yield server
    server.stop()


def test_key_sample_call_and_usage(page, screenshot, tenants, console):
    make_deployment(
        tenants.project,
        "llama",
        served_model_name="llama-chat",
        pricing={"currency": "USD", "input_per_million": "2.00", "output_per_million": "4.00"},
    )
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=console.url)
    sign_in(page, console, "member")

    page.goto(f"{console.url}/hub/keys/")
    page.fill("#id_name", "browser test app")
    page.click("button:has-text('Create key')")
    secret_box = page.locator("#new-key-secret")
    secret_box.wait_for()
    secret = secret_box.input_value()
    assert secret.startswith("mdk_")
    page.click("#new-key button:has-text('Copy') >> nth=0")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    assert page.locator("#keys-table tr[data-key]").count() == 1
    screenshot("devhub-key-created")

    page.reload()  # shown once: gone after a reload, only the prefix stays
    assert page.locator("#new-key-secret").count() == 0
    assert secret not in page.content() and secret[:12] in page.content()

    page.goto(f"{console.url}/hub/models/")
    card = page.locator("[data-model='llama-chat']")
    assert "Running" in card.inner_text()
    card.locator("[data-sample-tab='python']").click()
    card.locator("[data-sample-panel='python'] button:has-text('Copy')").click()
    sample = page.evaluate("navigator.clipboard.readText()")
    assert f'base_url="{console.url}/v1"' in sample and 'model="llama-chat"' in sample
    screenshot("devhub-models")

    out = io.StringIO()
    os.environ["MODELDECK_API_KEY"] = secret
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(sample, "copied_sample.py", "exec"), {})
    finally:
        del os.environ["MODELDECK_API_KEY"]
    assert out.getvalue().strip() == "You said: Hello!"

    assert flush_usage() == 1  # what beat runs every 5 s
    page.goto(f"{console.url}/hub/usage/")
    assert page.locator("#stat-requests").inner_text() == "1"
    # "Hello!" is 2 tokens in; "You said: Hello!" is 5 out.
    assert page.locator("#stat-tokens").inner_text() == "2 / 5"
    row = page.locator("#usage-table tbody tr").first
    assert (
        "llama" in row.inner_text()
        and "200" in row.inner_text()
        and secret[:12] in row.inner_text()
    )
    page.wait_for_function(
        "window.modeldeckUsageCharts && window.modeldeckUsageCharts.length === 4"
    )
    screenshot("devhub-usage")

    page.goto(f"{console.url}/hub/keys/")
    assert "ago" in page.locator("#keys-table tbody tr").first.inner_text()  # last used
    page.click("#keys-table button:has-text('Revoke')")
    page.click("#confirm-dialog [data-confirm-ok]")
    page.wait_for_selector("#keys-table .badge:has-text('revoked')")
    screenshot("devhub-key-revoked")


def test_a_long_key_name_keeps_the_revoke_button_in_view(page, tenants, console):
    from projects.keys import api_key_create

    api_key_create(user=tenants.member, organization=tenants.org, name="x" * 100)
    page.set_viewport_size({"width": 1440, "height": 900})
    sign_in(page, console, "member")
    page.goto(f"{console.url}/hub/keys/")
    name = page.locator(f"span.truncate[title='{'x' * 100}']")
    assert name.bounding_box()["width"] <= 320  # cut with an ellipsis, the full name on hover
    box = page.locator("button:has-text('Revoke')").first.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 1440, box  # not pushed out of view (was at 1,800 px)
