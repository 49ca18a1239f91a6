"""A person deploys the sandbox model from its catalog page, watches it reach Running live, then deactivates and activates it."""

from __future__ import annotations

import os
import threading

import pytest
from django.db import connection
from playwright.sync_api import expect

from catalog.models import CatalogModel, MaaSMapping, ProfileBundle
from deployments.models import ComputePool, DeploymentState, ModelDeployment, PoolKind
from tests.browser.conftest import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LIVE = 30_000  # ms: the simulated pods need a few seconds to pull and become ready


@pytest.fixture
def sandbox_cluster():
    """The sandbox emulator and simulated kubelet, as `python -m sandbox` runs them."""
    from sandbox.kubelet import SandboxCluster

    cluster = SandboxCluster(ready_delay=1.5, tick=0.1)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def status_sync():
    """Production runs deployments.sync_status from beat every 5 s; here a thread every 0.5 s.

    The pages only read rows, so this thread is the only writer of deployment states.
    """
    from deployments.tasks import sync_status

    stop = threading.Event()

    def loop() -> None:
        try:
            while not stop.wait(0.5):
                try:
                    sync_status()
                except Exception:  # a sync racing the test's own writes retries next round
                    pass
        finally:
            connection.close()

    thread = threading.Thread(target=loop, name="status-sync", daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=10)


@pytest.fixture
def sandbox_catalog(tenants, sandbox_cluster):
    bundle = ProfileBundle.objects.create(
        organization=tenants.org, name="vllm-sandbox", engine="vllm", image="vllm/vllm-openai:v0.6.3",
        labels={ProfileBundle.ENGINE_LABEL: "vllm"}, description="vLLM for the sandbox pool.",
    )  # fmt: skip
    MaaSMapping.objects.create(
        project=tenants.project,
        position=0,
        source="huggingface",
        task="text-generation",
        bundle=bundle,
    )
    model = CatalogModel.objects.create(
        organization=tenants.org, name="Qwen2.5 0.5B Instruct", source="huggingface",
        repo_id="Qwen/Qwen2.5-0.5B-Instruct", revision="a8b602d9dafd3a75d382e62757d83d89fca3be54",
        task="text-generation", license="apache-2.0", parameters=494_000_000, dtype="bf16",
        config={"num_hidden_layers": 24, "num_key_value_heads": 2, "num_attention_heads": 14, "hidden_size": 896,
                "max_position_embeddings": 32768},
    )  # fmt: skip
    pool = ComputePool.objects.create(
        organization=tenants.org, name="sandbox", kind=PoolKind.SANDBOX, api_url=sandbox_cluster.url,
        engine_label="vllm", region="local", description="The built-in simulated cluster.",
    )  # fmt: skip
    return model, bundle, pool


