"""Serializers of the deployments API: shapes only; the services decide and write."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from rest_framework import serializers

from catalog.models import CatalogModel, ProfileBundle
from console.crypto import last4
from deployments.models import (
    POOL_EXPOSURE_FIELDS,
    ComputePool,
    DeploymentEvent,
    Endpoint,
    ModelDeployment,
    PoolExposure,
    PoolKind,
    Revision,
)
from projects.models import Environment, Project


class ComputePoolSerializer(serializers.ModelSerializer):
    sandbox = serializers.SerializerMethodField()
    kubeconfig_set = serializers.SerializerMethodField()

    class Meta:
        model = ComputePool
        fields = [
            "id", "organization", "name", "kind", "sandbox", "engine_label", "api_url", "region", "description",
            "kubeconfig_set", "managed_by", "private_addresses_allowed", "reachable", "last_checked_at", "last_check",
            "created_at", *POOL_EXPOSURE_FIELDS,
        ]  # fmt: skip
        read_only_fields = fields

    def get_sandbox(self, obj: ComputePool) -> bool:
        return obj.is_sandbox

    def get_kubeconfig_set(self, obj: ComputePool) -> bool:
        return bool(obj.kubeconfig)



class PoolExposureFields(serializers.Serializer):
    """How the gateway reaches a pool's engines: the same fields on create and update."""

    exposure = serializers.ChoiceField(choices=PoolExposure.choices, required=False)
    exposure_host = serializers.CharField(required=False, allow_blank=True, max_length=200)
    exposure_address = serializers.CharField(required=False, allow_blank=True, max_length=300)
    ingress_class = serializers.CharField(required=False, allow_blank=True, max_length=253)
    tls_secret = serializers.CharField(required=False, allow_blank=True, max_length=253)
    gateway_name = serializers.CharField(required=False, allow_blank=True, max_length=253)
    gateway_namespace = serializers.CharField(required=False, allow_blank=True, max_length=63)
    ingress_namespace = serializers.CharField(required=False, allow_blank=True, max_length=63)

class ComputePoolWriteSerializer(PoolExposureFields):
    """A kubeconfig goes in, is reduced to server, CA and inline credentials and stored encrypted;
    it never comes back out."""

    organization = serializers.IntegerField(
        required=False, help_text="The organization the pool is granted to (operators: any)."
    )
    name = serializers.CharField(max_length=100)
    kind = serializers.ChoiceField(choices=PoolKind.choices)
    engine_label = serializers.CharField(max_length=50)
    kubeconfig = serializers.CharField(
        required=False, allow_blank=True, write_only=True, trim_whitespace=False
    )
    api_url = serializers.CharField(required=False, allow_blank=True, max_length=300)
    region = serializers.CharField(required=False, allow_blank=True, max_length=50)
    description = serializers.CharField(required=False, allow_blank=True)
    private_addresses_allowed = serializers.BooleanField(
        required=False, help_text="Operators only: an organization-managed pool may use a private address."
    )


class ComputePoolUpdateSerializer(PoolExposureFields):
    name = serializers.CharField(max_length=100, required=False)
    engine_label = serializers.CharField(max_length=50, required=False)
    kubeconfig = serializers.CharField(
        required=False, allow_blank=True, write_only=True, trim_whitespace=False
    )
    api_url = serializers.CharField(required=False, allow_blank=True, max_length=300)
    region = serializers.CharField(required=False, allow_blank=True, max_length=50)
    description = serializers.CharField(required=False, allow_blank=True)
    private_addresses_allowed = serializers.BooleanField(required=False)


class ConnectionCheckSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    version = serializers.CharField(allow_blank=True, required=False)
    nodes = serializers.ListField(child=serializers.DictField(), required=False)
    error = serializers.CharField(allow_blank=True, required=False)


class EndpointSerializer(serializers.ModelSerializer):
    class Meta:
        model = Endpoint
        fields = ["id", "project", "name", "path", "created_at"]
        read_only_fields = ["id", "created_at"]
        validators: list = []  # uniqueness is the service's job (it gives the message)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        projects = self.context.get("projects")
        if projects is not None:
            self.fields["project"].queryset = projects


class RevisionSerializer(serializers.ModelSerializer):
    created_by = serializers.StringRelatedField(allow_null=True)

    class Meta:
        model = Revision
        fields = ["number", "spec", "reason", "created_by", "created_at"]
        read_only_fields = fields


class EventSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeploymentEvent
        fields = [
            "id",
            "type",
            "reason",
            "message",
            "source",
            "count",
            "created_at",
            "last_seen_at",
        ]
        read_only_fields = fields


class ScaleSerializer(serializers.Serializer):
    """Replicas asked of the pool (the autoscaler's count, or the fixed one), ready, and why."""

    desired = serializers.IntegerField()
    ready = serializers.IntegerField()
    reason = serializers.CharField()


