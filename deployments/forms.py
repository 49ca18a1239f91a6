"""Forms of the deployments pages: compute pools, endpoints and the deployment form; services write."""

from __future__ import annotations

import json
import re
import shlex
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml
from django import forms
from django.core.exceptions import ValidationError

from catalog.ngc import NimProfile
from console import yamlsafe
from console.forms import IdsChoiceField, StyledForm
from deployments.external import OPTION_FIELDS, external_check
from deployments.galleries import TEMPLATE_FIELDS, template_errors
from deployments.kube.kubeconfig import KubeconfigRefused, reduce_kubeconfig
from deployments.models import (
    POOL_EXPOSURE_FIELDS,
    ComputePool,
    DataSource,
    DataSourceKind,
    ModelDeployment,
    PoolExposure,
    PoolKind,
    ResourceTemplate,
)
from deployments.services import deployment_check, deployment_update_spec, endpoint_check
from deployments.spec import RATE_LIMIT_SCOPE_LABELS, form_field_for, nim_profile_fits_gpu

SANDBOX_LABEL = "Sandbox (simulated)"
POOL_KIND_CHOICES = [
    (PoolKind.KUBECONFIG.value, "Kubeconfig"),
    (PoolKind.IN_CLUSTER.value, "In-cluster service account"),
    (PoolKind.SANDBOX.value, SANDBOX_LABEL),
]
ENGINE_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$")
ENV_KEY_RE = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
LABEL_KEY_RE = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
MAX_KUBECONFIG_BYTES = 256 * 1024

RATE_SCOPES = ("organization", "user", "api_key")


