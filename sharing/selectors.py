"""Reads for governance: audit log, shared deployments, environments, quotas — scoped to the user."""

from __future__ import annotations

import datetime
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from django.db.models import Model, Q, QuerySet
from django.http import Http404

from console import permissions
from console.ids import parse_id
from console.paging import ordering
from deployments.models import ModelDeployment
from projects.models import Environment, GpuReservation, Organization, Project
from projects.selectors import project_get, projects_for_user
from sharing.audit import reference_id, reference_label, references_of
from sharing.models import AccessKind, AccessPolicy, AuditEntry, DeploymentShare, ShareMode

# The audit log's columns a reader sorts by, for the console page (console.paging.paginate) and
# REST's `?sort=` alike; `-key` reverses. Newest first unless asked otherwise.
AUDIT_SORTS: dict[str, str | tuple[str, ...]] = {
    "when": "created_at",
    "who": ("actor_repr", "-created_at"),
    "action": ("action", "-created_at"),
    "object": ("object_repr", "object_type", "-created_at"),
}
AUDIT_DEFAULT_SORT = "-when"


def audit_sort_choices() -> list[str]:
    return [choice for key in AUDIT_SORTS for choice in (key, f"-{key}")]


def audit_entries_for_user(
    user: Any,
    organization: Organization | None = None,
    *,
    action: str = "",
    object_type: str = "",
    object_id: str = "",
    actor: str = "",
    q: str = "",
    since: datetime.date | datetime.datetime | None = None,
    until: datetime.date | datetime.datetime | None = None,
    sort: str = AUDIT_DEFAULT_SORT,
) -> QuerySet[AuditEntry]:
    """Entries of the user's organizations (or one of them), filtered; in `sort` order (a key of
    AUDIT_SORTS, `-` for descending; an unknown one is newest first)."""
    qs = permissions.restrict(AuditEntry.objects.select_related("actor", "organization"), user, "view")
    if organization is not None:
        qs = qs.filter(organization=organization)
    if action:
        qs = qs.filter(action=action)
    if object_type:
        qs = qs.filter(object_type=object_type)
    if object_id:
        qs = qs.filter(object_id=str(object_id))
    if actor:
        match = Q(actor_repr__iexact=actor) | Q(actor__username__iexact=actor)
        if (actor_id := parse_id(actor)) is not None:
            match |= Q(actor_id=actor_id)
        qs = qs.filter(match)
    if q:
        qs = qs.filter(
            Q(object_repr__icontains=q)
            | Q(actor_repr__icontains=q)
            | Q(object_type__icontains=q)
            | Q(action__icontains=q)
            | Q(object_id=q)
        )
    if since is not None:
        qs = qs.filter(created_at__date__gte=since)
    if until is not None:
        qs = qs.filter(created_at__date__lte=until)
    if sort.lstrip("-") not in AUDIT_SORTS:
        sort = AUDIT_DEFAULT_SORT
    return qs.order_by(*ordering(AUDIT_SORTS, sort))


def _in_organization(model: type[Model], organization_id: int) -> Q | None:
    """The rows of `model` that belong to the organization (the built-in ones every organization
    sees, such as bundles without one, too); None for a model that belongs to none."""
    if model is Organization:
        return Q(pk=organization_id)
    fields = {f.name: f for f in model._meta.concrete_fields}
    if "organization" in fields:
        mine = Q(organization_id=organization_id)
        return mine | Q(organization__isnull=True) if fields["organization"].null else mine
    if "project" in fields:
        return Q(project__organization_id=organization_id)
    return None


def audit_reference_names(entries: Iterable[AuditEntry]) -> None:
    """Give each entry `diff_names` {path: [old, new]}: the names of the objects its diff refers
    to by id (pool, environment, endpoint, bundle, …), for the pages to show instead of the ids.
    The names recorded with the change; for entries older than that, the object's name now,
    looked up only among the entry's own organization's objects, or "#<id> (deleted)" — never
    another organization's name. One query per kind of object and organization on the page."""
    entries = list(entries)

    def recorded(entry: AuditEntry, path: str) -> list[str | None]:
        return [*((entry.names or {}).get(path) or []), None, None][:2]

    missing: dict[tuple[type[Model], int], set[int]] = defaultdict(set)
    for entry in entries:
        refs = references_of(entry.object_type)
        for path, pair in (entry.diff or {}).items():
            if path in refs:
                for value, name in zip(pair, recorded(entry, path), strict=False):
                    if (pk := reference_id(value)) is not None and not name:
                        missing[refs[path], entry.organization_id].add(pk)
    found: dict[tuple[type[Model], int], dict[int, str]] = {}
    for (model, organization_id), ids in missing.items():
        scope = _in_organization(model, organization_id)
        rows = model._default_manager.filter(scope, pk__in=ids) if scope is not None else []
        found[model, organization_id] = {obj.pk: reference_label(obj) for obj in rows}
    for entry in entries:
        refs = references_of(entry.object_type)
        entry.diff_names = {}
        for path, pair in (entry.diff or {}).items():
            if path not in refs or all(reference_id(v) is None for v in pair):
                continue
            now = found.get((refs[path], entry.organization_id), {})
            entry.diff_names[path] = [
                None if (pk := reference_id(value)) is None else name or now.get(pk) or f"#{pk} (deleted)"
                for value, name in zip(pair, recorded(entry, path), strict=False)
            ]


