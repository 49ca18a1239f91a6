"""Celery tasks: push a deployment to its pool (blue-green), and sync every pool's status back.

How state is decided (sync_status, per deployment, from one listing of the pool):
- Deleting: the push task deletes the objects; the row goes once the pool holds none.
- Deactivated: stays so; if replicas still run there, the push is queued again.
- the current revision's Deployment is absent: Pending (never pushed yet) or Deploying (it
  vanished) and a push is queued — a crash half-way through a push converges here.
- ready replicas >= the revision's replicas: Running if the Service already points at it,
  else Deploying and a push is queued to switch the Service (blue-green).
- a pod can't be scheduled (no node has the GPUs, yet): Deploying, "Waiting for capacity
  (0/1 scheduled: insufficient nvidia.com/gpu)", for the spec's capacity grace period (default
  15 minutes: cluster-autoscaler or Karpenter may be adding a node); Failed only after it.
- a pod reports a reason waiting can't fix (ImagePullBackOff, CrashLoopBackOff, ...): Failed at
  once, with Kubernetes' words.
- either of those (or the capacity grace or the progress deadline passing) while another
  revision is ready behind the Service: the rollout failed; it rolls back by itself
  (deployment_rollout_failed) and reads "Update failed: <reason>; revision N still serving"
  until the next change.
- otherwise Deploying.
- the pool can't be reached: Unknown; nothing is deleted, the next cycle decides again.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from celery import shared_task
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from catalog.artifacts import artifact_url
from deployments import kube
from deployments.autoscale import autoscale_all, record_ready
from deployments.autoscale import autoscale_wake as autoscale_wake_now
from deployments.controller import controller_sync
from deployments.models import (
    ACTIVE_STATES,
    EXTERNAL_RUNNING_REASON,
    ComputePool,
    DeploymentEvent,
    DeploymentState,
    ModelDeployment,
)
from deployments.renderers import (
    DEFAULT_CAPACITY_GRACE_SECONDS,
    LABEL_DEPLOYMENT_ID,
    LABEL_REVISION,
    SpecError,
    deployment_selector,
    object_names,
    render,
    render_service,
)
from deployments.renderers.exposure import credential_secret
from deployments.renderers.torchserve import ARTIFACT_URL_KEY, artifact_url_secret_name
from deployments.services import (
    UPDATE_FAILED,
    deployment_engine_credential,
    deployment_finish_delete,
    deployment_rollout_done,
    deployment_rollout_failed,
    event_record,
    push_enqueue,
    state_claim,
)
from deployments.spec import (
    HF_TOKEN_KEY,
    HF_TOKEN_SECRET,
    NGC_API_KEY,
    NGC_API_SECRET,
    NGC_PULL_SECRET,
    S3_SECRET,
    render_spec_for,
    replicas_for,
    s3_environment,
)
from gateway.cache import invalidate
from projects.models import IntegrationKind

log = logging.getLogger(__name__)

PUSH_MAX_RETRIES = 5
SYNC_WRITE_BATCH = 100
# Events read from the pods' Kubernetes events, apart from the reasons the status sync records.
POD_EVENT_SOURCE = "pod"
NGC_REGISTRY = "nvcr.io"


# --- Push ---------------------------------------------------------------------------------------


def _load(deployment_id: int) -> ModelDeployment | None:
    return (
        ModelDeployment.objects.select_related(
            "project",
            "project__organization",
            "model",
            "bundle",
            "pool",
            "current_revision",
            "serving_revision",
            "scale",
        )
        .filter(pk=deployment_id)
        .first()
    )


def _secrets(deployment: ModelDeployment, namespace: str, rs: Any) -> list[dict[str, Any]]:
    """The Secrets the revision references, built from the project's integrations."""
    values = {i.kind: i.secret for i in deployment.project.integrations.all()}
    refs = {secret for secret, _ in rs.secret_env.values()}
    out = []
    if HF_TOKEN_SECRET in refs and values.get(IntegrationKind.HUGGINGFACE):
        out.append(
            kube.secret_object(
                namespace, HF_TOKEN_SECRET, {HF_TOKEN_KEY: values[IntegrationKind.HUGGINGFACE]}
            )
        )
    if NGC_API_SECRET in refs and values.get(IntegrationKind.NGC):
        out.append(
            kube.secret_object(
                namespace, NGC_API_SECRET, {NGC_API_KEY: values[IntegrationKind.NGC]}
            )
        )
    s3 = next((i for i in deployment.project.integrations.all() if i.kind == IntegrationKind.S3), None)
    if S3_SECRET in refs and s3 is not None:
        out.append(kube.secret_object(namespace, S3_SECRET, s3_environment(s3)))
    if NGC_PULL_SECRET in (rs.image_pull_secrets or ()) and values.get(IntegrationKind.NGC):
        out.append(kube.docker_config_secret(namespace, NGC_PULL_SECRET, NGC_REGISTRY, "$oauthtoken",
                                             values[IntegrationKind.NGC]))  # fmt: skip
    if rs.artifact_url_secret and deployment.model.artifact:
        # A fresh short-lived link on every push; pods read it when they start (renderers/torchserve.py).
        url = artifact_url(deployment.model, base_url=settings.ARTIFACT_BASE_URL)
        out.append(kube.secret_object(namespace, rs.artifact_url_secret, {ARTIFACT_URL_KEY: url}))
    return out


DOWNLOADING = "Downloading weights into the model cache"


