"""Reading a pool's Deployments and Pods into per-revision observations, and connection checks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from deployments.kube.client import Kube, raw
from deployments.renderers import GPU_RESOURCE, LABEL_COMPONENT, LABEL_DEPLOYMENT_ID, LABEL_REVISION
from deployments.renderers.download import COMPONENT_DOWNLOAD

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
    # Set for a pod the scheduler can't place yet (PodScheduled=False): since when. Such a pod
    # may still get a node (cluster-autoscaler, Karpenter), unlike an image pull error.
    unscheduled_since: datetime | None = None

    def text(self) -> str:
        return f"{self.reason}: {self.message}" if self.message else self.reason

    @property
    def is_capacity(self) -> bool:
        return self.reason == "Unschedulable"

    def capacity_summary(self) -> str:
        """`0/2 nodes are available: 2 Insufficient nvidia.com/gpu. preemption: ...` ->
        `insufficient nvidia.com/gpu`: what is missing, without the node counts."""
        wanting = sorted(set(re.findall(r"Insufficient ([\w./-]*[\w/-])", self.message)))
        if wanting:
            return "insufficient " + ", ".join(wanting)
        head = self.message.split("preemption:", 1)[0].strip().rstrip(".")
        head = re.sub(r"^\d+/\d+ nodes are available:\s*", "", head)
        return re.sub(r"\b\d+ (node\(s\) )?", "", head).strip() or "no node fits"


@dataclass
class RevisionObservation:
    """What the cluster shows for one revision's Deployment and its pods."""

    revision: int
    namespace: str = ""
    exists: bool = False
    replicas: int = 0
    ready: int = 0
    pods: int = 0
    scheduled: int = 0  # pods with a node
    problems: list[Problem] = field(default_factory=list)

    def problem(self) -> Problem | None:
        """What to tell the user: a problem waiting can't fix (image pull error, crash loop)
        before one a new node may still fix (unschedulable pods)."""
        for problem in self.problems:
            if not problem.is_capacity:
                return problem
        return self.problems[0] if self.problems else None

    def unscheduled_since(self) -> datetime | None:
        times = [p.unscheduled_since for p in self.problems if p.is_capacity and p.unscheduled_since]
        return min(times) if times else None


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
            since = _time(cond.get("lastTransitionTime")) or _time(
                (pod.get("metadata") or {}).get("creationTimestamp")
            )
            return Problem(
                cond.get("reason") or "Unschedulable", cond.get("message") or "", since
            )
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in FAILING_WAITING_REASONS:
            return Problem(waiting["reason"], waiting.get("message") or "")
    if status.get("phase") == "Failed":
        return Problem(status.get("reason") or "Failed", status.get("message") or "")
    return None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _pod_scheduled(pod: dict[str, Any]) -> bool:
    return bool((pod.get("spec") or {}).get("nodeName"))


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
        if _pod_scheduled(pod):
            obs.scheduled += 1
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


# NIMService conditions (k8s-nim-operator api/apps/v1alpha1/nimservice_types.go).
NIM_READY = "NIM_SERVICE_READY"
NIM_FAILED = "NIM_SERVICE_FAILED"


def observe_operated(
    operated: list[dict[str, Any]], out: dict[int, dict[int, RevisionObservation]]
) -> dict[int, dict[int, RevisionObservation]]:
    """Fold listed NIMServices and InferenceServices into the per-revision observations: an
    operator's Deployment and pods are its own (the NIM Operator labels them managed-by
    k8s-nim-operator), so the custom resource's status is what the sync reads."""
    for obj in operated:
        if obj.get("kind") == "InferenceService":
            _observe_isvc(obj, out)
            continue
        dep_id = _int_label(obj, LABEL_DEPLOYMENT_ID)
        rev = _int_label(obj, LABEL_REVISION)
        if dep_id is None or rev is None:
            continue
        revs = out.setdefault(dep_id, {})
        obs = revs.setdefault(rev, RevisionObservation(rev, namespace=obj["metadata"].get("namespace", "")))
        obs.exists = True
        obs.replicas = int((obj.get("spec") or {}).get("replicas", 1) or 0)
        status = obj.get("status") or {}
        conditions = {c.get("type"): c for c in status.get("conditions") or []}
        ready = conditions.get(NIM_READY) or {}
        failed = conditions.get(NIM_FAILED) or {}
        available = int(status.get("availableReplicas") or 0)
        if ready.get("status") == "True":
            available = max(available, obs.replicas)
        obs.ready = max(obs.ready, available)
        obs.pods = max(obs.pods, available)
        if failed.get("status") == "True":
            obs.problems.insert(0, Problem(failed.get("reason") or "Failed", failed.get("message") or ""))
    return out


