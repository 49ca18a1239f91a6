"""Prometheus metrics of the gateway, by deployment.

Per process by default: each gateway process serves its own /metrics and Prometheus scrapes
every pod. When PROMETHEUS_MULTIPROC_DIR is set (several workers behind one port),
prometheus_client's multiprocess mode aggregates the processes' files instead.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from console.crypto import bearer_matches

REQUESTS = Counter(
    "modeldeck_gateway_requests_total", "Gateway requests.", ["deployment", "route", "status"]
)
TOKENS = Counter(
    "modeldeck_gateway_tokens_total", "Tokens reported by engines.", ["deployment", "kind"]
)
LATENCY = Histogram(
    "modeldeck_gateway_request_seconds",
    "Gateway request latency, end to end.",
    ["deployment", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
TTFT = Histogram(
    "modeldeck_gateway_ttft_seconds",
    "Time to first streamed chunk.",
    ["deployment"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RATE_LIMITED = Counter(
    "modeldeck_gateway_rate_limited_total",
    "Requests refused by a rate limit.",
    ["deployment", "level", "kind"],
)


def render() -> tuple[bytes, str]:
    """The exposition text of this process (or of all processes in multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def authorized(authorization: str, token: str | None) -> bool:
    """/metrics is served only with `Authorization: Bearer <MODELDECK_METRICS_TOKEN>`.

    The labels name every tenant's deployments, so without a token configured the route is
    off (404), in every mode.
    """
    return bearer_matches(authorization, token)
