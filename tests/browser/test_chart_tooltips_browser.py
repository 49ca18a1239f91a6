"""Chart tooltips read like the page (QA: they showed raw numbers, a cost of 0.0000052 as "0" with
no currency, a latency as 262.35): money as money_text writes it with its currency, tokens and
requests with thousands separators, milliseconds and tokens per second with few decimals. The
mouse hovers each chart's point as a user would; the tooltip's lines are read from Chart.js."""

from __future__ import annotations

import os
import re
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from gateway.models import UsageRecord
from tests.browser.conftest import sign_in
from tests.conftest import TEST_OUTPUT
from tests.gateway.conftest import make_deployment

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Where the first non-empty value of a dataset is drawn, in the viewport (a bar: its middle).
POINT = """([list, id, di]) => { const c = window[list].find(c => c.canvas.id === id), ds = c.data.datasets[di];
  const i = ds.data.findIndex(v => v), el = c.getDatasetMeta(di).data[i], box = c.canvas.getBoundingClientRect();
  const y = c.config.type === 'bar' ? (el.y + el.base) / 2 : el.y;
  return {x: box.left + el.x, y: box.top + y}; }"""
TOOLTIP = """([list, id]) => { const c = window[list].find(c => c.canvas.id === id);
  return c.tooltip.opacity > 0 ? c.tooltip.body.map(b => b.lines).flat() : null; }"""


def _hover(page, charts: str, canvas: str, dataset: int = 0) -> list[str]:
    page.locator(f"#{canvas}").scroll_into_view_if_needed()
    point = page.evaluate(POINT, [charts, canvas, dataset])
    page.mouse.move(point["x"], point["y"])
    page.wait_for_function(f"({TOOLTIP})({[charts, canvas]!r}) !== null")
    return page.evaluate(TOOLTIP, [charts, canvas])


@pytest.fixture
def used(tenants):
    deployment = make_deployment(tenants.project, "qwen", served_model_name="qwen-chat")
    now = timezone.now()
    UsageRecord.objects.create(
        request_id=uuid.uuid4().hex, deployment=deployment, deployment_name=deployment.name,
        organization=tenants.org, user=tenants.owner, revision_id=deployment.serving_revision_id,
        route="chat.completions", status_code=200, prompt_tokens=12_345_678, completion_tokens=4_567_891,
        latency_ms=262.3456, ttft_ms=60.6123, cost=Decimal("0.0000052"), currency="EUR",
        created_at=now - timedelta(minutes=10),
    )  # fmt: skip
    return deployment


def test_usage_chart_tooltips_read_like_the_page(page, tenants, live_server, used):
    sign_in(page, live_server, "owner")
    page.goto(f"{live_server.url}/hub/usage/organization/")
    page.wait_for_function("window.modeldeckUsageCharts && window.modeldeckUsageCharts.length === 4")
    charts = "modeldeckUsageCharts"
    assert _hover(page, charts, "chart-cost") == ["Cost: 0.0000052 EUR"]  # money_text, not "0"
    assert _hover(page, charts, "chart-tokens", 0) == ["Tokens in: 12,345,678"]
    assert _hover(page, charts, "chart-tokens", 1) == ["Tokens out: 4,567,891"]
    assert _hover(page, charts, "chart-requests") == ["Requests: 1"]
    (latency,) = _hover(page, charts, "chart-latency")
    assert re.fullmatch(r"p50: \d{3} ms", latency), latency  # a whole number of ms past 100
    page.screenshot(path=os.path.join(TEST_OUTPUT, "usage-latency-tooltip.png"))


def test_deployment_metric_tooltips_read_like_the_page(page, tenants, live_server, used):
    sign_in(page, live_server, "owner")
    page.goto(f"{live_server.url}/deployments/{used.pk}/?tab=metrics")
    page.wait_for_function("window.modeldeckMetricCharts && window.modeldeckMetricCharts.length === 5")
    charts = "modeldeckMetricCharts"
    assert _hover(page, charts, "metric-requests") == ["r1: 1"]
    assert _hover(page, charts, "metric-latency") == ["r1 p50: 262 ms", "r1 p95: 262 ms"]  # one request: p50 = p95
    assert _hover(page, charts, "metric-ttft") == ["r1 p50: 60.6 ms"]
    (rate,) = _hover(page, charts, "metric-tps")
    assert re.fullmatch(r"r1: [\d,]+(\.\d{1,2})? tokens/s", rate), rate
    page.screenshot(path=os.path.join(TEST_OUTPUT, "metrics-tps-tooltip.png"))