def _download_pending(k: kube.Kube, job: dict[str, Any]) -> str | None:
    """Start the pre-download Job unless it exists; its name while it has not completed, else
    None. A Job is applied once (its pod template is immutable, and its name says what it
    downloads). One that failed is removed and made again: pushes after a failure come from the
    user (an update, activate), who expects a new try; the status sync never pushes a deployment
    it failed."""
    namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
    existing = kube.read_job(k, namespace, name)
    conditions = {c.get("type"): c.get("status") for c in ((existing or {}).get("status") or {}).get("conditions") or []}
    if conditions.get("Complete") == "True":
        return None
    if conditions.get("Failed") == "True":
        kube.delete_job(k, namespace, name)
        existing = None
    if existing is None:
        kube.apply(k, job)
    return name


def _fail(deployment: ModelDeployment, reason: str, message: str) -> None:
    """Record an error retrying can't fix; the user changes the spec or the pool."""
    if deployment.state in (DeploymentState.DEACTIVATED, DeploymentState.DELETING):
        # Those are the user's choices (and hold no GPUs); keep them, say what went wrong.
        ModelDeployment.objects.filter(pk=deployment.pk, state=deployment.state).update(
            state_reason=message[:2000]
        )
    elif _roll_back(deployment, Decision(DeploymentState.FAILED, f"{reason}: {message}", rollback=True)):
        return  # a rollout refused for good: the serving revision stays, the rollback says why
    else:
        state_claim(
            deployment, expect=(deployment.state,), state=DeploymentState.FAILED, reason=message
        )
    event_record(deployment, reason=reason, message=message, type="Warning")


def _switch_service(k: kube.Kube, deployment: ModelDeployment, rs: Any) -> bool:
    """Point the Service at `rs.revision`, record it, then remove the older revisions.

    Only while this revision is still the current one: a push that lost a race with a newer
    update must not move the traffic. The Service is applied before the database records the
    switch, so a crash in between is seen (serving != current) and repaired by the next push.
    """
    revision = deployment.current_revision
    previous = deployment.serving_revision
    current_id = (
        ModelDeployment.objects.filter(pk=deployment.pk)
        .values_list("current_revision_id", flat=True)
        .first()
    )
    if current_id != revision.pk:
        return False
    kube.apply(k, render_service(rs))
    claimed = ModelDeployment.objects.filter(pk=deployment.pk, current_revision=revision).update(
        serving_revision=revision, updated_at=timezone.now()
    )
    if not claimed:
        return False  # a newer revision took over meanwhile; its own push moves the traffic
    transaction.on_commit(invalidate)  # the gateways' routing tables name the serving revision
    deployment.serving_revision = revision
    if previous is None or previous.pk != revision.pk:
        old = f" (from revision {previous.number})" if previous is not None else ""
        event_record(
            deployment,
            reason="ServiceSwitched",
            message=f"Traffic now goes to revision {revision.number}{old}.",
        )
    _remove_other_revisions(k, deployment, rs)
    deployment_rollout_done(deployment_id=deployment.pk)  # the old pods are gone: so is their surge
    return True


def _remove_other_revisions(k: kube.Kube, deployment: ModelDeployment, rs: Any) -> None:
    """Delete the Deployments (and operator resources) of every revision but `rs.revision`."""
    # `revision!=N` also matches objects without the label, so only Deployments are swept:
    # the model cache PVC (no revision label) must survive. A revision created since this push
    # started is spared too; its own push applies it.
    latest = (
        ModelDeployment.objects.filter(pk=deployment.pk)
        .values_list("current_revision__number", flat=True)
        .first()
    )
    selector = f"{deployment_selector(deployment.pk)},{LABEL_REVISION}!={rs.revision}"
    if latest and latest != rs.revision:
        selector += f",{LABEL_REVISION}!={latest}"
    # A NIMService carries the revision label like a Deployment; its NIMCache (no revision) stays.
    operators = deployment.pool.operators()
    kinds = ("Deployment",)
    if operators["nim"]:
        kinds += ("NIMService",)
    if operators["kserve"]:
        kinds += ("InferenceService", "ServingRuntime")
    kube.delete_selected(k, rs.namespace, selector, kinds=kinds)


def _teardown(k: kube.Kube, deployment: ModelDeployment) -> None:
    namespace = deployment.project.namespace()
    selector = deployment_selector(deployment.pk)
    kinds = ["Deployment", "Service", "PersistentVolumeClaim", "Secret", "Ingress", "NetworkPolicy", "Job"]
    operators = deployment.pool.operators()
    if operators["nim"]:
        kinds += ["NIMService", "NIMCache"]
    if operators["kserve"]:
        kinds += ["InferenceService", "ServingRuntime"]
    if operators["gateway_api"] or deployment.pool.exposure == "gateway_api":
        kinds.append("HTTPRoute")
    kube.delete_selected(k, namespace, selector, kinds=tuple(kinds))
    if kube.count_selected(k, namespace, selector) == 0 and deployment_finish_delete(deployment.pk):
        log.info("deployment deleted", extra={"deployment": deployment.pk})


def _push_external(deployment: ModelDeployment) -> str:
    """An external deployment has nothing on any pool: deleting removes the row, activating
    makes it Running again (deployments/external.py)."""
    if deployment.state == DeploymentState.DELETING:
        deployment_finish_delete(deployment.pk)
        return "teardown"
    if deployment.state in (DeploymentState.PENDING, DeploymentState.DEPLOYING, DeploymentState.UNKNOWN):
        state_claim(deployment, expect=deployment.state, state=DeploymentState.RUNNING,
                    reason=EXTERNAL_RUNNING_REASON)  # fmt: skip
    return "external"


