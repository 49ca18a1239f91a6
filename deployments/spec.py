"""The deployment spec: canonical form, validation, GPU hold, and mapping to the renderers' input."""

from __future__ import annotations

import copy
import dataclasses
import os
import re
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from kubernetes.utils.quantity import parse_quantity

from console.ids import is_digits, parse_id
from console.money import money_text
from deployments.renderers import (
    AFFINITY_KEYS,
    DEFAULT_STARTUP_BUDGET_SECONDS,
    TOLERATION_KEYS,
    Exposure,
    ModelCache,
    NodePool,
    RenderSpec,
    SpecError,
    is_label_value,
    is_quantity,
    validate_spec,
)
from deployments.renderers.input import is_dns1123_subdomain
from deployments.renderers.torchserve import artifact_url_secret_name
from projects.models import IntegrationKind

if TYPE_CHECKING:
    from catalog.models import CatalogModel, ProfileBundle
    from deployments.models import ModelDeployment, Revision

HF_TOKEN_SECRET = "modeldeck-hf-token"  # Secret name/key the driver creates from the HF integration
HF_TOKEN_KEY = "token"
# ModelDeck's own Secret names (prefixed, labelled as ModelDeck's when created): an existing
# `ngc-secret` or `ngc-api` in the namespace is somebody else's and is never taken over.
NGC_API_SECRET = "modeldeck-ngc-api-key"  # the NIM renderer's default reference for NGC_API_KEY
NGC_API_KEY = "NGC_API_KEY"
NGC_PULL_SECRET = "modeldeck-ngc-pull"  # docker-registry Secret for nvcr.io
# The project's S3 integration as the environment the AWS SDKs and the Run:ai model streamer
# read (vLLM's s3:// loader; docs.vllm.ai/en/v0.8.5/models/extensions/runai_model_streamer.html
# and run-ai/runai-model-streamer docs/src/env-vars.md): Secret key = env var name.
S3_SECRET = "modeldeck-s3"
S3_ENV = {
    "access_key_id": "AWS_ACCESS_KEY_ID",
    "secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "endpoint_url": "AWS_ENDPOINT_URL",
    "region": "AWS_DEFAULT_REGION",
}

MAX_REPLICAS = 100
MAX_GPUS_PER_REPLICA = 16
# Beyond any node a pod could land on; the bounds also keep max replicas × per replica within
# the quota ledger's 64-bit counters (a bigger number was a 500 when the quota was reserved).
MAX_CPU_CORES_PER_REPLICA = 10_000
MAX_MEMORY_PER_REPLICA = 64 * 2**40  # 64Ti
# Requests or tokens per minute: a billion is beyond any engine; a bound keeps 10^20 out of the
# Redis scripts' doubles and the X-RateLimit headers.
RATE_LIMIT_MAX = 1_000_000_000
# What the gateway measures per deployment (gateway/load.py); the target is per replica, except
# latency_p95_ms: the p95 in milliseconds to stay under.
AUTOSCALING_METRICS = ("concurrency", "requests_per_second", "output_tokens_per_second", "latency_p95_ms")
AUTOSCALING_DEFAULTS = {
    "scale_down_delay_seconds": 120,
    "scale_to_zero_after_seconds": 600,
    "cold_start_hold_seconds": 300,
}
MAX_SCALE_DELAY_SECONDS = 86_400  # a day: a window longer than that is a typo
MAX_COLD_START_HOLD_SECONDS = 3_600  # the gateway holds a request at most an hour
RATE_LIMIT_SCOPES = ("organization", "user", "api_key")
# One wording wherever a scope is named: the deploy forms, the deployment pages, the Developer Hub.
RATE_LIMIT_SCOPE_LABELS = {"organization": "Organization", "user": "Per user", "api_key": "Per API key"}
_CURRENCY = re.compile(r"^[A-Z]{3}$")
PRICE_QUANTUM = Decimal("0.0001")  # prices per million tokens keep 4 decimal places
# Per million tokens. UsageRecord.cost keeps 10 whole digits: below this limit a record would
# need a billion tokens in one request to overflow it, where 1e20 overflowed at ten tokens.
PRICE_LIMIT = Decimal(10_000_000)

# The one table of error keys. Every error about a deployment is reported under a spec key
# (dotted: `resources.gpus`) or a service argument (`name`, `pool`); each row says which deploy
# form field shows it and which of the renderers' input fields (RenderSpec) it stands for, so an
# error the renderers raise is reported in the spec's words.
ERROR_KEYS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    # (spec key or service argument, deploy form field, RenderSpec fields)
    ("engine", "bundle", ("engine",)),
    ("image", "image", ("image", "image_pull_secrets")),
    ("served_model_name", "served_model_name", ("served_model_name",)),
    ("replicas.min", "replicas_min", ("replicas",)),
    ("replicas.max", "replicas_max", ()),
    ("replicas", "replicas_max", ()),
    ("context_length", "context_length", ("context_length",)),
    ("prompt_caching", "prompt_caching", ("prompt_caching",)),
    ("resources.cpu", "cpu", ("cpu",)),
    ("resources.memory", "memory", ("memory",)),
    ("resources.gpus", "gpus", ("gpus",)),
    ("resources.gpu_type", "gpu_type", ("gpu_type",)),
    ("resources.gpu_types", "gpu_type", ("gpu_types",)),
    ("resources", "gpus", ()),
    ("env", "env", ("env", "secret_env")),
    ("labels", "labels", ("labels",)),
    ("annotations", "annotations", ("annotations",)),
    ("tolerations", "tolerations", ("tolerations",)),
    ("node_selector", "node_selector", ("node_selector",)),
    ("affinity", "affinity", ("affinity",)),
    ("node_pools", "node_pools", ("node_pools",)),
    ("policies", "policies", ()),
    ("bundle_version", "bundle", ()),
    ("bundle_vars", "bundle", ()),
    ("extra_args", "extra_args", ("extra_args",)),
    ("model_cache", "model_cache_size", ("model_cache.access_mode",)),
    ("model_cache.size", "model_cache_size", ("model_cache.size",)),
    ("model_cache.storage_class", "model_cache_storage_class", ("model_cache.storage_class",)),
    ("nim_profile", "nim_profile", ("nim_profile",)),
    ("nim_tag", "nim_tag", ()),
    *(
        (f"rate_limits.{scope}.{unit}", f"rl_{scope}_{unit}", ())
        for scope in ("organization", "user", "api_key")
        for unit in ("rpm", "tpm")
    ),
    ("autoscaling.enabled", "autoscale_enabled", ()),
    ("autoscaling.metric", "autoscale_metric", ()),
    ("autoscaling.target", "autoscale_target", ()),
    ("autoscaling.scale_down_delay_seconds", "autoscale_scale_down_delay", ()),
    ("autoscaling.scale_to_zero_after_seconds", "autoscale_scale_to_zero_after", ()),
    ("autoscaling.cold_start_hold_seconds", "autoscale_cold_start_hold", ()),
    ("pricing.currency", "currency", ()),
    ("pricing.input_per_million", "price_input", ()),
    ("pricing.output_per_million", "price_output", ()),
    ("bundle", "bundle", ("bundle_args", "engine_vars")),
    ("model", "model", ("model_ref", "model_source", "model_revision", "download_files")),
    ("name", "name", ("deployment_name",)),
    ("pool", "pool", ()),
    ("project", "project", ()),
    ("endpoint", "endpoint", ()),
    ("environment", "environment", ()),
    ("description", "description", ()),
    ("quota", "gpus", ()),
)
_SPEC_KEY_OF_RENDER_FIELD = {field: key for key, _, fields in ERROR_KEYS for field in fields}
_FORM_FIELD_OF_KEY = {key: form_field for key, form_field, _ in ERROR_KEYS}