def audit_entry_get(user: Any, pk: int) -> AuditEntry:
    entry = audit_entries_for_user(user).filter(pk=pk).first()
    if entry is None:
        raise Http404("No such audit entry.")
    return entry


def deployments_visible_to(user: Any):
    """Deployments of the user's organizations (the governance pages' own scoping)."""
    return permissions.restrict(
        ModelDeployment.objects.select_related("project__organization", "pool", "environment"),
        user, "view",
    )  # fmt: skip


def deployment_get(user: Any, pk: int):
    deployment = deployments_visible_to(user).filter(pk=pk).first()
    if deployment is None:
        raise Http404("No such deployment.")
    return deployment


def shared_deployments_for_org(organization: Organization | int):
    """Other organizations' deployments this organization may see (shared with all or with it).

    Takes the organization or its id (the gateway has only ids). Public deployments are callable
    by anyone, but only sharing makes them listed here.
    """
    org_id = organization.pk if isinstance(organization, Organization) else int(organization)
    return (
        ModelDeployment.objects.exclude(project__organization_id=org_id)
        .filter(
            Q(share__mode=ShareMode.ALL)
            | Q(share__mode=ShareMode.SPECIFIC, share__organizations__id=org_id)
        )
        .select_related("project__organization", "share", "access_policy")
        .distinct()
    )


def public_deployments(served_model_name: str | None = None):
    """Deployments anyone may call without an API key (for the gateway's keyless path).

    Served model names are unique per organization only: with a name, more than one row means
    the name is ambiguous without a key, and the gateway should ask for one.
    """
    qs = ModelDeployment.objects.filter(access_policy__kind=AccessKind.PUBLIC).select_related(
        "current_revision", "project__organization", "pool"
    )
    if served_model_name is not None:
        qs = qs.filter(current_revision__spec__served_model_name=served_model_name)
    return qs.order_by("pk")


def share_for(deployment) -> DeploymentShare:
    """The deployment's share row, or an unsaved default (not shared)."""
    try:
        return deployment.share
    except DeploymentShare.DoesNotExist:
        return DeploymentShare(deployment=deployment)


def access_policy_for(deployment) -> AccessPolicy:
    try:
        return deployment.access_policy
    except AccessPolicy.DoesNotExist:
        return AccessPolicy(deployment=deployment)


def environments_for_user(user: Any, project: Project | None = None) -> QuerySet[Environment]:
    qs = permissions.restrict(
        Environment.objects.select_related("project__organization"), user, "view"
    )
    if project is not None:
        qs = qs.filter(project=project)
    return qs.prefetch_related("allowed_pools")


def environment_get(user: Any, pk: int) -> Environment:
    environment = environments_for_user(user).filter(pk=pk).first()
    if environment is None:
        raise Http404("No such environment.")
    return environment


def project_for_user(user: Any, pk: int) -> Project:
    return project_get(user, pk)


def quota_overview(user: Any, organization: Organization) -> dict:
    """Projects of the organization with GPU use vs quota and who holds the GPUs."""
    projects = list(projects_for_user(user, organization).order_by("name"))
    reservations = GpuReservation.objects.filter(project__in=projects).order_by("-gpus", "holder")
    by_project: dict[int, list[GpuReservation]] = {}
    deployment_ids = []
    for r in reservations:
        by_project.setdefault(r.project_id, []).append(r)
        kind, _, ident = r.holder.partition(":")
        if kind == "deployment" and (dep_id := parse_id(ident)) is not None:
            deployment_ids.append(dep_id)
    names = dict(
        ModelDeployment.objects.filter(
            pk__in=deployment_ids, project__organization=organization
        ).values_list("pk", "name")
    )
    rows = []
    for project in projects:
        holders = []
        for r in by_project.get(project.pk, []):
            kind, _, ident = r.holder.partition(":")
            dep_id = parse_id(ident) if kind == "deployment" else None
            holders.append(
                {
                    "holder": r.holder,
                    "gpus": r.gpus,
                    "deployment_id": dep_id if dep_id in names else None,
                    "name": names.get(dep_id, r.holder),
                }
            )
        used = sum(h["gpus"] for h in holders)
        percent = (
            100
            if project.gpu_quota == 0 and used
            else (0 if project.gpu_quota == 0 else round(100 * used / project.gpu_quota))
        )
        rows.append(
            {
                "project": project,
                "used": used,
                "quota": project.gpu_quota,
                "percent": percent,
                "level": "over" if percent >= 100 and used else "near" if percent >= 80 else "",
                "holders": holders,
            }
        )
    org_used = organization.gpu_used()
    org_percent = (
        100
        if organization.gpu_quota == 0 and org_used
        else (0 if organization.gpu_quota == 0 else round(100 * org_used / organization.gpu_quota))
    )
    return {
        "rows": rows,
        "org_used": org_used,
        "org_quota": organization.gpu_quota,
        "org_percent": org_percent,
        "org_level": "over"
        if org_percent >= 100 and org_used
        else "near"
        if org_percent >= 80
        else "",
    }
