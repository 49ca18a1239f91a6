"""The Kubernetes driver: the only code that talks to compute pools (official `kubernetes` client)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deployments.kube.client import (
    FIELD_MANAGER,
    Kube,
    KubeError,
    PermanentKubeError,
    PoolUnreachable,
    TransientKubeError,
    classify,
    client_for,
    kube_for,
)
from deployments.kube.lean import fingerprints
from deployments.kube.objects import (
    apply,
    count_selected,
    delete_selected,
    docker_config_secret,
    ensure_namespace,
    list_managed,
    read_deployment,
    secret_object,
)
from deployments.kube.status import (
    Problem,
    RevisionObservation,
    check_cluster,
    observe,
    pod_problem,
)

if TYPE_CHECKING:
    from deployments.models import ComputePool


def test_connection(pool: ComputePool) -> dict[str, Any]:
    """Server version and nodes (allocatable nvidia.com/gpu, GPU product label, taints) of a pool."""
    with kube_for(pool) as k:
        return check_cluster(k)


test_connection.__test__ = False  # type: ignore[attr-defined]  # not a pytest test, despite the name

__all__ = [
    "FIELD_MANAGER",
    "Kube",
    "KubeError",
    "PermanentKubeError",
    "PoolUnreachable",
    "Problem",
    "RevisionObservation",
    "TransientKubeError",
    "apply",
    "check_cluster",
    "classify",
    "client_for",
    "count_selected",
    "delete_selected",
    "docker_config_secret",
    "ensure_namespace",
    "fingerprints",
    "kube_for",
    "list_managed",
    "observe",
    "pod_problem",
    "read_deployment",
    "secret_object",
    "test_connection",
]
