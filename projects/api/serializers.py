from __future__ import annotations

from rest_framework import serializers

from console.api_parsers import BoundedJSONField
from console.ids import MAX_ID
from projects.keys import api_key_state
from projects.models import (
    GPU_QUOTA_ERRORS,
    GPU_QUOTA_MAX,
    APIKey,
    APIKeyScope,
    Integration,
    IntegrationKind,
    Invitation,
    Organization,
    OrganizationGroup,
    Project,
    Role,
)
from projects.services import QUOTA_LIMIT_MAX

NO_SUCH_ORGANIZATION = "No such organization, or you are not a member of it."


class OrganizationSerializer(serializers.ModelSerializer):
    gpu_used = serializers.SerializerMethodField()
    role = serializers.SerializerMethodField()

    class Meta:
        model = Organization
        fields = ["id", "name", "slug", "gpu_quota", "gpu_used", "role", "monthly_budget", "budget_currency", "created_at"]
        # Budgets change through POST /api/v1/budgets/ (projects.services.budget_set).
        read_only_fields = ["id", "name", "slug", "monthly_budget", "budget_currency", "created_at"]

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
    gpu_quota = serializers.IntegerField(min_value=0, max_value=GPU_QUOTA_MAX, error_messages=GPU_QUOTA_ERRORS, required=False, default=4)

    class Meta:
        model = Project
        fields = ["id", "organization", "name", "slug", "namespace", "description", "gpu_quota", "gpu_used", "created_at", "updated_at"]
        read_only_fields = ["id", "namespace", "gpu_used", "created_at", "updated_at"]
        extra_kwargs = {"slug": {"required": False, "allow_blank": True, "help_text": "Empty or left out: made from the name."}}
        # Uniqueness is the service's job (it gives the message); skip DRF's own validators.
        validators: list = []

    def get_namespace(self, obj: Project) -> str:
        return obj.namespace()

    def get_gpu_used(self, obj: Project) -> int:
        return obj.gpu_used()


class ProjectUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    gpu_quota = serializers.IntegerField(min_value=0, max_value=GPU_QUOTA_MAX, error_messages=GPU_QUOTA_ERRORS, required=False)


class OrganizationQuotaSerializer(serializers.Serializer):
    gpu_quota = serializers.IntegerField(min_value=0, max_value=GPU_QUOTA_MAX, error_messages=GPU_QUOTA_ERRORS)


class _QuotaLimitField(serializers.IntegerField):
    """A quota beyond GPUs: a whole number, or null / "" / left out for no limit (as the page's
    empty box); anything else gets the service's words (projects.services.quota_limits_set)."""

    def __init__(self, **kwargs) -> None:
        message = f"Give a whole number from 0 to {QUOTA_LIMIT_MAX:,}, or nothing for no limit."
        super().__init__(allow_null=True, required=False, default=None,
                         error_messages={"invalid": message, "max_string_length": message}, **kwargs)  # fmt: skip

    def validate_empty_values(self, data):
        if isinstance(data, str) and not data.strip():
            return True, None
        return super().validate_empty_values(data)


class QuotaLimitsSerializer(serializers.Serializer):
    """Quotas beyond GPUs; null, "" or left out: no limit. Bounds: projects.services.quota_limits_set."""

    cpu_quota = _QuotaLimitField(help_text="CPU cores")
    memory_quota_gib = _QuotaLimitField(help_text="GiB of memory")
    deployment_quota = _QuotaLimitField(help_text="Active deployments")


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
            "monthly_budget", "playground",
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


class MemberSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    organization = serializers.IntegerField(source="organization_id", read_only=True)
    user_id = serializers.IntegerField(read_only=True)
    username = serializers.CharField(source="user.username", read_only=True)
    email = serializers.CharField(source="user.email", read_only=True)
    role = serializers.ChoiceField(choices=Role.choices)
    monthly_budget = serializers.DecimalField(
        max_digits=14, decimal_places=4, read_only=True, allow_null=True,
        help_text="Set through POST /api/v1/budgets/ (level member).",
    )  # fmt: skip
    created_at = serializers.DateTimeField(read_only=True)


class MemberAddSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=254, help_text="An existing user's username or email.")
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)
    organization = serializers.IntegerField(required=False, min_value=1)


class MemberRoleSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)


class MemberRemovedSerializer(serializers.Serializer):
    keys_revoked = serializers.IntegerField()


class InvitationSerializer(serializers.ModelSerializer):
    organization = serializers.IntegerField(source="organization_id", read_only=True)
    invited_by = serializers.CharField(source="created_by.username", read_only=True, default=None)
    state = serializers.SerializerMethodField()

    class Meta:
        model = Invitation
        fields = ["id", "organization", "email", "role", "invited_by", "created_at", "expires_at", "accepted_at",
                  "revoked_at", "state"]
        read_only_fields = fields

    def get_state(self, obj: Invitation) -> str:
        return obj.state()


class InvitationCreatedSerializer(InvitationSerializer):
    link = serializers.CharField(read_only=True, help_text="The one-time link. In this response only.")

    class Meta(InvitationSerializer.Meta):
        fields = [*InvitationSerializer.Meta.fields, "link"]
        read_only_fields = fields


class InvitationCreateSerializer(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)
    organization = serializers.IntegerField(required=False, min_value=1)


class InvitationAcceptSerializer(serializers.Serializer):
    token = serializers.CharField(max_length=200)


