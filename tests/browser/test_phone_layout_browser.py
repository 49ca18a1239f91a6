"""Code samples and wide tables on a desktop (1280 px) and a phone (390 px): a long curl line wraps
inside its card, never cut off or widening the page (QA audit, N7); the audit log's rows stack as
cards on a phone and every other wide table scrolls inside its own card (QA audit, N15)."""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import expect

from deployments.models import ComputePool, PoolKind, Revision
from projects.keys import api_key_create
from projects.services import api_key_budget_set
from sharing.audit import audit_record
from tests.browser.conftest import WIDTHS, sign_in
from tests.conftest import TEST_OUTPUT
from tests.gateway.conftest import make_deployment

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LONG_NAME = "a-deployment-with-a-really-long-name-that-goes-on1"

# Each visible sample: its lines all visible (no part hidden past the right edge) and within its card.
SAMPLES = """(selector) => Array.from(document.querySelectorAll(selector)).filter(p => p.offsetParent).map(p => {
  const box = p.getBoundingClientRect(), card = p.closest('.card').getBoundingClientRect();
  return {id: p.id, hidden: p.scrollWidth - p.clientWidth, outside: Math.round(box.right - card.right),
          text: p.textContent};
})"""
PAGE_OVERFLOW = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
# Every table either fits the viewport or sits in a box that scrolls it sideways and itself fits.
TABLES_OUT = """() => { const vw = document.documentElement.clientWidth;
  return Array.from(document.querySelectorAll('table')).filter(t => t.offsetParent).filter(t => {
    let box = t;
    for (let e = t.parentElement; e; e = e.parentElement) {
      if (['auto', 'scroll'].includes(getComputedStyle(e).overflowX)) { box = e; break; }
    }
    return box.getBoundingClientRect().right > vw + 1;
  }).map(t => t.id || t.className); }"""


def _shot(page, name: str) -> None:
    page.screenshot(path=os.path.join(TEST_OUTPUT, f"{name}.png"), full_page=True)


def _assert_samples_readable(page, selector: str, where: str) -> None:
    samples = page.evaluate(SAMPLES, selector)
    assert samples, f"no sample on {where}"
    for sample in samples:
        assert sample["hidden"] <= 0, f"{where}: {sample['id']} hides {sample['hidden']} px of its lines"
        assert sample["outside"] <= 0, f"{where}: {sample['id']} sticks out of its card"
        assert LONG_NAME in sample["text"]  # wrapped on screen, the text itself unchanged
    assert page.evaluate(PAGE_OVERFLOW) <= 0, f"{where} scrolls sideways"


@pytest.mark.parametrize("kind", ["desktop", "phone"])
def test_curl_samples_wrap_inside_their_card(phone_and_desktop, tenants, live_server, kind):
    deployment = make_deployment(tenants.project, LONG_NAME)
    page = phone_and_desktop(kind)
    sign_in(page, live_server, "member")

    page.goto(f"{live_server.url}/deployments/{deployment.pk}/")
    _assert_samples_readable(page, "#curl-sample", "deployment overview")
    _shot(page, f"sample-deployment-{kind}")

    page.goto(f"{live_server.url}/hub/models/")
    for lang in ("curl", "python", "javascript"):
        page.click(f"[data-sample-tab='{lang}']")
        _assert_samples_readable(page, f"#sample-{deployment.pk}-{lang}", f"hub models ({lang})")
    page.click("[data-sample-tab='curl']")
    _shot(page, f"sample-hub-models-{kind}")

    page.goto(f"{live_server.url}/hub/keys/")
    page.fill("#id_name", "sample key")
    page.click("button:has-text('Create key')")
    expect(page.locator("#new-key-sample")).to_be_visible()
    _assert_samples_readable(page, "#new-key-sample", "new key")
    _shot(page, f"sample-new-key-{kind}")

    page.goto(f"{live_server.url}/hub/models/{deployment.pk}/playground/")
    page.fill("#pg-input", "Hello")
    page.click("#pg-show-code")
    for lang in ("curl", "python", "javascript"):
        page.click(f"[data-code-tab='{lang}']")
        _assert_samples_readable(page, f"#pg-code-{lang}", f"playground ({lang})")
    page.click("[data-code-tab='curl']")
    _shot(page, f"sample-playground-{kind}")


