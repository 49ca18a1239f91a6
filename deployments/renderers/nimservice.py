"""NIM through the NVIDIA NIM Operator: a `NIMService` per revision and a `NIMCache` for the model store.

Field names follow github.com/NVIDIA/k8s-nim-operator api/apps/v1alpha1 (nimservice_types.go,
nimcache_types.go, common_types.go; checked at tag v3.0.2 and main): NIMServiceSpec.image
{repository, tag, pullPolicy, pullSecrets}, authSecret (a Secret with key NGC_API_KEY), env,
storage {nimCache {name, profile} | pvc {...} | emptyDir}, resources, expose.service {type, port},
replicas, labels (the operator merges them into the Deployment's and pods' labels, its own
standard labels winning), nodeSelector, tolerations, affinity; NIMCacheSpec.source.ngc
{authSecret, modelPuller, pullSecret, model {profiles}}, storage.pvc {create, storageClass, size,
volumeAccessMode}. The operator sets NIM_CACHE_PATH, NGC_API_KEY and NIM_SERVER_PORT itself.
Status: NIMService conditions NIM_SERVICE_READY / NIM_SERVICE_FAILED, state, availableReplicas.
"""

from __future__ import annotations

from typing import Any

from . import exposure, nim
from .common import (
    _metadata,
    _node_selector,
    _resources,
    _tolerations,
    build_model_cache_pvc,
    deployment_labels,
    merge_metadata,
    model_annotations,
    model_cache_name,
    pod_affinity,
    revision_labels,
)
from .input import RenderSpec

API_VERSION = "apps.nvidia.com/v1alpha1"
DEFAULT_CACHE_SIZE = "50Gi"
# Set by the operator from its own fields; giving them again in env would clash.
OPERATOR_ENV = frozenset({"NIM_CACHE_PATH", "NGC_API_KEY", "NIM_SERVER_PORT"})


def nimservice_name(spec: RenderSpec) -> str:
    return f"{spec.deployment_name}-r{spec.revision}"


def _image(spec: RenderSpec) -> dict[str, Any]:
    ref = spec.image.split("@", 1)[0]
    repository, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "")
    image: dict[str, Any] = {"repository": repository, "tag": tag or "latest", "pullPolicy": "IfNotPresent"}
    pull = spec.image_pull_secrets if spec.image_pull_secrets is not None else nim.ENGINE.default_image_pull_secrets
    if pull:
        image["pullSecrets"] = list(pull)
    return image


def _auth_secret(spec: RenderSpec) -> str:
    return spec.secret_env.get("NGC_API_KEY", nim.DEFAULT_API_KEY_SECRET)[0]


def uses_nimcache(spec: RenderSpec) -> bool:
    # NIMCache pulls NGC model profiles with the NIM image itself (modelPuller); Hub or custom
    # models served by a multi-LLM NIM use the pod's own cache volume instead.
    return spec.model_source == "ngc"


def build_nimcache(spec: RenderSpec) -> dict[str, Any]:
    size = spec.model_cache.size if spec.model_cache else DEFAULT_CACHE_SIZE
    pvc: dict[str, Any] = {
        "create": True,
        "size": size,
        # One download, read by every replica of every revision: shared unless the user chose.
        "volumeAccessMode": spec.model_cache.access_mode if spec.model_cache else "ReadWriteMany",
    }
    if spec.model_cache and spec.model_cache.storage_class:
        pvc["storageClass"] = spec.model_cache.storage_class
    ngc: dict[str, Any] = {"authSecret": _auth_secret(spec), "modelPuller": spec.image}
    pull = _image(spec).get("pullSecrets")
    if pull:
        ngc["pullSecret"] = pull[0]
    if spec.nim_profile:
        ngc["model"] = {"profiles": [spec.nim_profile]}
    return {
        "apiVersion": API_VERSION,
        "kind": "NIMCache",
        "metadata": _metadata(model_cache_name(spec.deployment_name), spec, deployment_labels(spec), {}),
        "spec": {"source": {"ngc": ngc}, "storage": {"pvc": pvc}},
    }


def build_nimservice(spec: RenderSpec) -> dict[str, Any]:
    parts = nim.build(spec)
    port = nim.ENGINE.port(spec)
    env = [{"name": k, "value": v} for k, v in parts.env if k not in OPERATOR_ENV]
    plain = {**parts.default_env, **spec.env}
    env += [{"name": k, "value": plain[k]} for k in sorted(plain) if k not in OPERATOR_ENV]
    env += [
        {"name": k, "valueFrom": {"secretKeyRef": {"name": s, "key": key}}}
        for k, (s, key) in sorted(parts.secret_env.items())
        if k not in OPERATOR_ENV
    ]
    if uses_nimcache(spec):
        storage: dict[str, Any] = {"nimCache": {"name": model_cache_name(spec.deployment_name)}}
        if spec.nim_profile:
            storage["nimCache"]["profile"] = spec.nim_profile
    elif spec.model_cache:
        storage = {"pvc": {"name": model_cache_name(spec.deployment_name)}}
    else:
        storage = {"emptyDir": {}}
    storage["sharedMemorySizeLimit"] = spec.shm_size_or_default()
    labels = revision_labels(spec)
    body: dict[str, Any] = {
        "image": _image(spec),
        "authSecret": _auth_secret(spec),
        "env": env,
        "storage": storage,
        "replicas": spec.replicas,
        "resources": _resources(spec),
        "expose": {"service": {"type": "ClusterIP", "port": port}},
        # Our labels reach the pods, so the deployment's Service and NetworkPolicy select them.
        "labels": merge_metadata(labels, spec.labels),
        "annotations": merge_metadata(model_annotations(spec), spec.annotations),
        "userID": nim.NIM_UID,
        "groupID": nim.NIM_UID,
    }
    node_selector = _node_selector(spec)
    if node_selector:
        body["nodeSelector"] = node_selector
    tolerations = _tolerations(spec)
    if tolerations:
        body["tolerations"] = tolerations
    affinity = pod_affinity(spec)
    if affinity:
        body["affinity"] = affinity
    if exposure.needs_auth_proxy(spec):
        # sidecarContainers (NIMContainerSpec: name, image{repository,tag}, command, args, env)
        # arrived on the operator's main branch in Feb 2026 (#752), after v3.1.2.
        proxy = exposure.auth_proxy_container(spec, port)
        repository, _, tag = proxy["image"].rpartition(":")
        body["sidecarContainers"] = [
            {
                "name": proxy["name"],
                "image": {"repository": repository, "tag": tag},
                "command": proxy["command"],
                "env": proxy["env"],
            }
        ]
    return {
        "apiVersion": API_VERSION,
        "kind": "NIMService",
        "metadata": _metadata(nimservice_name(spec), spec, labels, model_annotations(spec)),
        "spec": body,
    }


def render(spec: RenderSpec) -> list[dict[str, Any]]:
    objects = []
    if uses_nimcache(spec):
        objects.append(build_nimcache(spec))
    elif spec.model_cache is not None:
        pvc = build_model_cache_pvc(spec)
        if pvc is not None:
            objects.append(pvc)
    objects.append(build_nimservice(spec))
    return objects
