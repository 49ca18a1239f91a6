"""Manifest renderers: a deployment revision in, Kubernetes objects out. Pure functions, no I/O.

The blue-green contract with the driver: `render(spec)` gives one revision's objects (the
shared model cache PVC, if any, then the revision's own Deployment `<name>-r<revision>`);
`render_service(spec)` gives the Service `<name>` that selects that revision's pods. The driver
applies the Deployment, waits until it is ready, applies the Service, then deletes the older
revisions' Deployments.
"""

from __future__ import annotations

from typing import Any

import yaml

from . import download, exposure, kserve, nim, nimservice, tei, tgi, torchserve, vllm
from .common import (
    ANNOTATION_ENGINE,
    ANNOTATION_MODEL,
    ANNOTATION_SERVED_MODEL_NAME,
    COMPONENT,
    CONTAINER_NAME,
    GPU_RESOURCE,
    LABEL_COMPONENT,
    LABEL_DEPLOYMENT_ID,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_PROJECT,
    LABEL_REVISION,
    LABEL_VERSION,
    MANAGED_BY,
    MANAGED_SELECTOR,
    PORT_NAME,
    SERVICE_PORT,
    Engine,
    ObjectNames,
    build_deployment,
    build_model_cache_pvc,
    build_service,
    check_reserved_metadata,
    deployment_selector,
    merge_args,
    object_names,
    selector_labels,
    service_host,
)
from .input import (
    AFFINITY_KEYS,
    DEFAULT_CAPACITY_GRACE_SECONDS,
    DEFAULT_STARTUP_BUDGET_SECONDS,
    ENGINES,
    OPERATORS,
    TOLERATION_KEYS,
    Exposure,
    ModelCache,
    NodePool,
    RenderSpec,
    SpecError,
    is_label_value,
    is_quantity,
    validate_common,
)

ENGINE_REGISTRY: dict[str, Engine] = {
    e.name: e for e in (vllm.ENGINE, nim.ENGINE, tgi.ENGINE, tei.ENGINE, torchserve.ENGINE)
}
assert set(ENGINE_REGISTRY) == set(ENGINES)


def engine_for(spec: RenderSpec) -> Engine:
    try:
        return ENGINE_REGISTRY[spec.engine]
    except KeyError:
        raise SpecError("engine", f"must be one of {', '.join(ENGINES)}") from None


def validate_spec(spec: RenderSpec) -> None:
    """Raise SpecError for the first thing in the spec that can't be rendered."""
    validate_common(spec)
    check_reserved_metadata(spec)
    engine = engine_for(spec)
    engine.validate(spec)
    engine.check_env(spec)
    engine.build(spec)  # argument clashes are found while the arguments are put together
    exposure.validate_exposure(spec)
    exposure.check_credential_env(spec)
    if spec.operator is not None and spec.operator not in OPERATORS:
        raise SpecError("operator", f"must be one of {', '.join(OPERATORS)}")


def uses_operator(spec: RenderSpec) -> bool:
    """NIM on a pool with the NIM Operator renders NIMService + NIMCache instead of a Deployment."""
    return spec.operator == "nim-operator" and spec.engine == "nim"


def uses_kserve(spec: RenderSpec) -> bool:
    """vLLM, TGI, TEI on a pool with KServe render ServingRuntime + InferenceService."""
    return spec.operator == "kserve" and spec.engine in kserve.ENGINES


def render(spec: RenderSpec) -> list[dict[str, Any]]:
    """One revision's objects, in the order to apply them: [PVC [, pre-download Job] | NIMCache,]
    Deployment or NIMService, then the route and NetworkPolicy of the pool's exposure."""
    validate_spec(spec)
    engine = engine_for(spec)
    spec = exposure.with_credential(spec)
    objects: list[dict[str, Any]] = []
    if uses_operator(spec):
        objects += nimservice.render(spec)
    elif uses_kserve(spec):
        pvc = build_model_cache_pvc(spec)
        if pvc is not None:
            objects.append(pvc)
        objects += kserve.render(spec, engine)
    else:
        pvc = build_model_cache_pvc(spec)
        if pvc is not None:
            objects.append(pvc)
        if download.needs_download_job(spec, operator=False):
            objects.append(download.build_job(spec, engine))  # the driver holds the Deployment until it is Complete
        deployment = build_deployment(spec, engine)
        if exposure.needs_auth_proxy(spec):
            deployment = exposure.add_auth_proxy(deployment, spec, engine.port(spec))
        objects.append(deployment)
    objects += exposure.exposure_objects(spec, engine.port(spec))
    return objects


def render_service(spec: RenderSpec) -> dict[str, Any]:
    """The deployment's Service, selecting the pods of `spec.revision` only."""
    validate_spec(spec)
    service = build_service(spec)
    target: int | str = exposure.serving_port(spec)
    if target == "http" and uses_operator(spec):
        target = engine_for(spec).port(spec)  # the operator names NIM's port `api`, not ours
    service["spec"]["ports"][0]["targetPort"] = target
    return service


def render_all(spec: RenderSpec) -> list[dict[str, Any]]:
    """Everything, Service last: what the Manifests tab shows and `apply -f` round-trips."""
    return [*render(spec), render_service(spec)]


def render_yaml(spec: RenderSpec) -> str:
    """All objects as one multi-document YAML stream, keys in Kubernetes' usual order."""
    return yaml.safe_dump_all(render_all(spec), sort_keys=False, explicit_start=True, width=120)


__all__ = [
    "AFFINITY_KEYS",
    "TOLERATION_KEYS",
    "is_label_value",
    "is_quantity",
    "DEFAULT_CAPACITY_GRACE_SECONDS",
    "DEFAULT_STARTUP_BUDGET_SECONDS",
    "ANNOTATION_ENGINE",
    "ANNOTATION_MODEL",
    "ANNOTATION_SERVED_MODEL_NAME",
    "COMPONENT",
    "CONTAINER_NAME",
    "ENGINES",
    "ENGINE_REGISTRY",
    "GPU_RESOURCE",
    "LABEL_COMPONENT",
    "LABEL_DEPLOYMENT_ID",
    "LABEL_INSTANCE",
    "LABEL_MANAGED_BY",
    "LABEL_NAME",
    "LABEL_PROJECT",
    "LABEL_REVISION",
    "LABEL_VERSION",
    "MANAGED_BY",
    "MANAGED_SELECTOR",
    "PORT_NAME",
    "SERVICE_PORT",
    "Engine",
    "Exposure",
    "ModelCache",
    "NodePool",
    "ObjectNames",
    "RenderSpec",
    "SpecError",
    "deployment_selector",
    "engine_for",
    "merge_args",
    "object_names",
    "render",
    "render_all",
    "render_service",
    "render_yaml",
    "selector_labels",
    "service_host",
    "validate_spec",
]