def test_audit_rows_stack_on_a_phone_and_wide_tables_scroll_in_their_card(
    phone_and_desktop, tenants, live_server
):
    deployment = make_deployment(tenants.project, LONG_NAME)
    r2 = Revision.objects.create(deployment=deployment, number=2, spec={**deployment.current_revision.spec, "context_length": 2048})
    type(deployment).objects.filter(pk=deployment.pk).update(current_revision=r2, serving_revision=r2)
    long_args = ["--max-num-seqs", "256", "--enable-chunked-prefill", "--speculative-config",
                 '{"model":"acme/draft-model-with-a-long-name","num_speculative_tokens":5,"method":"eagle"}']  # fmt: skip
    for n in range(3):
        audit_record(
            actor=tenants.owner, organization=tenants.org, action="update", obj=deployment,
            before={"spec": {"extra_args": [], "env": {}}},
            after={"spec": {"extra_args": long_args, "env": {f"VLLM_SETTING_{n}": "x" * 120}}},
        )  # fmt: skip

    page = phone_and_desktop("phone")
    sign_in(page, live_server, "owner")
    page.goto(f"{live_server.url}/audit/")
    expect(page.locator("#audit-table tbody tr")).to_have_count(3)
    assert page.evaluate(PAGE_OVERFLOW) <= 0, "the audit log scrolls sideways"
    table = page.locator("#audit-table").bounding_box()
    card = page.locator("#audit-table").locator("xpath=ancestor::div[contains(@class,'card')][1]").bounding_box()
    assert table["width"] <= card["width"], f"the audit table is {table['width']} px wide in a {card['width']} px card"
    changes = page.locator("#audit-table tbody tr").first.locator("td[data-label='Changes']")
    assert changes.bounding_box()["x"] + changes.bounding_box()["width"] <= 390  # read without scrolling
    _shot(page, "audit-390px")
    page.fill("input[name=q]", LONG_NAME[:20])  # the htmx partial, swapped in: the same cards
    page.wait_for_timeout(800)
    expect(page.locator("#audit-table tbody tr")).to_have_count(3)
    assert page.locator("#audit-table").bounding_box()["width"] <= card["width"]

    paths = [
        f"/deployments/{deployment.pk}/?tab=history", f"/deployments/{deployment.pk}/?tab=deployment&a=1&b=2",
        f"/audit/history/deployment/{deployment.pk}/", "/deployments/", "/hub/usage/", "/hub/keys/", "/quotas/",
        "/projects/", "/pools/", "/catalog/", "/hub/budgets/",
    ]  # fmt: skip
    for path in paths:
        page.goto(f"{live_server.url}{path}")
        page.wait_for_timeout(300)  # htmx-loaded tables (the History tab's change history)
        assert page.evaluate(PAGE_OVERFLOW) <= 0, f"{path} scrolls sideways"
        assert page.evaluate(TABLES_OUT) == [], f"{path}: a table runs past the screen"
    page.goto(f"{live_server.url}/deployments/{deployment.pk}/?tab=history")
    page.wait_for_timeout(300)
    rollback = page.locator("#history-revisions-table button:has-text('Roll back to this revision')")
    box = rollback.bounding_box()
    assert box["x"] + box["width"] <= 390  # in view on a phone, no sideways scrolling to find it
    _shot(page, "deployment-history-390px")

    desktop = phone_and_desktop("desktop")
    sign_in(desktop, live_server, "owner")
    desktop.goto(f"{live_server.url}/deployments/{deployment.pk}/?tab=history")
    expect(desktop.locator("#history-revisions-table thead")).to_be_visible()
    _shot(desktop, "deployment-history-1280px")
    desktop.click("#history-revisions-table button:has-text('Roll back to this revision')")
    dialog = desktop.locator("#confirm-dialog")
    expect(dialog).to_be_visible()  # the product's confirmation, before anything is posted
    expect(dialog).to_contain_text(f"Roll “{LONG_NAME}” back to revision 1?")
    desktop.screenshot(path=os.path.join(TEST_OUTPUT, "deployment-history-rollback-confirm.png"))
    dialog.locator("[data-confirm-cancel]").click()
    expect(dialog).to_be_hidden()
    assert deployment.revisions.count() == 2  # cancelled: nothing rolled back
    desktop.goto(f"{live_server.url}/audit/")
    expect(desktop.locator("#audit-table thead")).to_be_visible()  # a plain table on a desktop
    width = desktop.evaluate("document.getElementById('audit-table').parentElement.closest('.card').clientWidth")
    assert desktop.locator("#audit-table").bounding_box()["width"] <= width  # long values wrap
    assert desktop.evaluate(PAGE_OVERFLOW) <= 0
    _shot(desktop, "audit-1280px")


