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
    CUSTOM_KINDS,
    apply,
    apply_secret,
    count_selected,
    delete_job,
    delete_selected,
    docker_config_secret,
    ensure_namespace,
    list_custom,
    list_jobs,
    list_managed,
    list_modeldeployments,
    list_pod_events,
    read_deployment,
    read_job,
    secret_object,
    write_modeldeployment_status,
)
from deployments.kube.status import (
    Download,
    PodEvent,
    Problem,
    RevisionObservation,
    check_cluster,
    download_pod_owners,
    events_by_deployment,
    observe,
    observe_downloads,
    observe_operated,
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
    "CUSTOM_KINDS",
    "FIELD_MANAGER",
    "Kube",
    "KubeError",
    "PermanentKubeError",
    "PoolUnreachable",
    "PodEvent",
    "Problem",
    "RevisionObservation",
    "TransientKubeError",
    "apply",
    "apply_secret",
    "check_cluster",
    "classify",
    "client_for",
    "count_selected",
    "delete_selected",
    "docker_config_secret",
    "ensure_namespace",
    "events_by_deployment",
    "fingerprints",
    "kube_for",
    "list_custom",
    "list_jobs",
    "delete_job",
    "read_job",
    "observe_downloads",
    "download_pod_owners",
    "Download",
    "list_managed",
    "list_modeldeployments",
    "list_pod_events",
    "observe",
    "observe_operated",
    "pod_problem",
    "read_deployment",
    "secret_object",
    "test_connection",
    "write_modeldeployment_status",
]
