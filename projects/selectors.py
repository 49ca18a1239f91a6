"""Reads of organizations and projects, always restricted to what the user may see."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.http import Http404

from console import permissions
from projects.models import (
    GpuReservation,
    Invitation,
    Membership,
    Organization,
    OrganizationGroup,
    Project,
)


def organizations_for_user(user: AbstractBaseUser) -> QuerySet[Organization]:
    if not user.is_authenticated:
        return Organization.objects.none()
    return Organization.objects.filter(memberships__user=user).distinct()


def membership_for(user: AbstractBaseUser, organization: Organization) -> Membership | None:
    if not user.is_authenticated:
        return None
    return Membership.objects.filter(user=user, organization=organization).first()


def role_in(user: AbstractBaseUser, organization: Organization) -> str | None:
    membership = membership_for(user, organization)
    return membership.role if membership else None


def projects_for_user(user: AbstractBaseUser, organization: Organization | None = None) -> QuerySet[Project]:
    """Projects of the organizations the user belongs to (optionally just one of them)."""
    qs = permissions.restrict(Project.objects.select_related("organization"), user, "view")
    if organization is not None:
        qs = qs.filter(organization=organization)
    return qs


def with_gpu_use(projects: QuerySet[Project]) -> QuerySet[Project]:
    """Annotate each project's held GPUs (read by Project.gpu_used) in the same query."""
    held = (
        GpuReservation.objects.filter(project=OuterRef("pk"))
        .values("project")
        .annotate(total=Sum("gpus"))
        .values("total")
    )
    return projects.annotate(gpu_held=Coalesce(Subquery(held, output_field=IntegerField()), 0))


def project_get(user: AbstractBaseUser, pk: int) -> Project:
    """The project if the user may see it; 404 otherwise (never reveal it exists)."""
    project = projects_for_user(user).filter(pk=pk).first()
    if project is None:
        raise Http404("No such project.")
    return project



@dataclass(frozen=True)
class QuotaDecision:
    """What quota_reserve decides for ``gpus`` held by one holder: the numbers and any refusal."""

    gpus: int
    held_by_holder: int
    project_used: int  # by every other holder of the project
    project_quota: int
    organization_used: int  # by every other holder of the organization
    organization_quota: int
    refused_by: str = ""  # "project" or "organization": whose quota it does not fit; empty: it fits
    refusal: str = ""
    # GPUs held on top of ``gpus`` while a blue-green rollout runs (the serving revision's pods
    # beside the new ones); a refusal that only the surge causes says so (``surge_refused``).
    surge: int = 0
    surge_refused: bool = False
    resource: str = ""  # what does not fit: gpus, cpu, memory or deployments


# Quotas beyond GPUs: (ledger column, quota field, what a user calls it, unit per quota unit).
OTHER_QUOTAS = (
    ("cpu_millicores", "cpu_quota", "CPU cores", 1000),
    ("memory_bytes", "memory_quota_gib", "GiB of memory", 1024**3),
    ("deployments", "deployment_quota", "active deployments", 1),
)


def _other_refusal(
    *, project: Project, organization: Organization, holder: str, current: Any, wanted: dict[str, int | None]
) -> tuple[str, str, str]:
    """(refused_by, resource, message) for the first quota beyond GPUs that ``wanted`` breaks."""
    asked = {col: wanted[col] for col, *_ in OTHER_QUOTAS if wanted.get(col) is not None}
    held = {col: getattr(current, col, 0) if current else 0 for col in asked}
    growing = [col for col in asked if asked[col] > held[col]]
    limited = [(col, field, words, unit) for col, field, words, unit in OTHER_QUOTAS if col in growing
               and (getattr(project, field) is not None or getattr(organization, field) is not None)]  # fmt: skip
    if not limited:
        return "", "", ""
    others = GpuReservation.objects.exclude(holder=holder)
    sums = {f"p_{c}": Sum(c, filter=Q(project=project)) for c, *_ in limited}
    sums |= {f"o_{c}": Sum(c) for c, *_ in limited}
    used = others.filter(project__organization=organization).aggregate(**sums)
    for col, field, words, unit in limited:
        for who, owner, key in (("project", project, f"p_{col}"), ("organization", organization, f"o_{col}")):
            quota = getattr(owner, field)
            in_use = used[key] or 0
            if quota is not None and in_use + asked[col] > quota * unit:
                kind = "Project" if who == "project" else "Organization"
                return who, col, (
                    f"{kind} “{owner.name}” has a quota of {_count(quota, words)}, {_in_use(in_use / unit)}: "
                    f"{_more(asked[col] / unit)}. Free some or raise the {who}'s quota."
                )
    return "", "", ""


