"""Reading a pool's Deployments and Pods into per-revision observations, and connection checks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from deployments.kube.client import Kube, raw
from deployments.renderers import GPU_RESOURCE, LABEL_DEPLOYMENT_ID, LABEL_REVISION

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
# What a connection check stores comes from whatever answers at the pool's address: only values
# shaped like a Kubernetes version and bounded names are kept.
_VERSION = re.compile(r"^v?[0-9][0-9A-Za-z.+-]{0,62}$")


def _short(value: object, limit: int) -> str:
    return str(value or "")[:limit]

# Container waiting reasons that mean the pod will not start without someone changing something.
FAILING_WAITING_REASONS = frozenset(
    {
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)


@dataclass
class Problem:
    reason: str
    message: str

    def text(self) -> str:
        return f"{self.reason}: {self.message}" if self.message else self.reason


@dataclass
class RevisionObservation:
    """What the cluster shows for one revision's Deployment and its pods."""

    revision: int
    namespace: str = ""
    exists: bool = False
    replicas: int = 0
    ready: int = 0
    pods: int = 0
    problems: list[Problem] = field(default_factory=list)

    def problem(self) -> Problem | None:
        return self.problems[0] if self.problems else None


def _int_label(obj: dict[str, Any], key: str) -> int | None:
    value = (obj.get("metadata", {}).get("labels") or {}).get(key)
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def pod_problem(pod: dict[str, Any]) -> Problem | None:
    """The reason a pod isn't running, as Kubernetes words it, or None if nothing is wrong yet."""
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return Problem(cond.get("reason") or "Unschedulable", cond.get("message") or "")
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in FAILING_WAITING_REASONS:
            return Problem(waiting["reason"], waiting.get("message") or "")
    if status.get("phase") == "Failed":
        return Problem(status.get("reason") or "Failed", status.get("message") or "")
    return None


def _pod_ready(pod: dict[str, Any]) -> bool:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def observe(
    deployments: list[dict[str, Any]], pods: list[dict[str, Any]]
) -> dict[int, dict[int, RevisionObservation]]:
    """Group listed objects by deployment id and revision (from our labels)."""
    out: dict[int, dict[int, RevisionObservation]] = {}

    def slot(obj: dict[str, Any]) -> RevisionObservation | None:
        dep_id = _int_label(obj, LABEL_DEPLOYMENT_ID)
        rev = _int_label(obj, LABEL_REVISION)
        if dep_id is None or rev is None:
            return None
        revs = out.setdefault(dep_id, {})
        if rev not in revs:
            revs[rev] = RevisionObservation(rev, namespace=obj["metadata"].get("namespace", ""))
        return revs[rev]

    for obj in deployments:
        obs = slot(obj)
        if obs is None:
            continue
        obs.exists = True
        obs.replicas = int((obj.get("spec") or {}).get("replicas", 1) or 0)
        status = obj.get("status") or {}
        obs.ready = max(obs.ready, int(status.get("readyReplicas") or 0))
        for cond in status.get("conditions") or []:
            if (
                cond.get("type") == "Progressing"
                and cond.get("reason") == "ProgressDeadlineExceeded"
            ):
                obs.problems.append(Problem("ProgressDeadlineExceeded", cond.get("message") or ""))
            if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
                obs.problems.append(
                    Problem(cond.get("reason") or "ReplicaFailure", cond.get("message") or "")
                )
    ready_pods: dict[tuple[int, int], int] = {}
    for pod in pods:
        obs = slot(pod)
        if obs is None:
            continue
        obs.pods += 1
        if _pod_ready(pod):
            key = (_int_label(pod, LABEL_DEPLOYMENT_ID) or 0, obs.revision)
            ready_pods[key] = ready_pods.get(key, 0) + 1
        problem = pod_problem(pod)
        if problem is not None:
            # Pod-level reasons say more than the Deployment's; they go first.
            obs.problems.insert(0, problem)
    for (dep_id, rev), ready in ready_pods.items():
        # The Deployment controller's readyReplicas lags the pods a little; trust either.
        obs = out[dep_id][rev]
        obs.ready = max(obs.ready, ready)
    return out


def check_cluster(kube: Kube) -> dict[str, Any]:
    """Server version and the nodes with their allocatable GPUs, GPU product and taints."""
    version = raw(kube.version.get_code, kind="version", action="read")
    nodes = raw(kube.core.list_node, kind="Nodes", action="list").get("items") or []
    out_nodes = []
    for node in nodes:
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        try:
            gpus = int(str(allocatable.get(GPU_RESOURCE, "0")))
        except ValueError:
            gpus = 0
        out_nodes.append(
            {
                "name": _short(node["metadata"]["name"], 253),
                "gpus": gpus,
                "gpu_product": _short((node["metadata"].get("labels") or {}).get(GPU_PRODUCT_LABEL, ""), 63),
                "taints": [
                    _short(f"{t.get('key')}{'=' + t['value'] if t.get('value') else ''}:{t.get('effect')}", 330)
                    for t in ((node.get("spec") or {}).get("taints") or [])[:20]
                ],
            }
        )
    version_text = str(version.get("gitVersion", "") or "")
    version_text = version_text if _VERSION.match(version_text) else ""
    return {"ok": True, "version": version_text, "nodes": out_nodes, "error": ""}