def test_deploy_from_the_catalog_watch_it_run_then_deactivate_and_activate(
    page, live_server, tenants, operator, sandbox_catalog, status_sync, screenshot
):
    from deployments.services import pool_test_connection

    model, bundle, pool = sandbox_catalog
    pool_test_connection(user=operator, pool=pool)  # testing a pool is the platform operator's act
    sign_in(page, live_server, "owner")

    # The pool first: its tested connection shows the simulated GPUs.
    page.goto(f"{live_server.url}/pools/{pool.pk}/")
    expect(page.locator("h1")).to_contain_text("Sandbox (simulated)")
    expect(page.locator("#pool-check")).to_contain_text("Connected")
    expect(page.locator("#pool-nodes")).to_contain_text("NVIDIA")
    screenshot("deploy-pool-detail")

    # Catalog page → Deploy: the model is chosen and locked, the MaaS rule picks the bundle.
    page.goto(f"{live_server.url}{model.get_absolute_url()}")
    page.click("#deploy-button")
    expect(page.locator("#model-locked")).to_contain_text("Qwen2.5 0.5B Instruct")
    expect(page.locator("#bundle-message")).to_contain_text(f"Bundle {bundle} chosen by rule 1")
    expect(page.locator("#estimate-panel")).to_contain_text("GPU estimate")

    # A field error appears as the user types, and nothing typed is lost.
    page.fill("#id_name", "qwen-chat")
    page.fill("#id_description", "Chat assistant for the research team")
    page.fill("#id_memory", "8 gigs")
    page.locator("#id_memory").blur()
    expect(page.locator("#field-memory .errorlist")).to_contain_text("16Gi or 512Mi")
    expect(page.locator("#id_description")).to_have_value("Chat assistant for the research team")
    page.fill("#id_memory", "8Gi")
    # No GPU for a GPU build of vLLM: refused on the field as the user types (the spec rule,
    # engines' real images), then cleared when fixed, with the estimate saying 1 GPU is enough.
    page.fill("#id_gpus", "0")
    page.locator("#id_gpus").blur()
    expect(page.locator("#field-gpus .errorlist")).to_contain_text("at least one GPU")
    expect(page.locator(".htmx-request")).to_have_count(0)
    page.fill("#id_gpus", "1")
    page.locator("#id_gpus").blur()
    expect(page.locator("#field-gpus .errorlist li")).to_have_count(0)
    expect(page.locator("#estimate-warning")).to_have_count(0)
    expect(page.locator("#estimate-panel")).to_contain_text("are enough")
    expect(page.locator(".htmx-request")).to_have_count(0)
    page.fill("#id_price_input", "0.10")
    page.fill("#id_price_output", "0.30")
    page.fill("#id_rl_user_rpm", "120")
    page.locator("#id_rl_user_rpm").blur()
    expect(page.locator("#field-memory .errorlist li")).to_have_count(0)
    expect(page.locator(".htmx-request")).to_have_count(0)
    expect(page.locator("#id_gpus")).to_have_value("1")
    page.evaluate("window.scrollTo(0, 0)")
    screenshot("deploy-form")

    page.click("#deploy-submit")
    expect(page.locator("h1")).to_contain_text("qwen-chat")
    deployment = ModelDeployment.objects.get(name="qwen-chat")
    assert deployment.bundle == bundle and deployment.spec()["pricing"][
        "output_per_million"
    ].startswith("0.3")
    expect(page.locator(".messages")).to_contain_text("being pushed")
    screenshot("deploy-detail-pending")

    # Running, without reloading the page: only the polled fragment changes.
    page.evaluate("window.__sameDocument = 'yes'")
    expect(page.locator(f"#head-state-{deployment.pk}")).to_have_text("Running", timeout=LIVE)
    expect(page.locator("#state-reason")).not_to_be_empty()
    assert page.evaluate("window.__sameDocument") == "yes"
    expect(page.locator("#served-name")).to_have_text("Qwen/Qwen2.5-0.5B-Instruct")
    screenshot("deploy-detail-overview")

    for tab, marker in [
        ("deployment", "Revision history"),
        ("events", "Reason"),
        ("manifests", "kind: Deployment"),
    ]:
        page.click(f".tabs >> text={tab.capitalize()}")
        expect(page.locator(".content")).to_contain_text(marker)
        screenshot(f"deploy-detail-{tab}")

    page.click("nav >> text=Model Deployments")
    expect(page.locator("#deployments-table")).to_contain_text("qwen-chat")
    expect(page.locator(f"#state-{deployment.pk}")).to_have_text("Running")
    # The state filter reloads the list from the server, with the filter in the URL.
    page.select_option("select[name='state']", "failed")
    expect(page.locator("#deployments-table")).to_contain_text("No deployment matches")
    assert "state=failed" in page.url
    page.select_option("select[name='state']", "running")
    expect(page.locator("#deployments-table")).to_contain_text("qwen-chat")
    screenshot("deploy-list")

    # Deactivate (confirmed in a dialog): GPUs are released.
    page.click("#deployments-table >> text=qwen-chat")
    page.click("#deactivate-button")
    expect(page.locator("#confirm-dialog")).to_be_visible()
    expect(page.locator("#confirm-dialog")).to_contain_text("GPUs released")
    page.click("#confirm-dialog [data-confirm-ok]")
    expect(page.locator(f"#head-state-{deployment.pk}")).to_have_text("Deactivated", timeout=LIVE)
    assert tenants.project.gpu_used() == 0
    screenshot("deploy-detail-deactivated")

    # Activate: back to Running, watched live again.
    page.click("#activate-button")
    page.click("#confirm-dialog [data-confirm-ok]")
    expect(page.locator(".messages")).to_contain_text("activated")
    expect(page.locator(f"#head-state-{deployment.pk}")).to_have_text("Running", timeout=LIVE)
    deployment.refresh_from_db()
    assert deployment.state == DeploymentState.RUNNING and tenants.project.gpu_used() == 1
    path = screenshot("deploy-detail-reactivated")
    assert os.path.getsize(path) > 10_000

    # Update: the model is locked; a changed spec becomes revision 2, compared with revision 1.
    page.click("#deployment-actions >> text=Update")
    expect(page.locator("#model-locked")).to_contain_text(
        "create a new deployment to change the model"
    )
    page.fill("#id_context_length", "8192")
    page.fill("#id_reason", "Longer context for RAG")
    page.evaluate("window.scrollTo(0, 0)")
    screenshot("deploy-edit-form")
    page.click("#deploy-submit")
    expect(page.locator(".messages")).to_contain_text("Revision 2")
    page.click(".tabs >> text=Deployment")
    expect(page.locator("#revisions-table")).to_contain_text("Longer context for RAG")
    expect(page.locator("#diff-table")).to_contain_text("context_length")
    expect(page.locator("#diff-table")).to_contain_text("8192")
    screenshot("deploy-detail-revisions")


