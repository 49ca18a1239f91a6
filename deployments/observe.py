"""What a deployment is doing, for its Replicas, Logs and Metrics tabs and their REST routes:
its pods and their logs read live from its compute pool, and the gateway's measurements per
revision. Callers pass a deployment the user may see (views and API scope it first)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.utils import timezone

from deployments.kube.client import KubeError, kube_for
from deployments.kube.pods import MAX_TAIL_LINES, Pod, list_pods, read_log
from deployments.models import DeploymentScale, DeploymentState, ModelDeployment
from gateway import reports
from gateway.models import UsageRecord

DEFAULT_TAIL_LINES = 200
NO_PODS = "This deployment has no pods on its compute pool right now."
DEACTIVATED_NO_PODS = (
    "This deployment is deactivated: it is scaled to zero and has no running pods, so there is no "
    "log to read. Activate it to start its pods again."
)
IDLE_AT_ZERO = (
    "This deployment is scaled to zero while idle (its autoscaling): it has no running pods, so there "
    "is no log to read. The next request through the gateway starts a pod; its log shows here then."
)


@dataclass
class Replicas:
    """The pods of a deployment with the role of their revision, or why they can't be read."""

    pods: list[Pod]
    serving: int | None  # the pods' revision number behind the Service
    rolling_out: int | None  # the current revision's, while it is not the serving one
    error: str = ""

    def role(self, pod: Pod) -> str:
        if pod.revision is not None and pod.revision == self.rolling_out:
            return "rolling out"
        if pod.revision is not None and pod.revision == self.serving:
            return "serving"
        return "superseded"


def _pods_numbers(deployment: ModelDeployment) -> tuple[int | None, int | None]:
    serving = deployment.serving_revision.pods_number() if deployment.serving_revision_id else None
    current = deployment.current_revision.pods_number() if deployment.current_revision_id else None
    return serving, (current if current != serving else None)


def deployment_replicas(deployment: ModelDeployment) -> Replicas:
    """The deployment's pods on its pool (one list call, plus one of nodes for the GPU type)."""
    serving, rolling_out = _pods_numbers(deployment)
    if deployment.pool is None:
        return Replicas([], serving, rolling_out, error=(
            f"An external deployment runs no pods here; its endpoint is {deployment.external_url}."))  # fmt: skip
    try:
        with kube_for(deployment.pool) as kube:
            pods = list_pods(kube, deployment.project.namespace(), deployment.pk)
    except KubeError as err:
        return Replicas([], serving, rolling_out, error=err.message)
    return Replicas(pods, serving, rolling_out)


def replicas_payload(replicas: Replicas) -> dict[str, Any]:
    """The REST shape of Replicas (also what the page's tests compare against)."""
    now = timezone.now()
    return {
        "serving_revision": replicas.serving,
        "rolling_out_revision": replicas.rolling_out,
        "error": replicas.error or None,
        "pods": [
            {
                "name": p.name, "revision": p.revision, "role": replicas.role(p), "status": p.status,
                "phase": p.phase, "ready": p.ready, "ready_containers": p.ready_text,
                "restarts": p.restarts, "node": p.node or None, "gpus": p.gpus,
                "gpu_product": p.gpu_product or None,
                "created_at": p.created_at.isoformat() if p.created_at else None,
                "age_seconds": int((now - p.created_at).total_seconds()) if p.created_at else None,
                "containers": [asdict(c) for c in p.containers],
            }
            for p in replicas.pods
        ],
    }  # fmt: skip


def _tail(value: Any) -> int:
    if value in (None, ""):
        return DEFAULT_TAIL_LINES
    try:
        tail = int(str(value))
    except ValueError:
        raise ValidationError({"tail": "Give a whole number of lines."}) from None
    if not 1 <= tail <= MAX_TAIL_LINES:
        raise ValidationError({"tail": f"Give between 1 and {MAX_TAIL_LINES} lines."})
    return tail


@dataclass
class LogView:
    pods: list[Pod]
    pod: Pod | None
    container: str
    tail: int
    previous: bool
    text: str = ""
    error: str = ""
    deactivated: bool = False  # no pods because it was deactivated: a state to change, not an outage
    idle: bool = False  # no pods because the autoscaler scaled it to zero: the next request starts one


def deployment_log(
    deployment: ModelDeployment, *, pod: str = "", container: str = "", tail: Any = None, previous: bool = False
) -> LogView:
    """The tail of one container's log. Only this deployment's pods can be named (a pod of
    another deployment or namespace is refused as unknown); with no pod named, the newest ready
    pod (else the newest) and its first container. Bad input raises ValidationError; the pool's
    failures come back in `error`, in ModelDeck's words."""
    lines = _tail(tail)
    replicas = deployment_replicas(deployment)
    view = LogView(replicas.pods, None, "", lines, previous, error=replicas.error)
    if replicas.error:
        return view
    if pod:
        view.pod = next((p for p in replicas.pods if p.name == pod), None)
        if view.pod is None:
            raise ValidationError({"pod": "No such pod of this deployment (it may have been replaced)."})
    else:
        ready = [p for p in replicas.pods if p.ready]
        view.pod = (ready or replicas.pods or [None])[0]
    if view.pod is None:
        # A deactivated deployment's last pods may still be stopping (their log is read above);
        # once they are gone, say why there are none rather than "right now".
        view.deactivated = deployment.state == DeploymentState.DEACTIVATED
        view.idle = not view.deactivated and DeploymentScale.objects.filter(deployment=deployment, desired=0).exists()
        view.error = DEACTIVATED_NO_PODS if view.deactivated else IDLE_AT_ZERO if view.idle else NO_PODS
        return view
    names = [c.name for c in view.pod.containers]
    if container and container not in names:
        raise ValidationError({"container": f"Choose one of: {', '.join(names)}."})
    view.container = container or (names[0] if names else "")
    try:
        with kube_for(deployment.pool) as kube:
            view.text = read_log(kube, deployment.project.namespace(), view.pod.name, view.container,
                                 tail_lines=lines, previous=previous)  # fmt: skip
    except KubeError as err:
        view.error = err.message
    return view


def deployment_metrics(deployment: ModelDeployment, range_key: str | None) -> dict[str, Any]:
    """The gateway's measurements of this deployment over a range, per revision (gateway.reports)."""
    if range_key and range_key not in reports.RANGES:
        raise ValidationError({"range": f"Choose one of: {', '.join(reports.RANGES)}."})
    rng = reports.range_for(range_key)
    revisions = dict(deployment.revisions.values_list("pk", "number"))
    records = reports.in_range(UsageRecord.objects.filter(deployment=deployment), rng)
    return reports.revision_metrics(records, rng, revisions)
