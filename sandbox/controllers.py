"""The Deployment and ReplicaSet controllers of the sandbox cluster (rolling updates, recreate, status)."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import defaultdict

from sandbox.apimachinery import (
    clone,
    labels_match,
    now_rfc3339,
    selector_from_label_selector,
)
from sandbox.cluster_common import (
    _annotate,
    _controller_uid,
    _epoch,
    _owner_ref,
    _pod_ready,
    _resolve_percent,
    _revise,
    _revision,
    _set_condition,
)
from sandbox.store import random_suffix

log = logging.getLogger(__name__)


class WorkloadControllers:
    """Mixed into Kubelet: Deployments roll ReplicaSets, ReplicaSets make pods."""

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


# The Job controller (pkg/controller/job): pods per completion index, backoffLimit,
# activeDeadlineSeconds, status counts, completedIndexes and the Complete / Failed conditions.
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"
JOB_INDEX = "batch.kubernetes.io/job-completion-index"


def _index_ranges(indexes: list[int]) -> str:
    """[0, 1, 2, 4] -> `0-2,4`, as status.completedIndexes writes them."""
    runs: list[list[int]] = []
    for i in sorted(set(indexes)):
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in runs)


class JobController:
    """Mixed into Kubelet: Jobs make pods until enough succeed, or fail for good."""

    def _sync_jobs(self) -> None:
        jobs_rt = self.rt["jobs"]
        pods_by_owner: dict[str, list[dict]] = defaultdict(list)
        for pod in self.store.objects(self.rt["pods"]):
            uid = _controller_uid(pod)
            if uid:
                pods_by_owner[uid].append(pod)
        for job in self.store.objects(jobs_rt):
            if job["metadata"].get("deletionTimestamp"):
                continue
            try:
                self._sync_job(job, pods_by_owner.get(job["metadata"]["uid"], []))
            except (KeyError, TypeError, ValueError, AttributeError):
                log.exception("cannot reconcile job %s", job["metadata"].get("name"))

    def _sync_job(self, job: dict, pods: list[dict]) -> None:
        jobs_rt, pods_rt = self.rt["jobs"], self.rt["pods"]
        meta, spec = job["metadata"], job.get("spec") or {}
        old_status = job.get("status") or {}
        conditions = list(old_status.get("conditions") or [])
        finished = any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                       for c in conditions)  # fmt: skip
        if finished:
            return
        now = now_rfc3339()
        indexed = spec.get("completionMode") == "Indexed"
        completions = int(spec.get("completions") or 1)
        parallelism = int(spec.get("parallelism") or 1)
        phase = lambda p: (p.get("status") or {}).get("phase")  # noqa: E731
        succeeded_pods = [p for p in pods if phase(p) == "Succeeded"]
        failed_pods = [p for p in pods if phase(p) == "Failed"]
        active = [p for p in pods if phase(p) not in ("Succeeded", "Failed")
                  and not p["metadata"].get("deletionTimestamp")]  # fmt: skip
        done_indexes = sorted({int((p["metadata"].get("annotations") or {}).get(JOB_INDEX, 0))
                               for p in succeeded_pods})  # fmt: skip
        succeeded = len(done_indexes) if indexed else len(succeeded_pods)
        status: dict = {k: v for k, v in old_status.items() if k not in ("active", "ready", "terminating")}
        status.setdefault("startTime", now)
        failure: tuple[str, str] | None = None
        if len(failed_pods) > int(spec.get("backoffLimit", 6)):
            failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
        deadline = spec.get("activeDeadlineSeconds")
        if deadline is not None and time.time() - _epoch(status["startTime"]) >= float(deadline):
            failure = ("DeadlineExceeded", "Job was active longer than specified deadline")
        if failure is None and succeeded < completions:
            self._timers_extra = True  # the deadline is a timer of its own
            busy = {int((p["metadata"].get("annotations") or {}).get(JOB_INDEX, 0)) for p in active}
            wanted = [i for i in range(completions) if i not in done_indexes and i not in busy] \
                if indexed else list(range(completions - succeeded - len(active)))  # fmt: skip
            for index in wanted[: max(0, parallelism - len(active))]:
                active.append(self._create_job_pod(job, index if indexed else None))
        if failure is not None:
            for pod in active:
                self.store.delete_internal(pods_rt, meta["namespace"], pod["metadata"]["name"])
            active = []
            conditions = _set_condition(conditions, "Failed", "True", failure[0], failure[1], now)
            self.event(job, "Job", "batch/v1", "Warning", failure[0], failure[1], "job-controller")
        elif succeeded >= completions:
            conditions = _set_condition(conditions, "Complete", "True", "CompletionsReached",
                                        "Reached expected number of succeeded pods", now)  # fmt: skip
            status["completionTime"] = now
            self.event(job, "Job", "batch/v1", "Normal", "Completed", "Job completed", "job-controller")
        status.update(active=len(active), succeeded=succeeded, failed=len(failed_pods),
                      ready=sum(1 for p in active if _pod_ready(p)), terminating=0)  # fmt: skip
        status = {k: v for k, v in status.items() if v or k in ("ready", "terminating")}
        if indexed and done_indexes:
            status["completedIndexes"] = _index_ranges(done_indexes)
        if conditions:
            status["conditions"] = conditions
        if status == old_status:
            return
        fresh = self.store.try_get(jobs_rt, meta["namespace"], meta["name"])
        if fresh is not None:
            self.store.update_internal(jobs_rt, _revise(fresh, status=status))

    def _create_job_pod(self, job: dict, index: int | None) -> dict:
        meta, template = job["metadata"], clone((job.get("spec") or {}).get("template") or {})
        template_meta = template.get("metadata") or {}
        labels = {**(template_meta.get("labels") or {}), JOB_NAME_LABEL: meta["name"],
                  JOB_UID_LABEL: meta["uid"], "job-name": meta["name"], "controller-uid": meta["uid"]}  # fmt: skip
        annotations = dict(template_meta.get("annotations") or {})
        pod_spec = template.get("spec") or {}
        prefix = f"{meta['name']}-" if index is None else f"{meta['name']}-{index}-"
        if index is not None:
            labels[JOB_INDEX] = str(index)
            annotations[JOB_INDEX] = str(index)
            for container in pod_spec.get("containers") or []:
                container.setdefault("env", []).append({"name": "JOB_COMPLETION_INDEX", "value": str(index)})
        body = {
            "metadata": {
                "name": f"{prefix}{random_suffix()}", "generateName": prefix, "namespace": meta["namespace"],
                "labels": labels, "annotations": annotations,
                "ownerReferences": [_owner_ref(job, self.rt["jobs"])],
            },
            "spec": pod_spec,
        }  # fmt: skip
        pod = self.store.create(self.rt["pods"], meta["namespace"], body, internal=True)
        self.event(job, "Job", "batch/v1", "Normal", "SuccessfulCreate",
                   f"Created pod: {pod['metadata']['name']}", "job-controller")  # fmt: skip
        return pod