class GroupSerializer(serializers.ModelSerializer):
    organization = serializers.IntegerField(source="organization_id", read_only=True)
    members = serializers.SerializerMethodField()

    class Meta:
        model = OrganizationGroup
        fields = ["id", "organization", "name", "description", "members", "created_at"]
        read_only_fields = ["id", "organization", "members", "created_at"]
        validators: list = []  # the service checks uniqueness and says so

    def get_members(self, obj: OrganizationGroup) -> list[dict]:
        return [{"id": u.pk, "username": u.username} for u in obj.group.user_set.order_by("username")]


class GroupWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=80)
    description = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")
    organization = serializers.IntegerField(required=False, min_value=1)


class UserRefSerializer(serializers.Serializer):
    # Bounded: past bigint SQLite can't bind the id (a 500) and PostgreSQL's refusal names no field.
    user = serializers.IntegerField(min_value=1, max_value=MAX_ID, help_text="The user's id (a member of the organization).")


class ProjectMemberSerializer(serializers.Serializer):
    user = serializers.IntegerField(source="user_id", min_value=1, max_value=MAX_ID)
    username = serializers.CharField(source="user.username", read_only=True)
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)


class IntegrationSerializer(serializers.ModelSerializer):
    """A project's integration as listed: never the secret (write-only), only its last 4 characters."""

    secret = serializers.CharField(
        write_only=True, max_length=4000, trim_whitespace=True,
        help_text='The token or key. For `s3`: a JSON object {"access_key_id", "secret_access_key", '
                  '"endpoint_url", "region"} as a string, as the console\'s four fields make it.',
    )  # fmt: skip
    kind = serializers.ChoiceField(choices=IntegrationKind.choices)

    class Meta:
        model = Integration
        fields = ["kind", "secret", "secret_last4", "check_ok", "check_message", "checked_at", "updated_at"]
        read_only_fields = ["secret_last4", "check_ok", "check_message", "checked_at", "updated_at"]
        validators: list = []


class UsageRecordSerializer(serializers.Serializer):
    created_at = serializers.DateTimeField()
    request_id = serializers.CharField()
    deployment = serializers.IntegerField(source="deployment_id", allow_null=True)
    deployment_name = serializers.CharField()
    route = serializers.CharField()
    status_code = serializers.IntegerField()
    api_key_prefix = serializers.CharField()
    api_key = serializers.IntegerField(source="api_key_id", allow_null=True)
    api_key_name = serializers.CharField(
        default="", help_text="The key's name when it is one of your organization's keys; empty otherwise."
    )
    user = serializers.CharField(source="user.username", default=None)
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    latency_ms = serializers.FloatField()
    ttft_ms = serializers.FloatField(allow_null=True)
    stream = serializers.BooleanField()
    cost = serializers.DecimalField(max_digits=18, decimal_places=8, coerce_to_string=True)
    currency = serializers.CharField()


class BudgetSetSerializer(serializers.Serializer):
    """POST /api/v1/budgets/: `monthly_budget` is read as sent (a number, a string or null) and
    checked by projects.services.budget_parse, so every client gets the same field errors."""

    level = serializers.ChoiceField(choices=["organization", "member", "key"])
    # Ids are checked where they are looked up (projects.services.budget_set, the view's
    # organization), which name the field in words rather than as 9223372036854775807.
    target = serializers.IntegerField(
        required=False, help_text="member: the member's user id; key: the key's id; organization: not used.",
    )  # fmt: skip
    organization = serializers.IntegerField(
        required=False, help_text="The organization's id (default: your current / first one).",
    )  # fmt: skip
    monthly_budget = BoundedJSONField(allow_null=True, help_text='An amount such as "25" or "0.05"; null: no limit.')
    budget_currency = serializers.CharField(required=False, max_length=3, help_text="organization level only")


class BudgetRowSerializer(serializers.Serializer):
    monthly_budget = serializers.DecimalField(max_digits=14, decimal_places=4, allow_null=True)
    spent = serializers.DecimalField(max_digits=18, decimal_places=8)
    percent = serializers.IntegerField(allow_null=True)
    budget_state = serializers.ChoiceField(
        choices=["none", "ok", "warn", "bad"], help_text="none: no budget; warn: 80 % spent or more; bad: used up (refused)"
    )


class BudgetAppliesFirstSerializer(serializers.Serializer):
    level = serializers.ChoiceField(choices=["member", "organization"], help_text="member: the key's owner's budget")
    monthly_budget = serializers.DecimalField(max_digits=14, decimal_places=4)


class BudgetOrganizationSerializer(BudgetRowSerializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    budget_currency = serializers.CharField()


class BudgetMemberSerializer(BudgetRowSerializer):
    id = serializers.IntegerField()
    user = serializers.IntegerField()
    username = serializers.CharField()
    role = serializers.CharField()
    applies_first = BudgetAppliesFirstSerializer(
        allow_null=True, help_text="The organization's budget when it is lower than this member's: it stops them first.",
    )  # fmt: skip


class BudgetKeySerializer(BudgetRowSerializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    prefix = serializers.CharField()
    owner = serializers.CharField()
    owner_id = serializers.IntegerField()
    applies_first = BudgetAppliesFirstSerializer(
        allow_null=True,
        help_text="The owner's (member) or the organization's budget when it is lower than this key's own "
        "(the owner's was lowered after the key's was set): it stops the key first.",
    )


class BudgetOverviewSerializer(serializers.Serializer):
    organization = BudgetOrganizationSerializer()
    members = BudgetMemberSerializer(many=True)
    keys = BudgetKeySerializer(many=True)
