"""Reads of compute pools, endpoints, deployments and revisions, restricted to what a user may see."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from django.http import Http404

from console.diff import changes
from deployments.models import ComputePool, DeploymentEvent, Endpoint, ModelDeployment, Revision
from projects.models import Organization
from projects.selectors import organizations_for_user


def pools_for_user(
    user: AbstractBaseUser, organization: Organization | None = None
) -> QuerySet[ComputePool]:
    qs = ComputePool.objects.filter(organization__in=organizations_for_user(user)).select_related(
        "organization"
    )
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
    qs = Endpoint.objects.filter(
        project__organization__in=organizations_for_user(user)
    ).select_related("project", "project__organization")
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
    qs = ModelDeployment.objects.filter(project__organization__in=organizations_for_user(user)).select_related(
        "project", "project__organization", "model", "bundle", "pool", "endpoint", "environment",
        "current_revision", "serving_revision",
    )  # fmt: skip
    if organization is not None:
        qs = qs.filter(project__organization=organization)
    return qs


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
