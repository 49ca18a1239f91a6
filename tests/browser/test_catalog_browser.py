"""A person searches the Hub from the catalog, opens a model, adds it, and reads its GPU memory estimate."""
# ruff: noqa: F811 - pytest fixtures are imported by name and then requested as arguments

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from catalog.models import CatalogModel
from tests.browser.conftest import sign_in
from tests.catalog.catalog_fixtures import alice_project, builtin_bundles, hub_env  # noqa: F401 - fixtures
from tests.catalog.conftest import _hub_server, hub_snapshot, offline_hub  # noqa: F401 - fixtures

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

REPO = "Qwen/Qwen2.5-0.5B-Instruct"


def test_search_open_add_and_estimate(
    page, live_server, tenants, hub_env, alice_project, hub_snapshot, screenshot
):
    sign_in(page, live_server, "owner")
    page.click("nav >> text=Catalog")
    expect(page.locator(".empty h3")).to_have_text("The catalog is empty")
    page.click("text=Add from Hugging Face")

    # Search as you type: htmx asks the (offline) Hub and swaps the results in.
    page.fill("#id_q", "qwen2.5")
    results = page.locator("#hub-table")
    expect(results).to_contain_text(REPO)
    expect(results).not_to_contain_text("meta-llama/Llama-3.1-8B-Instruct")
    # Each filter re-asks the Hub at once: no Qwen 2.5 is a sentence-transformers model.
    page.select_option("#id_library", "sentence-transformers")
    expect(page.locator("#hub-results")).to_contain_text("No model on the Hub matches")
    page.select_option("#id_library", "")
    page.select_option("#id_task", "text-generation")
    expect(results).to_contain_text("Qwen/Qwen2.5-7B-Instruct")
    assert (
        "task=text-generation" in page.url
    )  # the search is in the address bar, to share or reload
    screenshot("catalog-hub-search")

    page.click(f"#hub-table >> text={REPO}")
    expect(page.locator("#hub-facts")).to_contain_text("494,032,768")
    expect(page.locator("#hub-facts")).to_contain_text("apache-2.0")
    screenshot("catalog-hub-model")

    page.fill("#id_name", "qwen-demo")
    page.click("#add-to-catalog")
    expect(page.locator("h1")).to_have_text("qwen-demo")
    expect(page.locator(".messages")).to_contain_text("pinned to 354332910dcc")
    expect(page.locator("#pinned-revision")).to_have_text(hub_snapshot[REPO]["sha"])
    model = CatalogModel.objects.get(name="qwen-demo")
    assert model.revision == hub_snapshot[REPO]["sha"]

    # The estimate is on the page and recalculates (htmx) when the GPU type and load change.
    expect(page.locator('[data-estimate="weights"]')).to_have_text("0.9 GiB")
    page.fill("#id_context_length", "32768")
    page.fill("#id_concurrency", "16")
    page.select_option("#id_gpu_type", "T4")
    # 12 KiB/token × 32768 × 16 = 6 GiB (6.4 GB) of KV cache: with the weights it fits one T4
    expect(page.locator('[data-estimate="kv"]')).to_have_text("6.0 GiB")
    expect(page.locator('[data-estimate="gpus"]')).to_contain_text("1 × NVIDIA T4 16GB")
    screenshot("catalog-model-estimate")


def test_maas_rules_are_added_ordered_and_tried(page, live_server, tenants, screenshot):
    from catalog.demo import model_fields_from_snapshot
    from sandbox.offline_hub import HUB_SNAPSHOT


    CatalogModel.objects.create(
        organization=tenants.org,
        name="bge-large",
        source="huggingface",
        **model_fields_from_snapshot("BAAI/bge-large-en-v1.5", HUB_SNAPSHOT),
    )
    sign_in(page, live_server, "owner")
    page.goto(f"{live_server.url}/catalog/")
    page.click(".tabs >> text=MaaS mappings")
    expect(page.locator(".empty h3")).to_have_text("No rules yet")

    page.select_option("#id_source", "huggingface")
    page.select_option("#id_task", "text-generation")
    page.select_option("#id_bundle", label="vllm (vLLM) · built-in")
    page.click("button:has-text('Add rule at the end')")
    expect(page.locator("#rules-table")).to_contain_text("vllm")
    page.select_option("#id_source", "huggingface")
    page.select_option("#id_bundle", label="tei (Text Embeddings Inference) · built-in")
    page.click("button:has-text('Add rule at the end')")
    rows = page.locator("#rules-table tbody tr")
    expect(rows).to_have_count(2)

    # The embedding model falls through rule 1 (task) and lands on rule 2.
    page.select_option("select[name=model]", label="bge-large (Hugging Face)")
    expect(page.locator("#resolution-message")).to_contain_text("Rule 2")
    expect(page.locator("#resolution")).to_contain_text(
        "task is feature-extraction, the rule wants text-generation"
    )

    # Moving rule 2 up makes it the first; the confirm dialog guards deletion.
    page.click("button[aria-label='Move rule 2 up']")
    expect(rows.nth(0)).to_contain_text("tei")
    screenshot("catalog-maas-mappings")
    page.click("#rules-table tbody tr:nth-child(2) button:has-text('Delete')")
    expect(page.locator("#confirm-dialog")).to_be_visible()
    page.click("#confirm-dialog [data-confirm-ok]")
    expect(rows).to_have_count(1)

    page.click(".tabs >> text=Profile Bundles")
    expect(page.locator("#bundles-table")).to_contain_text("vllm/vllm-openai:")
    screenshot("catalog-bundles")
