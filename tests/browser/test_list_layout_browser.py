"""The deployments list at 1280 px and 390 px (QA): every column fits its card on a desktop, with
nothing to scroll sideways, and on a phone the state's detail (an external endpoint's "Endpoint
unreachable" and what its check saw) shows under the state, not in a column past the edge."""

from __future__ import annotations

import os

import pytest

from catalog.models import CatalogModel
from deployments.external import external_deployment_create, external_health_record
from tests.browser.conftest import sign_in
from tests.conftest import TEST_OUTPUT
from tests.gateway.conftest import make_deployment

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Each visible header cell and the reason of each row: how far it sticks out past the card's
# visible right edge (the card scrolls a table wider than itself: what is past it is hidden).
OUTSIDE = """() => { const card = document.querySelector('#deployments-table').closest('.card');
  const right = card.getBoundingClientRect().right;
  const cells = Array.from(document.querySelectorAll('#deployments-table th, #deployments-table .reason'));
  return {scroll: card.scrollWidth - card.clientWidth,
          shown: cells.filter(c => c.offsetParent).map(c => [c.textContent.trim().slice(0, 40),
                                                              Math.round(c.getBoundingClientRect().right - right)])}; }"""


@pytest.mark.parametrize("kind", ["desktop", "phone"])
def test_the_list_fits_its_card_and_shows_the_state_detail(phone_and_desktop, tenants, live_server, public_example_com, kind):  # noqa: F811
    make_deployment(tenants.project, "qwen-chat-assistant")
    model = CatalogModel.objects.create(organization=tenants.org, name="qwen2.5-0.5b-instruct", source="huggingface",
                                        repo_id="Qwen/Qwen2.5-0.5B-Instruct")  # fmt: skip
    external = external_deployment_create(user=tenants.owner, project=tenants.project, model=model, name="ext-qa",
                                          url="https://llm.example.com/v1")  # fmt: skip
    external_health_record(deployment=external, healthy=False, detail="connection refused")

    page = phone_and_desktop(kind)
    sign_in(page, live_server, "owner")
    page.goto(f"{live_server.url}/deployments/")
    page.screenshot(path=os.path.join(TEST_OUTPUT, f"deployments-list-{kind}.png"), full_page=True)
    layout = page.evaluate(OUTSIDE)
    assert layout["scroll"] <= 0, f"the table scrolls {layout['scroll']} px inside its card"
    assert all(outside <= 0 for _, outside in layout["shown"]), layout["shown"]
    headers = [text for text, _ in layout["shown"] if not text.startswith(("connection", "Revision", "Pods"))]
    if kind == "desktop":
        assert [h.split(" ")[0] for h in headers[:7]] == ["Name", "State", "Model", "Pool", "GPUs", "Replicas", "Created"]
    row = page.locator(f"#deployment-row-{external.pk}")
    for words in ("Endpoint unreachable", "connection refused"):
        assert row.get_by_text(words).first.is_visible()
    assert page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth") <= 0
