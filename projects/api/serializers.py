from __future__ import annotations

from rest_framework import serializers

from projects.models import GPU_QUOTA_MAX, Organization, Project

NO_SUCH_ORGANIZATION = "No such organization, or you are not a member of it."


class OrganizationSerializer(serializers.ModelSerializer):
    gpu_used = serializers.SerializerMethodField()
    role = serializers.SerializerMethodField()

    class Meta:
        model = Organization
        fields = ["id", "name", "slug", "gpu_quota", "gpu_used", "role", "created_at"]
        read_only_fields = ["id", "name", "slug", "created_at"]

    def get_gpu_used(self, obj: Organization) -> int:
        return obj.gpu_used()

    def get_role(self, obj: Organization) -> str | None:
        request = self.context.get("request")
        m = obj.memberships.filter(user=request.user).first() if request else None
        return m.role if m else None


class ProjectSerializer(serializers.ModelSerializer):
    # Same text for an id that does not exist and one of an organization you are not in.
    organization = serializers.PrimaryKeyRelatedField(
        queryset=Organization.objects.all(), required=False,
        error_messages={"does_not_exist": NO_SUCH_ORGANIZATION},
    )
    namespace = serializers.SerializerMethodField()
    gpu_used = serializers.SerializerMethodField()
    gpu_quota = serializers.IntegerField(min_value=0, max_value=GPU_QUOTA_MAX, required=False, default=4)

    class Meta:
        model = Project
        fields = ["id", "organization", "name", "slug", "namespace", "description", "gpu_quota", "gpu_used", "created_at", "updated_at"]
        read_only_fields = ["id", "namespace", "gpu_used", "created_at", "updated_at"]
        # Uniqueness is the service's job (it gives the message); skip DRF's own validators.
        validators: list = []

    def get_namespace(self, obj: Project) -> str:
        return obj.namespace()

    def get_gpu_used(self, obj: Project) -> int:
        return obj.gpu_used()


class ProjectUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    gpu_quota = serializers.IntegerField(min_value=0, max_value=GPU_QUOTA_MAX, required=False)


class OrganizationQuotaSerializer(serializers.Serializer):
    gpu_quota = serializers.IntegerField(min_value=0, max_value=GPU_QUOTA_MAX)