def push(deployment_id: int) -> str:
    """Make the pool hold what the deployment's current revision says. Safe to run any number
    of times: unchanged objects are server-side applied as no-ops. Returns what it did, in words.

    Raises TransientKubeError for the caller to retry; permanent errors are recorded instead.
    """
    deployment = _load(deployment_id)
    if deployment is None or deployment.current_revision is None:
        return "gone"
    if deployment.pool_id is None:
        return _push_external(deployment)
    try:
        with kube.kube_for(deployment.pool) as k:
            if deployment.state == DeploymentState.DELETING:
                _teardown(k, deployment)
                return "teardown"
            return _push(k, deployment)
    except kube.PermanentKubeError as err:
        _fail(deployment, err.reason or "ApplyFailed", err.message)
        return "failed"


def _still_wanted(deployment: ModelDeployment, revision_id: int) -> bool:
    """The row still exists, isn't being deleted and still wants this revision (read fresh)."""
    return (
        ModelDeployment.objects.filter(pk=deployment.pk, current_revision_id=revision_id)
        .exclude(state=DeploymentState.DELETING)
        .exists()
    )


def _undo_if_unwanted(k: kube.Kube, deployment: ModelDeployment) -> bool:
    """After applying: if the deployment was deleted meanwhile, remove what this push created.

    A delete that commits while a (slow) push is applying runs its teardown at once; when the
    teardown finishes first, the push's objects would outlive the row. Checked after the last
    apply, so either this check sees the delete or the teardown sees these objects."""
    row = ModelDeployment.objects.filter(pk=deployment.pk).values_list("state", flat=True).first()
    if row is None:
        kube.delete_selected(k, deployment.project.namespace(), deployment_selector(deployment.pk),
                             kinds=("Deployment", "Service", "PersistentVolumeClaim", "Job"))  # fmt: skip
        log.info("push removed what it applied: deployment deleted meanwhile",
                 extra={"deployment": deployment.pk})  # fmt: skip
        return True
    if row == DeploymentState.DELETING:
        deployment.state = DeploymentState.DELETING
        _teardown(k, deployment)
        return True
    return False


def _push(k: kube.Kube, deployment: ModelDeployment) -> str:
    revision = deployment.current_revision
    if not _still_wanted(deployment, revision.pk):
        # Deleted, or a newer revision was committed since this push loaded the row: that
        # change queued its own push; applying this one now would only leave objects behind.
        return "superseded"
    deactivated = deployment.state == DeploymentState.DEACTIVATED
    try:
        rs = render_spec_for(deployment, revision, replicas=0 if deactivated else None)
        objects = render(rs)
    except SpecError as err:
        _fail(
            deployment,
            "InvalidSpec",
            f"Revision {revision.number} can't be rendered: {err}. Fix the spec and update the deployment.",
        )
        return "failed"
    names = object_names(rs)
    if kube.ensure_namespace(k, rs.namespace):
        event_record(
            deployment,
            reason="NamespaceCreated",
            message=f"Namespace {rs.namespace} created on {deployment.pool.name}.",
        )
    secrets = _secrets(deployment, rs.namespace, rs)
    if rs.engine_credential:
        secrets.append(credential_secret(rs, deployment_engine_credential(deployment=deployment)))
    for secret in secrets:
        kube.apply_secret(k, secret)  # values never reach a log or an event; never takes over another's
    if deployment.serving_revision is None and revision.pods_number() > 1 and not deactivated:
        # A recreate update: the old revision stops before the new pods ask for its GPUs.
        _remove_other_revisions(k, deployment, rs)
    if deactivated:  # scaled to zero: nothing to download for
        objects = [obj for obj in objects if obj["kind"] != "Job"]
    downloading = None
    for obj in objects:
        if obj["kind"] == "Deployment" and downloading is not None:
            continue  # renderers/download.py: the engine's pods start once the cache is filled
        if obj["kind"] == "Job":
            downloading = _download_pending(k, obj)
            continue
        kube.apply(k, obj)
    if _undo_if_unwanted(k, deployment):
        return "deleted-meanwhile"
    if downloading is not None:
        if state_claim(deployment, expect=DeploymentState.PENDING, state=DeploymentState.DEPLOYING,
                       reason=f"{DOWNLOADING} (Job {downloading}); revision {revision.number} starts when it completes."):  # fmt: skip
            event_record(deployment, reason="DownloadingWeights",
                         message=f"Job {downloading} downloads the weights into {names.model_cache}.")  # fmt: skip
        return "downloading"
    if state_claim(deployment, expect=DeploymentState.PENDING, state=DeploymentState.DEPLOYING,
                   reason=f"Revision {revision.number} applied to {deployment.pool.name}; waiting for pods."):  # fmt: skip
        event_record(deployment, reason="Applied",
                     message=f"Deployment {names.deployment} applied in namespace {rs.namespace}.")  # fmt: skip
    serving = deployment.serving_revision
    if deactivated or serving is None or serving.pk == revision.pk:
        # Nothing else serves (first rollout, or scaled to zero): no traffic to protect.
        _switch_service(k, deployment, rs)
        return "applied"
    # Blue-green: the Service keeps selecting the serving revision until this one is ready.
    observed = kube.read_deployment(k, rs.namespace, names.deployment)
    if observed is None and rs.operator == "kserve":
        observed = kube.read_deployment(k, rs.namespace, f"{names.deployment}-predictor")
    observed = observed or {}
    ready = int((observed.get("status") or {}).get("readyReplicas") or 0)
    if ready >= replicas_for(deployment, revision.spec) and _switch_service(k, deployment, rs):
        return "switched"
    return "waiting"