_SINGULAR = {"GPUs": "GPU", "CPU cores": "CPU core", "active deployments": "active deployment"}


def _count(n: float, plural: str) -> str:
    """ "1 GPU", "4 GPUs": the noun in the singular for exactly one."""
    return f"{n:g} {_SINGULAR.get(plural, plural) if n == 1 else plural}"


def _in_use(n: float) -> str:
    return f"{n:g} {'is' if n == 1 else 'are'} in use"


def _more(n: float) -> str:
    return f"{n:g} more {'does' if n == 1 else 'do'} not fit"


def quota_decide(
    *, project: Project, organization: Organization, holder: str, gpus: int, surge: int = 0, surge_from: str = "",
    cpu_millicores: int | None = None, memory_bytes: int | None = None, deployments: int | None = None,
) -> QuotaDecision:
    """The one quota rule, project's quota then the organization's: GPUs, then CPU, memory and
    active deployments where those quotas are set (None for them: what the holder keeps now).
    quota_reserve calls it with both rows locked; previews (the deploy form's quota panel) call
    it as a read.

    ``surge``: during a blue-green rollout the serving revision's pods (``surge_from``, e.g.
    "revision 1") keep their GPUs until the new revision is ready, so the holder needs
    ``gpus + surge`` meanwhile (pods of both revisions held 3 GPUs while the quota showed 2)."""
    current = GpuReservation.objects.filter(holder=holder).first()
    held_by_holder = current.gpus if current else 0
    others = GpuReservation.objects.exclude(holder=holder)
    project_used = others.filter(project=project).aggregate(t=Sum("gpus"))["t"] or 0
    org_used = others.filter(project__organization=organization).aggregate(t=Sum("gpus"))["t"] or 0
    refused_by, refusal, surge_refused = "", "", False
    total = gpus + max(surge, 0)
    scopes = (
        ("project", f"Project “{project.name}”", project.gpu_quota, project_used,
         "Free GPUs or raise the project's quota."),
        ("organization", f"Organization “{organization.name}”", organization.gpu_quota, org_used,
         "Free GPUs or ask for a larger organization quota."),
    )  # fmt: skip
    # Shrinking or unchanged never needs a check: it can only free quota.
    if total > held_by_holder:
        for scope, who, quota, used, advice in scopes:
            if used + total <= quota:
                continue
            refused_by = scope
            if surge and used + gpus <= quota:
                surge_refused = True
                refusal = (
                    f"A blue-green update holds {_count(gpus, 'GPUs')} for the new revision and {surge} for {surge_from or 'the serving revision'}, "
                    f"which keeps serving until the new one is ready: {total} in all. {who} has a quota of {_count(quota, 'GPUs')}, "
                    f"{_in_use(used)} by other deployments: they do not fit. Choose the “recreate” update strategy ({surge_from or 'the serving revision'} "
                    f"stops first; requests are refused until the new revision is ready), or free GPUs."
                )
            elif held_by_holder:
                # An update: `used` leaves out what this deployment holds now (the page's figure
                # includes it), and it asks for `gpus` in all, not that many more.
                refusal = (f"{who} has a quota of {_count(quota, 'GPUs')}, {_in_use(used)} by other deployments: "
                           f"this one's {_count(gpus, 'GPUs')} {'does' if gpus == 1 else 'do'} not fit. {advice}")  # fmt: skip
            else:
                refusal = f"{who} has a quota of {_count(quota, 'GPUs')}, {_in_use(used)}: {_more(gpus)}. {advice}"
            break
    resource = "gpus" if refusal else ""
    if not refusal:
        refused_by, resource, refusal = _other_refusal(
            project=project, organization=organization, holder=holder, current=current,
            wanted={"cpu_millicores": cpu_millicores, "memory_bytes": memory_bytes, "deployments": deployments},
        )  # fmt: skip
    return QuotaDecision(gpus=gpus, held_by_holder=held_by_holder, project_used=project_used,
                         project_quota=project.gpu_quota, organization_used=org_used,
                         organization_quota=organization.gpu_quota, refused_by=refused_by, refusal=refusal,
                         surge=max(surge, 0), surge_refused=surge_refused, resource=resource)  # fmt: skip


