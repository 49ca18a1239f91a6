"""REST endpoints for organizations and projects; every write goes through projects.services."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from console import permissions
from console.ids import parse_id
from deployments.models import ModelDeployment
from gateway import reports
from projects import keys, services
from projects.api.org import ProjectSettingsMixin
from projects.api.serializers import (
    NO_SUCH_ORGANIZATION,
    APIKeyCreatedSerializer,
    APIKeyCreateSerializer,
    APIKeyRevokeSerializer,
    APIKeySerializer,
    BudgetOverviewSerializer,
    BudgetSetSerializer,
    OrganizationQuotaSerializer,
    OrganizationSerializer,
    ProjectSerializer,
    ProjectUpdateSerializer,
    QuotaLimitsSerializer,
)
from projects.models import APIKey
from projects.selectors import organizations_for_user, projects_for_user, quota_limits


class OrganizationViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = OrganizationSerializer

    def get_queryset(self):
        return organizations_for_user(self.request.user).order_by("name")

    @extend_schema(request=OrganizationQuotaSerializer, responses=OrganizationSerializer)
    @action(detail=True, methods=["post"], url_path="quota")
    def set_quota(self, request, pk=None):
        org = self.get_object()
        body = OrganizationQuotaSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        org = services.organization_quota_set(user=request.user, organization=org, gpu_quota=body.validated_data["gpu_quota"])
        return Response(OrganizationSerializer(org, context={"request": request}).data)

    @extend_schema(request=QuotaLimitsSerializer, responses={200: dict})
    @action(detail=True, methods=["get", "post"], url_path="limits")
    def limits(self, request, pk=None):
        """Quotas beyond GPUs (CPU cores, memory GiB, active deployments) with what is held."""
        return _limits(request, self.get_object())


def _limits(request, owner):
    if request.method == "POST":
        body = QuotaLimitsSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        owner = services.quota_limits_set(user=request.user, owner=owner, **body.validated_data)
    return Response({"limits": quota_limits(owner)})


class ProjectViewSet(ProjectSettingsMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = ProjectSerializer

    def get_queryset(self):
        return projects_for_user(self.request.user).order_by("organization__name", "name")

    def _organization_for_write(self, request, org_id):
        orgs = organizations_for_user(request.user)
        if org_id in (None, ""):
            org = getattr(request, "organization", None) or orgs.first()
        elif (pk := parse_id(org_id)) is not None:
            org = orgs.filter(pk=pk).first()
        else:
            org = None
        if org is None:
            # One answer for an id that does not exist and one of another organization.
            raise Http404(NO_SUCH_ORGANIZATION)
        return org

    @extend_schema(request=ProjectSerializer, responses={201: ProjectSerializer})
    def create(self, request):
        # The organization first: an outsider's id is a 404 before any field is judged.
        org = self._organization_for_write(request, request.data.get("organization"))
        body = ProjectSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        project = services.project_create(
            user=request.user, organization=org, name=data["name"], slug=data.get("slug", ""),
            description=data.get("description", ""), gpu_quota=data.get("gpu_quota", 4),
        )
        return Response(ProjectSerializer(project).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=ProjectUpdateSerializer, responses=ProjectSerializer)
    def partial_update(self, request, pk=None):
        project = self.get_object()
        body = ProjectUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        project = services.project_update(
            user=request.user, project=project,
            name=data.get("name", project.name),
            description=data.get("description", project.description),
            gpu_quota=data.get("gpu_quota", project.gpu_quota),
        )
        return Response(ProjectSerializer(project).data)

    @extend_schema(request=QuotaLimitsSerializer, responses={200: dict})
    @action(detail=True, methods=["get", "post"], url_path="limits")
    def limits(self, request, pk=None):
        """Quotas beyond GPUs (CPU cores, memory GiB, active deployments) with what is held."""
        return _limits(request, self.get_object())

    def destroy(self, request, pk=None):
        """Delete an empty project; while it has deployments, a 400 naming them (console.api)."""
        project = self.get_object()
        services.project_delete(user=request.user, project=project)
        return Response(status=status.HTTP_204_NO_CONTENT)


class APIKeyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """API keys: yours, and for organization admins every key of the organization.

    The secret is in the create response only. Revoking is a POST (keys are never deleted, so
    usage stays attributed). The console's Developer Hub calls the same functions (projects.keys).
    """

    serializer_class = APIKeySerializer

    def get_queryset(self):
        user = self.request.user
        params = self.request.query_params
        org_id = params.get("organization")
        organization = None
        if org_id is not None:
            if (pk := parse_id(org_id)) is None:
                raise ValidationError({"organization": "Give the organization's numeric id."})
            organization = organizations_for_user(user).filter(pk=pk).first()
            if organization is None:
                raise Http404("No such organization.")
        # The list leaves the playground's keys out unless asked, as the console's does (a key's
        # own URL, get_object, finds any key).
        playground = params.get("playground", "hide")
        if params.get("owner", "me") == "any":
            if organization is None:
                raise ValidationError({"organization": "Listing every owner's keys needs ?organization=<id>."})
            qs = keys.api_keys_for_organization(user, organization, playground=playground)
        else:
            qs = keys.api_keys_for_user(user, organization, playground=playground)
        return qs.order_by("-created_at", "-pk")

    def get_object(self):
        pk = parse_id(self.kwargs.get("pk", ""))
        if pk is None:
            raise Http404("No such API key.")
        return keys.api_key_get(self.request.user, pk)

    @extend_schema(
        parameters=[
            OpenApiParameter("organization", int, description="Only keys of this organization."),
            OpenApiParameter(
                "owner", str, enum=["me", "any"],
                description="`me` (default): your keys. `any`: every key of `organization` (its admins only).",
            ),
            OpenApiParameter(
                "playground", str, enum=list(keys.PLAYGROUND_CHOICES),
                description="The short-lived keys the console's playground makes (one each time it opens, "
                "named “Playground · <model>”, expiring 15 minutes later): `hide` (default) leaves them "
                "out, `include` lists them too, `only` lists only them.",
            ),
        ]
    )  # fmt: skip
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(request=APIKeyCreateSerializer, responses={201: APIKeyCreatedSerializer})
    def create(self, request):
        body = APIKeyCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        orgs = organizations_for_user(request.user)
        if data.get("organization") is not None:
            organization = orgs.filter(pk=data["organization"]).first()
        else:
            organization = getattr(request, "organization", None) or orgs.order_by("pk").first()
        if organization is None:
            raise Http404("No such organization.")
        wanted = set(data.get("deployments") or ())
        chosen = list(ModelDeployment.objects.filter(pk__in=wanted).select_related("project"))
        if len(chosen) != len(wanted):
            # Unknown and foreign ids get the service's answer: nothing says which exist.
            raise ValidationError(
                {"deployments": "A key can only be limited to deployments of its organization or shared with it."}
            )
        key, secret = keys.api_key_create(
            user=request.user, organization=organization, name=data["name"], scope=data["scope"],
            expires_at=data.get("expires_at"), deployments=chosen,
        )  # fmt: skip
        key = keys.with_owner_state(APIKey.objects.filter(pk=key.pk)).first()
        payload = APIKeyCreatedSerializer(key).data
        payload["secret"] = secret
        response = Response(payload, status=status.HTTP_201_CREATED)
        response["Cache-Control"] = "no-store"  # the only response that ever carries the secret
        return response

    @extend_schema(request=APIKeyRevokeSerializer, responses=APIKeySerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        key = self.get_object()
        body = APIKeyRevokeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        key = keys.api_key_revoke(user=request.user, key=key, reason=body.validated_data.get("reason", ""))
        key = keys.with_owner_state(APIKey.objects.filter(pk=key.pk)).first()
        return Response(APIKeySerializer(key).data)


class BudgetView(GenericAPIView):
    """Monthly budgets of an organization, its members and its gateway keys, with this month's
    spend: GET shows what the console's Budgets page shows you; POST sets one (the same service,
    projects.services.budget_set) and answers the new overview. `?organization=<id>` (or
    `organization` in the body) picks the organization, else your current / first one."""

    serializer_class = BudgetOverviewSerializer

    def get_serializer_class(self):
        # OPTIONS documents POST with what POST reads (DRF's metadata asks for the serializer
        # of each method it describes), not with the overview it answers.
        return BudgetSetSerializer if self.request.method == "POST" else BudgetOverviewSerializer

    def _organization(self, request, org_id):
        orgs = organizations_for_user(request.user)
        if org_id in (None, ""):
            org = getattr(request, "organization", None) or orgs.order_by("pk").first()
        elif (pk := parse_id(org_id)) is not None:
            org = orgs.filter(pk=pk).first()
        else:
            raise ValidationError({"organization": "Give the organization's numeric id."})
        if org is None:
            raise Http404("No such organization.")
        return org

    def _overview(self, request, org) -> Response:
        admin = permissions.can(request.user, "admin", org)
        return Response(BudgetOverviewSerializer(reports.budgets_overview(request.user, org, admin=admin)).data)

    @extend_schema(
        parameters=[OpenApiParameter("organization", int, description="The organization (default: your first).")],
        responses=BudgetOverviewSerializer,
    )
    def get(self, request):
        return self._overview(request, self._organization(request, request.query_params.get("organization")))

    @extend_schema(request=BudgetSetSerializer, responses=BudgetOverviewSerializer)
    def post(self, request):
        body = BudgetSetSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        org = self._organization(request, data.get("organization"))
        services.budget_set(
            user=request.user, organization=org, level=data["level"], target=data.get("target"),
            amount=request.data.get("monthly_budget"), currency=data.get("budget_currency"),
        )  # fmt: skip
        org.refresh_from_db()
        return self._overview(request, org)