def test_the_hub_says_an_external_endpoint_is_unreachable_on_a_desktop_and_a_phone(
    phone_and_desktop, live_server, tenants, public_example_com
):
    from catalog.models import CatalogModel
    from deployments.external import external_deployment_create, external_health_record

    make_deployment(tenants.project, "chat", served_model_name="qwen-chat")  # a managed one beside it
    model = CatalogModel.objects.create(organization=tenants.org, name="onprem", source="huggingface", repo_id="acme/onprem")
    dead = external_deployment_create(user=tenants.owner, project=tenants.project, model=model, name="onprem-llama",
                                      url="https://llm.example.com/v1")  # fmt: skip
    external_health_record(deployment=dead, healthy=False, detail="connection refused")
    for kind in WIDTHS:
        page = phone_and_desktop(kind)
        sign_in(page, live_server, "member")
        page.goto(f"{live_server.url}/hub/models/")
        card = page.locator('[data-model="onprem-llama"]')
        expect(card.locator(".badge[data-health]")).to_have_text("Endpoint unreachable")
        callout = card.locator('.callout[data-health="unhealthy"]')
        expect(callout).to_contain_text("Not callable right now: its endpoint is unreachable (connection refused · last checked")
        expect(callout).to_contain_text("The gateway answers 503")
        callout_box, card_box = callout.bounding_box(), card.bounding_box()
        assert callout_box["x"] + callout_box["width"] <= card_box["x"] + card_box["width"] + 1
        assert page.evaluate(PAGE_OVERFLOW) <= 0  # nothing widens the page on a phone
        expect(page.locator('[data-model="qwen-chat"] .callout')).to_have_count(0)
        _shot(page, f"hub-external-unreachable-{kind}")


