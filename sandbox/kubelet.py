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
- a pod that does not restart (a Job's: restartPolicy Never / OnFailure) runs for the cluster's
  `job_duration` (or its container's `SANDBOX_RUN_SECONDS`) and exits 0, phase Succeeded; with
  `SANDBOX_CRASH=1` it exits 1 instead, its termination message the log's last line;
- a missing Secret/ConfigMap referenced by env/envFrom gives CreateContainerConfigError;
- a pod requesting more `nvidia.com/gpu` (cpu, memory) than any node has free stays Pending
  with PodScheduled=False/Unschedulable and a FailedScheduling event.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from sandbox.apimachinery import now_rfc3339
from sandbox.cluster_common import (  # NodePool is part of this module's API (sandbox.__init__)
    GPU,
    NodePool,
    _PodRun,
    _revise,
)
from sandbox.controllers import JobController, WorkloadControllers
from sandbox.kubeapi import KubeEmulator
from sandbox.network import ClusterNetwork
from sandbox.operators import Operators
from sandbox.runtime import ContainerRuntime
from sandbox.scheduler import Scheduler

log = logging.getLogger(__name__)


class Kubelet(WorkloadControllers, JobController, Scheduler, ContainerRuntime, Operators):
    """Runs the simulated control loops over a KubeEmulator's store in a background thread.

    ready_delay: seconds from scheduling to Ready (image pull takes the first 40 %).
    job_duration: seconds a Job's container runs before it exits 0 (None: ready_delay); a
      container's env SANDBOX_RUN_SECONDS overrides it (e.g. a long model download).
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
        job_duration: float | None = None,
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
        self.job_duration = ready_delay if job_duration is None else job_duration
        self.tick = tick
        self.bad_images = tuple(bad_images)
        self.event_ttl = event_ttl
        reg = emulator.registry
        self.rt = {name: reg.lookup(name) for name in (
            "nodes", "pods", "deployments", "replicasets", "events", "persistentvolumeclaims",
            "secrets", "configmaps", "services", "jobs",
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
        # The simulated engine serving this cluster's pods, when in the same process: pods' logs
        # then show the requests it answered (runtime.pod_log).
        self.engine: Any = None

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
            self._sync_jobs()
            self._bind_claims()
            self._schedule()
            self._run_pods()
            self._sync_replicasets()
            self._sync_jobs()
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
        engine: Any = None,
        **kubelet_options: Any,
    ) -> None:
        self.emulator = KubeEmulator(host, port, crds=crds, token=token)
        self.kubelet = Kubelet(self.emulator, **kubelet_options)
        self.kubelet.engine = engine
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
