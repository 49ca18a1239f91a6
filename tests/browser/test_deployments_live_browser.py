"""The deployments list follows changes made elsewhere, without a reload: a Running row turns
Deactivated when the deployment is deactivated through the service (as the REST API does), and
Running again when it is activated; a deployment created elsewhere appears in its place on the
page, as the page sorts."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from deployments.services import deployment_activate, deployment_create, deployment_deactivate
from tests.browser.conftest import sign_in
from tests.browser.test_deploy_browser import (  # noqa: F401 - the sandbox and the beat-like sync thread
    sandbox_catalog,
    sandbox_cluster,
    status_sync,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
LIVE = 30_000  # ms: the simulated pods need a few seconds to become ready
SLOW_POLL = 20_000  # ms: with every row final the list polls every 15 s


def test_a_running_row_turns_deactivated_without_a_reload(
    page, live_server, tenants, sandbox_catalog, status_sync, screenshot  # noqa: F811
):
    model, bundle, pool = sandbox_catalog
    deployment = deployment_create(
        user=tenants.owner, project=tenants.project, model=model, pool=pool, bundle=bundle,
        name="qwen-chat", spec={"resources": {"cpu": "2", "memory": "8Gi", "gpus": 1}},
    )  # fmt: skip
    sign_in(page, live_server, "owner")
    page.goto(f"{live_server.url}/deployments/")
    page.evaluate("window.__sameDocument = 'yes'")
    row = page.locator(f"#deployment-row-{deployment.pk}")
    expect(page.locator(f"#state-{deployment.pk}")).to_have_text("Running", timeout=LIVE)
    expect(page.locator("#deployment-stats")).to_contain_text("0 deactivated", timeout=LIVE)
    screenshot("live-list-running")

    # Every row is final now; the page still watches them, every 15 s. Deactivated by someone else:
    expect(page.locator("#status-poll")).to_have_attribute("hx-trigger", "every 15s", timeout=LIVE)
    deployment_deactivate(user=tenants.owner, deployment=deployment)
    expect(page.locator(f"#state-{deployment.pk}")).to_have_text("Deactivated", timeout=SLOW_POLL)
    expect(row).to_contain_text("GPUs released")
    expect(row.locator("td.num").first).to_have_text("0")  # the GPUs column
    expect(page.locator("#deployment-stats")).to_contain_text("1 deactivated")
    assert page.evaluate("window.__sameDocument") == "yes"
    screenshot("live-list-deactivated")

    # Deactivated is final too: activated elsewhere, the row follows it back to Running.
    deployment_activate(user=tenants.owner, deployment=deployment)
    expect(page.locator(f"#state-{deployment.pk}")).to_have_text("Running", timeout=LIVE)
    expect(page.locator("#deployment-stats")).to_contain_text("0 deactivated")
    assert page.evaluate("window.__sameDocument") == "yes"


def test_a_deployment_created_elsewhere_appears_without_a_reload(
    page, live_server, tenants, sandbox_catalog, status_sync, screenshot  # noqa: F811
):
    model, bundle, pool = sandbox_catalog
    spec = {"resources": {"cpu": "2", "memory": "8Gi", "gpus": 1}}
    first = deployment_create(user=tenants.owner, project=tenants.project, model=model, pool=pool, bundle=bundle,
                              name="qwen-chat", spec=spec)  # fmt: skip
    sign_in(page, live_server, "owner")
    page.goto(f"{live_server.url}/deployments/?sort=name")
    page.evaluate("window.__sameDocument = 'yes'")
    expect(page.locator(f"#state-{first.pk}")).to_have_text("Running", timeout=LIVE)
    expect(page.locator("#status-poll")).to_have_attribute("hx-trigger", "every 15s", timeout=LIVE)

    # Created elsewhere (another tab, the CLI, the API): it shows up, first by name, and is followed.
    added = deployment_create(user=tenants.owner, project=tenants.project, model=model, pool=pool, bundle=bundle,
                              name="aaa-embed", spec={**spec, "served_model_name": "aaa-embed"})  # fmt: skip
    expect(page.locator("#deployments-body tr").first).to_have_id(f"deployment-row-{added.pk}", timeout=SLOW_POLL)
    expect(page.locator("#deployments-body tr")).to_have_count(2)
    expect(page.locator("#deployments-pager")).to_contain_text("1–2 of 2")
    expect(page.locator("#deployment-stats")).to_contain_text("Deployments2")
    expect(page.locator(f"#state-{added.pk}")).to_have_text("Running", timeout=LIVE)
    assert page.evaluate("window.__sameDocument") == "yes" and page.url.endswith("/deployments/?sort=name")
    screenshot("live-list-added-elsewhere")
