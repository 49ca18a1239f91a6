"""The deploy form's node-pool priority: typed one per line, reordered with the up/down buttons
(static/modeldeck/app.js), and what the buttons write is what the form posts."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from catalog.models import CatalogModel, ProfileBundle
from deployments.models import ComputePool, PoolKind
from tests.browser.conftest import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_node_pools_reorder_with_the_buttons(page, live_server, tenants, screenshot):
    ProfileBundle.objects.create(organization=tenants.org, name="vllm-test", engine="vllm",
                                 image="vllm/vllm-openai:v0.6.3", labels={ProfileBundle.ENGINE_LABEL: "vllm"})  # fmt: skip
    model = CatalogModel.objects.create(organization=tenants.org, name="Qwen", source="huggingface",
                                        repo_id="Qwen/Qwen2.5-0.5B-Instruct", revision="a" * 40)  # fmt: skip
    ComputePool.objects.create(organization=tenants.org, name="offline", kind=PoolKind.SANDBOX,
                               api_url="http://127.0.0.1:9", engine_label="vllm")  # fmt: skip
    sign_in(page, live_server, "owner")
    page.goto(f"{live_server.url}/deployments/new/?model={model.pk}")
    page.fill("#id_node_pools", "run.ai/node-pool=h100\nrun.ai/node-pool=a100\nrun.ai/node-pool=l4")
    items = page.locator("#node-pool-order li")
    expect(items).to_have_count(3)
    expect(items.nth(0)).to_contain_text("h100")
    expect(items.nth(0).locator("[data-move=up]")).to_be_disabled()
    expect(items.nth(2).locator("[data-move=down]")).to_be_disabled()
    items.nth(0).locator("[data-move=down]").click()  # h100 goes below a100
    items.nth(2).locator("[data-move=up]").click()  # l4 goes above h100
    expect(page.locator("#id_node_pools")).to_have_value("run.ai/node-pool=a100\nrun.ai/node-pool=l4\nrun.ai/node-pool=h100")
    expect(items.nth(0)).to_contain_text("a100")
    # A line that doesn't parse is refused on the field as the user leaves it (htmx validation).
    page.fill("#id_node_pools", "run.ai/node-pool")
    page.locator("#id_node_pools").blur()
    expect(page.locator("#field-node_pools .errorlist")).to_contain_text("write a node pool as key=value")
    screenshot("deploy-node-pools")
