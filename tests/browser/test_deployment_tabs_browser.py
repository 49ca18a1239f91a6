"""The deployment page's Logs and Replicas tabs against the sandbox (the engine's own lines, followed
live), and the console at a phone's width (390 px): no sideways scroll, a sidebar that folds away."""

from __future__ import annotations

import os

import pytest
from openai import OpenAI
from playwright.sync_api import expect

from catalog.models import CatalogModel, ProfileBundle
from deployments.models import ComputePool, DeploymentState, PoolKind
from deployments.services import deployment_create
from tests.browser.conftest import sign_in
from tests.browser.test_deploy_browser import status_sync  # noqa: F401 - the beat-like sync thread
from tests.conftest import TEST_OUTPUT
from tests.gateway.conftest import (  # noqa: F401 - fixtures shared with the gateway tests
    _clean_redis,
    _fast_password_hashing,
    engine,
    engine_server,
    make_key,
    start_console,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
LIVE = 30_000


@pytest.fixture
def sandbox(engine):  # noqa: F811
    """The sandbox cluster with the test's engine in the same process (its pods log its requests)."""
    from sandbox.kubelet import SandboxCluster

    cluster = SandboxCluster(ready_delay=1.0, tick=0.1, engine=engine)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def console(engine, settings, transactional_db):  # noqa: F811
    server = start_console()
    settings.GATEWAY_BASE_URL = server.url
    yield server
    server.stop()


def _deploy(tenants, sandbox, name="qwen-chat", **spec):
    bundle = ProfileBundle.objects.create(
        organization=tenants.org, name="vllm-sandbox", engine="vllm", image="vllm/vllm-openai:v0.8.5",
        labels={ProfileBundle.ENGINE_LABEL: "vllm"},
    )  # fmt: skip
    model = CatalogModel.objects.create(
        organization=tenants.org, name="Qwen2.5 0.5B Instruct", source="huggingface",
        repo_id="Qwen/Qwen2.5-0.5B-Instruct", task="text-generation",
    )  # fmt: skip
    pool = ComputePool.objects.create(
        organization=tenants.org, name="sandbox", kind=PoolKind.SANDBOX, api_url=sandbox.url, engine_label="vllm",
    )  # fmt: skip
    return deployment_create(
        user=tenants.owner, project=tenants.project, model=model, pool=pool, name=name, bundle=bundle,
        spec={"served_model_name": name, "resources": {"cpu": "2", "memory": "8Gi", "gpus": 1}, **spec},
    )  # fmt: skip


def test_logs_tab_shows_the_sandbox_engines_lines_and_follows_them(
    page, screenshot, tenants, sandbox, console, status_sync  # noqa: F811
):
    deployment = _deploy(tenants, sandbox)
    sign_in(page, console, "member")
    page.goto(f"{console.url}/deployments/{deployment.pk}/")
    expect(page.locator(f"#head-state-{deployment.pk}")).to_have_text("Running", timeout=LIVE)
    deployment.refresh_from_db()
    assert deployment.state == DeploymentState.RUNNING

    page.click("nav.tabs a:has-text('Replicas')")
    row = page.locator("#replicas-table tbody tr[data-role='serving']")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("sandbox-gpu-")
    expect(row).to_contain_text("NVIDIA-L4")
    expect(row).to_contain_text("1/1")
    pod_name = row.get_attribute("data-pod")
    screenshot("deployment-replicas")

    page.click("nav.tabs a:has-text('Logs')")
    log = page.locator("#log-text")
    expect(log).to_contain_text(f"pod={pod_name}")
    expect(log).to_contain_text("served_model_name=qwen-chat")
    expect(log).to_contain_text("Uvicorn running on http://0.0.0.0:8000")
    expect(page.locator("select[name='pod']")).to_have_value(pod_name)
    assert page.locator("#log-follow").is_checked()

    # A call through the gateway: the followed log shows the engine answering it, no reload.
    client = OpenAI(base_url=console.url + "/v1", api_key=make_key(tenants.member, tenants.org))
    client.chat.completions.create(model="qwen-chat", messages=[{"role": "user", "content": "hi"}])
    expect(log).to_contain_text('"POST /v1/chat/completions HTTP/1.1" 200 OK model=qwen-chat', timeout=10_000)
    screenshot("deployment-logs")

    # Unticking Follow stops the polling; fewer lines re-read the tail.
    page.uncheck("#log-follow")
    expect(page.locator("#log-text[hx-trigger]")).to_have_count(0)
    page.select_option("select[name='tail']", "50")
    expect(page.locator("#log-text")).to_contain_text("qwen-chat")


def test_deployments_page_at_390px_has_no_sideways_scroll(browser, tenants, live_server):
    from deployments.models import ModelDeployment
    from tests.gateway.conftest import make_deployment

    long = make_deployment(tenants.project, "a-deployment-with-a-really-long-name-that-goes-on1")
    make_deployment(tenants.project, "short")
    assert ModelDeployment.objects.count() == 2
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    page = context.new_page()
    try:
        sign_in(page, live_server, "owner")
        for path in ("/deployments/", "/", "/hub/models/", "/catalog/", f"/deployments/{long.pk}/",
                     f"/deployments/{long.pk}/?tab=logs", f"/deployments/{long.pk}/?tab=metrics",
                     f"/hub/models/{long.pk}/playground/", "/hub/usage/", "/hub/keys/", "/projects/", "/pools/"):
            page.goto(f"{live_server.url}{path}")
            overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            widest = page.evaluate(
                """() => Array.from(document.querySelectorAll('body *'))
                   .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
                   .slice(0, 5).map(e => e.tagName + '#' + e.id + '.' + e.className)"""
            )
            assert overflow <= 0, f"{path} scrolls sideways by {overflow}px: {widest}"
        page.goto(f"{live_server.url}/deployments/")
        # The sidebar is folded away; the menu button opens it over the page and it closes again.
        nav = page.locator(".sidebar")
        assert not nav.is_visible() or nav.bounding_box()["x"] + nav.bounding_box()["width"] <= 0
        long_name = page.locator("a[title='a-deployment-with-a-really-long-name-that-goes-on1']")
        expect(long_name.first).to_be_visible()
        box = long_name.first.bounding_box()
        assert box["x"] + box["width"] <= 390
        # The page heading is light on the dark bar or dark on the light page: never dark on dark.
        heading_color = page.evaluate("getComputedStyle(document.querySelector('.content h1')).color")
        assert heading_color in {"rgb(27, 32, 48)"}, heading_color
        screenshot_path = os.path.join(TEST_OUTPUT, "deployments-390px.png")
        page.screenshot(path=screenshot_path, full_page=True)
        page.click("#nav-toggle")
        expect(page.locator(".sidebar")).to_be_visible()
        expect(page.locator(".sidebar a:has-text('Model Deployments')")).to_be_in_viewport()
        page.wait_for_timeout(400)  # the menu slides in
        page.screenshot(path=screenshot_path.replace(".png", "-menu.png"))
        page.mouse.click(380, 400)  # the backdrop beside the open menu closes it
        expect(page.locator(".sidebar")).to_be_hidden()
        page.click("#nav-toggle")
        page.keyboard.press("Escape")
        expect(page.locator(".sidebar")).to_be_hidden()
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0
    finally:
        context.close()


def test_logs_tab_at_390px_keeps_its_pod_picker_inside_the_card(
    browser, tenants, sandbox, console, status_sync  # noqa: F811
):
    """QA pass: the Pod select (a pod's full name · revision · status) stuck out of the Logs card and
    the page scrolled sideways on a phone; the select now shrinks within its label."""
    deployment = _deploy(tenants, sandbox)
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    page = context.new_page()
    try:
        sign_in(page, console, "member")
        page.goto(f"{console.url}/deployments/{deployment.pk}/")
        expect(page.locator(f"#head-state-{deployment.pk}")).to_have_text("Running", timeout=LIVE)
        page.goto(f"{console.url}/deployments/{deployment.pk}/?tab=logs")
        expect(page.locator("#log-text")).to_contain_text("Uvicorn running")
        pod = page.locator("select[name='pod']")
        expect(pod).to_be_visible()
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        card = page.locator("#log-panel").evaluate("e => e.closest('.card').getBoundingClientRect().right")
        assert overflow <= 0, f"the Logs tab scrolls sideways by {overflow}px"
        assert pod.bounding_box()["x"] + pod.bounding_box()["width"] <= card
        page.screenshot(path=os.path.join(TEST_OUTPUT, "deployment-logs-390px.png"), full_page=True)
    finally:
        context.close()
