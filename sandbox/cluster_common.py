"""What the sandbox cluster's control loops share: node pools, container and pod run state, limits."""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sandbox.resources import ResourceType

log = logging.getLogger(__name__)

GPU = "nvidia.com/gpu"
BAD_IMAGE_MARKERS = ("doesnotexist", "invalid")
# docker/distribution reference grammar, loosely: lower-case repository, optional tag/digest.
IMAGE_REF_RE = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
BACKOFF_TEXT = ("10s", "20s", "40s", "1m20s", "2m40s", "5m0s")


@dataclass
class NodePool:
    """A group of identical GPU nodes (`{name}-0` .. `{name}-{count-1}`)."""

    name: str = "sandbox-gpu"
    count: int = 2
    gpus_per_node: int = 4
    gpu_product: str = "NVIDIA-L4"
    gpu_memory_gb: int = 24
    cpu: int = 48
    memory_gb: int = 192
    instance_type: str | None = None
    gpu_taint: bool = False  # nvidia.com/gpu=present:NoSchedule, as GPU node pools often have
    zone: str = "sandbox-a"
    labels: dict[str, str] = field(default_factory=dict)


def _epoch(timestamp: str | None) -> float:
    if not timestamp:
        return 0.0
    return datetime.fromisoformat(timestamp).replace(tzinfo=UTC).timestamp()


