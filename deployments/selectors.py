"""Reads of compute pools, endpoints, deployments and revisions, restricted to what a user may see."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import CharField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Cast, Coalesce, Concat
from django.http import Http404
from django.utils import timezone

from catalog.estimate import GPU_TYPES
from catalog.models import CatalogModel
from catalog.selectors import model_estimate
from console import permissions
from console.diff import changes
from console.ids import MAX_ID
from deployments.models import (
    ComputePool,
    DeploymentEvent,
    DeploymentKind,
    DeploymentState,
    Endpoint,
    EndpointHealth,
    ModelDeployment,
    Revision,
    ScaleSample,
    in_transition,
)
from deployments.spec import autoscaled, gpu_hold, resource_hold, start_replicas
from projects.models import GpuReservation, Organization, Project
from projects.selectors import quota_decide

log = logging.getLogger(__name__)

# Running external deployments whose endpoint failed its last health check: "Running" says the
# lifecycle, this the health; the dashboard and the deployments list count them the same way.
ENDPOINT_UNREACHABLE = Q(kind=DeploymentKind.EXTERNAL, state=DeploymentState.RUNNING, health=EndpointHealth.UNHEALTHY)

def pools_for_user(
    user: AbstractBaseUser, organization: Organization | None = None
) -> QuerySet[ComputePool]:
    """The pools granted to the user's organizations; operators see every pool."""
    qs = ComputePool.objects.select_related("organization")
    if not permissions.is_pool_operator(user):
        qs = permissions.restrict(qs, user, "view")
    if organization is not None:
        qs = qs.filter(organization=organization)
    return qs


def pool_get(user: AbstractBaseUser, pk: int) -> ComputePool:
    pool = pools_for_user(user).filter(pk=pk).first()
    if pool is None:
        raise Http404("No such compute pool.")
    return pool


def endpoints_for_user(
    user: AbstractBaseUser, organization: Organization | None = None
) -> QuerySet[Endpoint]:
    qs = permissions.restrict(
        Endpoint.objects.select_related("project", "project__organization"), user, "view"
    )
    if organization is not None:
        qs = qs.filter(project__organization=organization)
    return qs


def endpoint_get(user: AbstractBaseUser, pk: int) -> Endpoint:
    endpoint = endpoints_for_user(user).filter(pk=pk).first()
    if endpoint is None:
        raise Http404("No such endpoint.")
    return endpoint


def deployments_for_user(
    user: AbstractBaseUser, organization: Organization | None = None
) -> QuerySet[ModelDeployment]:
    qs = permissions.restrict(ModelDeployment.objects.select_related(
        "project", "project__organization", "model", "bundle", "pool", "endpoint", "environment",
        "current_revision", "serving_revision", "scale",
    ), user, "view")  # fmt: skip
    if organization is not None:
        qs = qs.filter(project__organization=organization)
    return qs


def with_gpus_held(qs: QuerySet[ModelDeployment]) -> QuerySet[ModelDeployment]:
    """Annotate `gpus_reserved`: the GPUs each deployment holds in its project's quota ledger
    (one subquery, instead of one query per row)."""
    holder = Concat(Value("deployment:"), Cast(OuterRef("pk"), CharField()), output_field=CharField())
    held = GpuReservation.objects.filter(holder=holder).values("gpus")[:1]
    return qs.annotate(gpus_reserved=Coalesce(Subquery(held), 0))


# What a deployment's row and status card show that can change after the page was rendered. Not
# every writer moves `updated_at` (state_claim does, a failure recorded on a deactivated row does
# not), so the columns themselves are compared.
VERSION_FIELDS = (
    "state", "state_reason", "state_changed_at", "updated_at", "name", "managed_by_resource",
    "current_revision_id", "serving_revision_id", "bundle_id", "pool_id", "environment_id",
    "gpus_reserved", "health", "health_detail", "health_checked_at",
)  # fmt: skip


def _version(values: Iterable[Any]) -> str:
    return hashlib.blake2b("\x1f".join(map(str, values)).encode(), digest_size=4).hexdigest()


