"""Demo data for `make run`: the simulated sandbox compute pool and an endpoint (no deployment)."""

from __future__ import annotations

import time
import urllib.request
from typing import TextIO

from django.conf import settings
from django.db import close_old_connections, transaction

from deployments.models import ComputePool, Endpoint, PoolKind
from deployments.services import pool_test_connection
from projects.models import Organization, Project

SANDBOX_POOL_NAME = "sandbox"
SANDBOX_DESCRIPTION = (
    "Simulated compute pool for the offline demo: a local Kubernetes API emulator with two "
    "simulated 4×NVIDIA L4 nodes and a simulated OpenAI-compatible engine. Nothing runs on real GPUs."
)
DEMO_ENDPOINT = ("chat", "/chat")


def bootstrap(
    *, organization: Organization, project: Project, admin, stdout: TextIO | None = None
) -> None:
    """Idempotent: a second run finds everything in place and changes nothing."""
    with transaction.atomic():
        pool, pool_created = ComputePool.objects.get_or_create(
            organization=organization,
            name=SANDBOX_POOL_NAME,
            defaults={
                "kind": PoolKind.SANDBOX,
                "api_url": settings.SANDBOX_KUBE_URL,
                "engine_label": "vllm",
                "region": "local",
                "description": SANDBOX_DESCRIPTION,
            },
        )
        name, path = DEMO_ENDPOINT
        endpoint, endpoint_created = Endpoint.objects.get_or_create(
            project=project, name=name, defaults={"path": path}
        )
    if stdout is not None:
        stdout.write(
            f"Deployments: sandbox pool {'created' if pool_created else 'already there'} ({pool.api_url}); "
            f"endpoint {endpoint.path} {'created' if endpoint_created else 'already there'}. "
            "Deploy the demo model from the catalog."
        )


def sandbox_pools_follow(url: str) -> int:
    """`make run` started the sandbox at `url` (its usual port, or a free one when that was
    taken): sandbox pools point there — a sandbox pool may only ever address the sandbox this
    ModelDeck started (deployments.kube.network), so one left at another run's port would only
    be refused. Returns how many moved."""
    return (
        ComputePool.objects.filter(kind=PoolKind.SANDBOX).exclude(api_url="").exclude(api_url=url)
        .update(api_url=url)
    )  # fmt: skip


def sandbox_pools_test(url: str, *, wait_seconds: float = 30.0) -> int:
    """`make run`: once the sandbox at `url` answers, test the connection of the sandbox pools no
    one has tested yet, so the first look at Compute Pools shows the sandbox Connected with its
    8 GPUs, not "Not tested yet". Returns how many were tested (0 if the sandbox never answered
    within `wait_seconds`). Runs in run_console's own process, beside the supervised ones."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}/version", timeout=1):  # noqa: S310 - the sandbox this run started
                break
        except OSError:
            if time.monotonic() >= deadline:
                return 0
            time.sleep(0.25)
    try:
        pools = list(ComputePool.objects.filter(kind=PoolKind.SANDBOX, api_url=url, last_checked_at__isnull=True))
        for pool in pools:
            pool_test_connection(user=None, pool=pool)  # None: the system, as tasks call it
        return len(pools)
    finally:
        close_old_connections()