def error_key(render_field: str) -> str:
    """The spec key an error of the renderers' input field ``render_field`` is reported under."""
    return _SPEC_KEY_OF_RENDER_FIELD.get(render_field, render_field)


def form_field_for(key: str, fields: Any) -> str | None:
    """The deploy form field that shows an error reported under ``key`` (a spec key, a service
    argument or a renderer field); the longest known prefix wins; None: no field shows it."""
    while key:
        for candidate in (key, error_key(key)):
            name = _FORM_FIELD_OF_KEY.get(candidate, candidate if candidate in fields else None)
            if name and name in fields:
                return name
        if "." not in key:
            break
        key = key.rsplit(".", 1)[0]
    return None


SPEC_KEYS = (
    "engine", "image", "served_model_name", "replicas", "context_length", "prompt_caching",
    "resources", "env", "labels", "annotations", "tolerations", "node_selector", "affinity",
    "extra_args", "model_cache", "nim_profile", "nim_tag", "autoscaling", "rate_limits", "pricing",
    "startup_budget_seconds", "capacity_grace_seconds", "data_sources", "node_pools", "policies",
    "bundle_version", "bundle_vars",
)  # fmt: skip
# Optional keys added after deployments existed: left out of the canonical spec while empty, so
# revisions saved before them still compare equal (no rollout, no new revision for nothing).
OPTIONAL_SPEC_KEYS = ("node_pools", "policies", "bundle_vars")
MAX_NODE_POOLS = 16
MAX_GPU_TYPES = 8
# The deployment-level policy rules (sharing.policies reads them; same names as an environment's).
POLICY_KEYS = (
    "allowed_pools", "allowed_pool_labels", "allowed_gpu_types", "max_replicas",
    "max_gpus_per_replica",
)  # fmt: skip


def default_spec() -> dict[str, Any]:
    return {
        "engine": "",
        "image": "",
        "served_model_name": "",
        "replicas": {"min": 1, "max": 1},
        "context_length": None,
        "prompt_caching": True,
        "resources": {"cpu": "4", "memory": "16Gi", "gpus": 1, "gpu_type": ""},
        "env": {},
        "labels": {},
        "annotations": {},
        "tolerations": [],
        "node_selector": {},
        "affinity": None,
        "extra_args": [],
        "model_cache": None,
        "nim_profile": "",
        "nim_tag": "",
        # enabled None: decided in normalize_spec (_clean_autoscaling).
        "autoscaling": {"enabled": None, "metric": "concurrency", "target": 8,
                        "scale_down_delay_seconds": None, "scale_to_zero_after_seconds": None,
                        "cold_start_hold_seconds": None},  # fmt: skip
        "rate_limits": {scope: {"rpm": None, "tpm": None} for scope in RATE_LIMIT_SCOPES},
        "pricing": {"currency": "USD", "input_per_million": "0.00", "output_per_million": "0.00"},
        "startup_budget_seconds": None,  # None: sized from the model's weights
        "capacity_grace_seconds": DEFAULT_CAPACITY_GRACE_SECONDS,
    }


def autoscaled(spec: dict[str, Any]) -> bool:
    return bool((spec.get("autoscaling") or {}).get("enabled"))


def start_replicas(spec: dict[str, Any]) -> int:
    """Replicas a deployment starts (and is activated) with: the minimum, at least one."""
    return max(int(spec["replicas"]["min"]), 1)


def replicas_within(spec: dict[str, Any], replicas: int | None) -> int:
    """Replicas an autoscaled deployment runs: the autoscaler's count (None: the start count),
    within the spec's [min, max]; a deployment without autoscaling runs its start count."""
    if not autoscaled(spec) or replicas is None:
        return start_replicas(spec)
    return min(max(int(replicas), int(spec["replicas"]["min"])), int(spec["replicas"]["max"]))


def replicas_for(deployment: Any, spec: dict[str, Any]) -> int:
    """Replicas the pool should run for `spec`: the autoscaler's count within [min, max] when it
    autoscales (ModelDeployment.replicas_wanted), else the start count."""
    return deployment.replicas_wanted(spec) if autoscaled(spec) else start_replicas(spec)


def gpu_hold(spec: dict[str, Any], replicas: int | None = None) -> int:
    """GPUs a (running) deployment holds in the quota. Without autoscaling: every replica it may
    scale to (max). With autoscaling: the replicas it runs now (`replicas`, the autoscaler's
    count; None: the start count, i.e. the minimum) — each scale-up reserves more first
    (deployments/autoscale.py), each scale-down gives back once the pods are gone."""
    per_replica = int(spec["resources"]["gpus"])
    if autoscaled(spec):
        return replicas_within(spec, replicas) * per_replica
    return int(spec["replicas"]["max"]) * per_replica


def resource_too_large(key: str, quantity: str) -> str:
    """Why a replica's `cpu` or `memory` (a valid quantity) is more than any node has, or ""."""
    if key == "cpu" and parse_quantity(quantity) > MAX_CPU_CORES_PER_REPLICA:
        return f"At most {MAX_CPU_CORES_PER_REPLICA:,} CPU cores per replica."
    if key == "memory" and parse_quantity(quantity) > MAX_MEMORY_PER_REPLICA:
        return "At most 64Ti of memory per replica."
    return ""


def resource_hold(spec: dict[str, Any]) -> dict[str, int]:
    """CPU (millicores), memory (bytes) and the deployment itself that an active deployment
    holds in the quotas beyond GPUs: like GPUs, every replica it may scale to."""
    replicas = int(spec["replicas"]["max"])
    res = spec["resources"]
    return {
        "cpu_millicores": int(parse_quantity(str(res["cpu"])) * 1000) * replicas,
        "memory_bytes": int(parse_quantity(str(res["memory"]))) * replicas,
        "deployments": 1,
    }


def nim_model_name(ngc_image: str) -> str:
    """`nvcr.io/nim/meta/llama-3.1-8b-instruct` -> `meta/llama-3.1-8b-instruct`."""
    ref = ngc_image.split("@", 1)[0]
    last = ref.rsplit("/", 1)
    if ":" in last[-1]:
        ref = ref.rsplit(":", 1)[0]
    for prefix in ("nvcr.io/nim/", "nvcr.io/"):
        if ref.startswith(prefix):
            return ref[len(prefix) :]
    return ref.split("/", 1)[1] if "/" in ref else ref


def image_with_tag(image: str, tag: str) -> str:
    """Replace (or add) the tag of an image reference."""
    base = image.split("@", 1)[0]
    head, _, last = base.rpartition("/")
    last = last.split(":", 1)[0]
    return f"{head}/{last}:{tag}" if head else f"{last}:{tag}"


def image_tag(image: str) -> str:
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else ""


def _model_defaults(model: CatalogModel, bundle: ProfileBundle) -> dict[str, str]:
    """The served name and (for NIM images of NGC models) the image a model implies."""
    if model.source == "ngc":
        tag = model.ngc_tag or "latest"
        return {
            "served_model_name": nim_model_name(model.ngc_image),
            "image": f"{model.ngc_image}:{tag}",
        }
    if model.source == "huggingface":
        return {"served_model_name": model.repo_id, "image": bundle.image}
    return {
        "served_model_name": re.sub(r"[^A-Za-z0-9._/-]+", "-", model.name).strip("-"),
        "image": bundle.image,
    }


class _Errors:
    def __init__(self) -> None:
        self.errors: dict[str, str] = {}

    def add(self, field: str, message: str) -> None:
        self.errors.setdefault(field, message)