def deployment_version(deployment: ModelDeployment) -> str:
    """A short marker of what the status poll watches; `deployment` comes from `with_gpus_held`."""
    return _version(getattr(deployment, field) for field in VERSION_FIELDS)


def deployment_versions(qs: QuerySet[ModelDeployment], pks: Iterable[int]) -> dict[int, str]:
    """The markers of the rows `pks` of `qs` (one query over those rows only, never the table);
    a row missing from the answer is gone or no longer visible."""
    # A pk past 64 bits (a typed URL, /deployments/999999999999999999999/) can't be a row, and
    # SQLite refuses it in an IN (...) with an OverflowError: a 500 instead of a 404.
    wanted = [pk for pk in pks if 0 < pk <= MAX_ID]
    rows = with_gpus_held(qs.filter(pk__in=wanted)).values_list("pk", *VERSION_FIELDS)
    return {row[0]: _version(row[1:]) for row in rows}


def deployment_page_versions(
    qs: QuerySet[ModelDeployment], start: int, size: int
) -> list[tuple[int, str, bool]]:
    """(pk, marker, in transition) of the rows `start`…`start + size` of `qs` (filtered and sorted
    as a list page shows them), in one query: what a list's poll compares."""
    # The page's keys by the narrow sorted query, then their columns: annotated over the whole
    # sorted set, the GPU subquery ran once per row of the organization (10,000: 3x the time).
    page = qs.values("pk")[start : start + size]
    rows = with_gpus_held(ModelDeployment.objects.filter(pk__in=page)).order_by(*qs.query.order_by)
    rows = rows.values_list("pk", "kind", *VERSION_FIELDS)
    state, health = VERSION_FIELDS.index("state"), VERSION_FIELDS.index("health")
    return [
        (pk, _version(values), in_transition(values[state], kind, values[health]))
        for pk, kind, *values in rows
    ]


def deployment_get(user: AbstractBaseUser, pk: int) -> ModelDeployment:
    deployment = deployments_for_user(user).filter(pk=pk).first()
    if deployment is None:
        raise Http404("No such deployment.")
    return deployment


def deployment_events(deployment: ModelDeployment, limit: int = 50) -> QuerySet[DeploymentEvent]:
    return deployment.events.all()[:limit]


def revisions_of(deployment: ModelDeployment) -> QuerySet[Revision]:
    return deployment.revisions.select_related("created_by").order_by("-number")


