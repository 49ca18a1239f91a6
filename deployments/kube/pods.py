"""A deployment's pods as the console shows them (Replicas tab) and their container logs (Logs tab)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from deployments.kube.client import (
    REQUEST_TIMEOUT,
    Kube,
    KubeError,
    PermanentKubeError,
    classify,
    raw,
)
from deployments.kube.status import GPU_PRODUCT_LABEL
from deployments.renderers import LABEL_REVISION, deployment_selector

GPU_RESOURCE = "nvidia.com/gpu"
# Bytes of log one request returns at most (the API's limitBytes): a chatty engine can't make
# the console hold megabytes per poll.
LOG_LIMIT_BYTES = 512 * 1024
MAX_TAIL_LINES = 5000


@dataclass
class Container:
    name: str
    image: str
    ready: bool
    restarts: int
    state: str  # running | waiting | terminated | unknown
    reason: str = ""  # CrashLoopBackOff, ImagePullBackOff, OOMKilled, …


@dataclass
class Pod:
    name: str
    revision: int | None
    phase: str
    node: str
    gpus: int
    gpu_product: str
    created_at: datetime | None
    containers: list[Container] = field(default_factory=list)
    deleting: bool = False

    @property
    def ready(self) -> bool:
        return bool(self.containers) and all(c.ready for c in self.containers) and not self.deleting

    @property
    def ready_text(self) -> str:
        return f"{sum(c.ready for c in self.containers)}/{len(self.containers)}"

    @property
    def restarts(self) -> int:
        return sum(c.restarts for c in self.containers)

    @property
    def status(self) -> str:
        """What `kubectl get pods` shows in STATUS: a container's reason over the phase."""
        if self.deleting:
            return "Terminating"
        for c in self.containers:
            if c.reason and not c.ready:
                return c.reason
        return self.phase


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _container(spec: dict, status: dict | None) -> Container:
    status = status or {}
    state = status.get("state") or {}
    kind = next(iter(state), "unknown") if state else "unknown"
    reason = str((state.get(kind) or {}).get("reason") or "") if kind != "running" else ""
    return Container(
        name=str(spec.get("name") or ""),
        image=str(spec.get("image") or ""),
        ready=bool(status.get("ready")),
        restarts=int(status.get("restartCount") or 0),
        state=kind,
        reason=reason[:63],
    )


def _gpus(pod_spec: dict) -> int:
    total = 0
    for c in pod_spec.get("containers") or []:
        resources = c.get("resources") or {}
        value = (resources.get("limits") or {}).get(GPU_RESOURCE) or (resources.get("requests") or {}).get(GPU_RESOURCE)
        try:
            total += int(str(value or 0))
        except ValueError:
            continue
    return total


def _node_products(kube: Kube) -> dict[str, str]:
    """GPU product of each node, by name; empty when the pool's identity may not list nodes."""
    try:
        nodes = raw(kube.core.list_node, kind="Nodes", action="list").get("items") or []
    except PermanentKubeError:
        return {}
    return {
        str(n["metadata"].get("name")): str((n["metadata"].get("labels") or {}).get(GPU_PRODUCT_LABEL, ""))[:63]
        for n in nodes
        if isinstance(n, dict) and isinstance(n.get("metadata"), dict)
    }


def list_pods(kube: Kube, namespace: str, deployment_id: int) -> list[Pod]:
    """The deployment's pods (every revision's), newest revision first, by one label-selected list."""
    items = raw(kube.core.list_namespaced_pod, namespace, label_selector=deployment_selector(deployment_id),
                kind="Pods", action="list").get("items") or []  # fmt: skip
    products = _node_products(kube) if items else {}
    pods = []
    for item in items:
        meta, spec, status = item.get("metadata") or {}, item.get("spec") or {}, item.get("status") or {}
        statuses = {s.get("name"): s for s in status.get("containerStatuses") or []}
        revision = str((meta.get("labels") or {}).get(LABEL_REVISION) or "")
        node = str(spec.get("nodeName") or "")
        pods.append(
            Pod(
                name=str(meta.get("name") or ""),
                revision=int(revision) if revision.isdigit() else None,
                phase=str(status.get("phase") or "Pending"),
                node=node,
                gpus=_gpus(spec),
                gpu_product=products.get(node, ""),
                created_at=_time(meta.get("creationTimestamp")),
                containers=[_container(c, statuses.get(c.get("name"))) for c in spec.get("containers") or []],
                deleting=bool(meta.get("deletionTimestamp")),
            )
        )
    pods.sort(key=lambda p: (-(p.revision or 0), p.name))
    return pods


def read_log(
    kube: Kube, namespace: str, pod: str, container: str, *, tail_lines: int = 200, previous: bool = False
) -> str:
    """The last `tail_lines` lines of one container's log (of its previous run with `previous`)."""
    tail_lines = max(1, min(int(tail_lines), MAX_TAIL_LINES))
    try:
        response = kube.core.read_namespaced_pod_log(
            pod, namespace, container=container, tail_lines=tail_lines, previous=previous,
            limit_bytes=LOG_LIMIT_BYTES, _preload_content=False, _request_timeout=REQUEST_TIMEOUT,
        )  # fmt: skip
        try:
            data = response.data
        finally:
            response.release_conn()
    except Exception as exc:
        err = classify(exc, kind="pod log", action="reading")
        if err.status == 400:
            # The API's 400 for logs means "no log yet" (container waiting, no previous run); its
            # words are the remote's, so say it in ours.
            raise PermanentKubeError(
                "No log to show: the container has not started yet"
                + (" or has no previous run." if previous else "."),
                status=400, kind="pod log", reason="NoLog",
            ) from exc  # fmt: skip
        raise err from exc
    return data.decode("utf-8", errors="replace") if isinstance(data, bytes) else str(data or "")


__all__ = ["Container", "KubeError", "Pod", "list_pods", "read_log"]