def _as_int(
    errors: _Errors, field: str, value: Any, *, minimum: int, maximum: int | None = None
) -> int | None:
    if isinstance(value, bool):
        errors.add(field, "Enter a whole number.")
        return None
    if isinstance(value, str) and is_digits(value.strip().removeprefix("-")):
        value = int(value.strip())
    if not isinstance(value, int):
        errors.add(field, "Enter a whole number.")
        return None
    if value < minimum:
        errors.add(field, f"Must be at least {minimum:,}.")
    elif maximum is not None and value > maximum:
        errors.add(field, f"Must be at most {maximum:,}.")
    return value


def _as_bool(errors: _Errors, field: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in (
        "true",
        "false",
        "1",
        "0",
        "yes",
        "no",
        "on",
        "off",
    ):
        return value.lower() in ("true", "1", "yes", "on")
    errors.add(field, "Must be true or false.")
    return False


def _as_str_map(errors: _Errors, field: str, value: Any) -> dict[str, str]:
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        errors.add(field, "Must be a mapping of names to values.")
        return {}
    out: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, bool):
            item = "true" if item else "false"
        if isinstance(item, (int, float, Decimal)):
            item = str(item)
        if not isinstance(key, str) or not isinstance(item, str):
            errors.add(field, f"{key}: values are strings.")
            continue
        out[key] = item
    return out


