"""Demo data for `make run`: the simulated sandbox compute pool and an endpoint (no deployment)."""

from __future__ import annotations

from typing import TextIO

from django.conf import settings
from django.db import transaction

from deployments.models import ComputePool, Endpoint, PoolKind
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


def sandbox_pool_moved(old_url: str, new_url: str) -> int:
    """`make run` found the sandbox's usual port taken and started it on another: the demo's
    sandbox pools follow it (only pools of the sandbox kind at the old address); returns how many."""
    return ComputePool.objects.filter(kind=PoolKind.SANDBOX, api_url=old_url).update(api_url=new_url)