def parse_key_values(text: str, *, what: str, key_re: re.Pattern = LABEL_KEY_RE) -> dict[str, str]:
    """KEY=VALUE lines into a dict; blank lines and # comments are skipped."""
    result: dict[str, str] = {}
    for number, raw in enumerate((text or "").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise ValidationError(f"Line {number}: write {what} as KEY=VALUE (got “{line[:40]}”).")
        key, value = line.split("=", 1)
        key = key.strip()
        if not key_re.match(key):
            raise ValidationError(f"Line {number}: “{key[:60]}” is not a valid {what} name.")
        if key in result:
            raise ValidationError(f"Line {number}: “{key}” is given twice.")
        result[key] = value.strip()
    return result


def format_key_values(mapping: dict | None) -> str:
    return "\n".join(f"{k}={v}" for k, v in (mapping or {}).items())


def parse_structured(text: str, *, expect: type, what: str) -> Any:
    """A YAML or JSON textarea (JSON is YAML) into a list or dict; empty means None."""
    if not (text or "").strip():
        return None
    try:
        value = yamlsafe.load(text)
    except yamlsafe.YamlRefused as exc:
        if exc.syntax:
            where = f" at {exc.where}" if exc.where else ""
            raise ValidationError(f"This is not valid YAML or JSON{where}.") from None
        raise ValidationError(f"Line {exc.line}, column {exc.column}: {exc.problem}" if exc.where else exc.problem) from None
    if value is None:
        return None
    if not isinstance(value, expect):
        kind = (
            "a list (YAML “- …” items or a JSON [ ])"
            if expect is list
            else "a mapping (key: value)"
        )
        raise ValidationError(f"{what} must be {kind}.")
    return value


def format_structured(value: Any) -> str:
    if value in (None, [], {}):
        return ""
    return yaml.safe_dump(value, sort_keys=False, default_flow_style=False).strip()


def _textarea(rows: int = 3, placeholder: str = "", mono: bool = True) -> forms.Textarea:
    attrs: dict[str, Any] = {"rows": rows, "placeholder": placeholder, "spellcheck": "false"}
    if mono:
        attrs["class"] = "mono"
    return forms.Textarea(attrs=attrs)


def _int_input(placeholder: str = "") -> forms.TextInput:
    return forms.TextInput(attrs={"inputmode": "numeric", "placeholder": placeholder})


# ---------------------------------------------------------------------------------------------
# Compute pools
# ---------------------------------------------------------------------------------------------


class PoolForm(StyledForm):
    name = forms.CharField(max_length=100)
    kind = forms.ChoiceField(
        label="Connection",
        choices=POOL_KIND_CHOICES,
        initial=PoolKind.KUBECONFIG.value,
        help_text="How ModelDeck reaches the cluster's Kubernetes API.",
    )
    engine_label = forms.CharField(
        label="Inference engine label",
        max_length=50,
        initial="vllm",
        help_text="Deployments land here only when their bundle's engine label matches, e.g. vllm or nim.",
    )
    kubeconfig = forms.CharField(
        required=False,
        widget=_textarea(8, "apiVersion: v1\nkind: Config\nclusters: …"),
        help_text="Paste it or upload the file. Stored encrypted; it is never shown again.",
    )
    kubeconfig_file = forms.FileField(label="…or upload a kubeconfig file", required=False)
    api_url = forms.CharField(
        label="Sandbox API URL",
        max_length=300,
        required=False,
        help_text="Sandbox only: the simulated Kubernetes API (empty: the console's built-in sandbox).",
    )
    region = forms.CharField(max_length=50, required=False)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    private_addresses_allowed = forms.BooleanField(
        label="Allow a private API server address",
        required=False,
        help_text="Operators only: lets an organization-managed pool reach a loopback, link-local or "
        "private address.",
    )
    exposure = forms.ChoiceField(
        label="Exposure", choices=PoolExposure.choices, initial=PoolExposure.IN_CLUSTER.value, required=False,
        help_text="How the gateway reaches the engines: in-cluster Service DNS only works when "
        "ModelDeck runs in this cluster.",
    )  # fmt: skip
    exposure_host = forms.CharField(label="Base host", max_length=200, required=False,
                                    help_text=ComputePool._meta.get_field("exposure_host").help_text)  # fmt: skip
    exposure_address = forms.CharField(label="Connect to address", max_length=300, required=False,
                                       help_text=ComputePool._meta.get_field("exposure_address").help_text)  # fmt: skip
    ingress_class = forms.CharField(label="Ingress class", max_length=253, required=False)
    tls_secret = forms.CharField(label="TLS Secret", max_length=253, required=False,
                                 help_text=ComputePool._meta.get_field("tls_secret").help_text)  # fmt: skip
    gateway_name = forms.CharField(label="Gateway name", max_length=253, required=False)
    gateway_namespace = forms.CharField(label="Gateway namespace", max_length=63, required=False)
    ingress_namespace = forms.CharField(label="Ingress controller namespace", max_length=63, required=False,
                                        help_text=ComputePool._meta.get_field("ingress_namespace").help_text)  # fmt: skip

    def __init__(
        self, *args, organization, instance: ComputePool | None = None, operator: bool = False, **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        self.organization = organization
        self.instance = instance
        self.operator = operator
        if not operator:
            # Organizations bring a cluster by kubeconfig only, and never allow private addresses.
            del self.fields["private_addresses_allowed"]
            self.fields["kind"].choices = [
                (value, label) for value, label in self.fields["kind"].choices
                if value == PoolKind.KUBECONFIG.value or (instance is not None and value == instance.kind)
            ]  # fmt: skip
        if instance is not None:
            self.fields["kind"].disabled = True
            self.fields["kind"].required = False
            if instance.kind == PoolKind.KUBECONFIG:
                self.fields["kubeconfig"].help_text = (
                    "A kubeconfig is stored (encrypted, not shown). Paste or upload a new one to replace it; "
                    "leave empty to keep it."
                )

    def clean_name(self) -> str:
        # Unique names are the service's rule (services._clean_pool, compared exactly).
        return self.cleaned_data["name"].strip()

    def clean_kind(self) -> str:
        if self.instance is not None:
            return self.instance.kind
        return self.cleaned_data["kind"]

    def clean_exposure(self) -> str:
        return self.cleaned_data.get("exposure") or PoolExposure.IN_CLUSTER.value

    def clean_engine_label(self) -> str:
        label = self.cleaned_data["engine_label"].strip()
        if not ENGINE_LABEL_RE.match(label):
            raise ValidationError("Use lowercase letters, digits, '-', '_' or '.', e.g. vllm.")
        return label

    def clean_kubeconfig_file(self):
        upload = self.cleaned_data.get("kubeconfig_file")
        if not upload:
            return ""
        if upload.size > MAX_KUBECONFIG_BYTES:
            raise ValidationError("That file is larger than a kubeconfig can be (256 KiB).")
        try:
            return upload.read().decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationError("That file is not a text kubeconfig.") from None

    def clean_api_url(self) -> str:
        url = self.cleaned_data.get("api_url", "").strip()
        if url and not re.match(r"^https?://[^\s/]+", url):
            raise ValidationError("Give a URL such as http://127.0.0.1:8093.")
        return url

    def clean(self) -> dict:
        data = super().clean()
        kind = data.get("kind")
        text = (data.get("kubeconfig_file") or data.get("kubeconfig") or "").strip()
        data["kubeconfig"] = text
        if kind == PoolKind.KUBECONFIG and text:
            # The service's own rule (deployments.kube.kubeconfig), shown while typing.
            try:
                reduce_kubeconfig(text)
            except KubeconfigRefused as err:
                self.add_error("kubeconfig", err.text())
        elif kind == PoolKind.KUBECONFIG and self.instance is None:
            self.add_error("kubeconfig", "Paste the cluster's kubeconfig or upload the file.")
        if kind != PoolKind.KUBECONFIG and text:
            self.add_error("kubeconfig", "Only kubeconfig pools take a kubeconfig.")
        return data

    def service_kwargs(self) -> dict:
        data = self.cleaned_data
        kwargs = {
            "name": data["name"],
            "engine_label": data["engine_label"],
            "region": data.get("region", ""),
            "description": data.get("description", ""),
            "api_url": data.get("api_url", ""),
            **{name: data.get(name) or "" for name in POOL_EXPOSURE_FIELDS},
        }
        if data.get("kubeconfig"):
            kwargs["kubeconfig"] = data["kubeconfig"]
        if "private_addresses_allowed" in self.fields:
            kwargs["private_addresses_allowed"] = bool(data.get("private_addresses_allowed"))
        return kwargs


class EndpointForm(StyledForm):
    project = forms.ModelChoiceField(queryset=None, empty_label=None)
    name = forms.CharField(max_length=100)
    path = forms.CharField(
        max_length=200,
        help_text="Path on the gateway, e.g. /llama-chat.",
        widget=forms.TextInput(attrs={"placeholder": "/llama-chat"}),
    )

    def __init__(self, *args, projects, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["project"].queryset = projects

    def clean(self) -> dict:
        """The service's rule (services.endpoint_check: the path normalized, names compared
        exactly), asked while the user types."""
        data = super().clean()
        if data.get("project") is not None and "name" in data and "path" in data:
            try:
                data["name"], data["path"] = endpoint_check(
                    project=data["project"], name=data["name"], path=data["path"]
                )
            except ValidationError as exc:
                for field, messages in exc.message_dict.items():
                    for message in messages:
                        self.add_error(field if field in self.fields else None, message)
        return data


# ---------------------------------------------------------------------------------------------
# The deployment form
# ---------------------------------------------------------------------------------------------

SECTIONS: list[tuple[str, str, list[str]]] = [
    ("details", "Details", ["name", "description", "project", "environment", "policies"]),
    ("model", "Model and Endpoint", ["model", "endpoint", "pool", "served_model_name"]),
    (
        "engine",
        "Inference Engine",
        [
            "bundle",
            "image",
            "nim_tag",
            "replicas_min",
            "replicas_max",
            "context_length",
            "prompt_caching",
        ],
    ),
    ("resources", "Resources", ["resource_template", "cpu", "memory", "gpus", "gpu_type", "data_sources"]),
    (
        "advanced",
        "Advanced",
        [
            "env", "labels", "annotations", "extra_args", "tolerations", "node_selector", "node_pools",
            "affinity", "model_cache_size", "model_cache_storage_class", "nim_profile",
        ],
    ),
    (
        "rate",
        "Rate Limiting",
        [
            "rl_organization_rpm",
            "rl_organization_tpm",
            "rl_user_rpm",
            "rl_user_tpm",
            "rl_api_key_rpm",
            "rl_api_key_tpm",
        ],
    ),
    (
        "autoscaling",
        "Autoscaling",
        [
            "autoscale_enabled", "autoscale_metric", "autoscale_target", "autoscale_scale_down_delay",
            "autoscale_scale_to_zero_after", "autoscale_cold_start_hold",
        ],
    ),
    ("pricing", "Pricing", ["currency", "price_input", "price_output"]),
]


def _optional_int(value: str, *, what: str) -> int | None:
    """Text to a whole number (empty: None); the allowed range is the spec's rule."""
    value = (value or "").strip().replace("_", "").replace(",", "")
    if not value:
        return None
    if re.fullmatch(r"-\d+", value):
        raise ValidationError(f"Enter {what} as a whole number of 0 or more, or leave it empty.")
    if not re.fullmatch(r"\d+", value):
        raise ValidationError(f"Enter {what} as a whole number, or leave it empty.")
    return int(value)


def _limit_field(label: str) -> forms.CharField:
    return forms.CharField(label=label, required=False, widget=_int_input("unlimited"))


class GatewayTermsForm(StyledForm):
    """Rate limits and pricing, what the gateway enforces and meters: the same fields for a
    managed deployment (DeploymentForm) and an external one (ExternalDeploymentForm)."""

    # Rate limits: organization / user / API key × RPM / TPM
    rl_organization_rpm = _limit_field(f"{RATE_LIMIT_SCOPE_LABELS['organization']} · requests/min")
    rl_organization_tpm = _limit_field(f"{RATE_LIMIT_SCOPE_LABELS['organization']} · tokens/min")
    rl_user_rpm = _limit_field(f"{RATE_LIMIT_SCOPE_LABELS['user']} · requests/min")
    rl_user_tpm = _limit_field(f"{RATE_LIMIT_SCOPE_LABELS['user']} · tokens/min")
    rl_api_key_rpm = _limit_field(f"{RATE_LIMIT_SCOPE_LABELS['api_key']} · requests/min")
    rl_api_key_tpm = _limit_field(f"{RATE_LIMIT_SCOPE_LABELS['api_key']} · tokens/min")
    # Pricing
    # Empty: USD, free (the spec's defaults).
    currency = forms.CharField(
        max_length=20, initial="USD", required=False, widget=forms.TextInput(attrs={"placeholder": "USD"})
    )
    price_input = forms.CharField(label="Per 1M input tokens", initial="0.00", max_length=20, required=False)
    price_output = forms.CharField(label="Per 1M output tokens", initial="0.00", max_length=20, required=False)

    LIMIT_FIELDS = tuple(f"rl_{scope}_{unit}" for scope in RATE_SCOPES for unit in ("rpm", "tpm"))
    PRICE_FIELDS = ("currency", "price_input", "price_output")

    def clean_currency(self) -> str:
        return (self.cleaned_data.get("currency") or "").strip().upper() or "USD"

    def _price(self, name: str) -> str:
        raw = (self.cleaned_data.get(name) or "").strip() or "0"
        try:
            Decimal(raw)
        except InvalidOperation:
            raise ValidationError("Enter a price such as 0.50 (per million tokens).") from None
        return raw

    def clean_price_input(self) -> str:
        return self._price("price_input")

    def clean_price_output(self) -> str:
        return self._price("price_output")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        for scope in RATE_SCOPES:
            for unit, what in (("rpm", "requests per minute"), ("tpm", "tokens per minute")):
                name = f"rl_{scope}_{unit}"
                if name in self.errors:
                    continue
                try:
                    data[name] = _optional_int(self.data.get(name, ""), what=what)
                except ValidationError as exc:
                    self.add_error(name, exc)
        return data

    def rate_limits(self) -> dict[str, dict[str, Any]]:
        """The spec's `rate_limits` from the form (whole numbers or None; the spec checks the range)."""
        d = self.cleaned_data
        return {
            scope: {unit: d[f"rl_{scope}_{unit}"] for unit in ("rpm", "tpm") if f"rl_{scope}_{unit}" in d}
            for scope in RATE_SCOPES
        }

    def pricing(self) -> dict[str, Any]:
        d = self.cleaned_data
        pairs = (("currency", "currency"), ("input_per_million", "price_input"), ("output_per_million", "price_output"))
        return {key: d[name] for key, name in pairs if name in d}

    def add_service_error(self, exc) -> None:
        """Service errors name spec keys ("resources.gpus"); put each on its form field."""
        if hasattr(exc, "error_dict"):
            for key, errors in exc.error_dict.items():
                target = form_field_for(key, self.fields)
                for error in errors:
                    for message in error.messages:
                        if target is None and key not in ("__all__", None):
                            message = f"{key}: {message}"
                        self.add_error(target, message)
        else:
            for message in exc.messages:
                self.add_error(None, message)


class DeploymentForm(GatewayTermsForm):
    # Django puts a base form's fields first; the page's order is the order errors are listed in.
    field_order = [name for _, _, names in SECTIONS for name in names]

    # Details
    name = forms.CharField(
        max_length=50,
        help_text="Lowercase letters, digits and '-'; unique in the project. Also the Kubernetes name.",
        widget=forms.TextInput(attrs={"placeholder": "llama-chat", "autocomplete": "off"}),
    )
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    project = forms.ModelChoiceField(queryset=None, empty_label=None)
    environment = forms.ModelChoiceField(queryset=None, required=False, empty_label="— none —")
    policies = forms.CharField(
        label="Deployment policies",
        required=False,
        widget=_textarea(3, "max_replicas: 2\nallowed_gpu_types: [NVIDIA-L4]"),
        help_text="YAML or JSON: allowed_pools, allowed_pool_labels, allowed_gpu_types, max_replicas, "
        "max_gpus_per_replica. They narrow the environment's policies, never widen them.",
    )
    # Model and endpoint
    model = forms.ModelChoiceField(queryset=None, empty_label="Choose a model…")
    endpoint = forms.ModelChoiceField(
        queryset=None,
        required=False,
        empty_label="— gateway default —",
        help_text="Where the deployment is exposed on the gateway.",
    )
    pool = forms.ModelChoiceField(
        label="Compute pool",
        queryset=None,
        empty_label="Choose a compute pool…",
        help_text="The pool's engine label must match the bundle's.",
    )
    served_model_name = forms.CharField(
        label="Model name clients send",
        max_length=100,
        required=False,
        help_text="The “model” in API requests; unique in the organization. Empty: the model's own name (e.g. the Hugging Face repo id).",
    )
    # Inference engine
    bundle = forms.ModelChoiceField(
        label="Profile bundle",
        queryset=None,
        required=False,
        empty_label="Automatic (the project's MaaS mappings choose)",
    )
    image = forms.CharField(
        label="Engine image",
        max_length=300,
        required=False,
        help_text="Empty: the bundle's image.",
        # The placeholder shows the chosen bundle's image (views._deployment_form_context, and
        # app.js when the bundle panel changes).
        widget=forms.TextInput(attrs={"placeholder": "the bundle's image", "class": "mono"}),
    )
    nim_tag = forms.ChoiceField(label="NIM tag", required=False, choices=[("", "— model's tag —")])
    replicas_min = forms.CharField(label="Replicas (min)", initial="1", widget=_int_input("1"))
    replicas_max = forms.CharField(label="Replicas (max)", initial="1", widget=_int_input("1"))
    context_length = forms.CharField(
        label="Context length",
        required=False,
        widget=_int_input("model default"),
        help_text="Tokens per request (prompt + output). Empty: the model's own maximum.",
    )
    prompt_caching = forms.BooleanField(
        label="Prompt caching (reuse shared prefixes)", required=False, initial=True
    )
    # Resources
    resource_template = forms.ModelChoiceField(
        queryset=ResourceTemplate.objects.none(), required=False, empty_label="None: the values below",
        help_text="A preset from the gallery (this project's or the organization's): its CPU, memory, GPUs and GPU "
                  "type are copied in when saved; changing the template later leaves this deployment as it is.",
    )  # fmt: skip
    data_sources = IdsChoiceField(
        queryset=DataSource.objects.none(), required=False,
        help_text="Claims from the gallery (PVC, HF or NGC cache), mounted read-only at their mount path; copied "
                  "in when saved.",
    )  # fmt: skip
    cpu = forms.CharField(
        label="CPU per replica", initial="4", max_length=20, help_text="Cores, e.g. 4 or 500m."
    )
    memory = forms.CharField(
        label="Memory per replica", initial="16Gi", max_length=20, help_text="e.g. 16Gi."
    )
    gpus = forms.CharField(label="GPUs per replica", initial="1", widget=_int_input("1"))
    gpu_type = forms.CharField(
        label="GPU type",
        required=False,
        max_length=600,
        help_text="The node label nvidia.com/gpu.product, e.g. NVIDIA-A100-SXM4-80GB; several, comma-"
        "separated, for any of them (first preferred). Empty: any GPU.",
        widget=forms.TextInput(attrs={"list": "gpu-products", "placeholder": "any"}),
    )
    # Advanced
    env = forms.CharField(
        label="Environment variables",
        required=False,
        widget=_textarea(3, "VLLM_LOGGING_LEVEL=INFO"),
        help_text="One KEY=VALUE per line. Credentials come from the project's integrations, not here.",
    )
    labels = forms.CharField(
        required=False, widget=_textarea(3, "team=research"), help_text="KEY=VALUE per line."
    )
    annotations = forms.CharField(
        required=False, widget=_textarea(3, "example.com/owner=ml"), help_text="KEY=VALUE per line."
    )
    extra_args = forms.CharField(
        label="Extra engine arguments",
        required=False,
        widget=_textarea(2, "--max-num-seqs 64"),
        help_text="Passed to the engine after the bundle's arguments; they win over them.",
    )
    model_cache_size = forms.CharField(
        label="Model cache size",
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "none, e.g. 100Gi"}),
        help_text="A PersistentVolumeClaim shared by every revision, so weights are downloaded once: a "
                  "download Job fills it before the engine's pods start (NIMCache with the NIM Operator). "
                  "Empty: no cache.",
    )
    model_cache_storage_class = forms.CharField(
        label="Cache storage class",
        required=False,
        max_length=63,
        widget=forms.TextInput(attrs={"placeholder": "cluster default"}),
        help_text="Needs ReadWriteMany when more than one replica shares it.",
    )
    nim_profile = forms.CharField(
        label="NIM profile",
        required=False,
        max_length=128,
        widget=forms.TextInput(attrs={"placeholder": "automatic"}),
        help_text="NIM only: a profile name or hash (NIM_MODEL_PROFILE). Empty: NIM picks one for the GPU.",
    )
    tolerations = forms.CharField(
        required=False,
        widget=_textarea(4, "- key: nvidia.com/gpu\n  operator: Exists\n  effect: NoSchedule"),
        help_text="YAML or JSON list of Kubernetes tolerations.",
    )
    node_selector = forms.CharField(
        label="Node selector",
        required=False,
        widget=_textarea(3, "topology.kubernetes.io/zone: us-east-1a"),
        help_text="YAML or JSON mapping of node labels.",
    )
    node_pools = forms.CharField(
        label="Node-pool priority",
        required=False,
        widget=_textarea(3, "run.ai/node-pool=a100\nrun.ai/node-pool=l4"),
        help_text="One node pool per line, first preferred: label key=value[,value]. The pods may "
        "run only on these pools, on the first that has room.",
    )
    affinity = forms.CharField(
        required=False,
        widget=_textarea(4, "nodeAffinity: …"),
        help_text="YAML or JSON Kubernetes affinity.",
    )
    # Autoscaling (deployments/autoscale.py; the gateway measures the load)
    autoscale_enabled = forms.BooleanField(
        label="Scale with load", required=False,
        help_text="ModelDeck adds replicas when the load per replica passes the target and removes them "
        "when it stays below, between the minimum and maximum replicas above. A minimum of 0 lets an "
        "idle model give back all its GPUs; the next request then waits while it starts.",
    )  # fmt: skip
    autoscale_metric = forms.ChoiceField(
        label="Scale on", initial="concurrency", required=False,
        choices=[
            ("concurrency", "Requests in flight (concurrency)"),
            ("requests_per_second", "Requests per second"),
            ("output_tokens_per_second", "Output tokens per second"),
            ("latency_p95_ms", "Latency (p95, milliseconds)"),
        ],
        help_text="What the gateway measures for this model.",
    )  # fmt: skip
    autoscale_target = forms.CharField(
        label="Target per replica", initial="8", max_length=20, required=False,
        help_text="How much of that load one replica should carry, e.g. 4 requests in flight. For "
        "latency: the p95 to stay under; a replica is added while it is above.",
    )  # fmt: skip
    autoscale_scale_down_delay = forms.CharField(
        label="Wait before scaling down (seconds)", required=False, widget=_int_input("120"),
        help_text="The load must stay low this long before a replica is removed, so a short lull "
        "doesn't cost a cold start.",
    )  # fmt: skip
    autoscale_scale_to_zero_after = forms.CharField(
        label="Scale to zero after idle (seconds)", required=False, widget=_int_input("600"),
        help_text="Only with a minimum of 0: with no request for this long, the last replica stops.",
    )  # fmt: skip
    autoscale_cold_start_hold = forms.CharField(
        label="Hold requests while starting (seconds)", required=False, widget=_int_input("300"),
        help_text="At zero replicas, a request waits this long for the model to start before it gets "
        "a 503 “model is starting”.",
    )  # fmt: skip
    # Edit only
    reason = forms.CharField(
        label="Reason for this change",
        max_length=200,
        required=False,
        help_text="Shown in the revision history.",
    )
    update_strategy = forms.ChoiceField(
        label="Update strategy",
        required=False,
        initial="blue_green",
        choices=[
            ("blue_green", "Blue-green: the serving revision answers until the new one is ready (GPUs of both held meanwhile)"),
            ("recreate", "Recreate: stop the serving revision first (no extra GPUs; requests refused until ready)"),
        ],
        help_text="Only for changes to what the pods run; prices, limits and scaling apply in place.",
    )

    LOCKED_ON_EDIT = (
        "name",
        "project",
        "environment",
        "model",
        "endpoint",
        "pool",
        "bundle",
        "served_model_name",
    )
    # Said under each of them on the Update form: greyed out with the create form's hint ("Empty:
    # the model's own name") it read as a bug.
    LOCKED_WHY = {
        "name": "Fixed once deployed: it names the Kubernetes objects.",
        "project": "Fixed once deployed: the deployment runs in this project's namespace.",
        "environment": "Fixed once deployed; Promote takes a revision to another environment.",
        "model": "Create a new deployment to change the model.",
        "pool": "Fixed once deployed; create a new deployment to run on another pool.",
        "bundle": "Change the bundle's version on the deployment's page (Profile Bundle card).",
        "served_model_name": "Fixed once deployed: clients call the model by this name.",
    }

    def __init__(
        self,
        *args,
        user,
        organization,
        projects,
        models,
        pools,
        bundles,
        endpoints,
        environments,
        locked_model=None,
        instance: ModelDeployment | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        self.organization = organization
        self.instance = instance
        self.locked_model = locked_model
        self.fields["project"].queryset = projects
        self.fields["model"].queryset = models
        self.fields["pool"].queryset = pools
        self.fields["bundle"].queryset = bundles
        self.fields["endpoint"].queryset = endpoints
        self.fields["environment"].queryset = environments
        self.fields["resource_template"].queryset = ResourceTemplate.objects.filter(
            organization=organization
        ).select_related("project").order_by("name")
        self.fields["data_sources"].queryset = DataSource.objects.filter(
            organization=organization, kind__in=("pvc", "hf_cache", "ngc_cache")
        ).select_related("project").order_by("name")
        self.fields["data_sources"].label_from_instance = lambda d: (
            f"{d.name} · {d.get_kind_display()} {d.claim_name} → {d.mount_path or '/data/' + d.name} · {d.scope_label}"
        )
        self.fields["resource_template"].label_from_instance = lambda t: (
            f"{t.name} · {t.cpu} CPU, {t.memory}, {t.gpus} GPU{'' if t.gpus == 1 else 's'}"
            f"{' ' + t.gpu_type if t.gpu_type else ''} · {t.scope_label}"
        )
        self.fields["pool"].label_from_instance = _pool_label
        self.fields["bundle"].label_from_instance = lambda b: (
            f"{b.name} v{b.version} · {b.get_engine_display()}"
        )
        self.fields["endpoint"].label_from_instance = lambda e: (
            f"{e.name} ({e.path}) · {e.project.name}"
        )
        self.fields["environment"].label_from_instance = lambda e: f"{e.name} · {e.project.name}"
        self.fields["model"].label_from_instance = lambda m: f"{m.name} · {m.get_source_display()}"
        if locked_model is not None:
            self.fields["model"].disabled = True
            self.fields["model"].initial = locked_model.pk
            self.fields["model"].help_text = "Chosen from the catalog."
        model = self._current_model()
        tags = list(getattr(model, "ngc_tags", None) or []) if model is not None else []
        if model is not None and getattr(model, "ngc_tag", "") and model.ngc_tag not in tags:
            tags.insert(0, model.ngc_tag)
        self.fields["nim_tag"].choices = [("", "— model's tag —")] + [(t, t) for t in tags]
        self._offer_nim_profiles(model)
        if instance is not None:
            for name in self.LOCKED_ON_EDIT:
                self.fields[name].disabled = True
                self.fields[name].required = False
                self.fields[name].help_text = self.LOCKED_WHY.get(name, "Fixed once deployed.")
        else:
            del self.fields["reason"]
            del self.fields["update_strategy"]

    # -- helpers ------------------------------------------------------------------------------

    def _current_model(self):
        if self.instance is not None:
            return self.instance.model
        if self.locked_model is not None:
            return self.locked_model
        raw = self.data.get("model") if self.is_bound else self.initial.get("model")
        if raw in (None, ""):
            return None
        try:
            return self.fields["model"].queryset.filter(pk=int(getattr(raw, "pk", raw))).first()
        except (TypeError, ValueError):
            return None

    def _offer_nim_profiles(self, model) -> None:
        """Where the catalog knows the image's profiles, a choice of them for the deployment's
        GPU type(s), "automatic" first; the service checks the choice (deployments.spec)."""
        profiles = [p for p in getattr(model, "nim_profiles", None) or [] if isinstance(p, dict)]
        if not profiles:
            return
        data = self.data if self.is_bound else self.initial
        types = [t for t in re.split(r"[,\s]+", str(data.get("gpu_type") or "")) if t]
        current = str(data.get("nim_profile") or "")
        choices = [("", "Automatic — NIM picks the best profile for the GPU")]
        for p in profiles:
            if nim_profile_fits_gpu(p, types) or current in (p.get("id"), p.get("name")):
                choices.append((p["id"], NimProfile.from_dict(p).label()))
        field = self.fields["nim_profile"]
        field.widget = forms.Select(choices=choices)
        field.help_text = (
            f"{len(choices) - 1} of {len(profiles)} profiles of this NIM fit "
            f"{', '.join(types) if types else 'any GPU'} (NIM_MODEL_PROFILE)."
        )

    def sections(self) -> list[dict]:
        return [
            {"id": sid, "title": title, "fields": [self[n] for n in names if n in self.fields]}
            for sid, title, names in SECTIONS
        ]

    # -- field cleaning -----------------------------------------------------------------------

    # The fields below only parse text into the spec's shape (deployments.spec); the rules
    # (ranges, Kubernetes syntax, name format) are the service's, asked in clean().

    def clean_name(self) -> str:
        if self.instance is not None:
            return self.instance.name
        return self.cleaned_data["name"].strip()

    def clean_served_model_name(self) -> str:
        return (self.cleaned_data.get("served_model_name") or "").strip()

    def clean_replicas_min(self) -> int:
        value = _optional_int(self.cleaned_data.get("replicas_min"), what="the minimum replicas")
        if value is None:
            raise ValidationError("Give the minimum number of replicas (0 scales to zero).")
        return value

    def clean_replicas_max(self) -> int:
        value = _optional_int(self.cleaned_data.get("replicas_max"), what="the maximum replicas")
        if value is None:
            raise ValidationError("Give the maximum number of replicas.")
        return value

    def clean_context_length(self) -> int | None:
        return _optional_int(self.cleaned_data.get("context_length"), what="the context length")

    def clean_cpu(self) -> str:
        return self.cleaned_data["cpu"].strip()

    def clean_memory(self) -> str:
        return self.cleaned_data["memory"].strip()

    def clean_model_cache_size(self) -> str:
        return (self.cleaned_data.get("model_cache_size") or "").strip()

    def clean_gpus(self) -> int:
        value = _optional_int(self.cleaned_data.get("gpus"), what="GPUs per replica")
        return 0 if value is None else value

    def clean_gpu_type(self) -> list[str]:
        text = self.cleaned_data.get("gpu_type") or ""
        return [t.strip() for t in re.split(r"[,\s]+", text) if t.strip()]

    def clean_node_pools(self) -> list[dict[str, Any]]:
        pools = []
        for number, line in enumerate((self.cleaned_data.get("node_pools") or "").splitlines(), start=1):
            line = line.strip()
            if not line:
                continue
            key, sep, values = line.partition("=")
            if not sep or not key.strip() or not values.strip():
                raise ValidationError(f"Line {number}: write a node pool as key=value (values comma-separated).")
            pools.append({"key": key.strip(), "values": [v.strip() for v in values.split(",") if v.strip()]})
        return pools

    def clean_env(self) -> dict:
        return parse_key_values(
            self.cleaned_data.get("env", ""), what="environment variable", key_re=ENV_KEY_RE
        )

    def clean_labels(self) -> dict:
        return parse_key_values(self.cleaned_data.get("labels", ""), what="label")

    def clean_annotations(self) -> dict:
        return parse_key_values(self.cleaned_data.get("annotations", ""), what="annotation")

    def clean_extra_args(self) -> list[str]:
        text = self.cleaned_data.get("extra_args", "")
        try:
            return shlex.split(text.replace("\n", " "))
        except ValueError as exc:
            raise ValidationError(
                f"These arguments don't parse: {exc} (check the quotes)."
            ) from None

    def clean_tolerations(self) -> list:
        text = self.cleaned_data.get("tolerations", "")
        return parse_structured(text, expect=list, what="Tolerations") or []

    def clean_node_selector(self) -> dict:
        value = (
            parse_structured(
                self.cleaned_data.get("node_selector", ""), expect=dict, what="The node selector"
            )
            or {}
        )
        return {str(k): str(v) for k, v in value.items()}

    def clean_policies(self) -> dict:
        text = self.cleaned_data.get("policies", "")
        return parse_structured(text, expect=dict, what="The policies") or {}

    def clean_affinity(self) -> dict | None:
        text = self.cleaned_data.get("affinity", "")
        return parse_structured(text, expect=dict, what="Affinity") or None

    def _seconds(self, name: str) -> int | None:
        return _optional_int(self.cleaned_data.get(name), what="a number of seconds")

    def clean_autoscale_scale_down_delay(self) -> int | None:
        return self._seconds("autoscale_scale_down_delay")

    def clean_autoscale_scale_to_zero_after(self) -> int | None:
        return self._seconds("autoscale_scale_to_zero_after")

    def clean_autoscale_cold_start_hold(self) -> int | None:
        return self._seconds("autoscale_cold_start_hold")

    def clean_autoscale_target(self) -> str:
        return (self.cleaned_data.get("autoscale_target") or "").strip()

    def clean(self) -> dict:
        data = super().clean()
        self._copy_template(data)
        self._copy_data_sources(data)
        self._check_with_the_service(data)
        return data

    def _copy_data_sources(self, data: dict) -> None:
        """Chosen data sources, copied as the spec keeps them (deployments/galleries.py)."""
        chosen = list(data.get("data_sources") or [])
        project = data.get("project") or (self.instance.project if self.instance is not None else None)
        for source in chosen:
            if source.project_id and project is not None and source.project_id != project.pk:
                self.add_error("data_sources", f"“{source.name}” belongs to project “{source.project.name}”.")
                return
        self.copied_data_sources = [
            {"name": d.name, "kind": d.kind, "claim_name": d.claim_name, "mount_path": d.mount_path or f"/data/{d.name}"}
            for d in chosen
        ]

    def _copy_template(self, data: dict) -> None:
        """A chosen resource template's values replace the resource fields (a copy: the
        deployment keeps them whatever happens to the template later)."""
        template = data.get("resource_template")
        if template is None:
            return
        project = data.get("project") or (self.instance.project if self.instance is not None else None)
        if template.project_id and project is not None and template.project_id != project.pk:
            self.add_error("resource_template", f"“{template.name}” belongs to project “{template.project.name}”.")
            return
        for name, value in (("cpu", template.cpu), ("memory", template.memory), ("gpus", template.gpus),
                            ("gpu_type", [template.gpu_type] if template.gpu_type else [])):  # fmt: skip
            data[name] = value  # gpu_type: the field's parsed shape, a list of flavors
            self._errors.pop(name, None)
        self.template_shm = template.shm_size

    def _check_with_the_service(self, data: dict) -> None:
        """Ask the service's own rules (services.deployment_check / deployment_update_spec) while
        the user types, and put each error on its field; fields that did not parse keep their
        parse error. Nothing is written: the quota is checked at the save."""
        try:
            if self.instance is not None:
                deployment_update_spec(deployment=self.instance, spec=self.spec())
                return
            project, model, pool = data.get("project"), data.get("model"), data.get("pool")
            if project is None:
                return
            deployment_check(
                project=project, model=model, pool=pool, name=data.get("name") or "",
                spec=self.spec(), bundle=data.get("bundle"), endpoint=data.get("endpoint"),
                environment=data.get("environment"),
            )  # fmt: skip
        except ValidationError as exc:
            if not hasattr(exc, "error_dict"):
                return
            for key, errors in exc.error_dict.items():
                target = form_field_for(key, self.fields)
                if target is None or target in self._errors:
                    continue
                for error in errors:
                    for message in error.messages:
                        self.add_error(target, message)

    # -- to and from the spec ---------------------------------------------------------------

    def spec(self) -> dict:
        """The form's text parsed into the spec's shape (deployments.spec); a field that did not
        parse is left out, so the spec's defaults stand in while its parse error is shown."""
        d = self.cleaned_data

        def given(*pairs: tuple[str, str]) -> dict[str, Any]:
            return {key: d[name] for key, name in pairs if name in d}

        spec: dict[str, Any] = {
            "replicas": given(("min", "replicas_min"), ("max", "replicas_max")),
            "prompt_caching": bool(d.get("prompt_caching")),
            "resources": given(("cpu", "cpu"), ("memory", "memory"), ("gpus", "gpus"))
            | ({"shm_size": self.template_shm} if getattr(self, "template_shm", "") else {}),
            "rate_limits": self.rate_limits(),
            "pricing": self.pricing(),
            "autoscaling": {
                "enabled": bool(d.get("autoscale_enabled")),
                **given(("metric", "autoscale_metric"), ("target", "autoscale_target"),
                        ("scale_down_delay_seconds", "autoscale_scale_down_delay"),
                        ("scale_to_zero_after_seconds", "autoscale_scale_to_zero_after"),
                        ("cold_start_hold_seconds", "autoscale_cold_start_hold")),
            },
        }  # fmt: skip
        # Blank boxes: the spec's defaults (target 8, the three windows' defaults).
        spec["autoscaling"] = {k: v for k, v in spec["autoscaling"].items() if v not in (None, "")}
        if "gpu_type" in d:  # one GPU type, or several (any of them, the first preferred)
            types = d["gpu_type"]
            spec["resources"]["gpu_type"] = types[0] if types else ""
            spec["resources"]["gpu_types"] = types if len(types) > 1 else []
        for key in ("context_length", "affinity", "policies", "node_pools"):
            if key in d:
                spec[key] = d[key]
        if getattr(self, "copied_data_sources", None):
            spec["data_sources"] = self.copied_data_sources
        for key, empty in (("env", {}), ("labels", {}), ("annotations", {}), ("tolerations", []),
                           ("node_selector", {}), ("extra_args", [])):  # fmt: skip
            if key in d:
                spec[key] = d[key] or empty
        if d.get("image"):
            spec["image"] = d["image"].strip()
        if d.get("nim_tag"):
            spec["nim_tag"] = d["nim_tag"]
        if "model_cache_size" in d:
            spec["model_cache"] = (
                {"size": d["model_cache_size"], "storage_class": (d.get("model_cache_storage_class") or "").strip()}
                if d["model_cache_size"]
                else None
            )  # fmt: skip
        spec["nim_profile"] = (d.get("nim_profile") or "").strip()
        served = d.get("served_model_name")
        if served:
            spec["served_model_name"] = served
        return spec


def initial_from_spec(spec: dict) -> dict:
    """Form initial values for a stored spec (the edit form and "deploy like this")."""
    replicas = spec.get("replicas") or {}
    resources = spec.get("resources") or {}
    limits = spec.get("rate_limits") or {}
    pricing = spec.get("pricing") or {}
    initial: dict[str, Any] = {
        "image": spec.get("image", ""),
        "served_model_name": spec.get("served_model_name", ""),
        "nim_tag": spec.get("nim_tag", ""),
        "replicas_min": str(replicas.get("min", 1)),
        "replicas_max": str(replicas.get("max", 1)),
        "context_length": "" if spec.get("context_length") is None else str(spec["context_length"]),
        "prompt_caching": bool(spec.get("prompt_caching", True)),
        "cpu": str(resources.get("cpu", "4")),
        "memory": str(resources.get("memory", "16Gi")),
        "gpus": str(resources.get("gpus", 1)),
        "gpu_type": ", ".join(resources.get("gpu_types") or [resources.get("gpu_type") or ""]).strip(", "),
        "node_pools": "\n".join(f"{p['key']}={','.join(p['values'])}" for p in spec.get("node_pools") or []),
        "env": format_key_values(spec.get("env")),
        "labels": format_key_values(spec.get("labels")),
        "annotations": format_key_values(spec.get("annotations")),
        "extra_args": " ".join(shlex.quote(a) for a in spec.get("extra_args") or []),
        "tolerations": format_structured(spec.get("tolerations")),
        "node_selector": format_structured(spec.get("node_selector")),
        "affinity": format_structured(spec.get("affinity")),
        "policies": format_structured(spec.get("policies")) if spec.get("policies") else "",
        "model_cache_size": (spec.get("model_cache") or {}).get("size", ""),
        "model_cache_storage_class": (spec.get("model_cache") or {}).get("storage_class", "") or "",
        "nim_profile": spec.get("nim_profile") or "",
        "currency": pricing.get("currency", "USD"),
        "price_input": str(pricing.get("input_per_million", "0.00")),
        "price_output": str(pricing.get("output_per_million", "0.00")),
    }
    auto = spec.get("autoscaling") or {}
    initial.update({
        "autoscale_enabled": bool(auto.get("enabled")),
        "autoscale_metric": auto.get("metric") or "concurrency",
        "autoscale_target": str(auto.get("target", 8)),
        "autoscale_scale_down_delay": "" if auto.get("scale_down_delay_seconds") is None
        else str(auto["scale_down_delay_seconds"]),
        "autoscale_scale_to_zero_after": "" if auto.get("scale_to_zero_after_seconds") is None
        else str(auto["scale_to_zero_after_seconds"]),
        "autoscale_cold_start_hold": "" if auto.get("cold_start_hold_seconds") is None
        else str(auto["cold_start_hold_seconds"]),
    })  # fmt: skip
    for scope in RATE_SCOPES:
        for unit in ("rpm", "tpm"):
            value = (limits.get(scope) or {}).get(unit)
            initial[f"rl_{scope}_{unit}"] = "" if value is None else str(value)
    return initial


class ScaleForm(StyledForm):
    replicas_min = forms.IntegerField(
        label="Minimum replicas", min_value=0, max_value=100,
        error_messages={k: "Give a whole number from 0 to 100." for k in ("required", "invalid", "min_value", "max_value")},
    )  # fmt: skip
    replicas_max = forms.IntegerField(
        label="Maximum replicas", min_value=1, max_value=100,
        error_messages={k: "Give a whole number from 1 to 100." for k in ("required", "invalid", "min_value", "max_value")},
    )  # fmt: skip

    def clean(self) -> dict:
        data = super().clean()
        lo, hi = data.get("replicas_min"), data.get("replicas_max")
        if lo is not None and hi is not None and lo > hi:
            self.add_error("replicas_max", f"The maximum ({hi}) is below the minimum ({lo}).")
        return data


def _pool_label(pool: ComputePool) -> str:
    label = f"{pool.name} · engine {pool.engine_label}"
    if pool.is_sandbox:
        label += f" · {SANDBOX_LABEL}"
    if pool.region:
        label += f" · {pool.region}"
    return label


def spec_json(spec: dict) -> str:
    return json.dumps(spec, indent=2, sort_keys=True, default=str)


# ---------------------------------------------------------------------------------------------
# External deployments (deployments/external.py)
# ---------------------------------------------------------------------------------------------


class ExternalDeploymentForm(GatewayTermsForm):
    """An OpenAI-compatible URL of the organization's own, with its key and an optional overflow
    deployment. Create: every field; edit (``instance``): project, model and name stay."""

    project = forms.ModelChoiceField(queryset=None, empty_label=None)
    model = forms.ModelChoiceField(queryset=None, help_text="The catalog model the endpoint serves.")
    name = forms.CharField(max_length=50)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    external_url = forms.CharField(
        label="Endpoint URL", max_length=500,
        widget=forms.TextInput(attrs={"placeholder": "https://llm.example.com/v1"}),
        help_text="Its OpenAI-compatible base URL. Public addresses only, unless a platform operator allows private ones.",
    )  # fmt: skip
    api_key = forms.CharField(
        label="API key", required=False, widget=forms.PasswordInput(render_value=False),
        help_text="Sent as a bearer token by the gateway only; stored encrypted, never shown again.",
    )  # fmt: skip
    served_model_name = forms.CharField(
        required=False, max_length=200, help_text="The model name clients send; empty: the deployment's name."
    )
    overflow = forms.ModelChoiceField(
        queryset=None, required=False, empty_label="No overflow",
        help_text="A managed deployment of this organization (it may sit at zero replicas) that takes requests "
                  "when the endpoint fails, times out, answers 429 or is at its concurrency threshold.",
    )  # fmt: skip
    timeout_s = forms.IntegerField(label="Time-out (s)", min_value=1, max_value=600, initial=30)
    max_concurrency = forms.IntegerField(
        label="Concurrency threshold", min_value=0, max_value=100_000, initial=0,
        help_text="Requests in flight past which the overflow takes the rest (0: no threshold).",
    )  # fmt: skip
    failure_threshold = forms.IntegerField(
        min_value=1, max_value=100, initial=3, help_text="Failures in a row that open the circuit breaker."
    )
    cooldown_s = forms.IntegerField(
        label="Cool-down (s)", min_value=1, max_value=3600, initial=30,
        help_text="How long an open breaker sends everything to the overflow before one request tries again.",
    )  # fmt: skip

    def __init__(self, *args, projects, models, overflows, instance=None, **kwargs) -> None:
        self.instance = instance
        if instance is not None:  # what a bound form shows comes from its data instead
            options = instance.spec().get("external") or {}
            kwargs["initial"] = {
                "external_url": instance.external_url, "served_model_name": instance.served_name(),
                "overflow": instance.overflow_id, "description": instance.description,
                **{k: options.get(k) for k in OPTION_FIELDS},
                **{k: v for k, v in initial_from_spec(instance.spec()).items()
                   if k in self.LIMIT_FIELDS + self.PRICE_FIELDS},
            }  # fmt: skip
        super().__init__(*args, **kwargs)
        self.fields["project"].queryset = projects
        self.fields["model"].queryset = models
        self.fields["overflow"].queryset = overflows
        if instance is not None:
            for name in ("project", "model", "name"):
                del self.fields[name]
            stored = instance.external_credential or ""
            self.fields["api_key"].help_text = (
                "Empty: no key is sent (none is stored)." if not stored
                else f"Empty: keep the stored key (…{stored[-4:]})." if len(stored) >= 8
                else "Empty: keep the stored key."
            )  # fmt: skip

    def options(self) -> dict[str, Any]:
        return {k: self.cleaned_data.get(k) for k in OPTION_FIELDS}

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        project = self.instance.project if self.instance is not None else data.get("project")
        if project is None:
            return data
        # The service's checks (it runs them again on save), so every error shows at once, beside
        # the form's own: a field that already has one keeps only that.
        try:
            external_check(
                project=project,
                name=self.instance.name if self.instance is not None else data.get("name") or "",
                url=data.get("external_url") or "", overflow=data.get("overflow"),
                served_model_name=data.get("served_model_name") or "", options=self.options(),
                exclude=self.instance.pk if self.instance is not None else None,
                rate_limits=self.rate_limits(), pricing=self.pricing(),
            )  # fmt: skip
        except ValidationError as exc:
            for key, messages in exc.message_dict.items():
                target = form_field_for(key, self.fields)
                if target not in self.errors:
                    self.add_error(target, messages if target else [f"{key}: {m}" for m in messages])
        return data

    def endpoint_fields(self) -> list[forms.BoundField]:
        """Everything but the rate limits and pricing (the template shows those in sections)."""
        terms = set(self.LIMIT_FIELDS + self.PRICE_FIELDS)
        return [field for field in self if field.name not in terms]


# ---------------------------------------------------------------------------------------------
# Galleries (deployments/galleries.py)
# ---------------------------------------------------------------------------------------------


class _GalleryForm(StyledForm):
    project = forms.ModelChoiceField(queryset=None, required=False, empty_label="Organization-wide (admins)")
    name = forms.CharField(max_length=63)
    description = forms.CharField(required=False, max_length=300)

    def __init__(self, *args, projects, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["project"].queryset = projects


class ResourceTemplateForm(_GalleryForm):
    cpu = forms.CharField(label="CPU", max_length=20, initial="4", help_text="e.g. 4 or 500m")
    memory = forms.CharField(max_length=20, initial="16Gi")
    gpus = forms.IntegerField(label="GPUs", min_value=0, max_value=16, initial=1)
    gpu_type = forms.CharField(label="GPU type", required=False, max_length=100, help_text="e.g. nvidia-a100 (empty: any)")
    shm_size = forms.CharField(label="Shared memory", required=False, max_length=20, help_text="e.g. 16Gi")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        # The service's rules (CPU and memory quantities, the name) beside the form's own errors,
        # so one submit shows them all; a field that already has an error keeps only that.
        fields = {k: data.get(k) for k in TEMPLATE_FIELDS}
        for key, message in template_errors(data.get("name") or "", fields).items():
            if key in self.fields and key not in self.errors:
                self.add_error(key, message)
        return data


class DataSourceForm(_GalleryForm):
    kind = forms.ChoiceField(choices=DataSourceKind.choices)
    claim_name = forms.CharField(label="Claim name", required=False, max_length=253, help_text="PVC, HF and NGC caches.")
    uri = forms.CharField(label="Bucket", required=False, max_length=500, help_text="S3: s3://bucket/prefix")
    mount_path = forms.CharField(required=False, max_length=300, help_text="e.g. /data")
    credentials = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}),
        help_text='S3: {"access_key_id": …, "secret_access_key": …, "endpoint_url": …, "region": …}; stored '
                  "encrypted, never shown again.",
    )  # fmt: skip
