"""REST routes of the galleries: /api/v1/resource-templates/ and /api/v1/data-sources/
(deployments/galleries.py; another organization's entries are 404)."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.response import Response

from console.api import filter_by_id
from console.api_parsers import BoundedJSONField
from deployments import galleries
from deployments.models import DataSource, DataSourceKind, ResourceTemplate
from projects.selectors import organizations_for_user, projects_for_user


class ResourceTemplateSerializer(serializers.ModelSerializer):
    scope = serializers.CharField(source="scope_label", read_only=True)

    class Meta:
        model = ResourceTemplate
        fields = ["id", "organization", "project", "scope", "name", "description", "cpu", "memory", "gpus",
                  "gpu_type", "shm_size", "created_at", "updated_at"]  # fmt: skip
        read_only_fields = fields


class ResourceTemplateWriteSerializer(serializers.Serializer):
    organization = serializers.IntegerField(required=False, help_text="Default: your (first) organization.")
    project = serializers.IntegerField(required=False, allow_null=True, help_text="Empty: organization-wide.")
    name = serializers.CharField(max_length=63)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    cpu = serializers.CharField(max_length=20)
    memory = serializers.CharField(max_length=20)
    gpus = serializers.IntegerField(required=False, default=0)
    gpu_type = serializers.CharField(required=False, allow_blank=True, default="")
    shm_size = serializers.CharField(required=False, allow_blank=True, default="")


class ResourceTemplateUpdateSerializer(serializers.Serializer):
    description = serializers.CharField(required=False, allow_blank=True)
    cpu = serializers.CharField(required=False, max_length=20)
    memory = serializers.CharField(required=False, max_length=20)
    gpus = serializers.IntegerField(required=False)
    gpu_type = serializers.CharField(required=False, allow_blank=True)
    shm_size = serializers.CharField(required=False, allow_blank=True)


class DataSourceSerializer(serializers.ModelSerializer):
    scope = serializers.CharField(source="scope_label", read_only=True)
    credentials_last4 = serializers.SerializerMethodField()

    class Meta:
        model = DataSource
        fields = ["id", "organization", "project", "scope", "name", "description", "kind", "claim_name", "uri",
                  "mount_path", "credentials_last4", "created_at", "updated_at"]  # fmt: skip
        read_only_fields = fields

    def get_credentials_last4(self, obj: DataSource) -> str:
        return galleries.credentials_last4(obj)


class DataSourceWriteSerializer(serializers.Serializer):
    organization = serializers.IntegerField(required=False)
    project = serializers.IntegerField(required=False, allow_null=True)
    name = serializers.CharField(max_length=63)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    kind = serializers.ChoiceField(choices=DataSourceKind.values)
    claim_name = serializers.CharField(required=False, allow_blank=True, default="")
    uri = serializers.CharField(required=False, allow_blank=True, default="")
    mount_path = serializers.CharField(required=False, allow_blank=True, default="")
    credentials = BoundedJSONField(required=False, write_only=True,
                                        help_text="S3: access_key_id, secret_access_key, endpoint_url, region.")  # fmt: skip


class DataSourceUpdateSerializer(serializers.Serializer):
    description = serializers.CharField(required=False, allow_blank=True)
    claim_name = serializers.CharField(required=False, allow_blank=True)
    uri = serializers.CharField(required=False, allow_blank=True)
    mount_path = serializers.CharField(required=False, allow_blank=True)
    credentials = BoundedJSONField(required=False, write_only=True, help_text="Absent: keep the stored ones.")


class _GalleryViewSet(viewsets.ReadOnlyModelViewSet):
    model: type
    write: type
    update_body: type

    def get_queryset(self):
        qs = galleries.visible(self.model, self.request.user, None).order_by("name", "pk")
        return filter_by_id(qs, "project_id", self.request.query_params.get("project"))

    def _scope(self, data: dict):
        orgs = organizations_for_user(self.request.user)
        org_id = data.pop("organization", None)
        org = orgs.filter(pk=org_id).first() if org_id else (getattr(self.request, "organization", None) or orgs.first())
        if org is None:
            raise Http404("No such organization.")
        project_id = data.pop("project", None)
        project = None
        if project_id:
            project = projects_for_user(self.request.user, org).filter(pk=project_id).first()
            if project is None:
                raise serializers.ValidationError({"project": "No such project in this organization."})
        return org, project

    def create(self, request):
        body = self.write(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        org, project = self._scope(data)
        obj = self.create_service(user=request.user, organization=org, project=project, **data)
        return Response(self.serializer_class(obj).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request, pk=None):
        obj = self.get_object()
        body = self.update_body(data=request.data)
        body.is_valid(raise_exception=True)
        obj = self.update_service(request.user, obj, dict(body.validated_data))
        return Response(self.serializer_class(obj).data)

    def destroy(self, request, pk=None):
        galleries.gallery_delete(user=request.user, obj=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(tags=["galleries"])
@extend_schema_view(
    create=extend_schema(request=ResourceTemplateWriteSerializer, responses={201: ResourceTemplateSerializer}),
    partial_update=extend_schema(request=ResourceTemplateUpdateSerializer, responses=ResourceTemplateSerializer),
)
class ResourceTemplateViewSet(_GalleryViewSet):
    """Compute presets; copied into a deployment's spec when chosen (never changing it later)."""

    model = ResourceTemplate
    serializer_class = ResourceTemplateSerializer
    write = ResourceTemplateWriteSerializer
    update_body = ResourceTemplateUpdateSerializer
    create_service = staticmethod(galleries.template_create)

    @staticmethod
    def update_service(user, obj, data):
        return galleries.template_update(user=user, template=obj, **data)


@extend_schema(tags=["galleries"])
@extend_schema_view(
    create=extend_schema(request=DataSourceWriteSerializer, responses={201: DataSourceSerializer}),
    partial_update=extend_schema(request=DataSourceUpdateSerializer, responses=DataSourceSerializer),
)
class DataSourceViewSet(_GalleryViewSet):
    """Storage definitions: a PVC, an S3 bucket with credentials (write-only), an HF or NGC cache."""

    model = DataSource
    serializer_class = DataSourceSerializer
    write = DataSourceWriteSerializer
    update_body = DataSourceUpdateSerializer
    create_service = staticmethod(galleries.data_source_create)

    @staticmethod
    def update_service(user, obj, data):
        return galleries.data_source_update(user=user, source=obj, **data)
