"""Playground in a real browser: a conversation streams through the gateway with a short-lived
key, the stats show, "show code" gives the same request, and the call shows on Usage."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from gateway.models import UsageRecord
from gateway.tasks import flush_usage
from projects.keys import PLAYGROUND_KEY_NAME
from projects.models import APIKey
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
    server = start_console()
    settings.GATEWAY_BASE_URL = server.url
    yield server
    server.stop()


def test_playground_conversation_streams_and_its_usage_appears(
    page, screenshot, tenants, console, engine, monkeypatch  # noqa: F811
):
    deployment = make_deployment(
        tenants.project, "llama", served_model_name="llama-chat",
        pricing={"currency": "USD", "input_per_million": "2.00", "output_per_million": "4.00"},
    )  # fmt: skip
    monkeypatch.setattr(engine, "token_ms", 40)  # slow enough that the answer arrives in pieces
    sign_in(page, console, "member")
    page.goto(f"{console.url}/hub/models/")
    page.locator("[data-model='llama-chat'] a:has-text('Playground')").click()
    page.wait_for_url(f"{console.url}/hub/models/{deployment.pk}/playground/")

    page.fill("#pg-system", "Be brief.")
    page.fill("#pg-max-tokens", "64")
    page.fill("#pg-input", "Tell me about streaming please")
    # Record how the assistant's text grows: streaming shows it in several steps.
    page.evaluate(
        """() => { window.pgSeen = new Set();
        new MutationObserver(() => document.querySelectorAll('.pg-assistant .pg-text')
          .forEach(t => window.pgSeen.add(t.textContent))).observe(
          document.getElementById('pg-messages'), {subtree: true, childList: true, characterData: true}); }"""
    )
    page.click("#pg-send")
    page.wait_for_selector(".pg-assistant[data-done='1']")
    reply = page.locator(".pg-assistant .pg-text").inner_text()
    assert reply.startswith("You said:") and "streaming" in reply
    partial = page.evaluate("Array.from(window.pgSeen).filter(t => t && t !== '…')")
    assert len(partial) >= 3, partial  # the answer grew piece by piece
    assert int(page.locator("#pg-completion-tokens").inner_text()) > 0
    assert int(page.locator("#pg-prompt-tokens").inner_text()) > 0
    assert page.locator("#pg-ttft").inner_text().endswith("ms") or page.locator("#pg-ttft").inner_text().endswith(" s")
    assert page.locator("#pg-latency").inner_text() != "—"

    # The engine got the settings, the system prompt first.
    sent = engine.requests[-1].body
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["max_tokens"] == 64 and sent["stream"] is True

    # A second turn carries the conversation.
    page.fill("#pg-input", "And again")
    page.press("#pg-input", "Enter")
    page.wait_for_selector(".pg-assistant[data-done='1'] >> nth=1")
    assert [m["role"] for m in engine.requests[-1].body["messages"]] == ["system", "user", "assistant", "user"]

    page.click("#pg-show-code")
    curl = page.locator("#pg-code-curl").inner_text()
    assert f"{console.url}/v1/chat/completions" in curl and '"llama-chat"' in curl and "$MODELDECK_API_KEY" in curl
    page.locator("[data-code-tab='python']").click()
    python = page.locator("#pg-code-python").inner_text()
    assert 'model="llama-chat"' in python and "max_tokens=64" in python and "stream=True" in python
    screenshot("playground-conversation")

    # The key the page used: the member's, hashed, limited to this deployment, expiring soon;
    # its secret is nowhere in the page's HTML.
    keys = APIKey.objects.filter(user=tenants.member, name=PLAYGROUND_KEY_NAME + "llama-chat")
    live = [k for k in keys if k.revoked_at is None]
    assert len(live) == 1 and list(live[0].deployments.all()) == [deployment]
    assert live[0].expires_at is not None
    assert "mdk_" not in page.content()

    assert flush_usage() == 2
    record = UsageRecord.objects.order_by("-created_at").first()
    assert record.api_key_id == live[0].pk and record.user_id == tenants.member.pk and record.status_code == 200
    page.goto(f"{console.url}/hub/usage/")
    assert page.locator("#stat-requests").inner_text() == "2"
    assert "llama" in page.locator("#usage-table tbody tr").first.inner_text()
    screenshot("playground-usage")

    # The deployment's Metrics tab counts the two calls under the revision that served them.
    assert {r.revision_id for r in UsageRecord.objects.all()} == {deployment.serving_revision_id}
    page.goto(f"{console.url}/deployments/{deployment.pk}/?tab=metrics")
    assert "r1: 2 requests, 0 errors" in page.locator("#metric-totals").inner_text()
    page.wait_for_function("window.modeldeckMetricCharts && window.modeldeckMetricCharts.length === 5")
    screenshot("deployment-metrics")


def test_playground_refuses_viewers_and_outsiders(page, tenants, console):
    deployment = make_deployment(tenants.project, "llama", served_model_name="llama-chat")
    sign_in(page, console, "viewer")
    page.goto(f"{console.url}/hub/models/{deployment.pk}/playground/")
    assert "Viewers cannot use the playground" in page.content()
    assert page.locator("#pg-send").count() == 0
    page.context.clear_cookies()
    sign_in(page, console, "outsider")
    response = page.goto(f"{console.url}/hub/models/{deployment.pk}/playground/")
    assert response.status == 404


def test_an_out_of_range_max_tokens_is_named_not_replaced(page, tenants, console, engine):  # noqa: F811
    deployment = make_deployment(tenants.project, "llama", served_model_name="llama-chat")
    sign_in(page, console, "member")
    page.goto(f"{console.url}/hub/models/{deployment.pk}/playground/")
    page.fill("#pg-max-tokens", "-10")
    page.fill("#pg-input", "hello there")
    page.click("#pg-send")
    error = page.locator("#pg-error")
    error.wait_for(state="visible")
    assert "Max tokens: a whole number from 1 to" in error.inner_text()
    assert page.input_value("#pg-input") == "hello there"  # nothing sent, nothing lost
    assert page.locator(".pg-user").count() == 0 and not engine.requests
    page.fill("#pg-max-tokens", "16")
    page.click("#pg-send")
    page.wait_for_selector(".pg-assistant[data-done='1']")
    assert engine.requests and error.is_hidden()


def test_a_refused_call_shows_the_gateways_message_and_keeps_the_prompt(page, screenshot, tenants, console, engine):  # noqa: F811
    deployment = make_deployment(
        tenants.project, "llama", served_model_name="llama-chat", rate_limits={"user": {"rpm": 1, "tpm": None}}
    )
    sign_in(page, console, "member")
    page.goto(f"{console.url}/hub/models/{deployment.pk}/playground/")
    page.fill("#pg-input", "first")
    page.click("#pg-send")
    page.wait_for_selector(".pg-assistant[data-done='1']")
    page.fill("#pg-input", "a second question over the limit")
    page.click("#pg-send")
    # Said in the output area, where the answer would have been, in the API's words.
    refused = page.locator("#pg-messages .pg-refused")
    refused.wait_for(state="visible")
    text = refused.inner_text()
    assert "Rate limit reached for llama-chat" in text and "HTTP 429" in text, text
    # The gateway's Markdown `llama-chat` shows as code, not with its backticks.
    assert "`" not in text and refused.locator(".pg-text code").all_inner_texts() == ["llama-chat"]
    assert page.input_value("#pg-input") == "a second question over the limit"  # nothing lost
    assert page.locator(".pg-user").count() == 1  # the refused turn is not in the conversation
    assert len(engine.requests) == 1
    page.set_viewport_size({"width": 1280, "height": 900})
    screenshot("playground-refused")
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(400)  # the sidebar slides away at a phone's width
    page.evaluate("window.scrollTo(0, 0)")
    # On a phone the chat comes first, its box within the first screen; the settings after it.
    chat, settings_card = page.locator(".playground-chat").bounding_box(), page.locator(".playground-settings").bounding_box()
    assert chat["y"] < settings_card["y"]
    assert page.locator("#pg-input").bounding_box()["y"] < 844
    screenshot("playground-refused-390px")
    page.screenshot(path=screenshot("playground-refused-390px").replace(".png", "-viewport.png"))
    page.set_viewport_size({"width": 1280, "height": 900})
    page.click("#pg-clear")
    page.fill("#pg-max-tokens", "16")
    with page.expect_response("**/chat/completions") as answer:
        page.click("#pg-send")
    assert answer.value.status == 429  # still limited: said again, the box still holds the prompt
    expect(page.locator("#pg-messages .pg-refused")).to_have_count(1)
    assert page.input_value("#pg-input") == "a second question over the limit"
