"""Writes for governance: sharing, access policies, environments, quotas, promotion — each audited."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import transaction

from console import permissions
from deployments import services as deployment_services
from deployments.models import ModelDeployment
from deployments.spec import bundle_of_version
from projects import services as project_services
from projects.models import Environment, Membership, Organization, Project
from sharing import access
from sharing.audit import audit_record, snapshot
from sharing.models import AccessKind, AccessPolicy, AuditAction, DeploymentShare, ShareMode
from sharing.policies import Violation, check_spec

ENVIRONMENT_FIELDS = [
    "name",
    "slug",
    "description",
    "allowed_pool_labels",
    "allowed_gpu_types",
    "max_replicas",
    "max_gpus_per_replica",
]


def _share_state(share: DeploymentShare) -> dict:
    orgs = sorted(
        Organization.objects.filter(pk__in=share.organization_ids).values_list("slug", flat=True)
    )
    return {"mode": share.mode, "organizations": orgs if share.mode == ShareMode.SPECIFIC else []}


def _policy_state(policy: AccessPolicy) -> dict:
    User = get_user_model()
    return {
        "kind": policy.kind,
        "groups": sorted(
            Group.objects.filter(pk__in=policy.group_ids).values_list("name", flat=True)
        ),
        "users": sorted(
            User.objects.filter(pk__in=policy.user_ids).values_list("username", flat=True)
        ),
    }


def deployment_share_set(
    *, user: Any, deployment: Any, mode: str, organizations: Iterable[Organization] = ()
) -> DeploymentShare:
    """Share a deployment with no, all, or some other organizations (its own always may call it)."""
    permissions.require(user, "share", deployment)
    owner = deployment.project.organization
    orgs = [o for o in organizations if o.pk != owner.pk]
    if mode not in ShareMode.values:
        raise ValidationError({"mode": f"Choose one of: {', '.join(ShareMode.values)}."})
    if mode == ShareMode.SPECIFIC and not orgs:
        raise ValidationError(
            {"organizations": "Choose at least one other organization to share with."}
        )
    with transaction.atomic():
        share, _ = DeploymentShare.objects.select_for_update().get_or_create(deployment=deployment)
        before = _share_state(share)
        share.mode = mode
        share.organization_ids = sorted(o.pk for o in orgs) if mode == ShareMode.SPECIFIC else []
        share.updated_by = user if user is not None and user.is_authenticated else None
        share.full_clean()
        share.save()
        share.organizations.set(orgs if mode == ShareMode.SPECIFIC else [])
        audit_record(
            actor=user,
            organization=owner,
            action=AuditAction.SHARE,
            obj=deployment,
            before=before,
            after=_share_state(share),
        )
        transaction.on_commit(access.bump_generation)
    return share


def access_policy_set(
    *,
    user: Any,
    deployment: Any,
    kind: str,
    groups: Iterable[Group] = (),
    users: Iterable[Any] = (),
) -> AccessPolicy:
    """Who may call the deployment: anyone (public), any key, some groups, or some users."""
    permissions.require(user, "share", deployment)
    groups, users = list(groups), list(users)
    if kind not in AccessKind.values:
        raise ValidationError({"kind": f"Choose one of: {', '.join(AccessKind.values)}."})
    if kind == AccessKind.GROUPS and not groups:
        raise ValidationError({"groups": "Choose at least one group, or pick another access kind."})
    if kind == AccessKind.USERS and not users:
        raise ValidationError({"users": "Choose at least one user, or pick another access kind."})
    if kind == AccessKind.USERS:
        _check_users_may_reach(deployment, users)
    owner = deployment.project.organization
    if kind == AccessKind.GROUPS and Group.objects.filter(
        pk__in=[g.pk for g in groups], organization_group__isnull=False
    ).exclude(organization_group__organization=owner).exists():
        # One answer whether the group exists elsewhere or not: no tenant learns another's groups.
        raise ValidationError({"groups": "Choose groups of this deployment's organization."})
    with transaction.atomic():
        policy, _ = AccessPolicy.objects.select_for_update().get_or_create(deployment=deployment)
        before = _policy_state(policy)
        policy.kind = kind
        policy.group_ids = sorted(g.pk for g in groups) if kind == AccessKind.GROUPS else []
        policy.user_ids = sorted(u.pk for u in users) if kind == AccessKind.USERS else []
        policy.updated_by = user if user is not None and user.is_authenticated else None
        policy.full_clean()
        policy.save()
        policy.groups.set(groups if kind == AccessKind.GROUPS else [])
        policy.users.set(users if kind == AccessKind.USERS else [])
        audit_record(
            actor=user,
            organization=owner,
            action=AuditAction.ACCESS_CHANGE,
            obj=deployment,
            before=before,
            after=_policy_state(policy),
        )
        transaction.on_commit(access.bump_generation)
    return policy


def _check_users_may_reach(deployment: Any, users: list) -> None:
    """Users named in a policy must belong to an organization that can see the deployment."""
    owner_id = deployment.project.organization_id
    share = DeploymentShare.objects.filter(deployment=deployment).first()
    if share is not None and share.mode == ShareMode.ALL:
        return
    allowed_orgs = {owner_id} | set(
        share.organization_ids if share and share.mode == ShareMode.SPECIFIC else []
    )
    member_ids = set(
        Membership.objects.filter(user__in=users, organization_id__in=allowed_orgs).values_list(
            "user_id", flat=True
        )
    )
    if any(u.pk not in member_ids for u in users):
        # Generic on purpose: naming the user (or echoing the id) would tell an organization
        # admin who exists in other organizations.
        raise ValidationError({"users": UNKNOWN_USERS})


UNKNOWN_USERS = (
    "Choose users of this organization or of an organization the deployment is shared with."
)


# ---------------------------------------------------------------- environments


def _clean_environment_fields(project: Project, fields: dict) -> dict:
    errors: dict[str, str] = {}
    for name in ("max_replicas", "max_gpus_per_replica"):
        value = fields.get(name)
        if value is not None and value != "" and int(value) < 1:
            errors[name] = "Use a whole number of at least 1, or leave it empty for no limit."
    labels = fields.get("allowed_pool_labels")
    if labels is not None:
        if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and all(isinstance(x, str) for x in v)
            for k, v in labels.items()
        ):
            errors["allowed_pool_labels"] = (
                'Give labels as {"label": ["value", …]}, e.g. {"region": ["us-east-1"]}.'
            )
    gpu_types = fields.get("allowed_gpu_types")
    if gpu_types is not None and (
        not isinstance(gpu_types, list)
        or not all(isinstance(x, str) and x.strip() for x in gpu_types)
    ):
        errors["allowed_gpu_types"] = 'Give GPU types as a list of names, e.g. ["A100", "H100"].'
    pools = fields.get("allowed_pools")
    if pools is not None:
        foreign = [p for p in pools if p.organization_id != project.organization_id]
        if foreign:
            errors["allowed_pools"] = "Pools must belong to this project's organization."
    if errors:
        raise ValidationError(errors)
    return fields


def _environment_state(environment: Environment) -> dict:
    data = snapshot(environment, ENVIRONMENT_FIELDS)
    data["allowed_pools"] = (
        sorted(environment.allowed_pools.values_list("name", flat=True)) if environment.pk else []
    )
    return data


def environment_create(
    *,
    user: Any,
    project: Project,
    name: str,
    slug: str,
    description: str = "",
    allowed_pools: Iterable[Any] = (),
    allowed_pool_labels: dict | None = None,
    allowed_gpu_types: list | None = None,
    max_replicas: int | None = None,
    max_gpus_per_replica: int | None = None,
) -> Environment:
    permissions.require(user, "change", project, what="environments")
    pools = list(allowed_pools)
    _clean_environment_fields(
        project,
        {
            "allowed_pools": pools,
            "allowed_pool_labels": allowed_pool_labels or {},
            "allowed_gpu_types": allowed_gpu_types or [],
            "max_replicas": max_replicas,
            "max_gpus_per_replica": max_gpus_per_replica,
        },
    )
    if Environment.objects.filter(project=project, slug=slug).exists():
        raise ValidationError(
            {"slug": f"Project “{project.name}” already has an environment “{slug}”."}
        )
    environment = Environment(
        project=project,
        name=name.strip(),
        slug=slug,
        description=description,
        allowed_pool_labels=allowed_pool_labels or {},
        allowed_gpu_types=allowed_gpu_types or [],
        max_replicas=max_replicas,
        max_gpus_per_replica=max_gpus_per_replica,
    )
    environment.full_clean()
    with transaction.atomic():
        environment.save()
        environment.allowed_pools.set(pools)
        audit_record(
            actor=user,
            organization=project.organization,
            action=AuditAction.CREATE,
            obj=environment,
            before=None,
            after=_environment_state(environment),
        )
    return environment


# What each optional field of an environment is when nobody set it (as environment_create makes it).
ENVIRONMENT_DEFAULTS: dict[str, Any] = {
    "description": "",
    "allowed_pools": [],
    "allowed_pool_labels": {},
    "allowed_gpu_types": [],
    "max_replicas": None,
    "max_gpus_per_replica": None,
}


def environment_update(
    *, user: Any, environment: Environment, replace: bool = False, **fields: Any
) -> Environment:
    """Change an environment's name, description or policies (the slug is fixed).

    replace=True (REST PUT): the fields given are the whole environment; those left out go back
    to their defaults (ENVIRONMENT_DEFAULTS) instead of keeping their values."""
    project = environment.project
    permissions.require(user, "change", project, what="environments")
    unknown = set(fields) - (set(ENVIRONMENT_FIELDS) - {"slug"}) - {"allowed_pools"}
    if unknown:
        raise ValidationError({name: "This field cannot be changed." for name in sorted(unknown)})
    if replace:
        fields = {**copy.deepcopy(ENVIRONMENT_DEFAULTS), **fields}
    pools = list(fields.pop("allowed_pools")) if "allowed_pools" in fields else None
    _clean_environment_fields(project, {**fields, "allowed_pools": pools})
    with transaction.atomic():
        locked = Environment.objects.select_for_update().get(pk=environment.pk)
        before = _environment_state(locked)
        for name, value in fields.items():
            setattr(locked, name, value.strip() if name == "name" else value)
        locked.full_clean()
        locked.save()
        if pools is not None:
            locked.allowed_pools.set(pools)
        audit_record(
            actor=user,
            organization=project.organization,
            action=AuditAction.UPDATE,
            obj=locked,
            before=before,
            after=_environment_state(locked),
        )
    return locked


def environment_delete(*, user: Any, environment: Environment) -> None:
    project = environment.project
    permissions.require(user, "change", project, what="environments")
    in_use = environment.deployments.count()
    if in_use:
        raise ValidationError(
            f"{in_use} deployment{'s run' if in_use != 1 else ' runs'} in environment “{environment.name}”; "
            "move or delete them first."
        )
    with transaction.atomic():
        audit_record(
            actor=user,
            organization=project.organization,
            action=AuditAction.DELETE,
            obj=environment,
            before=_environment_state(environment),
            after=None,
        )
        environment.delete()


# ---------------------------------------------------------------- quotas


def project_quota_set(*, user: Any, project: Project, gpu_quota: int) -> Project:
    """Change one project's GPU quota; projects.services records the audit entry."""
    with transaction.atomic():
        updated = project_services.project_update(
            user=user,
            project=project,
            name=project.name,
            description=project.description,
            gpu_quota=gpu_quota,
        )
    return updated


