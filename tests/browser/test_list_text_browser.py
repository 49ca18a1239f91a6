"""Free text in lists at 1280 px and 390 px: a group's long description (no spaces, or long words)
wraps inside the Groups table instead of widening it past the screen; the Compute Pools list is a
card per pool on a phone, its description as wide as the card, not a sliver of a column."""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import expect

from deployments.models import ComputePool, PoolKind
from projects.services import group_create
from tests.browser.conftest import sign_in
from tests.browser.test_phone_layout_browser import PAGE_OVERFLOW, TABLES_OUT
from tests.conftest import TEST_OUTPUT

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

UNBROKEN = "x" * 300  # the longest description a group takes, with nowhere to break
LONG_WORDS = "Researchers who try new models " + "supercalifragilisticexpialidocious-" * 6
# How far the table needs more than its card (>0: it scrolls sideways inside it).
TABLE_SCROLL = """(id) => { const t = document.getElementById(id), card = t.closest('.card');
  return {scroll: card.scrollWidth - card.clientWidth, right: t.getBoundingClientRect().right - card.getBoundingClientRect().right}; }"""


def _shot(page, name: str) -> None:
    page.screenshot(path=os.path.join(TEST_OUTPUT, f"{name}.png"), full_page=True)


@pytest.mark.parametrize("kind", ["desktop", "phone"])
def test_a_groups_long_description_wraps_in_the_groups_table(phone_and_desktop, tenants, live_server, kind):  # noqa: F811
    group_create(user=tenants.owner, organization=tenants.org, name="ml-platform", description=UNBROKEN)
    group_create(user=tenants.owner, organization=tenants.org, name="research", description=LONG_WORDS)
    group_create(user=tenants.owner, organization=tenants.org, name="apps", description="Application developers")
    page = phone_and_desktop(kind)
    sign_in(page, live_server, "owner")
    page.goto(f"{live_server.url}/organization/groups/")
    expect(page.locator("#groups-table tbody tr")).to_have_count(3)
    assert page.evaluate(PAGE_OVERFLOW) <= 0, "the Groups page scrolls sideways"
    assert page.evaluate(TABLES_OUT) == []
    layout = page.evaluate(TABLE_SCROLL, "groups-table")
    assert layout["scroll"] <= 0 and layout["right"] <= 1, f"the groups table is wider than its card: {layout}"
    # Cut at a readable length, the whole description in the cell's title.
    cell = page.locator("#groups-table tr", has_text="ml-platform").locator("td").nth(1)
    assert cell.get_attribute("title") == UNBROKEN
    assert cell.inner_text().endswith("…") and len(cell.inner_text()) <= 140
    expect(page.locator("#groups-table")).to_contain_text("Application developers")
    _shot(page, f"groups-long-description-{kind}")


# Per pool row: the width of the cell holding its name and description, and how far its cells reach right.
POOL_ROWS = """() => Array.from(document.querySelectorAll('#pools-table tbody tr')).map(row => ({
  name: row.cells[0].querySelector('a').textContent.trim(),
  descriptionWidth: (row.cells[0].querySelector('div') || row.cells[0]).getBoundingClientRect().width,
  right: Math.max(...Array.from(row.cells).map(c => c.getBoundingClientRect().right)),
  labels: Array.from(row.cells).map(c => c.dataset.label || '')}))"""


def test_the_compute_pools_list_is_a_card_per_pool_on_a_phone(phone_and_desktop, tenants, live_server):  # noqa: F811
    for n, description in enumerate((
        "H100 nodes in eu-west-1 for production inference; the on-call team owns it, page them first",
        "A100 spot nodes, cheap but preemptible: batch jobs only",
    )):
        ComputePool.objects.create(organization=tenants.org, name=f"gpu-pool-{n}", kind=PoolKind.SANDBOX,
                                   api_url="http://127.0.0.1:9", engine_label="vllm", region="eu-west-1",
                                   description=description)  # fmt: skip
    phone = phone_and_desktop("phone")
    sign_in(phone, live_server, "owner")
    phone.goto(f"{live_server.url}/pools/")
    expect(phone.locator("#pools-table tbody tr")).to_have_count(2)
    assert phone.evaluate(PAGE_OVERFLOW) <= 0 and phone.evaluate(TABLES_OUT) == []
    assert phone.evaluate(TABLE_SCROLL, "pools-table")["scroll"] <= 0, "the pools table scrolls inside its card"
    for row in phone.evaluate(POOL_ROWS):
        # The description reads across the card (was a column of ~85 px, a word or two a line).
        assert row["descriptionWidth"] >= 300, row
        assert row["right"] <= 390, f"{row['name']}: a cell is off screen"
        assert row["labels"][1:] == ["Connection", "Engine label", "Region", "Status", "GPUs", "Deployments"]
    expect(phone.locator("#pools-table thead")).to_be_hidden()
    first = phone.locator("#pools-table tbody tr").first
    expect(first.locator("td[data-label='Region']")).to_contain_text("eu-west-1")
    _shot(phone, "pools-list-390px")

    desktop = phone_and_desktop("desktop")
    sign_in(desktop, live_server, "owner")
    desktop.goto(f"{live_server.url}/pools/")
    expect(desktop.locator("#pools-table thead")).to_be_visible()  # a plain table on a desktop
    assert desktop.evaluate(PAGE_OVERFLOW) <= 0
    assert desktop.evaluate(TABLE_SCROLL, "pools-table")["scroll"] <= 0
    _shot(desktop, "pools-list-1280px")