def test_budgets_and_a_pools_nodes_fit_a_phone(phone_and_desktop, tenants, live_server):
    """QA: on a phone the Budgets page's key input was 22 px wide (its value unreadable, Save cut
    off at the edge) and a pool's nodes table widened the page to 449 px."""
    key, _ = api_key_create(user=tenants.owner, organization=tenants.org, name="support-bot-with-a-long-name")
    api_key_budget_set(user=tenants.owner, key=key, amount="0.20")
    pool = ComputePool.objects.create(
        organization=tenants.org, name="gpu", kind=PoolKind.SANDBOX, api_url="http://127.0.0.1:9", engine_label="vllm",
        last_check={"ok": True, "version": "v1.30.0", "error": "", "nodes": [
            {"name": f"gpu-node-with-a-long-name-{n}", "gpus": 8, "gpu_product": "NVIDIA-H100-80GB-HBM3",
             "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]} for n in range(2)]},
    )  # fmt: skip
    page = phone_and_desktop("phone")
    sign_in(page, live_server, "owner")
    page.goto(f"{live_server.url}/hub/budgets/")
    field = page.get_by_label("Monthly budget of key support-bot-with-a-long-name")
    expect(field).to_have_value("0.20")
    assert field.bounding_box()["width"] >= 100, field.bounding_box()
    save = page.locator(f"#key-budget-{key.pk} button", has_text="Save")
    assert save.bounding_box()["x"] + save.bounding_box()["width"] <= 390
    assert page.evaluate(PAGE_OVERFLOW) <= 0 and page.evaluate(TABLES_OUT) == []
    _shot(page, "budgets-390px")

    page.goto(f"{live_server.url}/pools/{pool.pk}/")
    expect(page.locator("#pool-nodes")).to_contain_text("gpu-node-with-a-long-name-0")
    assert page.evaluate(PAGE_OVERFLOW) <= 0, "the pool page scrolls sideways"
    assert page.evaluate(TABLES_OUT) == []
    _shot(page, "pool-nodes-390px")


# Cloud node names: dotted, dashed, and one longer than any screen.
NODE_NAMES = [
    "ip-10-0-123-45.eu-west-1.compute.internal",
    "gke-production-inference-h100-pool-7f3c9a2b-x8k2",
    "aks-gpunodepool-12345678-vmss000000-with-a-name-longer-than-any-phone-is-wide",
]
# Per node row: its name (text, title, lines it takes) and how far its cells reach right.
NODE_ROWS = """() => Array.from(document.querySelectorAll('#pool-nodes tbody tr')).map(row => {
  const name = row.cells[0].querySelector('.node-name') || row.cells[0], text = document.createRange();
  text.selectNodeContents(name);
  return {text: name.textContent, title: name.title, cut: name.scrollWidth > name.clientWidth + 1,
          lines: new Set(Array.from(text.getClientRects()).map(r => Math.round(r.top))).size,
          right: Math.max(...Array.from(row.cells).map(c => c.getBoundingClientRect().right))};
})"""


def test_a_pools_long_node_names_read_whole_on_a_phone_and_on_one_line_on_a_desktop(
    phone_and_desktop, tenants, live_server
):
    """QA: at 390 px the nodes table squeezed its Node column and broke names hard over three
    lines ("eu-" / "west-" / "1.compute.internal") while GPU product and taints sat off screen."""
    pool = ComputePool.objects.create(
        organization=tenants.org, name="gpu", kind=PoolKind.SANDBOX, api_url="http://127.0.0.1:9", engine_label="vllm",
        last_check={"ok": True, "version": "v1.30.0", "error": "", "nodes": [
            {"name": name, "gpus": 8, "gpu_product": "NVIDIA-H100-80GB-HBM3",
             "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]} for name in NODE_NAMES]},
    )  # fmt: skip
    phone = phone_and_desktop("phone")
    sign_in(phone, live_server, "owner")
    phone.goto(f"{live_server.url}/pools/{pool.pk}/")
    expect(phone.locator("#pool-nodes tbody tr")).to_have_count(3)
    assert phone.evaluate(PAGE_OVERFLOW) <= 0 and phone.evaluate(TABLES_OUT) == []
    rows = phone.evaluate(NODE_ROWS)
    for name, row in zip(NODE_NAMES, rows, strict=True):
        assert (row["text"], row["title"], row["cut"]) == (name, name, False), row  # whole, nothing hidden
        assert row["right"] <= 390, f"{name}: a cell of its row is off screen ({row['right']} px)"
    # Each node is a card as wide as the screen: its name wraps at its dashes, not over 3 narrow lines.
    assert [row["lines"] <= 2 for row in rows] == [True, True, False], rows
    card = phone.locator("#pool-nodes tbody tr").first
    expect(card.locator("td[data-label='Taints']")).to_contain_text("nvidia.com/gpu=present:NoSchedule")
    _shot(phone, "pool-long-node-names-390px")

    desktop = phone_and_desktop("desktop")
    sign_in(desktop, live_server, "owner")
    desktop.goto(f"{live_server.url}/pools/{pool.pk}/")
    rows = desktop.evaluate(NODE_ROWS)
    assert [row["lines"] for row in rows] == [1, 1, 1], rows  # one line each, never broken
    assert [row["cut"] for row in rows] == [False, False, True]  # only the longest is cut...
    assert [row["title"] for row in rows] == NODE_NAMES  # ...and every name is whole in its title
    assert desktop.evaluate(PAGE_OVERFLOW) <= 0
    scroll = desktop.evaluate("(() => { const box = document.getElementById('pool-nodes').parentElement; "
                              "return box.scrollWidth - box.clientWidth; })()")  # fmt: skip
    assert scroll <= 0, f"the nodes table needs {scroll} px more than its card on a desktop"
    _shot(desktop, "pool-long-node-names-1280px")


# Side cards beside a list or form: stacked under it on a phone, beside it on a desktop (QA: the
# endpoints table was squeezed into a 145 px column with the New endpoint card beside it, the
# galleries likewise, and the pool form's "Three ways to connect" card sat past the right edge).
SIDE_BY_SIDE = """(grid) => { const [main, side] = Array.from(document.querySelector(grid).children)
  .map(e => e.getBoundingClientRect());
  return {mainWidth: main.width, sideLeft: side.left, sideTop: side.top, mainBottom: main.bottom, sideRight: side.right}; }"""


@pytest.mark.parametrize("kind", ["desktop", "phone"])
def test_side_cards_stack_under_their_list_on_a_phone(phone_and_desktop, tenants, operator, live_server, kind):
    from deployments.models import Endpoint

    Endpoint.objects.create(project=tenants.project, name="chat", path="/chat")
    page = phone_and_desktop(kind)
    sign_in(page, live_server, "operator")
    for path in ("/endpoints/", "/galleries/data-sources/", "/pools/new/"):
        page.goto(f"{live_server.url}{path}")
        box = page.evaluate(SIDE_BY_SIDE, ".grid")
        width = page.evaluate("document.documentElement.clientWidth")
        if kind == "phone":
            assert box["mainWidth"] >= 340, f"{path}: the list is {box['mainWidth']} px wide on a phone"
            assert box["sideTop"] >= box["mainBottom"], f"{path}: the side card is not under the list"
            assert page.evaluate(PAGE_OVERFLOW) <= 0, f"{path} scrolls sideways"
        else:
            assert box["sideTop"] < box["mainBottom"] and box["sideLeft"] > width / 2, f"{path}: side card not beside"
        assert box["sideRight"] <= width + 1, f"{path}: the side card runs past the screen"
        _shot(page, f"side-card{path.replace('/', '-')}{kind}")


UNBROKEN = "q" * 90  # a served model name with no dash to break at


@pytest.mark.parametrize("kind", ["desktop", "phone"])
def test_a_long_unbroken_model_name_wraps_in_its_card(phone_and_desktop, tenants, live_server, kind):
    """QA: a 90-character served model name ran out of the "Call it" card over the Summary beside
    it on a desktop, and widened the Playground and the deployment's Usage page to 767-876 px on a
    phone (their subtitles name it)."""
    deployment = make_deployment(tenants.project, "chat", served_model_name=UNBROKEN)
    page = phone_and_desktop(kind)
    sign_in(page, live_server, "member")
    page.goto(f"{live_server.url}/deployments/{deployment.pk}/")
    name = page.locator("dd", has_text=UNBROKEN).first
    card = name.locator("xpath=ancestor::div[contains(@class,'card')][1]").bounding_box()
    box = name.bounding_box()
    assert box["x"] + box["width"] <= card["x"] + card["width"] + 1, "the model name runs out of its card"
    assert page.evaluate(PAGE_OVERFLOW) <= 0
    _shot(page, f"long-model-name-overview-{kind}")
    for path in (f"/hub/models/{deployment.pk}/playground/", f"/hub/deployments/{deployment.pk}/usage/"):
        page.goto(f"{live_server.url}{path}")
        expect(page.locator(".page-head p").first).to_contain_text(UNBROKEN)  # all of it, wrapped
        assert page.evaluate(PAGE_OVERFLOW) <= 0, f"{path} scrolls sideways"
    _shot(page, f"long-model-name-usage-{kind}")


def test_the_deploy_form_fits_a_phone_with_a_long_hub_repo_id(phone_and_desktop, live_server, tenants):
    # QA: "Deploy" from the catalog page of HuggingFaceTB/SmolLM2-1.7B-Instruct (added from the Hub
    # under its repo id, the default name) made the form's one column as wide as the callout's
    # longest unbreakable piece: the page scrolled sideways, every field cut off at 390 px.
    deployment = make_deployment(tenants.project, "smol-chat")
    model = deployment.model
    model.name = model.repo_id = "HuggingFaceTB/SmolLM2-1.7B-Instruct"
    model.revision = "fe8a4ea1ffedaf415f4da2f062534de366a451e6"
    model.save(update_fields=["name", "repo_id", "revision"])
    page = phone_and_desktop("phone")
    sign_in(page, live_server, "owner")
    for path in (f"/deployments/new/?model={model.pk}", f"/deployments/{deployment.pk}/edit/"):
        page.goto(f"{live_server.url}{path}")
        expect(page.locator("#model-locked")).to_contain_text("HuggingFaceTB/SmolLM2-1.7B-Instruct")
        assert page.evaluate(PAGE_OVERFLOW) <= 0, f"{path} scrolls sideways"
        for selector in ("#model-locked", "#id_name", "#deploy-submit"):
            box = page.locator(selector).bounding_box()
            assert box["x"] + box["width"] <= 390, f"{path}: {selector} runs past the screen"
        _shot(page, f"deploy-form-long-repo-390px-{path.split('/')[2]}")