@shared_task(
    bind=True,
    name="deployments.push_deployment",
    autoretry_for=(kube.TransientKubeError,),
    retry_backoff=2,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=PUSH_MAX_RETRIES,
)
def push_deployment(self: Any, deployment_id: int) -> str:
    try:
        return push(deployment_id)
    except kube.TransientKubeError as err:
        if self.request.retries < PUSH_MAX_RETRIES and not self.request.is_eager:
            raise  # autoretry_for: bounded backoff with jitter
        # Out of retries (or run in-process, where nothing could retry later): say so on the
        # deployment; the next status sync queues a push again.
        if ModelDeployment.objects.filter(pk=deployment_id).exists():
            event_record(deployment_id, reason="PushFailed", type="Warning",
                         message=f"{err.message} The status sync will try again.")  # fmt: skip
        return "gave-up"


PUSH_WAITING_BATCH = 500


@shared_task(name="deployments.push_waiting")
def push_waiting() -> int:
    """Queue the push of every change that was committed while the task queue was down (beat
    runs this every 10 seconds; once the broker answers again, they go)."""
    waiting = list(
        ModelDeployment.objects.filter(push_waiting_since__isnull=False)
        .order_by("push_waiting_since")
        .values_list("pk", "push_waiting_since")[:PUSH_WAITING_BATCH]
    )
    sent = 0
    for pk, marked in waiting:
        if not push_enqueue(pk, marked=marked):
            break  # still down: the next run tries again
        sent += 1
    return sent


# --- Status sync --------------------------------------------------------------------------------


@dataclass
class Decision:
    state: str
    reason: str
    push: bool = False
    problem: kube.Problem | None = None
    # The current revision's rollout failed while the serving revision still answers: roll back
    # (deployment_rollout_failed) instead of writing this state.
    rollback: bool = False


def _span(seconds: int) -> str:
    return f"{seconds // 60} min" if seconds >= 60 and seconds % 60 == 0 else f"{seconds} s"


def capacity_grace_seconds(spec: dict[str, Any]) -> int:
    value = spec.get("capacity_grace_seconds")
    return DEFAULT_CAPACITY_GRACE_SECONDS if value in (None, "") else int(value)


def _waiting_for_capacity(
    obs: kube.RevisionObservation, problem: kube.Problem, wanted: int, grace: int, now: datetime
) -> Decision | None:
    """Deploying while unscheduled pods are within the grace period; None once it has passed."""
    since = obs.unscheduled_since() or now
    if (now - since).total_seconds() >= grace:
        return None
    reason = (
        f"Waiting for capacity ({obs.scheduled}/{max(wanted, obs.pods)} scheduled: "
        f"{problem.capacity_summary()}). Failed if no node has room within {_span(grace)}."
    )
    event = kube.Problem("WaitingForCapacity", problem.message)
    return Decision(DeploymentState.DEPLOYING, reason, problem=event)


def decide(
    deployment: ModelDeployment,
    revisions: dict[int, kube.RevisionObservation],
    now: datetime | None = None,
    download: kube.Download | None = None,
) -> Decision:
    """The state a deployment is in, given what its pool shows (see the module docstring)."""
    now = now or timezone.now()
    state = deployment.state
    if state == DeploymentState.DELETING:
        return Decision(state, deployment.state_reason, push=True)
    current = deployment.current_revision
    if state == DeploymentState.DEACTIVATED:
        still_running = any(o.replicas > 0 or o.pods > 0 for o in revisions.values() if o.exists)
        still_running = still_running or any(
            r != current.pods_number() for r, o in revisions.items() if o.exists
        )
        return Decision(state, deployment.state_reason, push=still_running)
    obs = revisions.get(current.pods_number())  # a change that needed no rollout reuses pods
    if obs is None or not obs.exists:
        waiting = _waiting_for_download(deployment, download)
        if waiting is not None:
            return waiting
        if state == DeploymentState.PENDING:
            return Decision(
                DeploymentState.PENDING,
                f"Waiting for revision {current.number} to be applied.",
                push=True,
            )
        if state == DeploymentState.FAILED:
            # The push was refused for good (e.g. a 422): retrying can't help; a new revision will.
            return Decision(state, deployment.state_reason)
        return Decision(
            DeploymentState.DEPLOYING,
            f"Revision {current.number}'s Deployment is missing on the pool; applying it again.",
            push=True,
        )
    wanted = replicas_for(deployment, current.spec)  # the autoscaler's count, if it autoscales
    serving = deployment.serving_revision
    serving_obs = (
        revisions.get(serving.pods_number()) if serving is not None and serving.pk != current.pk else None
    )
    keeps = (
        f" Revision {serving.number} keeps serving."
        if serving_obs is not None and serving_obs.ready > 0
        else ""
    )
    if obs.ready >= wanted:
        if state == DeploymentState.FAILED and deployment.state_reason.startswith(UPDATE_FAILED) and (
            serving is not None and serving.pk == current.pk
        ):
            # Rolled back by itself after a failed update: it says so until the next change.
            return Decision(state, deployment.state_reason)
        if serving is None or serving.pk != current.pk:
            return Decision(
                DeploymentState.DEPLOYING,
                f"Revision {current.number} is ready; switching traffic to it.",
                push=True,
            )
        return Decision(
            DeploymentState.RUNNING,
            f"Revision {current.number}: {obs.ready}/{wanted} replicas ready.",
        )
    problem = obs.problem()
    if problem is not None and problem.is_capacity:
        grace = capacity_grace_seconds(current.spec)
        waiting = _waiting_for_capacity(obs, problem, wanted, grace, now)
        if waiting is not None:
            waiting.reason += keeps
            return waiting
        if grace:
            problem = kube.Problem(
                problem.reason, f"{problem.message} (still unscheduled after {_span(grace)})"
            )
    if problem is not None:
        if keeps:
            # A rollout that won't get better by waiting: the serving revision stays, this one goes.
            return Decision(DeploymentState.FAILED, f"{UPDATE_FAILED}{problem.text()}; revision "
                            f"{serving.number} still serving.", problem=problem, rollback=True)  # fmt: skip
        return Decision(DeploymentState.FAILED, f"{problem.text()}{keeps}", problem=problem)
    return Decision(
        DeploymentState.DEPLOYING,
        f"Revision {current.number}: {obs.ready}/{wanted} replicas ready.{keeps}",
    )


