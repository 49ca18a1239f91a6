"""Serializers of the governance API; no logic here, the services decide."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from rest_framework import serializers

from deployments.models import ComputePool
from projects.models import GPU_QUOTA_ERRORS, GPU_QUOTA_MAX, Environment, Organization
from projects.selectors import projects_for_user
from sharing.models import AccessKind, AuditAction, AuditEntry, ShareMode
from sharing.selectors import AUDIT_DEFAULT_SORT, audit_sort_choices
from sharing.services import UNKNOWN_USERS


class AuditEntrySerializer(serializers.ModelSerializer):
    organization = serializers.PrimaryKeyRelatedField(read_only=True)
    actor = serializers.PrimaryKeyRelatedField(read_only=True)

    class Meta:
        model = AuditEntry
        fields = [
            "id",
            "organization",
            "actor",
            "actor_repr",
            "action",
            "object_type",
            "object_id",
            "object_repr",
            "before",
            "after",
            "diff",
            "request_id",
            "ip",
            "created_at",
        ]
        read_only_fields = fields


class AuditFilterSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=AuditAction.choices, required=False)
    object_type = serializers.CharField(required=False)
    object_id = serializers.CharField(required=False)
    actor = serializers.CharField(required=False)
    q = serializers.CharField(required=False)
    since = serializers.DateField(required=False)
    until = serializers.DateField(required=False)
    organization = serializers.IntegerField(required=False)
    sort = serializers.ChoiceField(
        choices=audit_sort_choices(), required=False, default=AUDIT_DEFAULT_SORT,
        help_text="The console's sort: when, who, action or object; a leading - reverses (default -when, newest first).",
    )  # fmt: skip


class SharingSerializer(serializers.Serializer):
    """A deployment's sharing and access policy, read and written as one object."""

    deployment = serializers.IntegerField(read_only=True)
    mode = serializers.ChoiceField(choices=ShareMode.choices)
    organizations = serializers.PrimaryKeyRelatedField(
        queryset=Organization.objects.all(), many=True, required=False
    )
    # Required: a PUT is the whole object, and an `access` left out would have either kept the
    # old policy (a PATCH in disguise) or widened it to the default.
    access = serializers.ChoiceField(choices=AccessKind.choices)
    groups = serializers.PrimaryKeyRelatedField(
        queryset=Group.objects.all(), many=True, required=False
    )
    # An unknown id gets the service's text for another organization's user: no existence oracle.
    users = serializers.PrimaryKeyRelatedField(
        queryset=get_user_model().objects.all(),
        many=True,
        required=False,
        error_messages={"does_not_exist": UNKNOWN_USERS, "incorrect_type": UNKNOWN_USERS},
    )


class SharedDeploymentSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    organization = serializers.CharField(source="project.organization.name")
    served_model_name = serializers.SerializerMethodField()
    state = serializers.CharField()

    def get_served_model_name(self, obj) -> str:
        return (obj.current_revision.spec if obj.current_revision_id else {}).get(
            "served_model_name", ""
        )


class EnvironmentSerializer(serializers.ModelSerializer):
    allowed_pools = serializers.PrimaryKeyRelatedField(
        many=True, required=False, queryset=ComputePool.objects.all()
    )

    class Meta:
        model = Environment
        fields = [
            "id",
            "project",
            "name",
            "slug",
            "description",
            "allowed_pools",
            "allowed_pool_labels",
            "allowed_gpu_types",
            "max_replicas",
            "max_gpus_per_replica",
            "created_at",
        ]
        read_only_fields = ["id", "created_at"]
        validators: list = []  # uniqueness messages come from the service

    # A form-encoded `null` parses to None past DRF's null check and reached the NOT NULL column.
    def validate_allowed_pool_labels(self, value):
        if value is None:
            raise serializers.ValidationError('Give labels as {"label": ["value", …]}, or {} for any.')
        return value

    def validate_allowed_gpu_types(self, value):
        if value is None:
            raise serializers.ValidationError('Give GPU types as ["L4", …], or [] for any.')
        return value

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        request = self.context.get("request")
        if request is not None:

            self.fields["project"].queryset = projects_for_user(request.user)


class QuotaSerializer(serializers.Serializer):
    gpu_quota = serializers.IntegerField(min_value=0, max_value=GPU_QUOTA_MAX, error_messages=GPU_QUOTA_ERRORS)


class PromotionSerializer(serializers.Serializer):
    deployment = serializers.IntegerField()
    revision = serializers.IntegerField(min_value=1)
    target_environment = serializers.IntegerField()
    dry_run = serializers.BooleanField(
        default=False, help_text="Only check the target's policies and show the plan."
    )