def _observe_isvc(obj: dict[str, Any], out: dict[int, dict[int, RevisionObservation]]) -> None:
    """KServe InferenceService: condition Ready (and PredictorReady), modelStatus's failure."""
    dep_id = _int_label(obj, LABEL_DEPLOYMENT_ID)
    rev = _int_label(obj, LABEL_REVISION)
    if dep_id is None or rev is None:
        return
    revs = out.setdefault(dep_id, {})
    obs = revs.setdefault(rev, RevisionObservation(rev, namespace=obj["metadata"].get("namespace", "")))
    obs.exists = True
    predictor = (obj.get("spec") or {}).get("predictor") or {}
    obs.replicas = max(obs.replicas, int(predictor.get("minReplicas", 1) or 0))
    status = obj.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    if (conditions.get("Ready") or {}).get("status") == "True":
        obs.ready = max(obs.ready, obs.replicas)
    failure = ((status.get("modelStatus") or {}).get("lastFailureInfo")) or {}
    if failure:
        obs.problems.insert(0, Problem(failure.get("reason") or "ModelLoadFailed", failure.get("message") or ""))


# Operators a NIM / KServe deployment can be rendered for, found by API discovery (no RBAC on
# CRDs needed): group, version, the plurals that must all be served.
OPERATOR_APIS = {
    "nim": ("apps.nvidia.com", "v1alpha1", ("nimservices", "nimcaches")),
    "kserve": ("serving.kserve.io", "v1beta1", ("inferenceservices",)),
    "gateway_api": ("gateway.networking.k8s.io", "v1", ("httproutes",)),
    # Not an operator: ModelDeck's own CRD (deploy/crds/modeldeployment.yaml), which it controls.
    "modeldeck": ("modeldeck.io", "v1", ("modeldeployments",)),
}


def find_operators(kube: Kube) -> dict[str, bool]:
    groups = raw(kube.apis.get_api_versions, kind="APIGroupList", action="discover").get("groups") or []
    served = {g.get("name"): {v.get("version") for v in g.get("versions") or []} for g in groups}
    found = {}
    for name, (group, version, plurals) in OPERATOR_APIS.items():
        ok = version in served.get(group, set())
        if ok:
            listed = raw(kube.custom.get_api_resources, group, version, kind=group, action="discover")
            names = {r.get("name") for r in listed.get("resources") or []}
            ok = set(plurals) <= names
        found[name] = ok
    return found
@dataclass(frozen=True)
class PodEvent:
    """Kubernetes' events of one deployment's pods, folded by (type, reason, message)."""

    type: str
    reason: str
    message: str
    count: int


def events_by_deployment(
    events: list[dict[str, Any]], pods: list[dict[str, Any]]
) -> dict[int, list[PodEvent]]:
    """Pod events (Scheduled, Pulling, Pulled, Started, BackOff, FailedScheduling...) grouped
    by the deployment whose pod they are about, from one list of a pool's events. Repeats over
    the deployment's pods are summed, so 3 replicas pulling one image read as one line, x3."""
    owner: dict[tuple[str, str], int] = {}
    for pod in pods:
        dep_id = _int_label(pod, LABEL_DEPLOYMENT_ID)
        meta = pod.get("metadata") or {}
        if dep_id is not None:
            owner[(meta.get("namespace", ""), meta.get("name", ""))] = dep_id
    folded: dict[int, dict[tuple[str, str, str], int]] = {}
    for event in events:
        obj = event.get("involvedObject") or {}
        dep_id = owner.get((obj.get("namespace", ""), obj.get("name", "")))
        if dep_id is None:
            continue
        key = (event.get("type") or "Normal", event.get("reason") or "", event.get("message") or "")
        bucket = folded.setdefault(dep_id, {})
        bucket[key] = bucket.get(key, 0) + int(event.get("count") or 1)
    return {
        dep_id: [PodEvent(t, r, m, c) for (t, r, m), c in sorted(bucket.items())]
        for dep_id, bucket in folded.items()
    }


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
    return {"ok": True, "version": version_text, "nodes": out_nodes, "error": "",
            "operators": find_operators(kube)}  # fmt: skip


# --- The pre-download Job (renderers/download.py) -------------------------------------------------

# Set by the renderer on the Job: how many parts (Job indexes) and files it downloads.
ANNOTATION_DOWNLOAD_PARTS = "modeldeck.io/download-parts"
ANNOTATION_DOWNLOAD_FILES = "modeldeck.io/download-files"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