class DeploymentSerializer(serializers.ModelSerializer):
    spec = serializers.SerializerMethodField()
    served_model_name = serializers.SerializerMethodField()
    current_revision = serializers.SerializerMethodField()
    serving_revision = serializers.SerializerMethodField()
    gpus_held = serializers.SerializerMethodField()
    scale = ScaleSerializer(source="scale_status", read_only=True)
    sandbox = serializers.SerializerMethodField()
    managed_by = serializers.SerializerMethodField()
    created_by = serializers.StringRelatedField(allow_null=True)
    external_key_last4 = serializers.SerializerMethodField()
    pool_name = serializers.SerializerMethodField()
    # External only (null for a managed deployment, whose state says it all): the last health check.
    health = serializers.SerializerMethodField(help_text="healthy, unhealthy or unknown (not checked yet).")
    health_detail = serializers.SerializerMethodField(help_text="What the last check saw, in words.")
    health_checked_at = serializers.SerializerMethodField()
    gateway_url = serializers.SerializerMethodField(
        help_text="The OpenAI-compatible base URL to call it at, with served_model_name as the model."
    )

    class Meta:
        model = ModelDeployment
        fields = [
            "id", "name", "description", "project", "model", "bundle", "pool", "pool_name", "sandbox", "endpoint", "environment",
            "state", "state_reason", "state_changed_at", "served_model_name", "current_revision", "serving_revision",
            "gpus_held", "scale", "spec", "managed_by", "created_by", "created_at", "updated_at",
            "kind", "external_url", "external_key_last4", "overflow",
            "health", "health_detail", "health_checked_at", "gateway_url",
        ]  # fmt: skip
        read_only_fields = fields

    def get_spec(self, obj: ModelDeployment) -> dict[str, Any]:
        return obj.spec()

    def get_served_model_name(self, obj: ModelDeployment) -> str:
        return obj.served_name()

    def get_current_revision(self, obj: ModelDeployment) -> int | None:
        return obj.current_revision.number if obj.current_revision else None

    def get_serving_revision(self, obj: ModelDeployment) -> int | None:
        return obj.serving_revision.number if obj.serving_revision else None

    def get_gpus_held(self, obj: ModelDeployment) -> int:
        if hasattr(obj, "gpus_reserved"):  # lists annotate it (selectors.with_gpus_held)
            return obj.gpus_reserved
        return obj.gpus_held()

    def get_pool_name(self, obj: ModelDeployment) -> str:
        """The compute pool's name ("" for an external deployment, which runs on none)."""
        return obj.pool.name if obj.pool is not None else ""

    def get_sandbox(self, obj: ModelDeployment) -> bool:
        return obj.pool is not None and obj.pool.is_sandbox

    def get_managed_by(self, obj: ModelDeployment) -> str:
        """Where to change a deployment a ModelDeployment resource manages; "" otherwise."""
        return obj.managed_message()

    def get_health(self, obj: ModelDeployment) -> str | None:
        return obj.health if obj.is_external else None

    def get_health_detail(self, obj: ModelDeployment) -> str | None:
        return obj.health_detail if obj.is_external else None

    def get_health_checked_at(self, obj: ModelDeployment) -> datetime | None:
        return obj.health_checked_at if obj.is_external else None

    def get_gateway_url(self, obj: ModelDeployment) -> str:
        return settings.GATEWAY_BASE_URL.rstrip("/") + "/v1"

    def get_external_key_last4(self, obj: ModelDeployment) -> str:
        return last4(obj.external_credential) if obj.external_credential else ""


RATE_LIMITS_HELP = ("As a managed deployment's spec.rate_limits: organization, user, api_key, each "
                    "{rpm, tpm}; null or left out: unlimited.")  # fmt: skip
PRICING_HELP = "As a managed deployment's spec.pricing: currency, input_per_million, output_per_million."