def _roll_back(deployment: ModelDeployment, decision: Decision) -> bool:
    """Roll a failed rollout back (under the row lock; it queues the push that removes the
    failed revision). False when there is nothing to roll back to, or the old revision's served
    name went to another deployment meanwhile: the deployment is then just Failed."""
    try:
        done = deployment_rollout_failed(deployment_id=deployment.pk, revision_id=deployment.current_revision_id,
                                         problem=decision.problem.text() if decision.problem else decision.reason)  # fmt: skip
    except ValidationError as err:
        log.warning("automatic rollback refused: %s", err, extra={"deployment": deployment.pk})
        done = None
    if done is None:
        decision.rollback = False
        return False
    return True
def _waiting_for_download(deployment: ModelDeployment, download: kube.Download | None) -> Decision | None:
    """While the pre-download Job runs the revision's Deployment is held back on purpose: say how
    far the download is, fail with its reason, or (done) push to start the engine."""
    if deployment.state not in (DeploymentState.PENDING, DeploymentState.DEPLOYING):
        return None
    number = deployment.current_revision.number
    if download is None:
        if deployment.state_reason.startswith("Downloading weights"):
            # The Job has no pod yet (or the pool's Job list was not read): keep the words; the
            # push re-applies the Job and holds the Deployment again if it is still running.
            return Decision(deployment.state, deployment.state_reason, push=True)
        return None
    if download.failed:
        message = f"Downloading the weights failed ({download.name}): {download.message}".rstrip(": ")
        return Decision(DeploymentState.FAILED, message, problem=kube.Problem("DownloadFailed", message))
    serving = deployment.serving_revision
    keeps = (f" Revision {serving.number} keeps serving." if serving is not None
             and serving.pk != deployment.current_revision_id else "")  # fmt: skip
    if download.complete:
        return Decision(DeploymentState.DEPLOYING, f"Weights downloaded; starting revision {number}.{keeps}", push=True)
    return Decision(DeploymentState.DEPLOYING, f"{download.progress()}. Revision {number} starts when it completes.{keeps}")


def _apply_decision(deployment: ModelDeployment, decision: Decision) -> bool:
    if decision.state == deployment.state and decision.reason == deployment.state_reason:
        return False
    if not state_claim(
        deployment, expect=deployment.state, state=decision.state, reason=decision.reason
    ):
        return False  # a user action moved it meanwhile; the next cycle decides again
    if decision.problem is not None:
        event_record(deployment, reason=decision.problem.reason, message=decision.problem.message,
                     type="Warning", source="kubernetes")  # fmt: skip
    elif decision.state == DeploymentState.RUNNING and deployment.state_changed_at:
        event_record(deployment, reason="Running", message=decision.reason, source="kubernetes")
    return True


def _record_pod_events(
    deployments: list[ModelDeployment], events: dict[int, list[kube.PodEvent]]
) -> None:
    """Kubernetes' events of each deployment's pods onto its Events tab: one read of what is
    recorded already, then a write only for what is new or counted higher since."""
    ids = [d.pk for d in deployments if d.pk in events]
    if not ids:
        return
    recorded = {
        (e.deployment_id, e.type, e.reason, e.message): e
        for e in DeploymentEvent.objects.filter(deployment_id__in=ids, source=POD_EVENT_SOURCE)
    }
    now = timezone.now()
    create = []
    for dep_id in ids:
        for ev in events[dep_id]:
            reason, message = ev.reason[:100], ev.message[:2000]
            row = recorded.get((dep_id, ev.type, reason, message))
            if row is None:
                create.append(DeploymentEvent(deployment_id=dep_id, type=ev.type, reason=reason,
                                              message=message, source=POD_EVENT_SOURCE,
                                              count=ev.count))  # fmt: skip
            elif ev.count > row.count:
                DeploymentEvent.objects.filter(pk=row.pk).update(count=ev.count, last_seen_at=now)
    if create:
        DeploymentEvent.objects.bulk_create(create)


# States that change only when the pool's objects, the row, or a user changes them: a row in one
# of these whose objects and row are as the last cycle left them is not decided again.
SETTLED = frozenset({DeploymentState.RUNNING, DeploymentState.DEACTIVATED, DeploymentState.FAILED})
# Every row is decided again at least this often, whatever its fingerprint (like an informer's
# resync): time-based rules and anything the fingerprint misses still converge.
SYNC_RESYNC_SECONDS = 60.0
SYNC_LOAD_BATCH = 1000


