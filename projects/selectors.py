"""Reads of organizations and projects, always restricted to what the user may see."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import IntegerField, OuterRef, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.http import Http404

from projects.models import GpuReservation, Membership, Organization, Project, Role


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
    if not user.is_authenticated:
        return Project.objects.none()
    qs = Project.objects.filter(organization__memberships__user=user).select_related("organization")
    if organization is not None:
        qs = qs.filter(organization=organization)
    return qs.distinct()


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


def can_change(user: AbstractBaseUser, organization: Organization) -> bool:
    return role_in(user, organization) in {Role.ADMIN, Role.MEMBER}


def is_org_admin(user: AbstractBaseUser, organization: Organization) -> bool:
    return role_in(user, organization) == Role.ADMIN