# ---------------------------------------------------------------- promotion


@dataclass
class PromotionPlan:
    """What promoting a revision means: which deployments.services call, with which arguments."""

    call: str  # "deployment_create" | "deployment_update"
    kwargs: dict
    source_environment: Environment | None
    target_environment: Environment
    revision_number: int
    violations: list[Violation] = field(default_factory=list)

    def describe(self) -> str:
        source = self.source_environment.name if self.source_environment else "no environment"
        if self.call == "deployment_update":
            return (
                f"Revision {self.revision_number} goes from {source} to "
                f"{self.target_environment.name} as a new revision of “{self.kwargs['deployment'].name}”."
            )
        return (
            f"Revision {self.revision_number} goes from {source} to {self.target_environment.name} "
            f"as a new deployment “{self.kwargs['name']}”."
        )


def promotion_plan(
    *,
    user: Any,
    deployment: Any,
    revision_number: int,
    target_environment: Environment,
    pool: Any = None,
    deployment_policies: dict | None = None,
) -> PromotionPlan:
    """Check a revision against the target environment's policies and say how to apply it.

    The target is the deployment of the same model in the target environment of the same
    project (updated blue-green), or else a new deployment ``<name>-<env slug>`` (created, with
    ``served_model_name`` suffixed the same way since it must be unique per organization).
    Refuses (ValidationError on ``target_environment``) with every broken rule named.
    """
    permissions.require(user, "change", deployment)
    if getattr(deployment, "pool_id", 0) is None:  # an external deployment (deployments/external.py)
        raise ValidationError(
            {"target_environment": "An external deployment runs nothing to promote; add the endpoint in the other environment."}
        )
    if target_environment.project_id != deployment.project_id:
        raise ValidationError(
            {"target_environment": "Promote only into an environment of the same project."}
        )
    if deployment.environment_id == target_environment.pk:
        raise ValidationError(
            {"target_environment": f"The deployment already runs in “{target_environment.name}”."}
        )
    revision = deployment.revisions.filter(number=revision_number).first()
    if revision is None:
        raise ValidationError(
            {
                "revision_number": f"Deployment “{deployment.name}” has no revision {revision_number}."
            }
        )
    existing = (
        ModelDeployment.objects.filter(
            project=deployment.project, model=deployment.model, environment=target_environment
        )
        .exclude(pk=deployment.pk)
        .order_by("pk")
        .first()
    )
    spec = copy.deepcopy(revision.spec)
    target_pool = pool or (existing.pool if existing else deployment.pool)
    violations = check_spec(
        environment=target_environment,
        # The revision's own policies travel with it unless the promotion gives others.
        deployment_policies=spec.get("policies") if deployment_policies is None else deployment_policies,
        pool=target_pool,
        spec=spec,
    )
    if violations:
        raise ValidationError({"target_environment": [v.message for v in violations]})
    reason = f"Promoted revision {revision_number} of “{deployment.name}”"
    source = deployment.environment
    if source is not None:
        reason += f" from {source.name}"
    if existing is not None:
        return PromotionPlan(
            call="deployment_update",
            kwargs={"deployment": existing, "spec": spec, "reason": reason[:200]},
            source_environment=source,
            target_environment=target_environment,
            revision_number=revision_number,
        )
    name = f"{deployment.name}-{target_environment.slug}"[:50]
    if spec.get("served_model_name"):
        spec["served_model_name"] = f"{spec['served_model_name']}-{target_environment.slug}"
    return PromotionPlan(
        call="deployment_create",
        kwargs={
            "project": deployment.project,
            "model": deployment.model,
            "pool": target_pool,
            "name": name,
            "spec": spec,
            # The bundle version the promoted revision runs.
            "bundle": bundle_of_version(deployment.bundle, spec.get("bundle_version")) or deployment.bundle,
            "environment": target_environment,
            "description": reason,
        },
        source_environment=source,
        target_environment=target_environment,
        revision_number=revision_number,
    )


def promote(
    *,
    user: Any,
    deployment: Any,
    revision_number: int,
    target_environment: Environment,
    pool: Any = None,
    deployment_policies: dict | None = None,
) -> Any:
    """Promote a revision into another environment through deployments.services; audited."""
    plan = promotion_plan(
        user=user,
        deployment=deployment,
        revision_number=revision_number,
        target_environment=target_environment,
        pool=pool,
        deployment_policies=deployment_policies,
    )
    with transaction.atomic():
        result = getattr(deployment_services, plan.call)(user=user, **plan.kwargs)
        target = result if plan.call == "deployment_create" else plan.kwargs["deployment"]
        audit_record(
            actor=user,
            organization=deployment.project.organization,
            action=AuditAction.PROMOTE,
            obj=target,
            before={
                "environment": deployment.environment.slug if deployment.environment else None,
                "deployment": deployment.pk,
                "revision": revision_number,
            },
            after={"environment": target_environment.slug, "deployment": target.pk},
        )
    return result