@dataclass
class PoolCursor:
    """What the last cycle saw per deployment of one pool, in this worker process: its row
    (state, reason, revisions) and its objects' resourceVersions, when deciding changed nothing."""

    settled: dict[int, tuple] = field(default_factory=dict)
    resynced_at: float = 0.0


_cursors: dict[int, PoolCursor] = {}


def _sync_rows(pool: ComputePool, pks: list[int] | None = None) -> list[ModelDeployment]:
    qs = (
        ModelDeployment.objects.filter(pool=pool)
        .exclude(current_revision__isnull=True)
        .select_related("current_revision", "serving_revision", "project", "project__organization", "scale")
        .order_by("pk")
    )
    if pks is None or len(pks) * 2 > SYNC_LOAD_BATCH * 10:
        # Most of a large pool is stale (first cycle, resync): one scan beats many IN lists.
        wanted = None if pks is None else set(pks)
        return [row for row in qs.iterator(chunk_size=2000) if wanted is None or row.pk in wanted]
    rows: list[ModelDeployment] = []
    for start in range(0, len(pks), SYNC_LOAD_BATCH):
        rows.extend(qs.filter(pk__in=pks[start : start + SYNC_LOAD_BATCH]))
    return rows


# How long a superseded revision that never served may keep its Deployment after the revision
# that replaced it was created: its own push (_switch_service) normally removes it first.
SUPERSEDED_GRACE_SECONDS = 30.0


def sweep_orphans(
    pool: ComputePool,
    known: set[int],
    deployments: list[ModelDeployment],
    observed: dict[int, dict[int, kube.RevisionObservation]],
    *,
    orphans: bool = True,
) -> int:
    """Remove what is labelled as ModelDeck's on the pool but nothing wants any more; returns
    how many deployments' or revisions' objects were removed.

    - objects of a deployment that has no row (deleted while a push ran, a crash, a restore):
      its Deployments, Service and model-cache PVC;
    - Deployments of a revision that is neither current nor serving, older than the current
      one, once the current one is SUPERSEDED_GRACE_SECONDS old (e.g. a failed rollout that
      was then replaced: it held GPUs for good).
    Level-triggered: an orphan of any origin goes within one cycle after its grace."""
    removed = 0
    doomed: list[tuple[str, str, tuple[str, ...]]] = []
    unknown = set(observed) - known if orphans else set()
    if unknown:
        # Read again after the listing: a deployment created (or given its first revision)
        # since the rows above were read is not an orphan.
        unknown -= set(ModelDeployment.objects.filter(pk__in=unknown).values_list("pk", flat=True))
    for dep_id in sorted(unknown):
        namespaces = {o.namespace for o in observed[dep_id].values() if o.namespace}
        for namespace in namespaces:
            doomed.append((namespace, deployment_selector(dep_id),
                           ("Deployment", "Service", "PersistentVolumeClaim", "Job")))  # fmt: skip
    cutoff = timezone.now() - timedelta(seconds=SUPERSEDED_GRACE_SECONDS)
    for deployment in deployments:
        current = deployment.current_revision
        if deployment.state == DeploymentState.DELETING or current.created_at > cutoff:
            continue  # the teardown removes everything / give the rollout's own push its time
        keep = {current.pods_number()}
        if deployment.serving_revision is not None:
            keep.add(deployment.serving_revision.pods_number())
        for number, obs in (observed.get(deployment.pk) or {}).items():
            # Older than the current revision: a rollout superseded, or rolled back after it
            # failed (the rollback's revision reuses older pods but is numbered after it).
            if obs.exists and number not in keep and number < current.number and obs.namespace:
                doomed.append((obs.namespace, deployment_selector(deployment.pk, number), ("Deployment",)))
                event_record(deployment, reason="RevisionRemoved", source="kubernetes",
                             message=f"Revision {number} was superseded and never served; its pods were removed.")  # fmt: skip
    if not doomed:
        return 0
    try:
        with kube.kube_for(pool) as k:
            for namespace, selector, kinds in doomed:
                kube.delete_selected(k, namespace, selector, kinds=kinds)
                removed += 1
    except kube.KubeError as err:  # the next cycle tries again
        log.warning("orphan cleanup failed: %s", err.message, extra={"pool": pool.pk})
    if removed:
        log.info("orphaned objects removed", extra={"pool": pool.pk, "removed": removed})
    return removed


def _stale_rows(
    pool: ComputePool,
    heads: list[tuple],
    listed_deployments: list[dict[str, Any]],
    listed_pods: list[dict[str, Any]],
    listed_operated: list[dict[str, Any]],
) -> tuple[PoolCursor, dict[int, tuple], list[int]]:
    """The pool's cursor, each row's key (its head and its objects' fingerprints), and the rows
    to decide again: those whose key differs from what the cursor kept (all after a resync)."""
    cursor = _cursors.setdefault(pool.pk, PoolCursor())
    now = time.monotonic()
    if now - cursor.resynced_at >= SYNC_RESYNC_SECONDS:
        cursor.settled.clear()
        cursor.resynced_at = now
    # An operator's custom resource (NIMService, InferenceService) carries the status there.
    prints = kube.fingerprints(
        listed_deployments, listed_pods, listed_operated, label=LABEL_DEPLOYMENT_ID
    )
    keys = {head[0]: (head, prints.get(head[0], ())) for head in heads}
    stale = [pk for pk, key in keys.items() if cursor.settled.get(pk) != key]
    # Forget rows that left the pool (deleted, moved) so the cursor never outgrows it.
    for gone in cursor.settled.keys() - keys.keys():
        del cursor.settled[gone]
    return cursor, keys, stale