@dataclass
class Download:
    """A deployment's newest pre-download Job, from the pool's one list of Jobs (and its pods
    from the pod list the sync reads anyway)."""

    name: str
    complete: bool = False
    failed: bool = False
    parts: int = 1
    parts_done: int = 0
    files: int = 0
    active: int = 0
    started: datetime | None = None
    message: str = ""  # why it failed, or what its pod waits for
    done_indexes: tuple[int, ...] = ()

    def files_done(self) -> int:
        """Parts are round-robin over the files: the first `files % parts` parts hold one more."""
        if self.complete:
            return self.files
        if not self.files or self.parts <= 1:
            return 0
        per, extra = divmod(self.files, self.parts)
        return sum(per + (1 if index < extra else 0) for index in self.done_indexes)

    def progress(self) -> str:
        """`Downloading weights: 5 of 12 files` (or the Job's state when it is one part)."""
        if self.complete:
            return "Weights downloaded into the model cache."
        if self.files and self.parts > 1:
            text = f"Downloading weights: {self.files_done()} of {self.files} files"
        elif self.files:
            text = f"Downloading weights: {self.files} files, one download job"
        else:
            text = "Downloading weights: the whole repository, one download job"
        state = "running" if self.active else "starting"
        text += f" ({state}"
        if self.started is not None and self.active:
            minutes = int((datetime.now(self.started.tzinfo) - self.started).total_seconds() // 60)
            text += f" for {minutes} min" if minutes else ""
        text += ")"
        if self.message:
            text += f"; {self.message}"
        return text


def _indexes(text: Any) -> tuple[int, ...]:
    """`1,3-5` (status.completedIndexes) -> (1, 3, 4, 5)."""
    out: list[int] = []
    for part in str(text or "").split(","):
        low, _, high = part.strip().partition("-")
        try:
            out += list(range(int(low), int(high or low) + 1))
        except ValueError:
            continue
    return tuple(out)


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def download_pod_owners(pods: list[dict[str, Any]]) -> set[int]:
    """Deployments that have pre-download pods in the pod list the sync reads anyway: only for
    those is the pool's Job list worth its call."""
    owners = set()
    for pod in pods:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if labels.get(JOB_NAME_LABEL) and labels.get(LABEL_COMPONENT) == COMPONENT_DOWNLOAD:
            dep_id = _int_label(pod, LABEL_DEPLOYMENT_ID)
            if dep_id is not None:
                owners.add(dep_id)
    return owners


def observe_downloads(
    jobs: list[dict[str, Any]], pods: list[dict[str, Any]]
) -> dict[int, Download]:
    """The newest pre-download Job of each deployment, with what its pods say when one fails."""
    newest: dict[int, dict[str, Any]] = {}
    for job in jobs:
        dep_id = _int_label(job, LABEL_DEPLOYMENT_ID)
        if dep_id is None:
            continue
        created = (job.get("metadata") or {}).get("creationTimestamp") or ""
        if dep_id not in newest or created >= newest[dep_id]["metadata"].get("creationTimestamp", ""):
            newest[dep_id] = job
    pods_of: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        job_name = (meta.get("labels") or {}).get(JOB_NAME_LABEL)
        if job_name:
            pods_of.setdefault((meta.get("namespace", ""), job_name), []).append(pod)
    out: dict[int, Download] = {}
    for dep_id, job in newest.items():
        meta, spec, status = job.get("metadata") or {}, job.get("spec") or {}, job.get("status") or {}
        annotations = meta.get("annotations") or {}
        conditions = {c.get("type"): c for c in status.get("conditions") or []}
        done = tuple(sorted(_indexes(status.get("completedIndexes"))))
        download = Download(
            name=meta.get("name", ""),
            complete=(conditions.get("Complete") or {}).get("status") == "True",
            failed=(conditions.get("Failed") or {}).get("status") == "True",
            parts=_int(annotations.get(ANNOTATION_DOWNLOAD_PARTS), _int(spec.get("completions"), 1)),
            files=_int(annotations.get(ANNOTATION_DOWNLOAD_FILES)),
            active=_int(status.get("active")),
            started=_time(status.get("startTime")),
        )
        download.done_indexes = done
        download.parts_done = len(done) if download.parts > 1 else _int(status.get("succeeded"))
        words = _download_pod_words(pods_of.get((meta.get("namespace", ""), download.name), []))
        if download.failed:
            failed = conditions["Failed"]
            download.message = "; ".join(
                part for part in (
                    f"{failed.get('reason') or 'Failed'}: {failed.get('message') or ''}".strip(),
                    words,
                ) if part
            )  # fmt: skip
        elif words:
            download.message = words
        out[dep_id] = download
    return out


def _download_pod_words(pods: list[dict[str, Any]]) -> str:
    """What the Job's pods say: the last failed attempt's termination message (the downloader's
    last log lines: 401, repo not found, no space left), else a waiting reason such as
    ImagePullBackOff."""
    failures: list[tuple[str, str]] = []
    waiting = ""
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (cs.get("state") or {}).get("terminated") or {}
            if terminated and _int(terminated.get("exitCode")) != 0:
                message = str(terminated.get("message") or terminated.get("reason") or "").strip()
                failures.append((str(terminated.get("finishedAt") or ""), message))
        problem = pod_problem(pod)
        if problem is not None and not waiting and problem.reason != "Failed":
            waiting = problem.text()
    if failures:
        last = max(failures)[1]
        return f"last attempt: {_short(last.splitlines()[-1] if last else '', 500)}" if last else ""
    return waiting
