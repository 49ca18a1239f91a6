"""Free text in lists at 1280 px and 390 px: a group's long description (no spaces, or long words)
wraps inside the Groups table instead of widening it past the screen."""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import expect

from projects.services import group_create
from tests.browser.conftest import sign_in
from tests.browser.test_phone_layout_browser import PAGE_OVERFLOW, TABLES_OUT, phone_and_desktop  # noqa: F401
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
