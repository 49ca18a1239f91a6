"""REST endpoints for governance: read-only audit log, deployment sharing, environments."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.exceptions import ValidationError as DRFValidationError
from rest_framework.response import Response

from console import permissions
from console.api import filter_by_id
from deployments.models import ModelDeployment
from projects.api.serializers import NO_SUCH_ORGANIZATION
from projects.selectors import organizations_for_user
from sharing import selectors, services
from sharing.api.serializers import (
    AuditEntrySerializer,
    AuditFilterSerializer,
    EnvironmentSerializer,
    PromotionSerializer,
    SharedDeploymentSerializer,
    SharingSerializer,
)
from sharing.models import AccessKind


@extend_schema_view(  # the list's filters; reading one entry takes none
    list=extend_schema(
        parameters=[
            OpenApiParameter(n, str, required=False)
            for n in (
                "action",
                "object_type",
                "object_id",
                "actor",
                "q",
                "since",
                "until",
                "organization",
                "sort",
            )
        ]
    )
)
class AuditEntryViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit log: list and read only — entries can't be created, changed or deleted here."""

    serializer_class = AuditEntrySerializer

    def get_queryset(self):
        if self.action != "list":
            return selectors.audit_entries_for_user(self.request.user)
        params = AuditFilterSerializer(data=self.request.query_params)
        params.is_valid(raise_exception=True)
        filters = dict(params.validated_data)
        org = None
        if "organization" in filters:
            org = (
                organizations_for_user(self.request.user)
                .filter(pk=filters.pop("organization"))
                .first()
            )
            if org is None:  # as every route answers another organization's id: not found
                raise Http404(NO_SUCH_ORGANIZATION)
        return selectors.audit_entries_for_user(self.request.user, org, **filters)


def _state(deployment) -> dict:
    share = selectors.share_for(deployment)
    policy = selectors.access_policy_for(deployment)
    return {
        "deployment": deployment.pk,
        "mode": share.mode,
        "organizations": list(share.organization_ids),
        "access": policy.kind,
        "groups": list(policy.group_ids),
        "users": list(policy.user_ids),
    }


class DeploymentSharingViewSet(viewsets.ViewSet):
    """GET/PUT /deployment-sharing/<deployment id>/: who a deployment is shared with and who may call it."""

    lookup_value_regex = r"\d+"

    @extend_schema(responses=SharingSerializer)
    def retrieve(self, request, pk=None):
        return Response(_state(selectors.deployment_get(request.user, int(pk))))

    @extend_schema(
        request=SharingSerializer,
        responses=SharingSerializer,
        description="Replace who the deployment is shared with and who may call it: `mode` and "
        "`access` are required; `organizations`, `groups` and `users` left out are empty.",
    )
    def update(self, request, pk=None):
        deployment = selectors.deployment_get(request.user, int(pk))
        # Allowed first: a reader learns nothing from the body's errors.
        permissions.require(request.user, "share", deployment)
        body = SharingSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        with transaction.atomic():  # both or neither: a refused access policy leaves the sharing too
            services.deployment_share_set(
                user=request.user,
                deployment=deployment,
                mode=data["mode"],
                organizations=data.get("organizations", []),
            )
            services.access_policy_set(
                user=request.user,
                deployment=deployment,
                kind=data["access"],
                groups=data.get("groups", []) if data["access"] == AccessKind.GROUPS else [],
                users=data.get("users", []) if data["access"] == AccessKind.USERS else [],
            )
        deployment.refresh_from_db()
        return Response(_state(deployment))


class SharedDeploymentViewSet(viewsets.GenericViewSet, mixins.ListModelMixin):
    """Deployments of other organizations shared with the caller's current organization."""

    serializer_class = SharedDeploymentSerializer

    def get_queryset(self):
        org = (
            getattr(self.request, "organization", None)
            or organizations_for_user(self.request.user).first()
        )
        if org is None:

            return ModelDeployment.objects.none()
        return (
            selectors.shared_deployments_for_org(org)
            .select_related("current_revision")
            .order_by("name")
        )


class EnvironmentViewSet(viewsets.ModelViewSet):
    serializer_class = EnvironmentSerializer

    def get_queryset(self):
        qs = selectors.environments_for_user(self.request.user).order_by("project", "name")
        return filter_by_id(qs, "project_id", self.request.query_params.get("project"))

    def create(self, request):
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        project = data.pop("project")
        environment = services.environment_create(user=request.user, project=project, **data)
        return Response(self.get_serializer(environment).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        description="Replace the environment: `project`, `name` and `slug` are required (project and "
        "slug as they are: they cannot change); the fields left out return to their defaults "
        "(no description, any pool, any GPU type, no limits). PATCH changes only the fields given."
    )
    def update(self, request, pk=None, partial=False):
        environment = self.get_object()
        # Allowed first: a reader learns nothing from the body's errors (a PUT lacking fields).
        permissions.require(request.user, "change", environment.project, what="environments")
        body = self.get_serializer(environment, data=request.data, partial=partial)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        fixed = {"project": "An environment's project cannot change.", "slug": "An environment's slug cannot change."}
        for field, message in fixed.items():
            if field in data and data.pop(field) != getattr(environment, field):
                raise DRFValidationError({field: [message]})
        environment = services.environment_update(
            user=request.user, environment=environment, replace=not partial, **data
        )
        return Response(self.get_serializer(environment).data)

    @extend_schema(description="Change the fields given; the others keep their values.")
    def partial_update(self, request, pk=None):
        return self.update(request, pk, partial=True)

    def destroy(self, request, pk=None):
        services.environment_delete(user=request.user, environment=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class PromotionViewSet(viewsets.ViewSet):
    """POST /promotions/: promote a revision into another environment (or, with dry_run, show the plan)."""

    @extend_schema(request=PromotionSerializer, responses={200: dict, 201: dict})
    def create(self, request):
        body = PromotionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        deployment = selectors.deployment_get(request.user, data["deployment"])
        target = (
            selectors.environments_for_user(request.user)
            .filter(pk=data["target_environment"])
            .first()
        )
        if target is None:
            raise DRFValidationError({"target_environment": ["No such environment."]})
        args = {
            "user": request.user,
            "deployment": deployment,
            "revision_number": data["revision"],
            "target_environment": target,
        }
        try:
            if data["dry_run"]:
                plan = services.promotion_plan(**args)
                return Response(
                    {
                        "call": plan.call,
                        "description": plan.describe(),
                        "target_deployment": plan.kwargs["deployment"].pk
                        if "deployment" in plan.kwargs
                        else None,
                        "name": plan.kwargs.get("name"),
                    }
                )
            result = services.promote(**args)
        except DjangoValidationError as exc:
            if hasattr(exc, "error_dict") and "revision_number" in exc.error_dict:
                raise DjangoValidationError(
                    {"revision": exc.error_dict["revision_number"]}
                ) from None
            raise
        target_deployment = result if hasattr(result, "project_id") else result.deployment
        return Response(
            {
                "deployment": target_deployment.pk,
                "name": target_deployment.name,
                "environment": target.pk,
            },
            status=status.HTTP_201_CREATED,
        )
