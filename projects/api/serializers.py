from __future__ import annotations

from rest_framework import serializers

from projects.keys import api_key_state
from projects.models import GPU_QUOTA_MAX, APIKey, APIKeyScope, Organization, Project

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


class APIKeySerializer(serializers.ModelSerializer):
    """A key as listed: never its secret (only a hash is stored)."""

    owner = serializers.CharField(source="user.username", read_only=True)
    owner_id = serializers.IntegerField(source="user_id", read_only=True)
    organization = serializers.IntegerField(source="organization_id", read_only=True)
    deployments = serializers.SerializerMethodField()
    state = serializers.SerializerMethodField()

    class Meta:
        model = APIKey
        fields = [
            "id", "name", "prefix", "scope", "organization", "owner", "owner_id", "deployments",
            "created_at", "last_used_at", "expires_at", "revoked_at", "revoked_reason", "state",
        ]  # fmt: skip
        read_only_fields = fields

    def get_deployments(self, obj: APIKey) -> list[int]:
        return [d.pk for d in obj.deployments.all()]

    def get_state(self, obj: APIKey) -> str:
        return api_key_state(obj)


class APIKeyCreatedSerializer(APIKeySerializer):
    secret = serializers.CharField(
        read_only=True, help_text="The key itself. Shown in this response only; store it now."
    )

    class Meta(APIKeySerializer.Meta):
        fields = [*APIKeySerializer.Meta.fields, "secret"]
        read_only_fields = fields


class APIKeyCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    organization = serializers.IntegerField(
        required=False, min_value=1, help_text="Default: the organization of the request (or your first)."
    )
    scope = serializers.ChoiceField(choices=APIKeyScope.choices, default=APIKeyScope.GATEWAY)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)
    deployments = serializers.ListField(
        child=serializers.IntegerField(min_value=1), required=False, max_length=1000,
        help_text="Gateway keys only: limit the key to these deployments (default: all it may call).",
    )  # fmt: skip


class APIKeyRevokeSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=200, required=False, allow_blank=True)
