"""The ModelDeployment controller: `modeldeployments.modeldeck.io/v1` resources on a pool become
ModelDeck deployments, applied through the `apply -f` service as the system, with their status
written back and the deployment deleted when its resource is.

One list call per pool a status cycle (`kube.list_modeldeployments`), only on pools whose last
"Test connection" found the CRD (`ComputePool.serves_modeldeployments`). A resource's namespace
is a project's namespace (`Project.kube_namespace`) in the pool's organization: whoever may
create resources in that namespace on that cluster deploys into that project. The deployment
is then read-only everywhere else (`deployments.services._refuse_if_managed`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from deployments import kube, services
from deployments.apply import API_VERSION, Context, ManifestError, error_text, plan_deployment
from deployments.models import ComputePool, DeploymentState, ModelDeployment
from projects.models import Project
from sharing.audit import audit_record

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What one cycle did to one resource: the status to write back (None: unchanged)."""

    namespace: str
    name: str
    status: dict[str, Any] | None = None


@dataclass
class ControllerStats:
    resources: int = 0
    applied: int = 0
    deleted: int = 0
    status_writes: int = 0
    errors: list[str] = field(default_factory=list)


def resource_ref(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def _condition(
    kind: str, ok: bool, reason: str, message: str, previous: dict[str, Any]
) -> dict[str, Any]:
    status = "True" if ok else "False"
    old = next((c for c in previous.get("conditions") or [] if c.get("type") == kind), {})
    # The transition time moves only when the status does, as Kubernetes conditions do.
    since = old.get("lastTransitionTime") if old.get("status") == status else None
    return {"type": kind, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": since or timezone.now().strftime("%Y-%m-%dT%H:%M:%SZ")}  # fmt: skip


def _status(resource: dict[str, Any], deployment: ModelDeployment | None, *, applied: bool,
            reason: str, message: str) -> dict[str, Any]:  # fmt: skip
    previous = resource.get("status") or {}
    generation = (resource.get("metadata") or {}).get("generation")
    out: dict[str, Any] = {"observedGeneration": generation}
    ready = False
    if deployment is not None:
        ready = deployment.state == DeploymentState.RUNNING
        out.update({
            "state": deployment.get_state_display(),
            "stateReason": deployment.state_reason[:1000],
            "deploymentId": deployment.pk,
            "servedModelName": deployment.served_name(),
            "endpoint": settings.GATEWAY_BASE_URL.rstrip("/") + "/v1",
        })  # fmt: skip
    out["conditions"] = [
        _condition("Applied", applied, reason, message, previous),
        _condition("Ready", ready, deployment.get_state_display() if deployment else "NotDeployed",
                   (deployment.state_reason[:1000] if deployment else "No deployment."), previous),
    ]  # fmt: skip
    return out


def _same(current: dict[str, Any], desired: dict[str, Any]) -> bool:
    def strip(status: dict[str, Any]) -> dict[str, Any]:
        conditions = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"}
            for c in status.get("conditions") or []
        ]
        return {**status, "conditions": conditions}

    return strip(current or {}) == strip(desired)


def _project_for(pool: ComputePool, namespace: str) -> Project | None:
    return Project.objects.filter(
        organization_id=pool.organization_id, kube_namespace=namespace
    ).first()


def _apply_one(pool: ComputePool, resource: dict[str, Any], stats: ControllerStats) -> Outcome:
    meta = resource.get("metadata") or {}
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    ref = resource_ref(namespace, name)
    outcome = Outcome(namespace, name)
    spec = resource.get("spec")
    project = _project_for(pool, namespace)
    if project is None:
        outcome.status = _status(resource, None, applied=False, reason="NoProject", message=(
            f"Namespace {namespace} is not a project's namespace in organization "
            f"{pool.organization.slug}; create the resource in a project's namespace."))  # fmt: skip
        return outcome
    existing = (
        ModelDeployment.objects.filter(project=project, name=name).select_related("pool").first()
    )
    if existing is not None and (
        existing.managed_by_resource != ref or existing.pool_id != pool.pk
    ):
        outcome.status = _status(resource, None, applied=False, reason="Conflict", message=(
            f"Project {project.slug} already has a deployment named {name} that this resource does "
            "not manage; give the resource another name or delete that deployment."))  # fmt: skip
        return outcome
    previous = resource.get("status") or {}
    applied_before = any(c.get("type") == "Applied" and c.get("status") == "True"
                         for c in previous.get("conditions") or [])  # fmt: skip
    if (
        existing is not None
        and applied_before
        and previous.get("observedGeneration") == meta.get("generation")
    ):
        # This generation is applied already: only the status moves.
        outcome.status = _status(resource, existing, applied=True, reason="Applied",
                                 message=_applied_message(existing, pool))  # fmt: skip
        return outcome
    try:
        if not isinstance(spec, dict):
            raise ManifestError("spec must be a mapping")
        spec = dict(spec)
        if spec.setdefault("pool", pool.name) != pool.name:
            raise ManifestError(
                f"spec.pool: this resource is on pool {pool.name}; leave spec.pool out or name it"
            )
        doc = {"apiVersion": API_VERSION, "kind": "ModelDeployment",
               "metadata": {"name": name, "project": project.slug}, "spec": spec}  # fmt: skip
        ctx = Context(user=None, organization=project.organization)
        with transaction.atomic():
            change = plan_deployment(ctx, doc)
            if change.run is not None:
                change.run()
            deployment = ModelDeployment.objects.select_for_update().get(project=project, name=name)
            if deployment.managed_by_resource != ref:
                ModelDeployment.objects.filter(pk=deployment.pk).update(managed_by_resource=ref)
                deployment.managed_by_resource = ref
            if change.action != "unchanged":
                audit_record(
                    actor=None, organization=project.organization, action="resource_apply", obj=deployment,
                    before=None, after={"resource": f"ModelDeployment {ref}", "pool": pool.name,
                                        "generation": meta.get("generation"), "result": change.action,
                                        "diff": change.diff},
                )  # fmt: skip
                stats.applied += 1
    except (ManifestError, ValidationError, PermissionDenied) as exc:
        message = error_text(exc) or type(exc).__name__
        stats.errors.append(f"{ref}: {message}")
        current = ModelDeployment.objects.filter(
            project=project, name=name, managed_by_resource=ref
        ).first()
        outcome.status = _status(
            resource, current, applied=False, reason="Invalid", message=message[:1000]
        )
        return outcome
    deployment.refresh_from_db()
    outcome.status = _status(resource, deployment, applied=True, reason="Applied",
                             message=_applied_message(deployment, pool))  # fmt: skip
    return outcome


def _applied_message(deployment: ModelDeployment, pool: ComputePool) -> str:
    return f"Deployment {deployment.name} (id {deployment.pk}) in project {deployment.project.slug} on pool {pool.name}."


def reconcile(
    pool: ComputePool, resources: list[dict[str, Any]]
) -> tuple[list[Outcome], ControllerStats]:
    """Apply the listed resources and delete the deployments whose resource is gone; returns the
    statuses to write back (only those that differ from what the resource shows)."""
    stats = ControllerStats(resources=len(resources))
    outcomes = []
    listed = set()
    for resource in resources:
        meta = resource.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue  # going away: handled as gone below
        listed.add(resource_ref(meta.get("namespace", ""), meta.get("name", "")))
        outcome = _apply_one(pool, resource, stats)
        if outcome.status is not None and not _same(resource.get("status") or {}, outcome.status):
            outcomes.append(outcome)
    gone = (
        ModelDeployment.objects.filter(pool=pool)
        .exclude(managed_by_resource="")
        .exclude(state=DeploymentState.DELETING)
        .exclude(managed_by_resource__in=listed)
    )
    for deployment in gone:
        with transaction.atomic():
            audit_record(actor=None, organization=deployment.project.organization, action="resource_deleted",
                         obj=deployment, before={"resource": f"ModelDeployment {deployment.managed_by_resource}",
                                                 "pool": pool.name}, after=None)  # fmt: skip
            services.deployment_delete(user=None, deployment=deployment)
        stats.deleted += 1
    return outcomes, stats


def controller_sync(pool: ComputePool) -> ControllerStats:
    """One controller pass over a pool: one list call, the applies, the status writes."""
    if not pool.serves_modeldeployments():
        return ControllerStats()
    try:
        with kube.kube_for(pool) as k:
            resources = kube.list_modeldeployments(k)
    except (
        kube.KubeError
    ) as err:  # nothing applied or deleted on a failed list: the next cycle retries
        log.warning("ModelDeployment list failed: %s", err.message, extra={"pool": pool.pk})
        return ControllerStats(errors=[err.message])
    outcomes, stats = reconcile(pool, resources)
    if not outcomes:
        return stats
    try:
        with kube.kube_for(pool) as k:
            for outcome in outcomes:
                try:
                    kube.write_modeldeployment_status(
                        k, outcome.namespace, outcome.name, outcome.status or {}
                    )
                    stats.status_writes += 1
                except kube.KubeError as err:
                    if err.status != 404:  # deleted since the list: nothing to write
                        raise
    except kube.KubeError as err:
        log.warning("ModelDeployment status write failed: %s", err.message, extra={"pool": pool.pk})
        stats.errors.append(err.message)
    return stats
