"""The sandbox cluster's scheduler and PVC binder: requests against node capacity, Unschedulable."""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from decimal import Decimal

from sandbox.apimachinery import (
    clone,
    now_rfc3339,
    parse_quantity,
)
from sandbox.cluster_common import (
    BAD_IMAGE_MARKERS,
    GPU,
    IMAGE_REF_RE,
    _NodeView,
    _revise,
    _set_condition,
    preferred_weight,
)
from sandbox.store import qos_class

log = logging.getLogger(__name__)


class Scheduler:
    """Mixed into Kubelet: binds claims, places pods on nodes or marks them Unschedulable."""

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
                # Preferred node affinity first (node-pool priority), then least allocated
                # (the default scoring), GPUs weighing most.
                score = (
                    -preferred_weight(spec, node.node),
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