def sync_pool(pool: ComputePool) -> dict[str, int]:
    """One status pass over a pool: two list calls (Deployments, Pods) whatever the number of
    deployments, and a third (Pod events) only in a cycle that decides some row again: a steady
    cycle over 5 pools costs 10 list calls, a cycle where rows change 15.

    The pods' events (Scheduled, Pulling, Pulled, Started, BackOff...) go to the Events tab of
    the deployments decided in this cycle (a settled row's pods changed nothing, so neither did
    their events); the state itself is decided from the pods' status, which says the same. Pools
    with the NIM Operator or KServe add one list call per custom resource kind.

    A steady cycle stays cheap at 10,000 deployments: lists are decoded lean (kube/lean.py),
    the rows are first read as a few columns, and a settled row whose objects' resourceVersions
    and whose row are unchanged since the last cycle is skipped (PoolCursor); only the rest are
    loaded whole and decided.
    """
    heads = list(
        ModelDeployment.objects.filter(pool=pool)
        .exclude(current_revision__isnull=True)
        .values_list("pk", "state", "state_reason", "current_revision_id", "serving_revision_id")
    )
    stats = {"deployments": len(heads), "changed": 0, "pushed": 0, "list_calls": 0, "decided": 0}
    if not heads:
        _cursors.pop(pool.pk, None)
    # A pool without deployments is still listed (sync_status picks it while it is reachable):
    # objects left by a deleted deployment are found and removed there too.
    try:
        with kube.kube_for(pool) as k:
            stats["list_calls"] = 2
            listed_deployments, listed_pods = kube.list_managed(k)
            listed_operated = []
            # One list call per operator kind whose status says whether a revision is ready.
            for found, kind in ((pool.operators()["nim"], "NIMService"),
                                (pool.operators()["kserve"], "InferenceService")):  # fmt: skip
                if found:
                    stats["list_calls"] += 1
                    listed_operated += kube.list_custom(k, kind)
            cursor, keys, stale = _stale_rows(
                pool, heads, listed_deployments, listed_pods, listed_operated
            )
            # Events go only to rows decided again: none to decide, no events to read.
            listed_events = []
            if stale:
                stats["list_calls"] += 1
                listed_events = kube.list_pod_events(k)
    except kube.KubeError as err:
        _cursors.pop(pool.pk, None)
        ComputePool.objects.filter(pk=pool.pk).update(
            reachable=False, last_checked_at=timezone.now()
        )
        what = (
            "can't be reached"
            if isinstance(err, kube.PoolUnreachable)
            else "didn't answer the status check"
        )
        reason = (
            f"Compute pool “{pool.name}” {what}: {err.message} Nothing was changed there; retrying."
        )
        active = [pk for pk, state, *_ in heads if state in ACTIVE_STATES]
        for deployment in _sync_rows(pool, active):
            if deployment.state in ACTIVE_STATES and _apply_decision(
                deployment, Decision(DeploymentState.UNKNOWN, reason)
            ):
                stats["changed"] += 1
                event_record(
                    deployment,
                    reason="PoolUnreachable",
                    message=reason,
                    type="Warning",
                    source="kubernetes",
                )
        return stats
    if pool.reachable is not True:
        ComputePool.objects.filter(pk=pool.pk).update(
            reachable=True, last_checked_at=timezone.now()
        )
    observed = kube.observe_operated(listed_operated, kube.observe(listed_deployments, listed_pods))
    # Orphans have no row, so no fingerprint makes them stale: swept on every cycle.
    stats["removed"] = sweep_orphans(pool, set(keys), [], observed)
    if not stale:
        return stats
    deployments = _sync_rows(pool, stale)
    stats["decided"] = len(deployments)
    # A settled row's pods changed nothing, so neither did their events: only re-decided rows.
    _record_pod_events(deployments, kube.events_by_deployment(listed_events, listed_pods))
    # Superseded revisions of the rows decided now (every row at least once a resync).
    stats["removed"] += sweep_orphans(pool, set(keys), deployments, observed, orphans=False)
    downloads = _downloads(pool, deployments, observed, listed_pods, stats)
    record_ready(deployments, observed)  # the REST `scale.ready` of every deployment
    to_push = []
    # Writes go in short batches: one commit per batch instead of per row, without holding
    # row locks long enough to stall a user's deactivate or update.
    for start in range(0, len(deployments), SYNC_WRITE_BATCH):
        with transaction.atomic():
            for deployment in deployments[start : start + SYNC_WRITE_BATCH]:
                decision = decide(deployment, observed.get(deployment.pk, {}),
                                  download=downloads.get(deployment.pk))  # fmt: skip
                head, prints_of = keys[deployment.pk]
                if decision.rollback and _roll_back(deployment, decision):
                    cursor.settled.pop(deployment.pk, None)
                    stats["changed"] += 1
                    continue
                changed = _apply_decision(deployment, decision)
                if changed:
                    stats["changed"] += 1
                    # The claim wrote exactly this state and reason: the row as the next cycle reads it.
                    head = (head[0], deployment.state, deployment.state_reason, *head[3:])
                if decision.push or head[1] not in SETTLED:
                    cursor.settled.pop(deployment.pk, None)
                else:
                    cursor.settled[deployment.pk] = (head, prints_of)
                if decision.push:
                    to_push.append(deployment.pk)
    for pk in to_push:
        stats["pushed"] += 1
        push_deployment.delay(pk)
    return stats