def spec_diff(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """Field-by-field changes from spec `a` to spec `b`: [{field, old, new}], dotted field names."""
    return changes(a, b)


def revision_diff(a: Revision, b: Revision) -> list[dict[str, Any]]:
    """What changed from revision `a` to revision `b`."""
    return spec_diff(a.spec, b.spec)


# --- Previews of the deploy form: the services' own rules, asked without writing ---------------


def pool_gpus_held(pool: ComputePool) -> int:
    """GPUs the deployments on ``pool`` hold in their projects' quotas right now."""
    return sum(with_gpus_held(ModelDeployment.objects.filter(pool=pool)).values_list("gpus_reserved", flat=True))


def gpu_products(pools: Iterable[ComputePool]) -> list[str]:
    """GPU product names (node label values) the pools' last connection checks reported."""
    products: set[str] = set()
    for pool in pools:
        for node in (pool.last_check or {}).get("nodes", []) or []:
            if node.get("gpu_product"):
                products.add(node["gpu_product"])
    return sorted(products)


def deployment_quota_preview(
    *,
    project: Project,
    gpus_per_replica: int,
    replicas_max: int,
    deployment: ModelDeployment | None = None,
    cpu: str = "",
    memory: str = "",
) -> dict[str, Any]:
    """What saving would hold against the quotas, decided by the rule quota_reserve applies
    (the project's quota, then the organization's; CPU, memory and the deployment count too
    where ``cpu`` and ``memory`` parse), without reserving anything."""
    spec = {"replicas": {"max": replicas_max}, "resources": {"gpus": gpus_per_replica, "cpu": cpu, "memory": memory}}
    hold = gpu_hold(spec)
    try:
        extra = resource_hold(spec)
    except (ValueError, TypeError, ArithmeticError):  # quantities not typed yet: GPUs only
        extra = {}
    holder = deployment.gpu_holder() if deployment is not None else "deployment:preview"
    decision = quota_decide(
        project=project, organization=project.organization, holder=holder, gpus=hold, **extra
    )
    return {
        "quota_project": project,
        "quota_used": decision.project_used,
        "quota_total": decision.project_quota,
        "quota_hold": hold,
        "quota_over": decision.refused_by == "project" and decision.resource == "gpus",
        "quota_refusal": decision.refusal,
    }


def estimate_gpu_key(gpu_type: str) -> str | None:
    """The estimate's GPU key for a node label value such as NVIDIA-A100-SXM4-80GB (None: unknown)."""
    if not gpu_type:
        return None
    if gpu_type in GPU_TYPES:
        return gpu_type
    parts = set(gpu_type.upper().replace("_", "-").split("-"))
    for key in sorted(GPU_TYPES, key=len, reverse=True):
        if all(p.upper() in parts for p in key.split("-")):
            return key
    return None


def deployment_estimate_preview(
    *,
    model: CatalogModel | None,
    context_length: int | None,
    gpu_type: str,
    gpus_per_replica: int | None,
    pools: Iterable[ComputePool],
) -> dict[str, Any]:
    """The GPU memory estimate beside the resources, and a warning when the request is too small.
    Without a GPU type, it is estimated on the first known GPU the ``pools`` reported."""
    if model is None:
        return {"estimate_message": "Choose a model to see how many GPUs it needs."}
    flavors = [t for t in re.split(r"[,\s]+", gpu_type or "") if t]
    if len(flavors) > 1:
        # Several GPU types: the pods may land on any, so size for the one with least memory.
        known = [(GPU_TYPES[key].memory_gib, t) for t in flavors if (key := estimate_gpu_key(t))]
        gpu_type = min(known)[1] if known else flavors[0]
    assumed = ""
    if not gpu_type:
        known = [p for p in gpu_products(pools) if estimate_gpu_key(p)]
        if known:
            assumed = known[0]
    try:
        estimate = model_estimate(
            model, context_length=context_length, gpu_type=estimate_gpu_key(gpu_type or assumed)
        )
    except (ValueError, TypeError) as exc:
        log.info("no estimate", extra={"model": model.pk, "error": str(exc)})
        estimate = None
    if estimate is None:
        return {
            "estimate_message": f"No GPU estimate for {model.name}: its parameter count or architecture is unknown."
        }
    needed = estimate.gpus or estimate.gpus_min
    warning = ""
    gpus = gpus_per_replica
    if gpus is not None and needed and gpus < needed:
        warning = (
            f"{gpus} GPU{'s' if gpus != 1 else ''} per replica is too small: {model.name} needs about "
            f"{estimate.total_gib:.1f} GiB, that is {needed} × {estimate.gpu.name if estimate.gpu else 'GPU'}."
        )
    if getattr(estimate, "exceeds_node", False):
        warning = warning or "This model does not fit on one node's GPUs at this context length."
    return {
        "estimate": estimate,
        "estimate_needed": needed,
        "estimate_warning": warning,
        "estimate_gpu_type": gpu_type,
        "estimate_assumed_gpu": assumed if estimate.gpu else "",
    }


def connection_advice(error: str) -> str:
    """What to do about a failed connection test, from the words Kubernetes or the network gave."""
    text = (error or "").lower()
    if not text:
        return ""
    if "private address" in text:
        return "Use the cluster's public API server address, or ask a platform operator to allow private addresses for this pool."
    if "kubeconfig can't be used" in text:
        return "Replace the kubeconfig with one that carries its credentials inline: kubectl config view --minify --flatten prints one."
    if "embedded mode" in text or "is not a sandbox" in text:
        return "Sandbox pools only run in the embedded mode (make run); register the cluster by kubeconfig instead."
    if "401" in text or "unauthorized" in text:
        return "The cluster refused the credentials. Check the kubeconfig's user token or client certificate; it may have expired."
    if "403" in text or "forbidden" in text:
        return "The credentials work but may not list nodes. Grant the service account get/list on nodes and namespaces (a ClusterRole)."
    if "certificate" in text or "ssl" in text or "tls" in text:
        return "The cluster's TLS certificate was not trusted. Include certificate-authority-data for the cluster in the kubeconfig."
    if (
        "refused" in text
        or "unreachable" in text
        or "no route" in text
        or "name or service not known" in text
        or "resolve" in text
    ):
        return "Nothing answered at the API server address. Check the server URL in the kubeconfig and that this console can reach it (VPN, firewall)."
    if "timed out" in text or "timeout" in text:
        return "The API server did not answer in time. Check the network path and that the control plane is up."
    if "in-cluster" in text or "service account" in text or "serviceaccount" in text:
        return "In-cluster access needs the console to run inside the cluster with a mounted service account token."
    return "Check the kubeconfig and that the cluster's API server is reachable from the console, then test again."


def deployment_name_suggestion(model_name: str) -> str:
    """A deployment name (a DNS-1035 label) derived from a catalog model's name."""
    base = re.sub(r"[^a-z0-9-]+", "-", model_name.split("/")[-1].lower()).strip("-")
    base = re.sub(r"^[^a-z]+", "", base)[:40].strip("-")
    return base or "model"


def default_project_for(user: AbstractBaseUser, projects: QuerySet[Project], wanted: int | None = None) -> Project | None:
    """The project the deploy form starts on, among `projects` (those the user may deploy to):
    the one they came from (`wanted`, e.g. ?project= from a project's page), else the one they
    last deployed into, else the only project they are a member of, else the first by name."""
    if wanted:
        chosen = projects.filter(pk=wanted).first()
        if chosen is not None:
            return chosen
    last = (
        ModelDeployment.objects.filter(created_by=user, project__in=projects.values("pk"))
        .order_by("-created_at").values_list("project_id", flat=True).first()
    )  # fmt: skip
    if last is not None:
        return projects.filter(pk=last).first()
    member_of = list(projects.filter(memberships__user=user).values_list("pk", flat=True)[:2])
    if len(member_of) == 1:
        return projects.filter(pk=member_of[0]).first()
    return projects.first()


def scale_history(deployment: ModelDeployment, *, hours: int = 1) -> dict[str, Any]:
    """The deployment page's autoscaling chart (desired vs. ready replicas and the load over the
    last hour) and its scaling events, newest first."""
    since = timezone.now() - timedelta(hours=hours)
    rows = list(ScaleSample.objects.filter(deployment=deployment, at__gte=since).order_by("at")
                .values_list("at", "desired", "ready", "load"))  # fmt: skip
    metric = ((deployment.spec().get("autoscaling") or {}).get("metric")) or "concurrency"
    return {
        "series": {
            "labels": [timezone.localtime(at).strftime("%H:%M:%S") for at, *_ in rows],
            "desired": [d for _, d, _, _ in rows],
            "ready": [r for _, _, r, _ in rows],
            "load": [v for *_, v in rows],
            "metric": metric.replace("_", " "),
        },
        "events": list(deployment.events.filter(source="autoscaler")[:10]),
    }


def gpu_holders(project: Project) -> list[dict[str, Any]]:
    """A project's GPU reservations, each split into what its minimum reserves and what the
    autoscaler added on top (the quota page's "reserved vs. autoscaled")."""
    by_holder = {
        d.gpu_holder(): d
        for d in ModelDeployment.objects.filter(project=project).select_related("current_revision")
    }
    rows = []
    for reservation in GpuReservation.objects.filter(project=project).order_by("holder"):
        deployment = by_holder.get(reservation.holder)
        spec = deployment.spec() if deployment is not None else {}
        reserved = reservation.gpus
        if spec and autoscaled(spec):
            reserved = min(reservation.gpus, start_replicas(spec) * int(spec["resources"]["gpus"]))
        rows.append({"holder": reservation.holder, "deployment": deployment, "gpus": reservation.gpus,
                     "reserved": reserved, "autoscaled": reservation.gpus - reserved})  # fmt: skip
    return rows
