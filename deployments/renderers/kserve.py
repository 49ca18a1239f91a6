"""vLLM, TGI and TEI through KServe: a `ServingRuntime` holding ModelDeck's engine container and
an `InferenceService` per revision that runs it (RawDeployment mode: a Deployment and Service,
no Knative).

Field names follow github.com/kserve/kserve (pkg/apis/serving/v1alpha1/servingruntime_types.go:
ServingRuntimeSpec.supportedModelFormats {name, version, autoSelect}, containers, volumes,
nodeSelector, tolerations, affinity, imagePullSecrets; pkg/apis/serving/v1beta1: predictor
{model {modelFormat {name}, runtime}, minReplicas, maxReplicas, labels (added to the component
pod)}; pkg/constants: the runtime's container must be named `kserve-container`, the annotation
`serving.kserve.io/deploymentMode: RawDeployment` — accepted since v0.x, "Standard" in newer
releases). Status: InferenceService conditions Ready / PredictorReady, modelStatus.
"""

from __future__ import annotations

import copy
from typing import Any

from .common import (
    Engine,
    _metadata,
    build_deployment,
    merge_metadata,
    model_annotations,
    revision_labels,
)
from .input import RenderSpec

RUNTIME_VERSION = "serving.kserve.io/v1alpha1"
ISVC_VERSION = "serving.kserve.io/v1beta1"
CONTAINER_NAME = "kserve-container"
ENGINES = ("vllm", "tgi", "tei")


def object_name(spec: RenderSpec) -> str:
    return f"{spec.deployment_name}-r{spec.revision}"


def predictor_deployment_name(spec: RenderSpec) -> str:
    """KServe's RawDeployment names the predictor's Deployment `<isvc>-predictor`."""
    return f"{object_name(spec)}-predictor"


def model_format(spec: RenderSpec) -> str:
    return f"modeldeck-{spec.engine}"


def render(spec: RenderSpec, engine: Engine) -> list[dict[str, Any]]:
    """[ServingRuntime, InferenceService] from the same pod ModelDeck would run itself."""
    pod = copy.deepcopy(build_deployment(spec, engine)["spec"]["template"]["spec"])
    container = pod["containers"][0]
    container["name"] = CONTAINER_NAME
    runtime_spec: dict[str, Any] = {
        "supportedModelFormats": [{"name": model_format(spec), "version": "1", "autoSelect": False}],
        "containers": [container],
        "volumes": pod.get("volumes") or [],
    }
    for key in ("nodeSelector", "tolerations", "affinity", "imagePullSecrets"):
        if pod.get(key):
            runtime_spec[key] = pod[key]
    labels = revision_labels(spec)
    runtime = {
        "apiVersion": RUNTIME_VERSION,
        "kind": "ServingRuntime",
        "metadata": _metadata(object_name(spec), spec, labels, {}),
        "spec": runtime_spec,
    }
    annotations = {**model_annotations(spec), "serving.kserve.io/deploymentMode": "RawDeployment"}
    isvc = {
        "apiVersion": ISVC_VERSION,
        "kind": "InferenceService",
        "metadata": _metadata(object_name(spec), spec, labels, annotations),
        "spec": {
            "predictor": {
                "minReplicas": spec.replicas,
                "maxReplicas": max(spec.replicas, 1),
                # Our labels on the predictor pods: the deployment's Service and NetworkPolicy
                # select them like ModelDeck's own pods.
                "labels": merge_metadata(labels, spec.labels),
                "model": {"modelFormat": {"name": model_format(spec)}, "runtime": object_name(spec)},
            }
        },
    }
    return [runtime, isvc]