def merge_spec(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """`given` over `defaults`, nested mappings merged key by key (env, labels... replaced whole)."""
    out = copy.deepcopy(defaults)
    for key, value in given.items():
        if (
            isinstance(value, dict)
            and isinstance(out.get(key), dict)
            and key not in ("env", "labels", "annotations", "node_selector", "affinity", "policies",
                            "bundle_vars")
        ):
            out[key] = merge_spec(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    resources = given.get("resources")
    if isinstance(resources, dict) and isinstance(out.get("resources"), dict):
        # gpu_type is the first of gpu_types: giving one alone replaces both.
        if "gpu_type" in resources and "gpu_types" not in resources:
            out["resources"].pop("gpu_types", None)
        elif "gpu_types" in resources and "gpu_type" not in resources:
            out["resources"]["gpu_type"] = ""
    return out


def normalize_spec(
    spec: dict[str, Any], *, bundle: ProfileBundle, model: CatalogModel
) -> dict[str, Any]:
    """Fill a (partial) spec with defaults from the bundle and model; refuse what can't run.

    Raises ValidationError({field: message}) with the spec's dotted field names
    (`resources.gpus`, `replicas.max`), so forms, the API and `apply -f` point at the culprit.
    """
    if not isinstance(spec, dict):
        raise ValidationError({"spec": "The spec must be a mapping."})
    errors = _Errors()
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise ValidationError(
            {unknown[0]: f"Unknown spec field; known fields: {', '.join(SPEC_KEYS)}."}
        )
    for key in ("replicas", "resources", "autoscaling", "rate_limits", "pricing"):
        if key in spec and not isinstance(spec[key], dict):
            raise ValidationError({key: "Must be a mapping."})

    model_defaults = _model_defaults(model, bundle)
    out = merge_spec(default_spec(), spec)

    # Engine and image come from the bundle: the pool is matched on the bundle's engine label.
    engine = out["engine"] or bundle.engine
    if engine != bundle.engine:
        errors.add(
            "engine",
            f"The bundle “{bundle}” runs {bundle.engine}, not {engine}; choose another bundle.",
        )
    out["engine"] = bundle.engine
    if not out["image"]:
        out["image"] = model_defaults["image"]
    if not isinstance(out["image"], str):
        errors.add("image", "Must be an image reference such as vllm/vllm-openai:v0.6.3.")
        out["image"] = ""
    out["image"] = out["image"].strip()

    nim_tag = out["nim_tag"] or ""
    if not isinstance(nim_tag, str):
        errors.add("nim_tag", "Must be a tag such as 1.3.0.")
        nim_tag = ""
    if model.source == "ngc":
        if nim_tag and not spec.get("image"):
            out["image"] = image_with_tag(out["image"], nim_tag)
        nim_tag = image_tag(out["image"])
    elif nim_tag:
        errors.add("nim_tag", "Only NIM models from NGC have NIM tags.")
    out["nim_tag"] = nim_tag

    if not out["served_model_name"]:
        out["served_model_name"] = model_defaults["served_model_name"]
    if not isinstance(out["served_model_name"], str) or not out["served_model_name"].strip():
        errors.add("served_model_name", "Enter the model name clients will send.")
    elif any(c.isspace() for c in out["served_model_name"]) or len(out["served_model_name"]) > 200:
        errors.add("served_model_name", "May not contain spaces (at most 200 characters).")

    replicas = out["replicas"]
    rmin = _as_int(errors, "replicas.min", replicas.get("min"), minimum=0, maximum=MAX_REPLICAS)
    rmax = _as_int(errors, "replicas.max", replicas.get("max"), minimum=1, maximum=MAX_REPLICAS)
    if rmin is not None and rmax is not None and rmin > rmax:
        errors.add("replicas.max", f"The maximum ({rmax}) is below the minimum ({rmin}).")
    out["replicas"] = {"min": rmin, "max": rmax}

    if out["context_length"] in ("", None):
        out["context_length"] = None
    else:
        out["context_length"] = _as_int(
            errors, "context_length", out["context_length"], minimum=256, maximum=10_000_000
        )
    out["prompt_caching"] = _as_bool(errors, "prompt_caching", out["prompt_caching"])

    res = out["resources"]
    for key in ("cpu", "memory"):
        if isinstance(res.get(key), (int, float)) and not isinstance(res.get(key), bool):
            res[key] = str(res[key])
    gpus = _as_int(
        errors, "resources.gpus", res.get("gpus"), minimum=0, maximum=MAX_GPUS_PER_REPLICA
    )
    for key, message in (
        ("cpu", "Give CPU as cores (4, 0.5) or millicores (500m)."),
        ("memory", "Give memory as a Kubernetes quantity, e.g. 16Gi or 512Mi."),
    ):
        if not is_quantity(res.get(key)):
            errors.add(f"resources.{key}", message)
        elif too_large := resource_too_large(key, res[key]):
            errors.add(f"resources.{key}", too_large)
    gpu_types = _clean_gpu_types(errors, res)
    out["resources"] = {
        "cpu": res.get("cpu"),
        "memory": res.get("memory"),
        "gpus": gpus,
        "gpu_type": gpu_types[0] if gpu_types else "",
    }
    _clean_data_sources(errors, out)
    # Shared memory (/dev/shm), e.g. from a resource template (deployments/galleries.py); kept
    # only when given, so specs saved before it existed stay as they were (no diff, no rollout).
    shm = res.get("shm_size")
    if shm not in (None, ""):
        if not is_quantity(str(shm)):
            errors.add("resources.shm_size", "Give shared memory as a Kubernetes quantity, e.g. 16Gi.")
        else:
            out["resources"]["shm_size"] = str(shm)
    if len(gpu_types) > 1:  # several flavors: any of them, the first preferred
        out["resources"]["gpu_types"] = gpu_types

    for key in ("env", "labels", "annotations", "node_selector"):
        out[key] = _as_str_map(errors, key, out[key])
    if not isinstance(out["tolerations"] or [], list):
        errors.add("tolerations", "Must be a list of tolerations.")
        out["tolerations"] = []
    out["tolerations"] = out["tolerations"] or []
    for index, item in enumerate(out["tolerations"], start=1):
        if not isinstance(item, dict):
            errors.add("tolerations", f"Toleration {index} must be a mapping such as “key: nvidia.com/gpu”.")
        elif set(item) - set(TOLERATION_KEYS):
            unknown_key = sorted(set(item) - set(TOLERATION_KEYS))[0]
            errors.add("tolerations", f"Toleration {index}: unknown field “{unknown_key}” "
                                      f"(allowed: {', '.join(sorted(TOLERATION_KEYS))}).")  # fmt: skip
    if out["affinity"] in ({}, "", None):
        out["affinity"] = None
    elif not isinstance(out["affinity"], dict):
        errors.add("affinity", "Must be a Kubernetes affinity: nodeAffinity, podAffinity, podAntiAffinity.")
    elif set(out["affinity"]) - set(AFFINITY_KEYS):
        unknown_key = sorted(set(out["affinity"]) - set(AFFINITY_KEYS))[0]
        errors.add("affinity", f"Affinity takes nodeAffinity, podAffinity or podAntiAffinity, not “{unknown_key}”.")
    args = out["extra_args"] or []
    if isinstance(args, str):
        args = args.split()
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        errors.add("extra_args", "Must be a list of arguments such as --max-num-seqs 64.")
        args = []
    out["extra_args"] = args
    cache = out["model_cache"]
    if cache in ({}, "", None):
        out["model_cache"] = None
    elif not isinstance(cache, dict) or not cache.get("size"):
        errors.add("model_cache", "Give at least a size, e.g. {size: 50Gi}.")
        out["model_cache"] = None
    else:
        out["model_cache"] = {
            "size": str(cache["size"]),
            "storage_class": str(cache.get("storage_class") or ""),
            # "": follows replicas (see cache_access_mode()); or a PVC access mode, given.
            "access_mode": str(cache.get("access_mode") or ""),
        }
        if not is_quantity(out["model_cache"]["size"]):
            errors.add("model_cache.size", "Give the cache size as a Kubernetes quantity, e.g. 100Gi.")
    if not isinstance(out["nim_profile"] or "", str):
        errors.add("nim_profile", "Must be a profile id or name.")
        out["nim_profile"] = ""
    out["nim_profile"] = (out["nim_profile"] or "").strip()

    given_auto = spec.get("autoscaling")
    _clean_autoscaling(errors, out, rmin, isinstance(given_auto, dict) and "enabled" not in given_auto)

    _clean_limits_and_pricing(errors, out)

    _clean_startup_budget(errors, out)
    _clean_capacity_grace(errors, out)
    _clean_node_pools(errors, out)
    _clean_policies(errors, out)
    _check_nim_profile(errors, out, model=model)
    _clean_bundle_choice(errors, out, bundle=bundle)
    _check_context_length(errors, out, model=model, bundle=bundle)
    if errors.errors:
        raise ValidationError(errors.errors)

    # The renderers know Kubernetes' rules (quantities, label syntax, engine argument clashes);
    # rendering a stand-in here turns a would-be 422 into a field error now.
    try:
        validate_spec(_render_spec(out, model=model, bundle=bundle, deployment_id=1, name="validate",
                                   namespace="validate", revision=1, project=None, secret_env={},
                                   image_pull_secrets=None))  # fmt: skip
    except SpecError as exc:
        message = exc.message[:1].upper() + exc.message[1:] + "."
        raise ValidationError({error_key(exc.field): message}) from None
    return out


def _clean_limits_and_pricing(errors: _Errors, out: dict[str, Any]) -> None:
    """Rate limits (whole numbers ≥ 1 or None per scope and unit) and pricing (a currency code,
    prices per million tokens as decimal strings), in place: what the gateway reads."""
    limits: dict[str, dict[str, int | None]] = {}
    for scope in RATE_LIMIT_SCOPES:
        given = out["rate_limits"].get(scope) or {}
        if not isinstance(given, dict):
            errors.add(f"rate_limits.{scope}", "Must be a mapping with rpm and tpm.")
            given = {}
        limits[scope] = {}
        for unit in ("rpm", "tpm"):
            value = given.get(unit)
            limits[scope][unit] = (
                None
                if value in (None, "")
                else _as_int(errors, f"rate_limits.{scope}.{unit}", value, minimum=1, maximum=RATE_LIMIT_MAX)
            )
    unknown_scopes = sorted(set(out["rate_limits"]) - set(RATE_LIMIT_SCOPES))
    if unknown_scopes:
        errors.add("rate_limits", f"Scopes are {', '.join(RATE_LIMIT_SCOPES)}.")
    out["rate_limits"] = limits

    pricing = out["pricing"]
    currency = str(pricing.get("currency") or "USD").upper()
    if not _CURRENCY.match(currency):
        errors.add("pricing.currency", "Use a three-letter currency code such as USD.")
    out_pricing: dict[str, str] = {"currency": currency}
    for key in ("input_per_million", "output_per_million"):
        out_pricing[key] = "0.00"
        given = pricing.get(key)
        if isinstance(given, bool | dict | list):
            errors.add(f"pricing.{key}", "Enter a price such as 0.50 (per million tokens).")
            continue
        try:
            amount = Decimal(str(given if given not in (None, "") else "0"))
        except (InvalidOperation, ValueError):
            amount = Decimal("NaN")
        if not amount.is_finite():
            errors.add(f"pricing.{key}", "Enter a price such as 0.50 (per million tokens).")
        elif amount < 0:
            errors.add(f"pricing.{key}", "A price can't be negative; 0 makes the model free.")
        elif amount >= PRICE_LIMIT:
            errors.add(f"pricing.{key}", f"Enter a price below {PRICE_LIMIT:,} per million tokens.")
        elif amount != amount.quantize(PRICE_QUANTUM, rounding=ROUND_DOWN):
            # Rounding silently would charge something other than what was typed.
            errors.add(f"pricing.{key}", "Use at most 4 decimal places (0.0001 per million tokens).")
        else:
            out_pricing[key] = money_text(amount)  # "0.10", "1.25", "0.0005"
    out["pricing"] = out_pricing


def clean_limits_and_pricing(rate_limits: Any, pricing: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """A deployment's rate limits and pricing in their canonical form, for deployments that have
    no managed spec to go through (external ones); ValidationError with the spec's field names."""
    for key, value in (("rate_limits", rate_limits), ("pricing", pricing)):
        if value is not None and not isinstance(value, dict):
            raise ValidationError({key: "Must be a mapping."})
    defaults = default_spec()
    out = {"rate_limits": merge_spec(defaults["rate_limits"], rate_limits or {}),
           "pricing": merge_spec(defaults["pricing"], pricing or {})}  # fmt: skip
    errors = _Errors()
    _clean_limits_and_pricing(errors, out)
    if errors.errors:
        raise ValidationError(errors.errors)
    return out["rate_limits"], out["pricing"]


# Spec keys the pods never see (the gateway and the autoscaler read them; replicas.max only
# sizes the quota): changing only these needs no rollout. replicas.min is applied in place.
NO_ROLLOUT_KEYS = ("rate_limits", "pricing", "autoscaling", "replicas", "policies")


def rollout_needed(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether going from spec `before` to `after` changes what the pods run (a blue-green
    rollout), rather than the gateway's settings or the replica count (applied in place)."""
    keys = (set(before) | set(after)) - set(NO_ROLLOUT_KEYS)
    return any(before.get(key) != after.get(key) for key in keys)


def rendered_replicas(spec: dict[str, Any]) -> int:
    """Replicas the Deployment starts with: the minimum, at least one (the autoscaler, when the
    spec enables it, moves the count within [min, max]: ModelDeployment.replicas_wanted)."""
    return start_replicas(spec)


def _clean_autoscaling(errors: _Errors, out: dict[str, Any], rmin: int | None, given_section: bool) -> None:
    """autoscaling: metric, target, the three windows; `enabled` unset: see below."""
    auto = out["autoscaling"]
    unknown = sorted(set(auto) - {"enabled", "metric", "target", *AUTOSCALING_DEFAULTS})
    if unknown:
        errors.add(f"autoscaling.{unknown[0]}", "Unknown autoscaling field; known: enabled, metric, target, "
                   + ", ".join(AUTOSCALING_DEFAULTS) + ".")
    enabled = auto.get("enabled")
    if enabled in (None, ""):
        # Not said: an autoscaling section written without `enabled` (the YAML in the docs), or a
        # minimum of 0 (only autoscaling can leave zero), turns it on; a bare spec keeps a fixed count.
        enabled = rmin == 0 or given_section
    else:
        enabled = _as_bool(errors, "autoscaling.enabled", enabled)
    metric = auto.get("metric") or "concurrency"
    if metric not in AUTOSCALING_METRICS:
        errors.add("autoscaling.metric", f"Choose one of {', '.join(AUTOSCALING_METRICS)} (what the gateway "
                                         "measures per deployment).")  # fmt: skip
    target = auto.get("target", 8)
    if isinstance(target, str):
        try:
            target = float(target.strip())
        except ValueError:
            pass
    if isinstance(target, bool) or not isinstance(target, (int, float)) or target != target:
        errors.add("autoscaling.target", "Enter a number above 0: the load per replica to aim for "
                                         "(for latency_p95_ms, the p95 in milliseconds to stay under).")  # fmt: skip
        target = None
    elif target <= 0 or target > 1_000_000:
        errors.add("autoscaling.target", "The target must be above 0 and at most 1,000,000.")
    elif float(target).is_integer():
        target = int(target)
    windows: dict[str, int | None] = {}
    for key, default in AUTOSCALING_DEFAULTS.items():
        value = auto.get(key)
        if value in (None, ""):
            windows[key] = None if key == "scale_to_zero_after_seconds" and rmin != 0 else default
            continue
        low = 1 if key == "cold_start_hold_seconds" else 0
        high = MAX_COLD_START_HOLD_SECONDS if key == "cold_start_hold_seconds" else MAX_SCALE_DELAY_SECONDS
        windows[key] = _as_int(errors, f"autoscaling.{key}", value, minimum=low, maximum=high)
    if auto.get("scale_to_zero_after_seconds") not in (None, "") and rmin not in (0, None):
        errors.add("autoscaling.scale_to_zero_after_seconds",
                   f"Scaling to zero needs replicas.min 0 (it is {rmin}); clear this field or set the minimum to 0.")
    out["autoscaling"] = {"enabled": enabled, "metric": metric, "target": target, **windows}
    if rmin == 0 and not enabled:
        errors.add(
            "replicas.min",
            "Zero replicas only makes sense with autoscaling; deactivate the deployment instead.",
        )


def _render_spec(
    spec: dict[str, Any],
    *,
    model: CatalogModel,
    bundle: ProfileBundle,
    deployment_id: int,
    name: str,
    namespace: str,
    revision: int,
    project: str | None,
    secret_env: dict[str, tuple[str, str]],
    image_pull_secrets: tuple[str, ...] | None,
    replicas: int | None = None,
) -> RenderSpec:
    if model.source == "huggingface":
        model_ref, model_revision = model.repo_id, (model.revision or None)
    elif model.source == "ngc":
        model_ref, model_revision = nim_model_name(model.ngc_image), None
    elif getattr(model, "artifact", None):
        # An uploaded file: the pod fetches it from ModelDeck (renderers/torchserve.py).
        model_ref, model_revision = f"artifact://{model.pk}/{os.path.basename(model.artifact.name)}", None
    else:
        model_ref, model_revision = model.storage_uri, None
    source = model.source
    if source == "custom" and model_ref.startswith("hf://"):
        # Added before the catalog turned hf:// into Hub models: served as the Hub repo it names.
        model_ref, _, rev = model_ref[len("hf://") :].partition("@")
        source, model_revision = "huggingface", rev or None
    cache = spec.get("model_cache")
    engine_vars = bundle_variables(bundle, spec)
    res = spec["resources"]
    return RenderSpec(
        deployment_id=deployment_id,
        deployment_name=name,
        revision=revision,
        namespace=namespace,
        engine=spec["engine"],
        image=spec["image"],
        model_ref=model_ref,
        model_source=source,
        model_revision=model_revision,
        served_model_name=spec["served_model_name"] or None,
        project=project,
        replicas=rendered_replicas(spec) if replicas is None else replicas,
        context_length=spec["context_length"],
        prompt_caching=spec["prompt_caching"],
        cpu=res["cpu"],
        memory=res["memory"],
        gpus=res["gpus"],
        gpu_type=res["gpu_type"] or None,
        shm_size=res.get("shm_size") or None,
        data_volumes=tuple((d["claim_name"], d["mount_path"]) for d in spec.get("data_sources") or ()),
        gpu_types=tuple(res.get("gpu_types") or ()),
        node_pools=tuple(NodePool(p["key"], tuple(p["values"])) for p in spec.get("node_pools") or ()),
        env=spec["env"],
        secret_env=secret_env,
        image_pull_secrets=image_pull_secrets,
        labels=spec["labels"],
        annotations=spec["annotations"],
        tolerations=tuple(spec["tolerations"]),
        node_selector=spec["node_selector"],
        affinity=spec["affinity"],
        bundle_args=tuple(str(a) for a in (bundle.default_args or [])),
        extra_args=tuple(spec["extra_args"]),
        engine_vars=engine_vars,
        model_cache=ModelCache(
            size=cache["size"], storage_class=cache.get("storage_class") or None,
            access_mode=cache_access_mode(spec),
        ) if cache else None,  # fmt: skip
        nim_profile=spec["nim_profile"] or None,
        startup_budget_seconds=startup_budget_for(spec, model),
        capacity_grace_seconds=capacity_grace_for(spec),
        model_bytes=weights_bytes_of(model),
        download_files=download_files_of(model) if source == model.source else (),
        # Stand-in models (previews, flag checks) have no artifact field.
        model_sha256=(model.artifact_sha256 or None) if getattr(model, "artifact", None) else None,
        artifact_url_secret=artifact_url_secret_name(name) if getattr(model, "artifact", None) else None,
    )


# --- Rules for specs that must not reach a cluster wrong (issue: real clusters) -------------------
# Small and separate on purpose: each one is a rule a user can hit, with its own message.

DEFAULT_CAPACITY_GRACE_SECONDS = 900  # "Waiting for capacity" before Failed: a node can be added
# Assumed sustained download rate of a model's weights from the Hub into the cache, and the
# time an engine needs besides (imports, CUDA graphs, warm-up). 50 MB/s is a cautious figure
# for one pod pulling from huggingface.co; a pod killed at 99% downloaded starts over.
STARTUP_DOWNLOAD_BYTES_PER_SECOND = 50_000_000
STARTUP_BASE_SECONDS = 600
STARTUP_MAX_SECONDS = 86_400
# RoPE scaling flags (vLLM 0.8.5 --rope-scaling / --hf-overrides, TGI --rope-scaling /
# --rope-factor): a bundle that sets one may serve beyond the model's trained context.
ROPE_SCALING_FLAGS = ("--rope-scaling", "--rope-factor", "--rope_scaling", "--hf-overrides")


DATA_SOURCE_CLAIM_KINDS = ("pvc", "hf_cache", "ngc_cache")
_MOUNT = re.compile(r"^/[A-Za-z0-9._/-]*$")


def _clean_data_sources(errors: _Errors, out: dict[str, Any]) -> None:
    """`data_sources`: claims copied from the gallery at save (deployments/galleries.py), each
    {name, kind, claim_name, mount_path}, mounted read-only into the engine container. Kept only
    when given, so older specs stay as they were."""
    given = out.get("data_sources")
    if given in (None, []):
        out.pop("data_sources", None)
        return
    if not isinstance(given, list) or len(given) > 8:
        errors.add("data_sources", "A list of at most 8 data sources from the gallery.")
        out.pop("data_sources", None)
        return
    clean, paths = [], set()
    for item in given:
        if not isinstance(item, dict) or item.get("kind") not in DATA_SOURCE_CLAIM_KINDS:
            errors.add("data_sources", "Only claim data sources (PVC, HF or NGC cache) can be mounted; "
                                       "give them by name from the gallery.")  # fmt: skip
            continue
        claim, mount = str(item.get("claim_name") or ""), str(item.get("mount_path") or "")
        if not is_dns1123_subdomain(claim):
            errors.add("data_sources", f"“{claim}” is not a PersistentVolumeClaim name.")
        if not _MOUNT.match(mount) or ".." in mount or mount in ("/", "/dev/shm") or mount in paths:
            errors.add("data_sources", f"Data source “{item.get('name')}” needs its own absolute mount path.")
        paths.add(mount)
        clean.append({"name": str(item.get("name") or ""), "kind": item["kind"], "claim_name": claim,
                      "mount_path": mount})  # fmt: skip
    out["data_sources"] = clean


def _clean_startup_budget(errors: _Errors, out: dict[str, Any]) -> None:
    if out["startup_budget_seconds"] in (None, ""):
        out["startup_budget_seconds"] = None
        return
    out["startup_budget_seconds"] = _as_int(
        errors, "startup_budget_seconds", out["startup_budget_seconds"], minimum=60,
        maximum=STARTUP_MAX_SECONDS,
    )  # fmt: skip


def _clean_capacity_grace(errors: _Errors, out: dict[str, Any]) -> None:
    value = out["capacity_grace_seconds"]
    out["capacity_grace_seconds"] = _as_int(
        errors, "capacity_grace_seconds",
        DEFAULT_CAPACITY_GRACE_SECONDS if value in (None, "") else value, minimum=0, maximum=86_400,
    )  # fmt: skip


def model_max_context(model: CatalogModel) -> int | None:
    """The longest context the model was trained for (config.json max_position_embeddings)."""
    value = (model.config or {}).get("max_position_embeddings") if model.config else None
    return value if isinstance(value, int) and value > 0 else None


def bundle_declares_rope_scaling(bundle: ProfileBundle, spec: dict[str, Any]) -> bool:
    args = [str(a) for a in (bundle.default_args or [])] + list(spec.get("extra_args") or [])
    names = {str(v.get("name", "")) for v in bundle.variables or [] if isinstance(v, dict)}
    return any(a.split("=", 1)[0] in ROPE_SCALING_FLAGS for a in args) or bool(
        names & {"rope_scaling", "rope_factor"}
    )


def _check_context_length(
    errors: _Errors, out: dict[str, Any], *, model: CatalogModel, bundle: ProfileBundle
) -> None:
    wanted, maximum = out.get("context_length"), model_max_context(model)
    if not isinstance(wanted, int) or maximum is None or wanted <= maximum:
        return
    if bundle_declares_rope_scaling(bundle, out):
        return
    errors.add(
        "context_length",
        f"{model} was trained for at most {maximum:,} tokens; {wanted:,} needs RoPE scaling, "
        "which this Profile Bundle does not declare (--rope-scaling). Lower the context length.",
    )


def cache_access_mode(spec: dict[str, Any]) -> str:
    """The model cache PVC's access mode: as given, else ReadWriteOnce when one replica ever
    mounts it and ReadWriteMany when several may (replicas on different nodes). RWO is what
    default EBS/PD/local-path storage offers; RWX there stays Pending."""
    cache = spec.get("model_cache") or {}
    if cache.get("access_mode"):
        return str(cache["access_mode"])
    return "ReadWriteMany" if int(spec["replicas"]["max"] or 1) > 1 else "ReadWriteOnce"


def weights_bytes_of(model: CatalogModel) -> int | None:
    files = model.files or []
    total = sum(
        int(f.get("size") or 0) for f in files
        if isinstance(f, dict) and str(f.get("path", "")).endswith((".safetensors", ".bin", ".pt"))
    )  # fmt: skip
    return total or None


def startup_budget_for(spec: dict[str, Any], model: CatalogModel) -> int:
    """Seconds the startup probe waits for the server: the spec's, else sized from the weights
    (download at a cautious rate plus a fixed allowance), else the renderers' default."""
    given = spec.get("startup_budget_seconds")
    if given:
        return int(given)
    weights = weights_bytes_of(model)
    if not weights:
        return DEFAULT_STARTUP_BUDGET_SECONDS
    seconds = STARTUP_BASE_SECONDS + weights // STARTUP_DOWNLOAD_BYTES_PER_SECOND
    return int(min(max(seconds, STARTUP_BASE_SECONDS), STARTUP_MAX_SECONDS))


def capacity_grace_for(spec: dict[str, Any]) -> int:
    value = spec.get("capacity_grace_seconds")
    return DEFAULT_CAPACITY_GRACE_SECONDS if value in (None, "") else int(value)


def check_ngc_credentials(*, project: Any, bundle: ProfileBundle, model: CatalogModel) -> None:
    """A NIM (or an NGC model) can't start without the project's NGC API key: the image pull
    from nvcr.io and NIM's own profile download both need it. Refused at save time, with the
    fix, instead of ending in ImagePullBackOff / CreateContainerConfigError on the cluster."""
    if bundle.engine != "nim" and model.source != "ngc":
        return
    if project.integrations.filter(kind=IntegrationKind.NGC).exists():
        return
    field = "model" if model.source == "ngc" else "bundle"
    raise ValidationError(
        {field: f"NVIDIA NIM needs the project's NGC API key (to pull from nvcr.io and download "
                f"the model); add it under project “{project.name}” → Integrations first."}
    )  # fmt: skip


# What vLLM's loader never reads from a Hub repo (vllm/model_executor/model_loader: the
# `original/**/*` ignore pattern of LoadConfig, and .bin/.pt weights when safetensors exist;
# TGI converts .bin only when there are no safetensors): the pre-download Job skips them.
_NEVER_LOADED = ("original/",)
_OTHER_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf", ".tflite")


def download_files_of(model: CatalogModel) -> tuple[str, ...]:
    """The catalog's file list of a Hub model, less what the engines never load; () when the
    catalog has no list (the Job then downloads the whole repo)."""
    if model.source != "huggingface":
        return ()
    paths = [str(f.get("path")) for f in model.files or [] if isinstance(f, dict) and f.get("path")]
    paths = [p for p in paths if not p.startswith(_NEVER_LOADED) and not p.startswith(".")]
    if any(p.endswith(".safetensors") for p in paths):
        paths = [p for p in paths if not p.endswith(_OTHER_WEIGHTS)]
    return tuple(sorted(paths))


def reads_s3(model: CatalogModel) -> bool:
    return model.source == "custom" and (model.storage_uri or "").startswith("s3://")


def check_storage_credentials(*, project: Any, model: CatalogModel) -> None:
    """An s3:// model is streamed by the engine with the project's S3 credentials: without an
    S3 integration the pods could not read the bucket (unless the nodes had a role, which
    ModelDeck can't see), so it is refused at save time with the fix."""
    if not reads_s3(model):
        return
    if project.integrations.filter(kind=IntegrationKind.S3).exists():
        return
    raise ValidationError(
        {"model": f"“{model.name}” is read from {model.storage_uri}, which needs the project's S3 "
                  f"credentials; add them under project “{project.name}” → Integrations → S3 "
                  "credentials first."}
    )  # fmt: skip


def s3_environment(integration: Any) -> dict[str, str]:
    """The S3 Secret's data (env var name -> value) from a project's S3 integration."""
    fields = integration.s3_settings() if integration is not None else {}
    return {S3_ENV[key]: value for key, value in fields.items() if key in S3_ENV}


def secret_refs(
    deployment: ModelDeployment,
) -> tuple[dict[str, tuple[str, str]], tuple[str, ...] | None]:
    """Secret-backed env vars and image pull secrets a deployment's pods reference."""
    kinds = set(deployment.project.integrations.values_list("kind", flat=True))
    secret_env: dict[str, tuple[str, str]] = {}
    pull: tuple[str, ...] | None = None
    if IntegrationKind.S3 in kinds and reads_s3(deployment.model):
        s3 = deployment.project.integrations.filter(kind=IntegrationKind.S3).first()
        for name in s3_environment(s3):
            secret_env[name] = (S3_SECRET, name)
    if IntegrationKind.HUGGINGFACE in kinds and deployment.model.source == "huggingface":
        secret_env["HF_TOKEN"] = (HF_TOKEN_SECRET, HF_TOKEN_KEY)
    if deployment.bundle.engine == "nim" or deployment.model.source == "ngc":
        if IntegrationKind.NGC in kinds:
            secret_env["NGC_API_KEY"] = (NGC_API_SECRET, NGC_API_KEY)
            pull = (NGC_PULL_SECRET,)
        else:
            pull = ()  # no key: don't reference a pull secret that will never exist
    return secret_env, pull


def render_spec_for(
    deployment: ModelDeployment, revision: Revision, *, replicas: int | None = None
) -> RenderSpec:
    """The renderers' input for one revision of a deployment (`replicas` overrides, e.g. 0)."""
    secret_env, pull = secret_refs(deployment)
    # The version this revision runs (a rollout to another version leaves older revisions theirs).
    bundle = bundle_of_version(deployment.bundle, revision.spec.get("bundle_version")) or deployment.bundle
    rs = _render_spec(
        revision.spec,
        model=deployment.model,
        bundle=bundle,
        deployment_id=deployment.pk,
        name=deployment.name,
        namespace=deployment.project.namespace(),
        revision=revision.pods_number(),  # a change that didn't touch the pods reuses them
        project=deployment.project.slug,
        secret_env=secret_env,
        image_pull_secrets=pull,
        # The autoscaler's count within [min, max] (the start count without autoscaling).
        replicas=deployment.replicas_wanted(revision.spec) if replicas is None else replicas,
    )
    operators = deployment.pool.operators()
    operator = None
    if operators["nim"] and rs.engine == "nim":
        operator = "nim-operator"
    elif operators["kserve"] and rs.engine in ("vllm", "tgi", "tei"):
        operator = "kserve"
    return dataclasses.replace(
        rs, exposure=exposure_for(deployment.pool), engine_credential=True, operator=operator
    )


def exposure_for(pool: Any) -> Exposure:
    """The renderers' view of a compute pool's exposure."""
    # The ingress controller / gateway proxies, and ModelDeck's own namespace (in-cluster pools).
    admit = {pool.ingress_namespace, settings.MODELDECK_NAMESPACE} - {""}
    return Exposure(
        mode=pool.exposure, base_host=pool.exposure_host, ingress_class=pool.ingress_class,
        tls_secret=pool.tls_secret, gateway_name=pool.gateway_name,
        gateway_namespace=pool.gateway_namespace, admit_namespaces=tuple(sorted(admit)),
    )  # fmt: skip


# --- GPU flavors, node-pool priority, deployment policies (issue 16) ---------------------------


def _clean_gpu_types(errors: _Errors, res: dict[str, Any]) -> list[str]:
    """`resources.gpu_type` (one GPU product, or a list) and `resources.gpu_types` (a list, in
    order of preference) as one list; the canonical gpu_type is its first."""
    one, many = res.get("gpu_type") or "", res.get("gpu_types") or []
    if isinstance(one, list):
        one, many = "", many or one
    if not isinstance(one, str):
        errors.add("resources.gpu_type", "Must be a GPU product name such as NVIDIA-A100-SXM4-80GB.")
        return []
    if not isinstance(many, list) or not all(isinstance(v, str) for v in many):
        errors.add("resources.gpu_types", "Must be a list of GPU product names, first preferred.")
        return []
    types: list[str] = []
    for value in ([] if one in many else [one]) + list(many):
        value = value.strip()
        if value and value not in types:
            types.append(value)
    for value in types:
        if not is_label_value(value):
            key = "resources.gpu_types" if len(types) > 1 else "resources.gpu_type"
            errors.add(key, f"“{value}” is not a node label value such as NVIDIA-A100-SXM4-80GB "
                            "(letters, digits, - _ .).")  # fmt: skip
            return []
    if len(types) > MAX_GPU_TYPES:
        errors.add("resources.gpu_types", f"At most {MAX_GPU_TYPES} GPU types.")
        return []
    return types


def _clean_node_pools(errors: _Errors, out: dict[str, Any]) -> None:
    """An ordered list of node pools, each a node label key and its values; first preferred."""
    given = out.get("node_pools")
    out.pop("node_pools", None)
    if given in (None, "", []):
        return
    if not isinstance(given, list):
        errors.add("node_pools", "Must be a list of node pools such as {key: run.ai/node-pool, values: [a100]}.")
        return
    pools: list[dict[str, Any]] = []
    for index, item in enumerate(given, start=1):
        if isinstance(item, str) and "=" in item:  # the short form, key=value[,value]
            key, _, values = item.partition("=")
            item = {"key": key.strip(), "values": [v.strip() for v in values.split(",")]}
        if not isinstance(item, dict) or set(item) - {"key", "values"}:
            errors.add("node_pools", f"Node pool {index} must be a mapping with key and values.")
            return
        key, values = item.get("key"), item.get("values")
        if isinstance(values, str):
            values = [v.strip() for v in values.split(",")]
        if not isinstance(key, str) or not key.strip():
            errors.add("node_pools", f"Node pool {index}: give the node label key, e.g. run.ai/node-pool.")
            return
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values) or not [
            v for v in values if v.strip()
        ]:
            errors.add("node_pools", f"Node pool {index} ({key}): give one or more label values.")
            return
        entry = {"key": key.strip(), "values": [v.strip() for v in values if v.strip()]}
        if entry in pools:
            errors.add("node_pools", f"Node pool {index} ({key}) is listed twice.")
            return
        pools.append(entry)
    if len(pools) > MAX_NODE_POOLS:
        errors.add("node_pools", f"At most {MAX_NODE_POOLS} node pools.")
        return
    out["node_pools"] = pools


def _clean_policies(errors: _Errors, out: dict[str, Any]) -> None:
    """The deployment's own policies: the environment's rule types, which may only narrow it
    (sharing.policies checks that and the spec against them)."""
    given = out.get("policies")
    out.pop("policies", None)
    if given in (None, "", {}):
        return
    if not isinstance(given, dict):
        errors.add("policies", f"Must be a mapping of rules: {', '.join(POLICY_KEYS)}.")
        return
    unknown = sorted(set(given) - set(POLICY_KEYS))
    if unknown:
        errors.add(f"policies.{unknown[0]}", f"Unknown policy rule; the rules are {', '.join(POLICY_KEYS)}.")
        return
    policies: dict[str, Any] = {}
    for key, most in (("max_replicas", MAX_REPLICAS), ("max_gpus_per_replica", MAX_GPUS_PER_REPLICA)):
        if given.get(key) not in (None, ""):
            value = _as_int(errors, f"policies.{key}", given[key], minimum=0, maximum=most)
            if value is not None:
                policies[key] = value
    for key in ("allowed_gpu_types", "allowed_pools"):
        values = given.get(key)
        if values in (None, "", []):
            continue
        if isinstance(values, str):
            values = [v.strip() for v in values.split(",")]
        ok = isinstance(values, list) and all(
            isinstance(v, str) or (key == "allowed_pools" and isinstance(v, int) and not isinstance(v, bool))
            for v in values
        )  # fmt: skip
        if not ok:
            what = "compute pool names" if key == "allowed_pools" else "GPU types"
            errors.add(f"policies.{key}", f"Give a list of {what}.")
            continue
        cleaned = [v.strip() if isinstance(v, str) else v for v in values]
        cleaned = [v for v in cleaned if v != ""]
        if cleaned:
            policies[key] = cleaned
    labels = given.get("allowed_pool_labels")
    if labels not in (None, "", {}):
        if not isinstance(labels, dict):
            errors.add("policies.allowed_pool_labels", 'Give a mapping such as {region: [us-east-1]}.')
        else:
            clean_labels: dict[str, list[str]] = {}
            for label, values in labels.items():
                if isinstance(values, str):
                    values = [values]
                if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                    errors.add("policies.allowed_pool_labels", f"{label}: give a list of values.")
                    break
                if values:
                    clean_labels[str(label)] = values
            if clean_labels:
                policies["allowed_pool_labels"] = clean_labels
    if policies:
        out["policies"] = policies


def _gpu_tokens(label: str) -> set[str]:
    return set(re.split(r"[-_\s]+", label.upper())) - {""}


def nim_profile_fits_gpu(profile: dict[str, Any], gpu_types: list[str]) -> bool:
    """Whether a NIM profile may run on every one of ``gpu_types`` (node label values such as
    NVIDIA-H100-80GB-HBM3): a generic profile (no GPU tag) anywhere, an optimized one only on
    its GPU (its tag's words all in the label: H100 fits NVIDIA-H100-80GB-HBM3, L4 not L40S)."""
    gpu = str(profile.get("gpu") or "")
    if not gpu or not gpu_types:
        return True
    return all(_gpu_tokens(gpu) <= _gpu_tokens(t) for t in gpu_types)


def nim_profile_named(model: CatalogModel, value: str) -> dict[str, Any] | None:
    """The catalog's profile of ``model`` with id or name ``value``."""
    return next(
        (p for p in model.nim_profiles or [] if isinstance(p, dict) and value in (p.get("id"), p.get("name"))),
        None,
    )  # fmt: skip


def _check_nim_profile(errors: _Errors, out: dict[str, Any], *, model: CatalogModel) -> None:
    """A chosen NIM profile must be one the image offers (where the catalog knows them), fit
    the GPU type(s), and use as many GPUs as a replica gets (TP × PP). Stored by its id, the
    value NIM_MODEL_PROFILE takes."""
    value = out["nim_profile"]
    if not value or not (getattr(model, "nim_profiles", None) or []):
        return
    profile = nim_profile_named(model, value)
    if profile is None:
        names = ", ".join(str(p.get("name")) for p in model.nim_profiles[:8] if isinstance(p, dict))
        errors.add("nim_profile", f"{model} offers no profile “{value}”; its profiles: {names}. "
                                  "Leave it empty for automatic.")  # fmt: skip
        return
    res = out["resources"]
    types = res.get("gpu_types") or ([res["gpu_type"]] if res.get("gpu_type") else [])
    if not nim_profile_fits_gpu(profile, types):
        errors.add("nim_profile", f"Profile {profile['name']} is built for {profile['gpu']} GPUs; the "
                                  f"deployment asks for {', '.join(types)}.")  # fmt: skip
        return
    needed = int(profile.get("tp") or 1) * int(profile.get("pp") or 1)
    if isinstance(res.get("gpus"), int) and res["gpus"] != needed:
        errors.add("nim_profile", f"Profile {profile['name']} runs on {needed} GPU{'s' if needed != 1 else ''} "
                                  f"per replica (TP{profile.get('tp')}); set GPUs per replica to {needed}.")  # fmt: skip
        return
    out["nim_profile"] = str(profile["id"])


def bundle_of_version(bundle: ProfileBundle, version: Any) -> ProfileBundle | None:
    """Version ``version`` of ``bundle`` (same name, same owner); None when there is none."""
    if version in (None, "") or version == bundle.version:
        return bundle
    number = parse_id(version)
    if number is None:
        return None
    return bundle.versions().filter(version=number).first()


def with_bundle_version(spec: dict[str, Any], bundle: ProfileBundle) -> dict[str, Any]:
    """A stored spec with its bundle version filled in: revisions saved before specs recorded
    it ran the deployment's bundle of the time, ``bundle``."""
    return spec if "bundle_version" in spec else {**spec, "bundle_version": bundle.version}


def bundle_variables(bundle: ProfileBundle, spec: dict[str, Any]) -> dict[str, str]:
    """The bundle's variables as the engine gets them: each default, overridden by the
    deployment's value (spec ``bundle_vars``); empty values are left out."""
    values: dict[str, str] = {}
    given = spec.get("bundle_vars") or {}
    for var in bundle.variables or []:
        if isinstance(var, dict) and re.fullmatch(r"[a-z][a-z0-9_]*", str(var.get("name", ""))):
            value = given.get(var["name"], var.get("default"))
            if value not in (None, ""):
                values[var["name"]] = str(value).lower() if isinstance(value, bool) else str(value)
    return values


def _clean_bundle_choice(errors: _Errors, out: dict[str, Any], *, bundle: ProfileBundle) -> None:
    """``bundle_version``: which version of the deployment's Profile Bundle a revision runs (the
    service resolves it and passes that version in); ``bundle_vars``: values for its variables."""
    version = out.pop("bundle_version", None)
    if version not in (None, ""):
        version = _as_int(errors, "bundle_version", version, minimum=1, maximum=2**31 - 1)
        if version is not None and version != getattr(bundle, "version", version):
            errors.add("bundle_version", f"This revision runs {bundle}; version {version} was asked.")
    if getattr(bundle, "version", None) is not None:  # (a bundle-shaped stand-in may have none)
        out["bundle_version"] = bundle.version  # every revision says which version it runs
    given = out.pop("bundle_vars", None)
    if given in (None, "", {}):
        return
    if not isinstance(given, dict):
        errors.add("bundle_vars", "Must be a mapping of the bundle's variables to values.")
        return
    names = [str(v.get("name")) for v in bundle.variables or [] if isinstance(v, dict)]
    values: dict[str, str] = {}
    for name, value in given.items():
        if name not in names:
            known = ", ".join(names) or "none"
            errors.add("bundle_vars", f"{bundle} has no variable “{name}” (its variables: {known}).")
            return
        if isinstance(value, (dict, list)):
            errors.add("bundle_vars", f"{name}: give a single value.")
            return
        if value not in (None, ""):
            values[name] = str(value).lower() if isinstance(value, bool) else str(value)
    if values:
        out["bundle_vars"] = values