# --- Organization settings: members, invitations, groups (scoped like every selector) ---


def members_for(user: AbstractBaseUser, organization: Organization) -> QuerySet[Membership]:
    """The organization's memberships, for any of its members; none for anyone else."""
    return permissions.restrict(
        Membership.objects.filter(organization=organization).select_related("user"), user, "view"
    )


def membership_get(user: AbstractBaseUser, pk: int) -> Membership:
    """A membership of one of the user's organizations; 404 otherwise."""
    row = permissions.restrict(Membership.objects.select_related("user", "organization"), user, "view").filter(pk=pk).first()
    if row is None:
        raise Http404("No such member.")
    return row


def member_user_get(user: AbstractBaseUser, organization: Organization, user_pk: int):
    """A member of ``organization`` by user id, for another member; 404 otherwise."""
    row = members_for(user, organization).filter(user_id=user_pk).first()
    if row is None:
        raise Http404("No such member.")
    return row.user


def invitations_for(user: AbstractBaseUser, organization: Organization) -> QuerySet[Invitation]:
    """Invitations (email addresses) are for the organization's admins only."""
    return permissions.restrict(
        Invitation.objects.filter(organization=organization).select_related("created_by", "accepted_by"), user, "admin"
    )


def invitation_get(user: AbstractBaseUser, pk: int) -> Invitation:
    row = permissions.restrict(Invitation.objects.select_related("organization"), user, "admin").filter(pk=pk).first()
    if row is None:
        raise Http404("No such invitation.")
    return row


def groups_for(user: AbstractBaseUser, organization: Organization) -> QuerySet[OrganizationGroup]:
    return permissions.restrict(
        OrganizationGroup.objects.filter(organization=organization).select_related("group"), user, "view"
    ).annotate(member_count=Count("group__user", distinct=True))


def group_get(user: AbstractBaseUser, pk: int) -> OrganizationGroup:
    row = permissions.restrict(OrganizationGroup.objects.select_related("group", "organization"), user, "view").filter(pk=pk).first()
    if row is None:
        raise Http404("No such group.")
    return row


def quota_limits(owner: Organization | Project) -> list[dict[str, Any]]:
    """The quotas beyond GPUs of an organization or a project, each with what is held now
    (quota None: no limit): what the quota pages and the REST API show."""
    rows = GpuReservation.objects.filter(
        **({"project__organization": owner} if isinstance(owner, Organization) else {"project": owner})
    ).aggregate(**{col: Sum(col) for col, *_ in OTHER_QUOTAS})
    return [
        {"name": field, "label": words, "quota": getattr(owner, field),
         "used": round((rows[col] or 0) / unit, 2)}
        for col, field, words, unit in OTHER_QUOTAS
    ]  # fmt: skip