def test_register_a_sandbox_pool_and_test_its_connection(
    page, live_server, tenants, operator, sandbox_cluster, screenshot
):
    sign_in(page, live_server, "operator")  # registering pools is a platform operator's act
    page.click("nav >> text=Compute Pools")
    expect(page.locator(".empty")).to_contain_text("No compute pools yet")
    page.click("text=Register a pool")
    expect(page.locator("#field-kubeconfig")).to_be_visible()
    page.select_option("#id_kind", "sandbox")
    # Only the fields of the chosen connection kind are shown.
    expect(page.locator("#field-kubeconfig")).to_be_hidden()
    expect(page.locator("#field-api_url")).to_be_visible()
    page.fill("#id_name", "laptop sandbox")
    page.fill("#id_engine_label", "vLLM!")
    page.locator("#id_engine_label").blur()
    expect(page.locator("#field-engine_label .errorlist")).to_contain_text("lowercase")
    page.fill("#id_engine_label", "vllm")
    page.fill("#id_api_url", sandbox_cluster.url)
    page.fill("#id_region", "local")
    screenshot("pool-form")
    page.click("button:has-text('Register pool')")
    expect(page.locator("h1")).to_contain_text("laptop sandbox")
    expect(page.locator("h1")).to_contain_text("Sandbox (simulated)")
    page.click("button:has-text('Test connection')")
    expect(page.locator("#pool-nodes")).to_contain_text("sandbox-gpu-0")
    assert ComputePool.objects.get(name="laptop sandbox").reachable is True
    page.click("nav >> text=Compute Pools")
    expect(page.locator("#pools-table")).to_contain_text("Connected")
    expect(page.locator("#pools-table")).to_contain_text("Sandbox (simulated)")
    screenshot("pool-list")

    # Endpoints: a path on the gateway, within a project.
    page.goto(f"{live_server.url}/endpoints/")
    page.fill("#id_name", "chat")
    page.fill("#id_path", "/research/chat")
    page.click("button:has-text('Create endpoint')")
    expect(page.locator("#endpoints-table")).to_contain_text("/research/chat")
    screenshot("endpoints")