class ExternalCreateSerializer(serializers.Serializer):
    """POST /api/v1/deployments/ with kind "external" (deployments/external.py)."""

    kind = serializers.ChoiceField(choices=["external"])
    project = serializers.PrimaryKeyRelatedField(queryset=Project.objects.none())
    model = serializers.PrimaryKeyRelatedField(queryset=CatalogModel.objects.none())
    endpoint = serializers.PrimaryKeyRelatedField(queryset=Endpoint.objects.none(), required=False, allow_null=True)
    name = serializers.CharField(max_length=50)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    external_url = serializers.CharField(max_length=500, help_text="The OpenAI-compatible base URL (…/v1).")
    api_key = serializers.CharField(required=False, allow_blank=True, default="", write_only=True,
                                    help_text="The endpoint's own key; stored encrypted, never returned.")
    overflow = serializers.CharField(required=False, allow_blank=True, allow_null=True, default=None,
                                     help_text="A managed deployment of the organization (id or name).")
    served_model_name = serializers.CharField(required=False, allow_blank=True, default="", max_length=200)
    options = serializers.DictField(required=False, default=dict,
                                    help_text="timeout_s, max_concurrency (0: none), failure_threshold, cooldown_s.")
    rate_limits = serializers.DictField(required=False, default=None, allow_null=True, help_text=RATE_LIMITS_HELP)
    pricing = serializers.DictField(required=False, default=None, allow_null=True, help_text=PRICING_HELP)

    def __init__(self, *args, querysets: dict[str, Any] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name, qs in (querysets or {}).items():
            if name in self.fields:
                self.fields[name].queryset = qs


class ExternalUpdateSerializer(serializers.Serializer):
    external_url = serializers.CharField(max_length=500, required=False)
    api_key = serializers.CharField(required=False, allow_blank=True, write_only=True,
                                    help_text="Empty or left out: keep the stored key.")
    overflow = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    served_model_name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    options = serializers.DictField(required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    rate_limits = serializers.DictField(required=False, allow_null=True, help_text=(
        "As a managed deployment's spec.rate_limits: organization, user, api_key, each {rpm, tpm}. The given "
        "keys go over the current ones (null lifts a limit or a scope's); null: unlimited; left out: unchanged."))  # fmt: skip
    pricing = serializers.DictField(required=False, allow_null=True, help_text=PRICING_HELP + (
        " The given keys go over the current ones; null: USD, free; left out: unchanged."))  # fmt: skip

    def service_fields(self) -> dict[str, Any]:
        data = dict(self.validated_data)
        renamed = {"external_url": "url", "api_key": "credential"}
        return {renamed.get(k, k): v for k, v in data.items()}


class DeploymentCreateSerializer(serializers.Serializer):
    """Related objects are looked up among what the caller may see (others are "does not exist")."""

    project = serializers.PrimaryKeyRelatedField(queryset=Project.objects.none())
    model = serializers.PrimaryKeyRelatedField(queryset=CatalogModel.objects.none())
    pool = serializers.PrimaryKeyRelatedField(queryset=ComputePool.objects.none())
    bundle = serializers.PrimaryKeyRelatedField(
        queryset=ProfileBundle.objects.none(), required=False, allow_null=True
    )
    endpoint = serializers.PrimaryKeyRelatedField(
        queryset=Endpoint.objects.none(), required=False, allow_null=True
    )
    environment = serializers.PrimaryKeyRelatedField(
        queryset=Environment.objects.none(), required=False, allow_null=True
    )
    name = serializers.CharField(max_length=50)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    spec = serializers.DictField(required=False, default=dict)
    resource_template = serializers.CharField(
        required=False, allow_blank=True, default="",
        help_text="A resource template's name (the project's, else the organization's): its CPU, memory and "
                  "GPUs are copied into spec.resources (keys given in the spec win).",
    )  # fmt: skip

    def __init__(self, *args, querysets: dict[str, Any] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name, qs in (querysets or {}).items():
            self.fields[name].queryset = qs


class DeploymentUpdateSerializer(serializers.Serializer):
    spec = serializers.DictField(required=False, default=dict)
    reason = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")
    update_strategy = serializers.ChoiceField(
        choices=["blue_green", "recreate"], required=False, default="blue_green",
        help_text="For a change to what the pods run: blue_green (the serving revision answers until the new "
                  "one is ready; GPUs of both are held meanwhile) or recreate (it stops first: no extra GPUs, "
                  "requests are refused until the new revision is ready).",
    )  # fmt: skip
    model = serializers.PrimaryKeyRelatedField(
        queryset=CatalogModel.objects.none(), required=False,
        help_text="Only to confirm the model: a deployment's model can't change in place.",
    )  # fmt: skip

    def __init__(self, *args, models=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if models is not None:
            self.fields["model"].queryset = models


class ScaleSerializer(serializers.Serializer):
    min = serializers.IntegerField(min_value=0, max_value=100)
    max = serializers.IntegerField(min_value=1, max_value=100)

    def validate(self, attrs: dict) -> dict:
        if attrs["min"] > attrs["max"]:
            raise serializers.ValidationError(
                {"max": f"Must be at least the minimum ({attrs['min']})."}
            )
        return attrs


class RollbackSerializer(serializers.Serializer):
    revision = serializers.IntegerField(min_value=1)
    update_strategy = serializers.ChoiceField(choices=["blue_green", "recreate"], required=False, default="blue_green")


class NimTagSerializer(serializers.Serializer):
    tag = serializers.CharField(max_length=128)


class BundleChangeSerializer(serializers.Serializer):
    version = serializers.IntegerField(required=False, allow_null=True, min_value=1,
                                       help_text="A version of the deployment's Profile Bundle; empty: the current one.")
    variables = serializers.DictField(required=False, default=dict,
                                      help_text="Values for the bundle's variables (the whole set; empty: defaults).")
    reason = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")
    dry_run = serializers.BooleanField(required=False, default=False,
                                       help_text="Only answer what would change; write nothing.")  # fmt: skip


class ManifestsSerializer(serializers.Serializer):
    revision = serializers.IntegerField()
    yaml = serializers.CharField()