def _downloads(
    pool: ComputePool,
    deployments: list[ModelDeployment],
    observed: dict[int, dict[int, kube.RevisionObservation]],
    pods: list[dict[str, Any]],
    stats: dict[str, int],
) -> dict[int, kube.Download]:
    """The pool's pre-download Jobs, listed (one call) only in a cycle where a row being decided
    has no Deployment for its revision yet and has download pods: a steady pool pays nothing."""
    owners = kube.download_pod_owners(pods)
    if not any(
        d.pk in owners and not (observed.get(d.pk, {}).get(d.current_revision.pods_number()) or
                                kube.RevisionObservation(0)).exists
        for d in deployments
    ):  # fmt: skip
        return {}
    try:
        with kube.kube_for(pool) as k:
            jobs = kube.list_jobs(k)
    except kube.KubeError as err:  # the next cycle reads them again
        log.warning("listing download jobs failed: %s", err.message, extra={"pool": pool.pk})
        return {}
    stats["list_calls"] += 1
    return kube.observe_downloads(jobs, pods)


# One status-sync cycle and one autoscale pass at a time in a worker process. The worker of
# `make run` runs tasks in threads (run_console): a cycle that outlasts its period would
# otherwise run beside the next one over the same per-process cursors (_cursors, autoscale's
# _last_sample). The later one is skipped: beat sends another within seconds.
_sync_running = threading.Lock()
_autoscale_running = threading.Lock()


def _alone(lock: threading.Lock, what: str, skipped: dict[str, int], run) -> dict[str, int]:
    """`run()` unless another thread of this process holds `lock`; then `skipped`."""
    if not lock.acquire(blocking=False):
        log.info("%s skipped: the previous one is still running in this process", what)
        return skipped
    try:
        return run()
    finally:
        lock.release()


@shared_task(name="deployments.sync_status")
def sync_status() -> dict[str, int]:
    """Every pool with deployments, one listing each (beat runs this every 5 seconds)."""
    totals = {"pools": 0, "deployments": 0, "changed": 0, "pushed": 0, "list_calls": 0, "decided": 0}
    return _alone(_sync_running, "status sync", dict(totals), lambda: _sync_all(totals))


def _sync_all(totals: dict[str, int]) -> dict[str, int]:
    # Reachable pools without deployments too: what a deleted deployment left there is removed.
    pools = ComputePool.objects.filter(Q(deployments__isnull=False) | Q(reachable=True)).distinct()
    for pool in pools:
        try:
            stats = sync_pool(pool)
        except Exception:  # one pool's bug must not stop the others' status
            log.exception("status sync failed", extra={"pool": pool.pk})
            continue
        totals["pools"] += 1
        for key in ("deployments", "changed", "pushed", "list_calls", "decided"):
            totals[key] += stats[key]
        # ModelDeployment resources on pools that serve the CRD: after the sync, so the status
        # written back is this cycle's.
        if pool.serves_modeldeployments():
            try:
                controller_sync(pool)
                totals["list_calls"] += 1
            except Exception:
                log.exception("ModelDeployment controller failed", extra={"pool": pool.pk})
    return totals


# --- Autoscaling (deployments/autoscale.py has the rule) ----------------------------------------


@shared_task(name="deployments.autoscale")
def autoscale() -> dict[str, int]:
    """Every autoscaled deployment: load → desired replicas (beat runs this every few seconds).
    Without Redis the web process autoscales (autoscale.EmbeddedAutoscaler): the load is there."""
    if not settings.REDIS_URL:
        return {"deployments": 0, "changed": 0}
    return _alone(_autoscale_running, "autoscale", {"deployments": 0, "changed": 0}, autoscale_all)


@shared_task(name="deployments.autoscale_wake")
def autoscale_wake(deployment_id: int) -> int | None:
    """The gateway holds a request for a deployment at zero: scale it up now, not at the next tick.
    (Without Redis the web process's autoscaler takes the wake itself: gateway/load.py.)"""
    if not settings.REDIS_URL:
        return None
    scale = autoscale_wake_now(deployment_id)
    return None if scale is None else scale.desired


@shared_task(name="deployments.refresh_artifact_links")
def refresh_artifact_links() -> int:
    """Renew the signed link in each active deployment's artifact Secret (beat, every third of
    MODELDECK_ARTIFACT_URL_TTL), so a pod that starts long after the push (a restart, a
    scale-up) still fetches its archive. One Secret write per such deployment; returns how many."""
    rows = (
        ModelDeployment.objects.filter(state__in=ACTIVE_STATES)
        .exclude(model__artifact="")
        .select_related("model", "pool", "project")
        .order_by("pool_id")
    )
    by_pool: dict[int, list[ModelDeployment]] = {}
    for deployment in rows:
        by_pool.setdefault(deployment.pool_id, []).append(deployment)
    renewed = 0
    for deployments in by_pool.values():
        pool = deployments[0].pool
        try:
            with kube.kube_for(pool) as k:
                for deployment in deployments:
                    url = artifact_url(deployment.model, base_url=settings.ARTIFACT_BASE_URL)
                    kube.apply_secret(k, kube.secret_object(deployment.project.namespace(),
                                                            artifact_url_secret_name(deployment.name),
                                                            {ARTIFACT_URL_KEY: url}))  # fmt: skip
                    renewed += 1
        except kube.KubeError as err:  # the next round tries again; the old link is still valid
            log.warning("artifact link renewal failed: %s", err.message, extra={"pool": pool.pk})
    return renewed
