"""The sandbox cluster's control loops: scheduler, Deployment/ReplicaSet controllers, kubelet,
PVC binder and the NIM / KServe operators, simulated over the API emulator's store.

They write status the way the real components do, so what the console reads is truthful:
pods get scheduled (or stay Pending with the scheduler's message), pull images, start, become
Ready, crash, roll over to a new template without downtime.

Failure conventions (for tests and demos):
- an image whose reference contains `doesnotexist` or `invalid` (or is listed in `bad_images`)
  fails to pull: ErrImagePull, then ImagePullBackOff;
- an image reference that does not parse (e.g. upper case) gives InvalidImageName;
- container env `SANDBOX_CRASH=1` crash-loops (CrashLoopBackOff, restartCount rising);
  `SANDBOX_OOM=1` does the same with reason OOMKilled / exit code 137;
- `SANDBOX_NEVER_READY=1` runs but never passes its readiness probe;
- `SANDBOX_READY_DELAY=<seconds>` overrides the cluster's ready delay for that container;
- a missing Secret/ConfigMap referenced by env/envFrom gives CreateContainerConfigError;
- a pod requesting more `nvidia.com/gpu` (cpu, memory) than any node has free stays Pending
  with PodScheduled=False/Unschedulable and a FailedScheduling event.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sandbox.apimachinery import (
    clone,
    labels_match,
    now_rfc3339,
    parse_quantity,
    selector_from_label_selector,
)
from sandbox.kubeapi import KubeEmulator
from sandbox.network import ClusterNetwork
from sandbox.resources import ResourceType
from sandbox.store import qos_class, random_suffix
from sandbox.validation import apply_defaults

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


class Kubelet:
    """Runs the simulated control loops over a KubeEmulator's store in a background thread.

    ready_delay: seconds from scheduling to Ready (image pull takes the first 40 %).
    tick: seconds between passes (writes through the API wake it at once).
    """

    def __init__(
        self,
        emulator: KubeEmulator,
        *,
        node_pools: list[NodePool] | None = None,
        nodes: int = 2,
        gpus_per_node: int = 4,
        gpu_product: str = "NVIDIA-L4",
        gpu_memory_gb: int = 24,
        gpu_taint: bool = False,
        ready_delay: float = 3.0,
        tick: float = 0.2,
        bad_images: Iterable[str] = (),
        event_ttl: float = 3600.0,
    ) -> None:
        self.emulator = emulator
        self.store = emulator.store
        self.node_pools = node_pools or [
            NodePool(
                count=nodes,
                gpus_per_node=gpus_per_node,
                gpu_product=gpu_product,
                gpu_memory_gb=gpu_memory_gb,
                gpu_taint=gpu_taint,
            )
        ]
        self.ready_delay = ready_delay
        self.tick = tick
        self.bad_images = tuple(bad_images)
        self.event_ttl = event_ttl
        reg = emulator.registry
        self.rt = {name: reg.lookup(name) for name in (
            "nodes", "pods", "deployments", "replicasets", "events", "persistentvolumeclaims",
            "secrets", "configmaps", "services",
        )}  # fmt: skip
        self.crd = {rt.plural: rt for rt in reg.custom_types}
        self._runs: dict[str, _PodRun] = {}
        self._cache_jobs: dict[tuple[str, str], float] = {}  # NIMCache downloads: started at
        self._timers_extra = False
        self._events: dict[tuple, tuple[str, str]] = {}  # key -> (namespace, event name)
        self._event_seen: dict[tuple[str, str], float] = {}
        self._failed_scheduling: dict[str, str] = {}
        self._hashes: dict[tuple[str, int], str] = {}
        self._deployments_seen: dict[str, tuple] = {}
        self._quiet_rv = ""
        self._timers = False
        self._last_full_pass = 0.0
        self._replicasets_seen: dict[str, tuple] = {}
        self._requests: dict[str, dict[str, Decimal]] = {}
        self._ip_counter = 0
        self._last_event_sweep = time.monotonic()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        emulator.add_write_listener(self._wake.set)
        emulator.pod_log_provider = self.pod_log

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self.register_nodes()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="sandbox-kubelet", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _loop(self) -> None:
        min_gap = min(self.tick, 0.05)
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.tick_once()
            except Exception:  # one bad object must not stop the cluster
                log.exception("sandbox kubelet pass failed")
            self._wake.wait(self.tick)
            self._wake.clear()
            spent = time.monotonic() - started
            if spent < min_gap:
                time.sleep(min_gap - spent)

    def tick_once(self, *, force: bool = False) -> None:
        """One pass of every control loop (tests may call it directly instead of start()).

        A pass is skipped when nothing was written since the last one and no pod is in a
        timed transition (pulling, starting, crash back-off); a full pass still runs every
        second for progress deadlines.
        """
        with self._lock:
            now = time.monotonic()
            quiet = self.store.resource_version == self._quiet_rv and not self._timers
            if quiet and not force and now - self._last_full_pass < 1.0:
                self._sweep_events()
                return
            rv_before = self.store.resource_version
            self._sync_operators()
            self._sync_deployments()
            self._sync_replicasets()
            self._bind_claims()
            self._schedule()
            self._run_pods()
            self._sync_replicasets()
            self._sync_deployments()
            self._sync_operators()
            self._sweep_events()
            self._timers = self._timers_extra or any(run.in_transition() for run in self._runs.values())
            self._timers_extra = False
            # Our own writes may need another pass (e.g. a scaled ReplicaSet's pods).
            rv_after = self.store.resource_version
            self._quiet_rv = rv_after if rv_after == rv_before else ""
            self._last_full_pass = now

    # -- nodes -------------------------------------------------------------------------

    def register_nodes(self) -> None:
        for pool in self.node_pools:
            for index in range(pool.count):
                name = f"{pool.name}-{index}"
                if self.store.try_get(self.rt["nodes"], "", name) is None:
                    self.store.put(self.rt["nodes"], self._node(pool, index, name))

    def _node(self, pool: NodePool, index: int, name: str) -> dict:
        instance = pool.instance_type or (
            f"sandbox-{pool.gpus_per_node}x-{pool.gpu_product.lower()}"
            if pool.gpus_per_node
            else "sandbox-cpu"
        )
        labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": instance,
            "topology.kubernetes.io/zone": pool.zone,
            "sandbox.modeldeck.io/node-pool": pool.name,
        }
        if pool.gpus_per_node:
            labels |= {
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": pool.gpu_product,
                "nvidia.com/gpu.memory": str(pool.gpu_memory_gb * 1024),
                "nvidia.com/gpu.count": str(pool.gpus_per_node),
            }
        labels |= pool.labels
        resources = {
            "cpu": str(pool.cpu),
            "memory": f"{pool.memory_gb * 1024 * 1024}Ki",
            "pods": "110",
            "ephemeral-storage": "500Gi",
        }
        if pool.gpus_per_node:
            resources[GPU] = str(pool.gpus_per_node)
        now = now_rfc3339()
        spec: dict = {"podCIDR": f"10.244.{index}.0/24", "providerID": f"sandbox://{name}"}
        if pool.gpu_taint and pool.gpus_per_node:
            spec["taints"] = [{"key": GPU, "value": "present", "effect": "NoSchedule"}]

        def condition(kind: str, status: str, reason: str, message: str) -> dict:
            return {
                "type": kind,
                "status": status,
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
                "reason": reason,
                "message": message,
            }

        return {
            "metadata": {"name": name, "labels": labels, "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            }},
            "spec": spec,
            "status": {
                "capacity": dict(resources),
                "allocatable": dict(resources),
                "conditions": [
                    condition("MemoryPressure", "False", "KubeletHasSufficientMemory",
                              "kubelet has sufficient memory available"),
                    condition("DiskPressure", "False", "KubeletHasNoDiskPressure",
                              "kubelet has no disk pressure"),
                    condition("PIDPressure", "False", "KubeletHasSufficientPID",
                              "kubelet has sufficient PID available"),
                    condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
                ],
                "addresses": [
                    {"type": "InternalIP", "address": f"10.0.{len(self.node_pools)}.{index + 10}"},
                    {"type": "Hostname", "address": name},
                ],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "nodeInfo": {
                    "architecture": "amd64",
                    "bootID": hashlib.md5(f"boot-{name}".encode()).hexdigest(),
                    "containerRuntimeVersion": "containerd://1.7.20",
                    "kernelVersion": "6.1.0-sandbox",
                    "kubeProxyVersion": "v1.30.4",
                    "kubeletVersion": "v1.30.4",
                    "machineID": hashlib.md5(f"machine-{name}".encode()).hexdigest(),
                    "operatingSystem": "linux",
                    "osImage": "ModelDeck sandbox (Debian GNU/Linux 12)",
                    "systemUUID": hashlib.md5(f"uuid-{name}".encode()).hexdigest(),
                },
            },
        }  # fmt: skip

    # -- events ------------------------------------------------------------------------

    def event(
        self,
        obj: dict,
        kind: str,
        api_version: str,
        type_: str,
        reason: str,
        message: str,
        component: str,
        *,
        field_path: str = "",
        host: str = "",
    ) -> None:
        """Record a core/v1 Event, folding repeats into `count` like the real recorder."""
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"
        key = (meta["uid"], reason, message, field_path, type_)
        now = now_rfc3339()
        events_rt = self.rt["events"]
        known = self._events.get(key)
        if known is not None:
            current = self.store.try_get(events_rt, *known)
            if current is not None:
                updated = _revise(current, count=current.get("count", 1) + 1, lastTimestamp=now)
                self.store.update_internal(events_rt, updated)
                self._event_seen[known] = time.monotonic()
                return
        name = f"{meta['name']}.{time.time_ns():x}"
        involved = {
            "kind": kind,
            "namespace": namespace,
            "name": meta["name"],
            "uid": meta["uid"],
            "apiVersion": api_version,
            "resourceVersion": meta.get("resourceVersion", ""),
        }
        if field_path:
            involved["fieldPath"] = field_path
        source = {"component": component}
        if host:
            source["host"] = host
        body = {
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "source": source,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "type": type_,
            "reportingComponent": component,
            "reportingInstance": host or component,
        }
        if not self.store.namespace_exists(namespace):
            return
        self.store.create(events_rt, namespace, body, internal=True)
        self._events[key] = (namespace, name)
        self._event_seen[(namespace, name)] = time.monotonic()

    def _sweep_events(self) -> None:
        now = time.monotonic()
        if now - self._last_event_sweep < 10:
            return
        self._last_event_sweep = now
        for (namespace, name), seen in list(self._event_seen.items()):
            if now - seen > self.event_ttl:
                self.store.delete_internal(self.rt["events"], namespace, name)
                del self._event_seen[(namespace, name)]
        live = set(self._event_seen)
        self._events = {k: v for k, v in self._events.items() if v in live}

    # -- Deployment controller ---------------------------------------------------------

    def _template_hash(self, dep: dict) -> str:
        meta = dep["metadata"]
        cache_key = (meta["uid"], meta.get("generation", 0))
        cached = self._hashes.get(cache_key)
        if cached is None:
            digest = hashlib.sha256(
                json.dumps(dep["spec"].get("template"), sort_keys=True).encode()
            ).digest()
            alphabet = "bcdfghjklmnpqrstvwxz2456789"
            cached = "".join(alphabet[b % len(alphabet)] for b in digest[:10])
            if len(self._hashes) > 10_000:
                self._hashes.clear()
            self._hashes[cache_key] = cached
        return cached

    def _sync_deployments(self) -> None:
        rs_rt = self.rt["replicasets"]
        owned: dict[str, list[dict]] = defaultdict(list)
        for rs in self.store.objects(rs_rt):
            uid = _controller_uid(rs)
            if uid:
                owned[uid].append(rs)
        now = time.monotonic()
        seen: dict[str, tuple] = {}
        for dep in self.store.objects(self.rt["deployments"]):
            if dep["metadata"].get("deletionTimestamp"):
                continue
            uid = dep["metadata"]["uid"]
            children = owned.get(uid, [])
            # Nothing changed since the last pass: skip (but keep re-checking a rollout that
            # is not complete, for its progress deadline).
            fingerprint = (
                dep["metadata"]["resourceVersion"],
                tuple(
                    sorted(
                        (rs["metadata"]["name"], rs["metadata"]["resourceVersion"])
                        for rs in children
                    )
                ),
            )
            last = self._deployments_seen.get(uid)
            if last and last[0] == fingerprint and (last[1] or now - last[2] < 1.0):
                seen[uid] = last
                continue
            try:
                settled = self._sync_deployment(dep, children)
            except (KeyError, TypeError, ValueError, AttributeError):
                log.exception("cannot reconcile deployment %s", dep["metadata"].get("name"))
                settled = False
            seen[uid] = (fingerprint, settled, now)
        self._deployments_seen = seen

    def _sync_deployment(self, dep: dict, replicasets: list[dict]) -> bool:
        """Reconcile one Deployment; True when its rollout is complete."""
        rs_rt = self.rt["replicasets"]
        meta, spec = dep["metadata"], dep.get("spec") or {}
        desired = spec.get("replicas", 1)
        template_hash = self._template_hash(dep)
        new_rs = next(
            (rs for rs in replicasets
             if (rs["metadata"].get("labels") or {}).get("pod-template-hash") == template_hash),
            None,
        )  # fmt: skip
        old_rss = sorted((rs for rs in replicasets if rs is not new_rs), key=_revision)
        max_revision = max((_revision(rs) for rs in replicasets), default=0)
        created_new = False
        if new_rs is None:
            new_rs = self._create_replicaset(dep, template_hash, max_revision + 1)
            created_new = True
        elif _revision(new_rs) < max_revision:
            # A rollback to an old template: that ReplicaSet becomes the newest revision.
            bumped = _revise(new_rs)
            _annotate(bumped, "deployment.kubernetes.io/revision", str(max_revision + 1))
            new_rs = self.store.update_internal(rs_rt, bumped) or new_rs

        if not spec.get("paused"):
            strategy = spec.get("strategy") or {}
            if strategy.get("type") == "Recreate":
                self._recreate(dep, new_rs, old_rss, desired)
            else:
                self._roll(dep, new_rs, old_rss, desired, strategy.get("rollingUpdate") or {})
            self._cleanup_history(spec.get("revisionHistoryLimit", 10), old_rss)

        current = [
            self.store.try_get(rs_rt, meta["namespace"], rs["metadata"]["name"])
            for rs in replicasets
        ]
        all_rs = [rs for rs in current if rs is not None]
        fresh_new = (
            self.store.try_get(rs_rt, meta["namespace"], new_rs["metadata"]["name"]) or new_rs
        )
        if not any(rs is fresh_new for rs in all_rs):
            all_rs.append(fresh_new)
        return self._write_deployment_status(dep, fresh_new, all_rs, created_new)

    def _create_replicaset(self, dep: dict, template_hash: str, revision: int) -> dict:
        meta, spec = dep["metadata"], dep["spec"]
        name = f"{meta['name']}-{template_hash}"
        template = clone(spec.get("template") or {})
        template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = (
            template_hash
        )
        selector = clone(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})["pod-template-hash"] = template_hash
        desired = spec.get("replicas", 1)
        surge = (
            _resolve_percent(
                ((spec.get("strategy") or {}).get("rollingUpdate") or {}).get("maxSurge", "25%"),
                desired,
                round_up=True,
            )
            if (spec.get("strategy") or {}).get("type", "RollingUpdate") == "RollingUpdate"
            else 0
        )
        body = {
            "metadata": {
                "name": name,
                "namespace": meta["namespace"],
                "labels": dict(template["metadata"]["labels"]),
                "annotations": {
                    "deployment.kubernetes.io/desired-replicas": str(desired),
                    "deployment.kubernetes.io/max-replicas": str(desired + surge),
                    "deployment.kubernetes.io/revision": str(revision),
                },
                "ownerReferences": [_owner_ref(dep, self.rt["deployments"])],
            },
            "spec": {"replicas": 0, "selector": selector, "template": template},
        }
        if spec.get("minReadySeconds"):
            body["spec"]["minReadySeconds"] = spec["minReadySeconds"]
        existing = self.store.try_get(self.rt["replicasets"], meta["namespace"], name)
        if existing is not None:
            return existing
        rs = self.store.create(self.rt["replicasets"], meta["namespace"], body, internal=True)
        return rs

    def _scale_rs(self, dep: dict, rs: dict, replicas: int) -> dict:
        current = rs["spec"].get("replicas", 0)
        if current == replicas:
            return rs
        fresh = self.store.try_get(
            self.rt["replicasets"], rs["metadata"]["namespace"], rs["metadata"]["name"]
        )
        if fresh is None:
            return rs
        scaled = _revise(fresh, spec={**fresh["spec"], "replicas": replicas})
        desired = dep["spec"].get("replicas", 1)
        _annotate(scaled, "deployment.kubernetes.io/desired-replicas", str(desired))
        written = self.store.update_internal(self.rt["replicasets"], scaled) or rs
        direction = "up" if replicas > current else "down"
        message = f"Scaled {direction} replica set {rs['metadata']['name']} to {replicas}"
        if direction == "down":
            message += f" from {current}"
        self.event(dep, "Deployment", "apps/v1", "Normal", "ScalingReplicaSet", message,
                   "deployment-controller")  # fmt: skip
        return written

    def _recreate(self, dep: dict, new_rs: dict, old_rss: list[dict], desired: int) -> None:
        active_old = [rs for rs in old_rss if rs["spec"].get("replicas", 0) > 0]
        for rs in active_old:
            self._scale_rs(dep, rs, 0)
        if active_old or any((rs.get("status") or {}).get("replicas", 0) for rs in old_rss):
            return
        self._scale_rs(dep, new_rs, desired)

    def _roll(
        self, dep: dict, new_rs: dict, old_rss: list[dict], desired: int, rolling: dict
    ) -> None:
        surge = _resolve_percent(rolling.get("maxSurge", "25%"), desired, round_up=True)
        unavailable = _resolve_percent(
            rolling.get("maxUnavailable", "25%"), desired, round_up=False
        )
        if surge == 0 and unavailable == 0:
            unavailable = 1
        # Scale the new ReplicaSet up as far as the surge allows.
        new_replicas = new_rs["spec"].get("replicas", 0)
        total = new_replicas + sum(rs["spec"].get("replicas", 0) for rs in old_rss)
        if new_replicas < desired:
            room = desired + surge - total
            if room > 0:
                new_rs = self._scale_rs(dep, new_rs, min(desired, new_replicas + room))
        elif new_replicas > desired:
            new_rs = self._scale_rs(dep, new_rs, desired)
        if not any(rs["spec"].get("replicas", 0) for rs in old_rss):
            return
        # Scale old ReplicaSets down only as far as availability allows (reconcileOldReplicaSets).
        all_count = new_rs["spec"].get("replicas", 0) + sum(
            rs["spec"].get("replicas", 0) for rs in old_rss
        )
        min_available = desired - unavailable
        new_unavailable = new_rs["spec"].get("replicas", 0) - (new_rs.get("status") or {}).get(
            "availableReplicas", 0
        )
        max_scaled_down = all_count - min_available - new_unavailable
        if max_scaled_down <= 0:
            return
        cleaned = 0
        remaining_old = []
        for rs in old_rss:
            replicas = rs["spec"].get("replicas", 0)
            unhealthy = replicas - (rs.get("status") or {}).get("availableReplicas", 0)
            drop = min(max_scaled_down - cleaned, max(unhealthy, 0))
            if drop > 0:
                rs = self._scale_rs(dep, rs, replicas - drop)
                cleaned += drop
            remaining_old.append(rs)
        available = (new_rs.get("status") or {}).get("availableReplicas", 0) + sum(
            min((rs.get("status") or {}).get("availableReplicas", 0), rs["spec"].get("replicas", 0))
            for rs in remaining_old
        )
        budget = available - min_available
        for rs in remaining_old:
            if budget <= 0:
                break
            replicas = rs["spec"].get("replicas", 0)
            drop = min(replicas, budget)
            if drop > 0:
                self._scale_rs(dep, rs, replicas - drop)
                budget -= drop

    def _cleanup_history(self, limit: int, old_rss: list[dict]) -> None:
        idle = [
            rs for rs in old_rss
            if rs["spec"].get("replicas", 0) == 0 and not (rs.get("status") or {}).get("replicas")
        ]  # fmt: skip
        for rs in idle[: max(len(idle) - limit, 0)]:
            self.store.delete_internal(
                self.rt["replicasets"], rs["metadata"]["namespace"], rs["metadata"]["name"]
            )

    def _write_deployment_status(
        self, dep: dict, new_rs: dict, all_rs: list[dict], created_new: bool
    ) -> bool:
        dep_rt = self.rt["deployments"]
        fresh = self.store.try_get(dep_rt, dep["metadata"]["namespace"], dep["metadata"]["name"])
        if fresh is None or fresh["metadata"]["uid"] != dep["metadata"]["uid"]:
            return False
        spec = fresh.get("spec") or {}
        desired = spec.get("replicas", 1)
        rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
        max_unavailable = (
            _resolve_percent(rolling.get("maxUnavailable", "25%"), desired, round_up=False)
            if (spec.get("strategy") or {}).get("type", "RollingUpdate") == "RollingUpdate"
            else 0
        )

        def total(key: str) -> int:
            return sum((rs.get("status") or {}).get(key, 0) for rs in all_rs)

        new_status = new_rs.get("status") or {}
        counts = {
            "replicas": total("replicas"),
            "updatedReplicas": new_status.get("replicas", 0),
            "readyReplicas": total("readyReplicas"),
            "availableReplicas": total("availableReplicas"),
            "unavailableReplicas": max(
                sum(rs["spec"].get("replicas", 0) for rs in all_rs) - total("availableReplicas"), 0
            ),
        }
        old = fresh.get("status") or {}
        status: dict = {"observedGeneration": fresh["metadata"].get("generation", 1)}
        # Zero counts are omitted on the wire (omitempty), as a real server does.
        status |= {k: v for k, v in counts.items() if v}
        now = now_rfc3339()
        conditions = list(old.get("conditions") or [])
        if counts["availableReplicas"] >= desired - max_unavailable:
            conditions = _set_condition(conditions, "Available", "True", "MinimumReplicasAvailable",
                                        "Deployment has minimum availability.", now,
                                        update_time=True, probe_time=False)  # fmt: skip
        else:
            conditions = _set_condition(conditions, "Available", "False", "MinimumReplicasUnavailable",
                                        "Deployment does not have minimum availability.", now,
                                        update_time=True, probe_time=False)  # fmt: skip
        rs_name = new_rs["metadata"]["name"]
        complete = (
            counts["updatedReplicas"] == desired
            and counts["replicas"] == desired
            and counts["availableReplicas"] == desired
        )
        progressing = next((c for c in conditions if c.get("type") == "Progressing"), None)
        progressed = any(
            counts[key] > old.get(key, 0)
            for key in ("updatedReplicas", "readyReplicas", "availableReplicas")
        ) or counts["replicas"] - counts["updatedReplicas"] < old.get("replicas", 0) - old.get(
            "updatedReplicas", 0
        )
        deadline = spec.get("progressDeadlineSeconds", 600)
        if complete:
            conditions = _set_condition(conditions, "Progressing", "True", "NewReplicaSetAvailable",
                                        f'ReplicaSet "{rs_name}" has successfully progressed.', now,
                                        update_time=True, probe_time=False)  # fmt: skip
        elif created_new or progressing is None:
            conditions = _set_condition(conditions, "Progressing", "True", "NewReplicaSetCreated",
                                        f'Created new replica set "{rs_name}"', now,
                                        update_time=True, probe_time=False)  # fmt: skip
        elif progressed:
            conditions = _set_condition(conditions, "Progressing", "True", "ReplicaSetUpdated",
                                        f'ReplicaSet "{rs_name}" is progressing.', now,
                                        update_time=True, probe_time=False)  # fmt: skip
            for cond in conditions:
                if cond["type"] == "Progressing":
                    cond["lastUpdateTime"] = now
        elif (
            progressing.get("reason") != "ProgressDeadlineExceeded"
            and time.time() - _epoch(progressing.get("lastUpdateTime")) > deadline
        ):
            conditions = _set_condition(conditions, "Progressing", "False", "ProgressDeadlineExceeded",
                                        f'ReplicaSet "{rs_name}" has timed out progressing.', now,
                                        update_time=True, probe_time=False)  # fmt: skip
        order = {"Available": 0, "Progressing": 1, "ReplicaFailure": 2}
        status["conditions"] = sorted(conditions, key=lambda c: order.get(c["type"], 3))
        revision = (new_rs["metadata"].get("annotations") or {}).get(
            "deployment.kubernetes.io/revision"
        )
        annotations = fresh["metadata"].get("annotations") or {}
        if status == old and annotations.get("deployment.kubernetes.io/revision") == revision:
            return complete
        updated = _revise(fresh, status=status)
        if revision:
            _annotate(updated, "deployment.kubernetes.io/revision", revision)
        self.store.update_internal(dep_rt, updated, expect_rv=fresh["metadata"]["resourceVersion"])
        return complete

    # -- ReplicaSet controller ---------------------------------------------------------

    def _sync_replicasets(self) -> None:
        pods_by_owner: dict[str, list[dict]] = defaultdict(list)
        for pod in self.store.objects(self.rt["pods"]):
            uid = _controller_uid(pod)
            if uid and not pod["metadata"].get("deletionTimestamp"):
                pods_by_owner[uid].append(pod)
        seen: dict[str, tuple] = {}
        for rs in self.store.objects(self.rt["replicasets"]):
            uid = rs["metadata"]["uid"]
            pods = pods_by_owner.get(uid, [])
            fingerprint = (
                rs["metadata"]["resourceVersion"],
                tuple(
                    sorted((p["metadata"]["name"], p["metadata"]["resourceVersion"]) for p in pods)
                ),
            )
            seen[uid] = fingerprint
            if self._replicasets_seen.get(uid) == fingerprint:
                continue  # nothing changed since the last pass
            try:
                self._sync_replicaset(rs, pods)
            except (KeyError, TypeError, ValueError, AttributeError):
                log.exception("cannot reconcile replicaset %s", rs["metadata"].get("name"))
        self._replicasets_seen = seen

    def _sync_replicaset(self, rs: dict, pods: list[dict]) -> None:
        pods_rt, rs_rt = self.rt["pods"], self.rt["replicasets"]
        meta, spec = rs["metadata"], rs.get("spec") or {}
        desired = spec.get("replicas", 1)
        pods = [p for p in pods if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")]
        if len(pods) < desired:
            for _ in range(min(desired - len(pods), 500)):
                pods.append(self._create_pod(rs))
        elif len(pods) > desired:
            # Delete the least useful pods first: unscheduled, pending, not ready, newest.
            def rank(pod: dict) -> tuple:
                status = pod.get("status") or {}
                return (
                    bool((pod.get("spec") or {}).get("nodeName")),
                    status.get("phase") == "Running",
                    _pod_ready(pod),
                    -_epoch(pod["metadata"].get("creationTimestamp")),
                )

            pods.sort(key=rank)
            for pod in pods[: len(pods) - desired]:
                if self.store.delete_internal(pods_rt, meta["namespace"], pod["metadata"]["name"]):
                    self.event(rs, "ReplicaSet", "apps/v1", "Normal", "SuccessfulDelete",
                               f"Deleted pod: {pod['metadata']['name']}", "replicaset-controller")  # fmt: skip
            pods = pods[len(pods) - desired :]
        ready = sum(1 for p in pods if _pod_ready(p))
        selector = selector_from_label_selector(spec.get("selector"))
        counts = {
            "replicas": len(pods),
            "fullyLabeledReplicas": sum(
                1 for p in pods if labels_match(selector, p["metadata"].get("labels"))
            ),
            "readyReplicas": ready,
            "availableReplicas": ready,
        }
        # ReplicaSetStatus.replicas has no omitempty; the other counts do.
        status = {k: v for k, v in counts.items() if v or k == "replicas"}
        status["observedGeneration"] = meta.get("generation", 1)
        if status == (rs.get("status") or {}):
            return
        fresh = self.store.try_get(rs_rt, meta["namespace"], meta["name"])
        if fresh is None or fresh.get("status") == status:
            return
        self.store.update_internal(rs_rt, _revise(fresh, status=status))

    def _create_pod(self, rs: dict) -> dict:
        meta, template = rs["metadata"], clone((rs.get("spec") or {}).get("template") or {})
        template_meta = template.get("metadata") or {}
        body = {
            "metadata": {
                "name": f"{meta['name']}-{random_suffix()}",
                "generateName": f"{meta['name']}-",
                "namespace": meta["namespace"],
                "labels": template_meta.get("labels") or {},
                "ownerReferences": [_owner_ref(rs, self.rt["replicasets"])],
            },
            "spec": template.get("spec") or {},
        }
        if template_meta.get("annotations"):
            body["metadata"]["annotations"] = template_meta["annotations"]
        pod = self.store.create(self.rt["pods"], meta["namespace"], body, internal=True)
        self.event(rs, "ReplicaSet", "apps/v1", "Normal", "SuccessfulCreate",
                   f"Created pod: {pod['metadata']['name']}", "replicaset-controller")  # fmt: skip
        return pod

    # -- PVC binder --------------------------------------------------------------------

    def _bind_claims(self) -> None:
        pvc_rt = self.rt["persistentvolumeclaims"]
        for pvc in self.store.objects(pvc_rt):
            if (pvc.get("status") or {}).get("phase") == "Bound":
                continue
            bound = clone(pvc)
            volume = f"pvc-{pvc['metadata']['uid']}"
            bound["spec"]["volumeName"] = volume
            bound["spec"].setdefault("storageClassName", "standard")
            bound["metadata"].setdefault("annotations", {}).update(
                {
                    "pv.kubernetes.io/bind-completed": "yes",
                    "pv.kubernetes.io/bound-by-controller": "yes",
                    "volume.kubernetes.io/storage-provisioner": "sandbox.modeldeck.io/local-path",
                }
            )
            bound["status"] = {
                "phase": "Bound",
                "accessModes": list(pvc["spec"].get("accessModes") or []),
                "capacity": {
                    "storage": ((pvc["spec"].get("resources") or {}).get("requests") or {}).get(
                        "storage", "1Gi"
                    )
                },
            }
            if self.store.update_internal(
                pvc_rt, bound, expect_rv=pvc["metadata"]["resourceVersion"]
            ):
                self.event(pvc, "PersistentVolumeClaim", "v1", "Normal", "ProvisioningSucceeded",
                           f"Successfully provisioned volume {volume} using sandbox local-path",
                           "sandbox.modeldeck.io/local-path")  # fmt: skip

    # -- scheduler ---------------------------------------------------------------------

    def _pod_requests(self, pod: dict) -> dict[str, Decimal]:
        """Resources a pod asks for (limits stand in for missing requests); cached per pod."""
        uid = pod["metadata"]["uid"]
        cached = self._requests.get(uid)
        if cached is not None:
            return cached
        total: Counter = Counter()
        for container in (pod.get("spec") or {}).get("containers") or []:
            resources = container.get("resources") or {}
            requests = dict(resources.get("limits") or {}) | dict(resources.get("requests") or {})
            for name, value in requests.items():
                try:
                    total[name] += parse_quantity(value)
                except ValueError:
                    continue
        total["pods"] += 1
        self._requests[uid] = dict(total)
        return self._requests[uid]

    def _schedule(self) -> None:
        pods = self.store.objects(self.rt["pods"])
        live_uids = {p["metadata"]["uid"] for p in pods}
        if len(self._requests) > len(live_uids) * 2 + 100:
            self._requests = {k: v for k, v in self._requests.items() if k in live_uids}
        pending = [
            p for p in pods
            if not (p.get("spec") or {}).get("nodeName")
            and not p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") in (None, "Pending")
        ]  # fmt: skip
        if not pending:
            self._failed_scheduling.clear()
            return
        nodes = []
        for node in sorted(
            self.store.objects(self.rt["nodes"]), key=lambda n: n["metadata"]["name"]
        ):
            allocatable = {}
            for name, value in ((node.get("status") or {}).get("allocatable") or {}).items():
                try:
                    allocatable[name] = float(parse_quantity(value))
                except ValueError:
                    continue
            nodes.append(_NodeView(node, allocatable))
        used: dict[str, Counter] = defaultdict(Counter)
        for pod in pods:
            node_name = (pod.get("spec") or {}).get("nodeName")
            if node_name and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                used[node_name].update({k: float(v) for k, v in self._pod_requests(pod).items()})
        pending.sort(
            key=lambda p: (p["metadata"].get("creationTimestamp", ""), p["metadata"]["name"])
        )
        # Capacity only shrinks during a pass, so a pod shape that fits nowhere now won't fit
        # for the next pending pod of the same shape either.
        hopeless: dict[str, str] = {}
        placement: dict[str, tuple[list[_NodeView], Counter]] = {}
        for pod in pending:
            try:
                self._schedule_pod(pod, nodes, used, hopeless, placement)
            except (AttributeError, TypeError, ValueError, KeyError):
                # A pod the API should have refused (stored around validation) stays Pending
                # alone; it must not stop every other pod's scheduling.
                log.exception("sandbox scheduler skipped pod %s", pod["metadata"].get("name"))
        pending_uids = {p["metadata"]["uid"] for p in pending}
        self._failed_scheduling = {
            k: v for k, v in self._failed_scheduling.items() if k in pending_uids
        }

    def _schedule_pod(
        self,
        pod: dict,
        nodes: list[_NodeView],
        used: dict[str, Counter],
        hopeless: dict[str, str],
        placement: dict[str, tuple[list[_NodeView], Counter]],
    ) -> None:
        spec = pod.get("spec") or {}
        requests = sorted((k, float(v)) for k, v in self._pod_requests(pod).items() if v > 0)
        static_key = json.dumps(
            [spec.get("nodeSelector"), spec.get("tolerations"), spec.get("affinity")],
            sort_keys=True, default=str,
        )  # fmt: skip
        shape = f"{requests}|{static_key}"
        message = self._missing_claim(pod) or hopeless.get(shape)
        if message is None:
            if static_key not in placement:
                # Taints, selectors and affinity don't change during a pass: filter once per shape.
                eligible, rejected = [], Counter()
                for node in nodes:
                    reason = node.static_failure(spec)
                    if reason is None:
                        eligible.append(node)
                    else:
                        rejected[reason] += 1
                placement[static_key] = (eligible, rejected)
            eligible, rejected = placement[static_key]
            best: _NodeView | None = None
            best_score: tuple | None = None
            for node in eligible:
                node_used = used[node.name]
                if any(node_used[r] + a > node.allocatable.get(r, 0.0) for r, a in requests):
                    continue
                # Least allocated first (the default scoring), GPUs weighing most.
                score = (
                    node_used[GPU] - node.allocatable.get(GPU, 0.0),
                    node_used["cpu"] - node.allocatable.get("cpu", 0.0),
                    node.name,
                )
                if best_score is None or score < best_score:
                    best, best_score = node, score
            if best is not None:
                self._bind(pod, best.name, dict(requests), used)
                return
            if not nodes:
                message = "no nodes available to schedule pods"
            else:
                reasons = Counter(rejected)
                preemption = Counter()
                if rejected:
                    preemption["Preemption is not helpful for scheduling"] = sum(rejected.values())
                for node in eligible:
                    reasons.update(node.resource_failures(requests, used[node.name]))
                    preemption["No preemption victims found for incoming pod"] += 1
                parts = sorted(f"{count} {reason}" for reason, count in reasons.items())
                victims = sorted(f"{count} {reason}" for reason, count in preemption.items())
                message = (
                    f"0/{len(nodes)} nodes are available: {', '.join(parts)}. preemption: "
                    f"0/{len(nodes)} nodes are available: {', '.join(victims)}."
                )
            hopeless[shape] = message
        self._mark_unschedulable(pod, message)

    def _bind(self, pod: dict, node_name: str, requests: dict, used: dict[str, Counter]) -> None:
        conditions = _set_condition((pod.get("status") or {}).get("conditions") or [],
                                    "PodScheduled", "True", now=now_rfc3339())  # fmt: skip
        bound = _revise(pod, spec={**pod["spec"], "nodeName": node_name},
                        status={"phase": "Pending", "conditions": conditions,
                                "qosClass": qos_class(pod["spec"])})  # fmt: skip
        if self.store.update_internal(
            self.rt["pods"], bound, expect_rv=pod["metadata"]["resourceVersion"]
        ):
            used[node_name].update(requests)
            meta = pod["metadata"]
            self.event(pod, "Pod", "v1", "Normal", "Scheduled",
                       f"Successfully assigned {meta['namespace']}/{meta['name']} to {node_name}",
                       "default-scheduler")  # fmt: skip

    def _mark_unschedulable(self, pod: dict, message: str) -> None:
        status = pod.get("status") or {}
        conditions = _set_condition(status.get("conditions") or [], "PodScheduled", "False",
                                    "Unschedulable", message, now_rfc3339())  # fmt: skip
        if conditions != status.get("conditions"):
            updated = _revise(pod, status={**status, "phase": "Pending", "conditions": conditions})
            self.store.update_internal(
                self.rt["pods"], updated, expect_rv=pod["metadata"]["resourceVersion"]
            )
        uid = pod["metadata"]["uid"]
        if self._failed_scheduling.get(uid) != message:
            self._failed_scheduling[uid] = message
            self.event(
                pod, "Pod", "v1", "Warning", "FailedScheduling", message, "default-scheduler"
            )

    def _missing_claim(self, pod: dict) -> str | None:
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if (
                claim
                and self.store.try_get(
                    self.rt["persistentvolumeclaims"], pod["metadata"]["namespace"], claim
                )
                is None
            ):
                nodes = self.store.count(self.rt["nodes"])
                return (
                    f'0/{nodes} nodes are available: persistentvolumeclaim "{claim}" not found. '
                    f"preemption: 0/{nodes} nodes are available: {nodes} Preemption is not "
                    "helpful for scheduling."
                )
        return None

    # -- kubelet -----------------------------------------------------------------------

    def _image_problem(self, image: str) -> str | None:
        if not IMAGE_REF_RE.match(image):
            return "invalid"
        lowered = image.lower()
        if any(marker in lowered for marker in BAD_IMAGE_MARKERS) or any(
            image == bad or image.startswith(bad) for bad in self.bad_images
        ):
            return "pull"
        return None

    def _new_run(self, pod: dict) -> _PodRun:
        self._ip_counter += 1
        containers = {}
        for spec in (pod.get("spec") or {}).get("containers") or []:
            env = {
                e.get("name"): str(e.get("value", ""))
                for e in spec.get("env") or []
                if isinstance(e, dict)
            }
            delay = self.ready_delay
            if env.get("SANDBOX_READY_DELAY"):
                try:
                    delay = float(env["SANDBOX_READY_DELAY"])
                except ValueError:
                    pass
            containers[spec["name"]] = _Container(
                name=spec["name"], image=spec.get("image", ""), env=env, ready_delay=delay,
                since=time.monotonic(),
            )  # fmt: skip
        n = self._ip_counter
        return _PodRun(
            uid=pod["metadata"]["uid"],
            node=pod["spec"]["nodeName"],
            ip=f"10.244.{(n // 250) % 250}.{n % 250 + 2}",
            start_time=now_rfc3339(),
            containers=containers,
        )

    def _run_pods(self) -> None:
        pods = self.store.objects(self.rt["pods"])
        live = set()
        for pod in pods:
            spec = pod.get("spec") or {}
            if not spec.get("nodeName") or pod["metadata"].get("deletionTimestamp"):
                continue
            uid = pod["metadata"]["uid"]
            live.add(uid)
            run = self._runs.get(uid)
            if run is None:
                run = self._runs[uid] = self._new_run(pod)
                for container in run.containers.values():
                    if self._image_problem(container.image) != "invalid":
                        self.event(pod, "Pod", "v1", "Normal", "Pulling",
                                   f'Pulling image "{container.image}"', "kubelet",
                                   field_path=f"spec.containers{{{container.name}}}", host=run.node)  # fmt: skip
            try:
                self._step_pod(pod, run)
            except (KeyError, TypeError, ValueError, AttributeError):
                log.exception("cannot run pod %s", pod["metadata"].get("name"))
        for uid in set(self._runs) - live:
            del self._runs[uid]

    def _step_pod(self, pod: dict, run: _PodRun) -> None:
        now = time.monotonic()
        for container in run.containers.values():
            if self._step_container(pod, run, container, now):
                run.dirty = True
        if not run.dirty and pod["metadata"]["resourceVersion"] == run.written_rv:
            return
        status = self._pod_status(pod, run)
        if status == pod.get("status"):
            run.dirty = False
            run.written_rv = pod["metadata"]["resourceVersion"]
            return
        updated = _revise(pod, status=status)
        written = self.store.update_internal(
            self.rt["pods"], updated, expect_rv=pod["metadata"]["resourceVersion"]
        )
        if written is not None:
            run.dirty = False
            run.written_rv = written["metadata"]["resourceVersion"]

    def _step_container(self, pod: dict, run: _PodRun, c: _Container, now: float) -> bool:
        """Advance one container's simulated life; True when its status changed."""
        elapsed = now - c.since
        pull_time = c.ready_delay * 0.4
        field_path = f"spec.containers{{{c.name}}}"

        def event(type_: str, reason: str, message: str) -> None:
            self.event(
                pod,
                "Pod",
                "v1",
                type_,
                reason,
                message,
                "kubelet",
                field_path=field_path,
                host=run.node,
            )

        def enter(phase: str) -> None:
            c.phase, c.since = phase, now

        if c.phase == "pulling":
            problem = self._image_problem(c.image)
            if problem == "invalid":
                enter("invalid")
                c.waiting_message = (
                    f'Failed to apply default image tag "{c.image}": couldn\'t parse image name '
                    f'"{c.image}": invalid reference format'
                )
                event("Warning", "InspectFailed", c.waiting_message)
                event("Warning", "Failed", "Error: InvalidImageName")
                return True
            if elapsed < pull_time:
                return False
            if problem == "pull":
                enter("pull_error")
                c.waiting_message = (
                    f'rpc error: code = NotFound desc = failed to pull and unpack image "{c.image}": '
                    f'failed to resolve reference "{c.image}": {c.image}: not found'
                )
                event("Warning", "Failed", f'Failed to pull image "{c.image}": {c.waiting_message}')
                event("Warning", "Failed", "Error: ErrImagePull")
                return True
            event("Normal", "Pulled",
                  f'Successfully pulled image "{c.image}" in {pull_time:.3f}s '
                  f"({pull_time:.3f}s including waiting)")  # fmt: skip
            return self._start_or_config_error(pod, run, c, now, event)
        if c.phase == "config_error":
            if self._missing_config(pod, c.name) is None:
                return self._start_or_config_error(pod, run, c, now, event)
            return False
        if c.phase == "pull_error":
            if elapsed >= pull_time:
                enter("pull_backoff")
                c.waiting_message = f'Back-off pulling image "{c.image}"'
                event("Normal", "BackOff", c.waiting_message)
                event("Warning", "Failed", "Error: ImagePullBackOff")
                return True
            return False
        if c.phase == "running":
            crash = c.env.get("SANDBOX_CRASH") in ("1", "true", "True") or c.env.get(
                "SANDBOX_OOM"
            ) in ("1", "true", "True")
            crash_after = max(0.05, c.ready_delay * 0.3)
            if crash and elapsed >= crash_after:
                oom = c.env.get("SANDBOX_OOM") in ("1", "true", "True")
                c.last_terminated = {
                    "terminated": {
                        "exitCode": 137 if oom else 1,
                        "reason": "OOMKilled" if oom else "Error",
                        "startedAt": c.started_at,
                        "finishedAt": now_rfc3339(),
                        "containerID": c.container_id,
                    }
                }
                c.restarts += 1
                c.ready = False
                if (pod.get("spec") or {}).get("restartPolicy") == "Never":
                    enter("terminated")
                    return True
                enter("crashed")
                backoff = BACKOFF_TEXT[min(c.restarts - 1, len(BACKOFF_TEXT) - 1)]
                meta = pod["metadata"]
                c.waiting_message = (
                    f"back-off {backoff} restarting failed container={c.name} "
                    f"pod={meta['name']}_{meta['namespace']}({meta['uid']})"
                )
                event("Warning", "BackOff",
                      f"Back-off restarting failed container {c.name} in pod "
                      f"{meta['name']}_{meta['namespace']}({meta['uid']})")  # fmt: skip
                return True
            never_ready = c.env.get("SANDBOX_NEVER_READY") in ("1", "true", "True")
            if never_ready:
                if now - c.unhealthy_reported > max(c.ready_delay, 1.0):
                    c.unhealthy_reported = now
                    event("Warning", "Unhealthy",
                          "Readiness probe failed: HTTP probe failed with statuscode: 503")  # fmt: skip
                return False
            if not c.ready and elapsed >= c.ready_delay - pull_time:
                c.ready = True
                return True
            return False
        if c.phase == "crashed":
            backoff = max(0.05, c.ready_delay * 0.3) * (2 ** min(c.restarts - 1, 5))
            if elapsed >= backoff:
                event("Normal", "Pulled", f'Container image "{c.image}" already present on machine')
                return self._start_or_config_error(pod, run, c, now, event)
            return False
        return False

    def _start_or_config_error(
        self, pod: dict, run: _PodRun, c: _Container, now: float, event: Any
    ) -> bool:
        missing = self._missing_config(pod, c.name)
        if missing:
            if c.phase != "config_error":
                c.phase, c.since = "config_error", now
                c.waiting_message = missing
                event("Warning", "Failed", f"Error: {missing}")
                return True
            return False
        c.phase, c.since = "running", now
        c.started_at = now_rfc3339()
        event("Normal", "Created", f"Created container {c.name}")
        event("Normal", "Started", f"Started container {c.name}")
        return True

    def _missing_config(self, pod: dict, container_name: str) -> str | None:
        ns = pod["metadata"]["namespace"]
        spec = next(
            (c for c in pod["spec"].get("containers") or [] if c.get("name") == container_name), {}
        )
        refs: list[tuple[str, str, bool]] = []
        for env in spec.get("env") or []:
            source = (env or {}).get("valueFrom") or {}
            for key, kind in (("secretKeyRef", "secrets"), ("configMapKeyRef", "configmaps")):
                ref = source.get(key)
                if ref and ref.get("name"):
                    refs.append((kind, ref["name"], bool(ref.get("optional"))))
        for env_from in spec.get("envFrom") or []:
            for key, kind in (("secretRef", "secrets"), ("configMapRef", "configmaps")):
                ref = (env_from or {}).get(key)
                if ref and ref.get("name"):
                    refs.append((kind, ref["name"], bool(ref.get("optional"))))
        for kind, name, optional in refs:
            if not optional and self.store.try_get(self.rt[kind], ns, name) is None:
                return f'{kind[:-1]} "{name}" not found'
        return None

    def _pod_status(self, pod: dict, run: _PodRun) -> dict:
        old = pod.get("status") or {}
        now = now_rfc3339()
        statuses = []
        for c in sorted(run.containers.values(), key=lambda c: c.name):
            state: dict
            if c.phase == "running":
                state = {"running": {"startedAt": c.started_at}}
            elif c.phase == "terminated" and c.last_terminated:
                state = c.last_terminated
            else:
                reason = {
                    "pulling": "ContainerCreating",
                    "pull_error": "ErrImagePull",
                    "pull_backoff": "ImagePullBackOff",
                    "invalid": "InvalidImageName",
                    "config_error": "CreateContainerConfigError",
                    "crashed": "CrashLoopBackOff",
                }.get(c.phase, "ContainerCreating")
                waiting = {"reason": reason}
                if c.phase != "pulling" and c.waiting_message:
                    waiting["message"] = c.waiting_message
                state = {"waiting": waiting}
            status = {
                "name": c.name,
                "state": state,
                "lastState": c.last_terminated
                if c.last_terminated and c.phase != "terminated"
                else {},
                "ready": c.ready,
                "restartCount": c.restarts,
                "image": c.image,
                "imageID": c.image_id,
                "started": c.phase == "running",
            }
            if c.phase in ("running", "crashed", "terminated"):
                status["containerID"] = c.container_id
            statuses.append(status)
        ever_started = any(c.started_at for c in run.containers.values())
        all_ready = all(c.ready for c in run.containers.values())
        restart_never = (pod.get("spec") or {}).get("restartPolicy") == "Never"
        phase = "Running" if ever_started else "Pending"
        if restart_never and all(c.phase == "terminated" for c in run.containers.values()):
            phase = "Failed"
        not_ready = [
            c.name for c in sorted(run.containers.values(), key=lambda c: c.name) if not c.ready
        ]
        unready_message = f"containers with unready status: [{' '.join(not_ready)}]"
        conditions = list(old.get("conditions") or [])
        conditions = _set_condition(conditions, "PodReadyToStartContainers", "True", now=now)
        conditions = _set_condition(conditions, "Initialized", "True", now=now)
        if all_ready:
            conditions = _set_condition(conditions, "Ready", "True", now=now)
            conditions = _set_condition(conditions, "ContainersReady", "True", now=now)
        else:
            conditions = _set_condition(
                conditions, "Ready", "False", "ContainersNotReady", unready_message, now
            )
            conditions = _set_condition(conditions, "ContainersReady", "False", "ContainersNotReady",
                                        unready_message, now)  # fmt: skip
        conditions = _set_condition(conditions, "PodScheduled", "True", now=now)
        order = [
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
            "PodScheduled",
        ]
        conditions.sort(key=lambda c: order.index(c["type"]) if c["type"] in order else 99)
        return {
            "phase": phase,
            "conditions": conditions,
            "hostIP": self._node_ip(run.node),
            "hostIPs": [{"ip": self._node_ip(run.node)}],
            "podIP": run.ip,
            "podIPs": [{"ip": run.ip}],
            "startTime": run.start_time,
            "containerStatuses": statuses,
            "qosClass": old.get("qosClass") or qos_class(pod.get("spec") or {}),
        }

    def _node_ip(self, node_name: str) -> str:
        node = self.store.try_get(self.rt["nodes"], "", node_name)
        for address in ((node or {}).get("status") or {}).get("addresses") or []:
            if address.get("type") == "InternalIP":
                return address["address"]
        return "10.0.0.1"

    def pod_log(self, pod: dict, container: str, previous: bool) -> str:
        """Plausible engine logs for `kubectl logs` / read_namespaced_pod_log."""
        run = self._runs.get(pod["metadata"]["uid"])
        c = run.containers.get(container) if run else None
        if c is None:
            return ""
        lines = [
            f"INFO sandbox engine starting: image={c.image} pod={pod['metadata']['name']}",
            "INFO loading model weights (simulated)",
        ]
        crashed = c.last_terminated is not None and (
            previous or c.phase in ("crashed", "terminated")
        )
        if crashed:
            reason = (c.last_terminated or {}).get("terminated", {}).get("reason")
            if reason == "OOMKilled":
                lines.append(
                    "ERROR CUDA out of memory (SANDBOX_OOM=1): the container was OOM-killed"
                )
            else:
                lines += [
                    "Traceback (most recent call last):",
                    '  File "/sandbox/engine.py", line 1, in <module>',
                    "RuntimeError: SANDBOX_CRASH=1: the sandbox engine exits on purpose",
                ]
        elif c.phase == "running":
            lines.append("INFO Started server process; Uvicorn running on http://0.0.0.0:8000")
            if c.ready:
                lines.append('INFO "GET /health HTTP/1.1" 200 OK')
        return "\n".join(lines) + "\n"

    # -- NIM and KServe operators --------------------------------------------------------

    def _sync_operators(self) -> None:
        for plural in ("nimcaches", "nimservices", "inferenceservices"):
            rt = self.crd.get(plural)
            if rt is None:
                continue
            for cr in self.store.objects(rt):
                if cr["metadata"].get("deletionTimestamp"):
                    continue
                try:
                    self._sync_custom(rt, cr)
                except (KeyError, TypeError, ValueError, AttributeError):
                    log.exception("cannot reconcile %s %s", rt.kind, cr["metadata"].get("name"))

    def _sync_nimcache(self, rt: ResourceType, cr: dict) -> None:
        """NIMCache: a PVC `<name>-pvc` (storage.pvc), filled by a download job that the sandbox
        finishes `ready_delay` after the claim is bound; then state Ready (nimcache_types.go)."""
        meta, spec = cr["metadata"], cr.get("spec") or {}
        ns, name = meta["namespace"], meta["name"]
        pvc_spec = (spec.get("storage") or {}).get("pvc") or {}
        pvc_name = pvc_spec.get("name") or f"{name}-pvc"
        pvc_rt = self.rt["persistentvolumeclaims"]
        pvc = self.store.try_get(pvc_rt, ns, pvc_name)
        if pvc is None and pvc_spec.get("create"):
            body = {"metadata": {"name": pvc_name, "namespace": ns, "ownerReferences": [_owner_ref(cr, rt)],
                                 "labels": {"app.kubernetes.io/managed-by": "k8s-nim-operator"}},
                    "spec": {"accessModes": [pvc_spec.get("volumeAccessMode") or "ReadWriteOnce"],
                             "resources": {"requests": {"storage": pvc_spec.get("size") or "50Gi"}}}}  # fmt: skip
            if pvc_spec.get("storageClass"):
                body["spec"]["storageClassName"] = pvc_spec["storageClass"]
            pvc = self.store.create(pvc_rt, ns, body, internal=True)
        bound = ((pvc or {}).get("status") or {}).get("phase") == "Bound"
        key = ("nimcache", meta["uid"])
        if bound and key not in self._cache_jobs:
            self._cache_jobs[key] = time.monotonic()
        done = bound and time.monotonic() - self._cache_jobs.get(key, time.monotonic()) >= self.ready_delay
        if bound and not done:
            self._timers_extra = True
        now = now_rfc3339()
        conditions = list((cr.get("status") or {}).get("conditions") or [])
        conditions = _set_condition(conditions, "NIM_CACHE_PVC_CREATED", "True" if pvc else "False",
                                    "PVCCreated", "", now, probe_time=False)  # fmt: skip
        conditions = _set_condition(conditions, "NIM_CACHE_JOB_COMPLETED", "True" if done else "False",
                                    "JobCompleted" if done else "JobPending", "", now, probe_time=False)  # fmt: skip
        status = {"state": "Ready" if done else ("InProgress" if bound else "Pending"), "pvc": pvc_name,
                  "conditions": conditions, "observedGeneration": meta.get("generation", 1)}  # fmt: skip
        if status != cr.get("status"):
            fresh = self.store.try_get(rt, ns, name)
            if fresh is not None:
                self.store.update_internal(rt, _revise(fresh, status=status))

    def _sync_custom(self, rt: ResourceType, cr: dict) -> None:
        meta, spec = cr["metadata"], cr.get("spec") or {}
        ns, name = meta["namespace"], meta["name"]
        if rt.plural == "nimcaches":
            self._sync_nimcache(rt, cr)
            return
        waiting_for = ""
        if rt.plural == "nimservices":
            # As k8s-nim-operator renders it (api/apps/v1alpha1/nimservice_types.go): labels are
            # the standard ones merged with spec.labels (standard win), selector app=<name>,
            # port `api`, NIM_CACHE_PATH=/model-store on the cache volume, NGC_API_KEY from
            # authSecret, sidecarContainers after the NIM container.
            image = spec.get("image") or {}
            port = ((spec.get("expose") or {}).get("service") or {}).get("port", 8000)
            workload = f"{name}"
            labels = {**dict(spec.get("labels") or {}), "app": name, "app.kubernetes.io/name": name,
                      "app.kubernetes.io/instance": name, "app.kubernetes.io/part-of": "nim-service",
                      "app.kubernetes.io/managed-by": "k8s-nim-operator"}  # fmt: skip
            env = [{"name": "NIM_CACHE_PATH", "value": "/model-store"},
                   {"name": "NIM_SERVER_PORT", "value": str(port)}, *list(spec.get("env") or [])]  # fmt: skip
            if spec.get("authSecret"):
                env.append(
                    {
                        "name": "NGC_API_KEY",
                        "valueFrom": {
                            "secretKeyRef": {"name": spec["authSecret"], "key": "NGC_API_KEY"}
                        },
                    }
                )
            container = {
                "name": "nim",
                "image": f"{image.get('repository', '')}:{image.get('tag', 'latest')}",
                "env": env,
                "ports": [{"name": "api", "containerPort": port}],
                "resources": spec.get("resources") or {},
                "volumeMounts": [{"name": "model-store", "mountPath": "/model-store"}],
            }
            replicas = spec.get("replicas", 1)
            sidecars = [
                {"name": sc.get("name"), "image": f"{(sc.get('image') or {}).get('repository', '')}:"
                                                  f"{(sc.get('image') or {}).get('tag', 'latest')}",
                 **{k: clone(sc[k]) for k in ("command", "args", "env") if sc.get(k)}}
                for sc in spec.get("sidecarContainers") or [] if isinstance(sc, dict)
            ]  # fmt: skip
            storage = spec.get("storage") or {}
            volume: dict = {"name": "model-store", "emptyDir": {}}
            cache_name = (storage.get("nimCache") or {}).get("name")
            if cache_name:
                cache = self.store.try_get(self.crd["nimcaches"], ns, cache_name) if "nimcaches" in self.crd else None
                cache_status = (cache or {}).get("status") or {}
                if cache_status.get("state") != "Ready":
                    waiting_for = f'NIMCache "{cache_name}" is not ready'
                volume = {"name": "model-store",
                          "persistentVolumeClaim": {"claimName": cache_status.get("pvc") or f"{cache_name}-pvc"}}  # fmt: skip
            elif (storage.get("pvc") or {}).get("name"):
                volume = {"name": "model-store", "persistentVolumeClaim": {"claimName": storage["pvc"]["name"]}}
            pod_spec: dict = {"containers": [container, *sidecars], "volumes": [volume]}
            svc_port = {"name": "api", "port": port, "targetPort": port}
            predictor: dict = spec
        else:
            predictor = spec.get("predictor") or {}
            workload = f"{name}-predictor"
            # predictor.labels are added to the component's pods (ComponentExtensionSpec).
            labels = {**dict(predictor.get("labels") or {}), "app": f"isvc.{workload}",
                      "component": "predictor", "serving.kserve.io/inferenceservice": name}  # fmt: skip
            model = predictor.get("model") or {}
            runtime_pod: dict = {}
            if model.get("runtime"):
                # A named ServingRuntime supplies the pod: its `kserve-container` gets the
                # model's args/env/resources merged in (servingruntime_types.go).
                runtime = (self.store.try_get(self.crd["servingruntimes"], ns, model["runtime"])
                           if "servingruntimes" in self.crd else None)  # fmt: skip
                if runtime is None:
                    waiting_for = f'specified runtime {model["runtime"]} does not exist'
                runtime_pod = clone((runtime or {}).get("spec") or {})
            if runtime_pod.get("containers"):
                containers = runtime_pod["containers"]
                main = next((c for c in containers if c.get("name") == "kserve-container"), containers[0])
                main["args"] = [*(main.get("args") or []), *(model.get("args") or [])]
                main["env"] = [*(main.get("env") or []), *(model.get("env") or [])]
                if model.get("resources"):
                    main["resources"] = clone(model["resources"])
            elif predictor.get("containers"):
                containers = clone(predictor["containers"])
                containers[0].setdefault("name", "kserve-container")
            else:
                fmt = (model.get("modelFormat") or {}).get("name", "huggingface")
                args = list(model.get("args") or [])
                if model.get("storageUri"):
                    args.append(f"--model_dir={model['storageUri']}")
                containers = [{
                    "name": "kserve-container",
                    "image": model.get("image") or f"kserve/{fmt}server:v0.14.0",
                    "args": args,
                    "env": list(model.get("env") or []),
                    "ports": [{"name": "http1", "containerPort": 8080}],
                    "resources": model.get("resources") or {},
                }]  # fmt: skip
            replicas = predictor.get("minReplicas", 1)
            pod_spec = {"containers": containers}
            for key in ("volumes", "nodeSelector", "tolerations", "affinity", "imagePullSecrets"):
                if runtime_pod.get(key):
                    pod_spec[key] = runtime_pod[key]
            first_port = ((containers[0].get("ports") or [{}])[0]).get("containerPort", 8080)
            svc_port = {"name": "http", "port": 80, "targetPort": first_port}
        for key in ("nodeSelector", "tolerations", "affinity"):
            if predictor.get(key):
                pod_spec[key] = clone(predictor[key])
        if rt.plural == "nimservices" and (spec.get("image") or {}).get("pullSecrets"):
            pod_spec["imagePullSecrets"] = [{"name": s} for s in spec["image"]["pullSecrets"]]
        owner = [_owner_ref(cr, rt)]
        if waiting_for:
            self._write_custom_status(rt, cr, {}, workload, svc_port["port"], waiting_for=waiting_for)
            return
        desired_dep = {
            "metadata": {
                "name": workload,
                "namespace": ns,
                "labels": labels,
                "ownerReferences": owner,
            },
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": labels["app"]}},
                "template": {"metadata": {"labels": labels}, "spec": pod_spec},
            },
        }
        dep_rt, svc_rt = self.rt["deployments"], self.rt["services"]
        dep = self.store.try_get(dep_rt, ns, workload)
        if dep is None:
            # Internal creates store the body as is; it must not share parts with the CR.
            dep = self.store.create(dep_rt, ns, clone(desired_dep), internal=True)
        else:
            probe = clone(dep)
            probe["spec"]["replicas"] = replicas
            probe["spec"]["template"] = clone(desired_dep["spec"]["template"])
            apply_defaults(dep_rt, probe)
            if probe["spec"] != dep["spec"]:
                dep = self.store.update_internal(dep_rt, probe) or dep
        if self.store.try_get(svc_rt, ns, workload) is None:
            self.store.create(svc_rt, ns, clone({
                "metadata": {"name": workload, "namespace": ns, "labels": labels, "ownerReferences": owner},
                "spec": {"selector": {"app": labels["app"]}, "ports": [svc_port]},
            }), internal=True)  # fmt: skip
        self._write_custom_status(rt, cr, dep, workload, svc_port["port"])

    def _failure(self, dep: dict) -> str | None:
        selector = selector_from_label_selector((dep.get("spec") or {}).get("selector"))
        for pod in self.store.objects(self.rt["pods"], dep["metadata"]["namespace"]):
            if not labels_match(selector, pod["metadata"].get("labels")):
                continue
            status = pod.get("status") or {}
            for cond in status.get("conditions") or []:
                if cond.get("type") == "PodScheduled" and cond.get("reason") == "Unschedulable":
                    return cond.get("message")
            for cs in status.get("containerStatuses") or []:
                waiting = (cs.get("state") or {}).get("waiting") or {}
                if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName",
                                             "CrashLoopBackOff", "CreateContainerConfigError"):  # fmt: skip
                    return f"{waiting['reason']}: {waiting.get('message', '')}".rstrip(": ")
        return None

    def _write_custom_status(
        self, rt: ResourceType, cr: dict, dep: dict, workload: str, port: int, *, waiting_for: str = ""
    ) -> None:
        meta = cr["metadata"]
        dep_status = dep.get("status") or {}
        desired = (dep.get("spec") or {}).get("replicas", 1)
        ready = (
            dep_status.get("readyReplicas", 0) >= desired
            and dep_status.get("updatedReplicas", 0) >= desired
        )
        failure = None if ready or waiting_for else self._failure(dep)
        old = cr.get("status") or {}
        now = now_rfc3339()
        conditions = list(old.get("conditions") or [])
        host = f"{workload}.{meta['namespace']}.svc.cluster.local"
        if rt.plural == "nimservices":
            # Condition types NIM_SERVICE_READY / NIM_SERVICE_FAILED (nimservice_types.go).
            ready = ready and not waiting_for
            state = "Ready" if ready else ("Failed" if failure else "NotReady")
            if ready:
                conditions = _set_condition(conditions, "NIM_SERVICE_READY", "True", "Ready",
                                            f'deployment "{workload}" successfully rolled out', now,
                                            probe_time=False)  # fmt: skip
                conditions = _set_condition(
                    conditions, "NIM_SERVICE_FAILED", "False", "Ready", "", now, probe_time=False
                )
            else:
                conditions = _set_condition(conditions, "NIM_SERVICE_READY", "False", "NotReady",
                                            failure or waiting_for
                                            or f'Waiting for deployment "{workload}" rollout to finish',
                                            now, probe_time=False)  # fmt: skip
                conditions = _set_condition(conditions, "NIM_SERVICE_FAILED", "True" if failure else "False",
                                            "Failed" if failure else "Ready", failure or "", now,
                                            probe_time=False)  # fmt: skip
            status: dict = {
                "state": state,
                "conditions": conditions,
                "availableReplicas": dep_status.get("availableReplicas", 0),
                "model": {
                    "name": (cr.get("spec") or {}).get("model", {}).get("name", meta["name"])
                    if isinstance((cr.get("spec") or {}).get("model"), dict)
                    else meta["name"],
                    "clusterEndpoint": f"{host}:{port}",
                    "externalEndpoint": "",
                },
            }
        else:
            reason = "" if ready else ("RevisionFailed" if failure else "RevisionMissing")
            message = failure or waiting_for or ("" if ready else "Predictor is not ready")
            for kind in ("IngressReady", "PredictorReady", "Ready"):
                conditions = _set_condition(conditions, kind, "True" if ready else "False",
                                            reason, message, now, probe_time=False)  # fmt: skip
            status = {
                "conditions": conditions,
                "url": f"http://{host}",
                "address": {"url": f"http://{host}"},
                "components": {"predictor": {"url": f"http://{host}"}},
                "modelStatus": {
                    "states": {
                        "activeModelState": "Loaded"
                        if ready
                        else ("FailedToLoad" if failure else "Pending"),
                        "targetModelState": "Loaded" if not failure else "FailedToLoad",
                    },
                    "transitionStatus": "UpToDate"
                    if ready
                    else ("BlockedByFailedLoad" if failure else "InProgress"),
                    **(
                        {"lastFailureInfo": {"reason": "ModelLoadFailed", "message": failure}}
                        if failure
                        else {}
                    ),
                },
            }
        status["observedGeneration"] = meta.get("generation", 1)
        if status == old:
            return
        fresh = self.store.try_get(rt, meta["namespace"], meta["name"])
        if fresh is None:
            return
        self.store.update_internal(rt, _revise(fresh, status=status))


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


class SandboxCluster:
    """A KubeEmulator with its Kubelet: a whole sandbox cluster, started and stopped together."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        crds: Iterable[str] = (),
        token: str | None = None,
        engine_url: str | None = None,
        network_port: int = 0,
        **kubelet_options: Any,
    ) -> None:
        self.emulator = KubeEmulator(host, port, crds=crds, token=token)
        self.kubelet = Kubelet(self.emulator, **kubelet_options)
        # Ingress hosts, HTTPRoute hostnames and Service DNS, served on a loopback port.
        self.network = ClusterNetwork(self.emulator, engine_url=engine_url, host=host, port=network_port)

    @property
    def url(self) -> str:
        return self.emulator.url

    def start(self) -> str:
        url = self.emulator.start()
        self.kubelet.start()
        self.network.start()
        return url

    def stop(self) -> None:
        self.network.stop()
        self.kubelet.stop()
        self.emulator.stop()

    def __enter__(self) -> SandboxCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_cluster(**options: Any) -> SandboxCluster:
    """Start a sandbox cluster (see SandboxCluster / Kubelet for the options)."""
    cluster = SandboxCluster(**options)
    cluster.start()
    return cluster
