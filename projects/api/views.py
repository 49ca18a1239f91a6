"""REST endpoints for organizations and projects; every write goes through projects.services."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from projects import services
from projects.api.serializers import (
    NO_SUCH_ORGANIZATION,
    OrganizationQuotaSerializer,
    OrganizationSerializer,
    ProjectSerializer,
    ProjectUpdateSerializer,
)
from projects.selectors import organizations_for_user, projects_for_user


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


class ProjectViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = ProjectSerializer

    def get_queryset(self):
        return projects_for_user(self.request.user).order_by("organization__name", "name")

    def _organization_for_write(self, request, org_id):
        orgs = organizations_for_user(request.user)
        if org_id in (None, ""):
            org = getattr(request, "organization", None) or orgs.first()
        elif str(org_id).isdigit() and int(org_id) < 2**63:
            org = orgs.filter(pk=int(org_id)).first()
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
            user=request.user, organization=org, name=data["name"], slug=data["slug"],
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

    def destroy(self, request, pk=None):
        project = self.get_object()
        try:
            services.project_delete(user=request.user, project=project)
        except ValidationError:
            raise
        return Response(status=status.HTTP_204_NO_CONTENT)