def _resolve_percent(value: Any, total: int, *, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        scaled = int(value[:-1]) * total
        return -(-scaled // 100) if round_up else scaled // 100
    return int(value)


def _pod_ready(pod: dict) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def _revise(obj: dict, **top: Any) -> dict:
    """A new version of a stored object that shares its unchanged parts.

    Stored objects are never mutated, so sharing is safe and much cheaper than a deep copy;
    metadata is copied because the store stamps resourceVersion on it.
    """
    new = dict(obj)
    new["metadata"] = dict(obj["metadata"])
    new.update(top)
    return new


def _annotate(obj: dict, key: str, value: str) -> None:
    """Set an annotation on a `_revise`d object without touching the stored annotations."""
    obj["metadata"]["annotations"] = {**(obj["metadata"].get("annotations") or {}), key: value}


def _revision(rs: dict) -> int:
    annotations = rs["metadata"].get("annotations") or {}
    return int(annotations.get("deployment.kubernetes.io/revision", "0"))


def _controller_uid(obj: dict) -> str | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("uid")
    return None


def _owner_ref(obj: dict, rt: ResourceType) -> dict:
    return {
        "apiVersion": rt.api_version,
        "kind": rt.kind,
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _set_condition(
    conditions: list[dict], kind: str, status: str, reason: str = "", message: str = "",
    now: str = "", *, update_time: bool = False, probe_time: bool = True,
) -> list[dict]:  # fmt: skip
    """Upsert a condition, keeping lastTransitionTime unless the status flips (like the real
    controllers); `update_time` adds lastUpdateTime (Deployment conditions have it)."""
    old = next((c for c in conditions if c.get("type") == kind), None)
    cond: dict = {"type": kind, "status": status}
    if probe_time:
        cond["lastProbeTime"] = None
    if update_time:
        same = old is not None and old.get("status") == status and old.get("reason") == reason
        cond["lastUpdateTime"] = old.get("lastUpdateTime", now) if same and old else now
    transition = old.get("lastTransitionTime") if old and old.get("status") == status else now
    cond["lastTransitionTime"] = transition
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return [c for c in conditions if c.get("type") != kind] + [cond]


@dataclass
class _Container:
    name: str
    image: str
    env: dict[str, str]
    ready_delay: float
    phase: str = "pulling"  # pulling|config_error|pull_error|pull_backoff|invalid|running|crashed
    since: float = 0.0
    started_at: str = ""
    restarts: int = 0
    last_terminated: dict | None = None
    ready: bool = False
    unhealthy_reported: float = 0.0
    waiting_message: str = ""
    run_for: float | None = None  # a Job's container: seconds it runs before it exits 0

    @property
    def container_id(self) -> str:
        seed = f"{self.name}/{self.image}/{self.restarts}/{self.started_at}"
        return "containerd://" + hashlib.sha256(seed.encode()).hexdigest()

    @property
    def image_id(self) -> str:
        if self.phase in ("pulling", "pull_error", "pull_backoff", "invalid"):
            return ""
        repo = (
            self.image.split("@")[0].rsplit(":", 1)[0]
            if ":" in self.image.rsplit("/", 1)[-1]
            else self.image
        )
        if "/" not in repo.split("/")[0] or "." not in repo.split("/")[0]:
            repo = "docker.io/" + (repo if "/" in repo else f"library/{repo}")
        return f"{repo}@sha256:{hashlib.sha256(self.image.encode()).hexdigest()}"


@dataclass
class _PodRun:
    uid: str
    node: str
    ip: str
    start_time: str
    containers: dict[str, _Container]
    written_rv: str = ""
    dirty: bool = True

    def in_transition(self) -> bool:
        """True while some container's state will change with time alone."""
        return any(
            c.phase in ("pulling", "pull_error", "crashed", "config_error")
            or (c.phase == "running" and not c.ready)
            for c in self.containers.values()
        )


class _NodeView:
    """A node as the scheduler sees it during one pass (quantities parsed once)."""

    def __init__(self, node: dict, allocatable: dict[str, float]) -> None:
        self.name: str = node["metadata"]["name"]
        self.node = node
        self.labels: dict[str, str] = node["metadata"].get("labels") or {}
        self.taints: list[dict] = (node.get("spec") or {}).get("taints") or []
        self.unschedulable = bool((node.get("spec") or {}).get("unschedulable"))
        self.allocatable = allocatable

    def static_failure(self, spec: dict) -> str | None:
        """The first placement filter (in the default scheduler's order) the pod fails here."""
        if self.unschedulable:
            return "node(s) were unschedulable"
        tolerations = spec.get("tolerations") or []
        for taint in self.taints:
            if taint.get("effect") not in ("NoSchedule", "NoExecute"):
                continue
            if not any(_tolerates(t, taint) for t in tolerations):
                return f"node(s) had untolerated taint {{{taint['key']}: {taint.get('value', '')}}}"
        selector = spec.get("nodeSelector") or {}
        if any(self.labels.get(k) != v for k, v in selector.items()) or not _affinity_matches(
            spec, self.node
        ):
            return "node(s) didn't match Pod's node affinity/selector"
        return None

    def resource_failures(self, requests: list[tuple[str, float]], used: Counter) -> list[str]:
        return [
            "Too many pods" if name == "pods" else f"Insufficient {name}"
            for name, amount in requests
            if used[name] + amount > self.allocatable.get(name, 0.0)
        ]

def _tolerates(toleration: dict, taint: dict) -> bool:
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    key = toleration.get("key", "")
    if toleration.get("operator", "Equal") == "Exists":
        return not key or key == taint.get("key")
    return key == taint.get("key") and toleration.get("value", "") == taint.get("value", "")


def _affinity_matches(spec: dict, node: dict) -> bool:
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms") or []
    if not terms:
        return True
    labels = node["metadata"].get("labels") or {}
    return any(_term_matches(term, labels, node["metadata"]["name"]) for term in terms)


def preferred_weight(spec: dict, node: dict) -> int:
    """The sum of the weights of the pod's preferred node-affinity terms this node matches
    (kube-scheduler's NodeAffinity score before normalization)."""
    preferred = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "preferredDuringSchedulingIgnoredDuringExecution"
    ) or []
    labels = node["metadata"].get("labels") or {}
    return sum(
        int(p.get("weight") or 0) for p in preferred
        if _term_matches(p.get("preference") or {}, labels, node["metadata"]["name"])
    )  # fmt: skip


def _term_matches(term: dict, labels: dict[str, str], node_name: str) -> bool:
    for expr in term.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        value = labels.get(key)
        if op == "In" and value not in values:
            return False
        if op == "NotIn" and value in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op in ("Gt", "Lt"):
            try:
                number, bound = int(value or ""), int(values[0])
            except (ValueError, IndexError):
                return False
            if (op == "Gt" and not number > bound) or (op == "Lt" and not number < bound):
                return False
    for expr in term.get("matchFields") or []:
        if expr.get("key") == "metadata.name":
            inside = node_name in (expr.get("values") or [])
            if (expr.get("operator") == "In") != inside:
                return False
    return bool(term.get("matchExpressions") or term.get("matchFields"))
