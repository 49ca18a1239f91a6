"""What every engine's manifests share: names, labels, the pod shell, the Service, the cache PVC."""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from . import flags
from .flags import FlagTable
from .input import GPU_PRODUCT_LABEL, RenderSpec, SpecError, is_dns1123_subdomain

# --- Labels and annotations -------------------------------------------------------------------

LABEL_DEPLOYMENT_ID = "modeldeck.io/deployment-id"
LABEL_REVISION = "modeldeck.io/revision"
LABEL_PROJECT = "modeldeck.io/project"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_VERSION = "app.kubernetes.io/version"

MANAGED_BY = "modeldeck"
COMPONENT = "inference"

# The one selector that finds everything ModelDeck created, in any namespace (the poller's).
MANAGED_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"

ANNOTATION_ENGINE = "modeldeck.io/engine"
ANNOTATION_MODEL = "modeldeck.io/model"
ANNOTATION_SERVED_MODEL_NAME = "modeldeck.io/served-model-name"
# Lets `kubectl logs` and `kubectl exec` pick the engine's container without a -c.
ANNOTATION_DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"

# --- Fixed shapes -----------------------------------------------------------------------------

CONTAINER_NAME = "inference"
PORT_NAME = "http"
# The Service always listens on 80 and targets the pods' named port, so the gateway need not
# know the engine, and a blue-green switch from one engine to another keeps the same URL.
SERVICE_PORT = 80
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TOLERATION: dict[str, str] = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}

CACHE_VOLUME = "model-cache"
# Hugging Face-based engines (vLLM, TGI, TEI) all keep the Hub's layout under the same mount,
# so a revision that switches between them finds the weights already downloaded.
HF_CACHE_MOUNT_PATH = "/model-cache"
HF_HOME = f"{HF_CACHE_MOUNT_PATH}/huggingface"
HF_HUB_CACHE = f"{HF_HOME}/hub"
SHM_VOLUME = "dshm"
MODEL_SOURCE_VOLUME = "model-source"
MODEL_MOUNT_PATH = "/mnt/models"

PROBE_PERIOD_SECONDS = 10
# The Deployment's progress deadline also covers pulling the image, which the startup probe
# does not: engine images are 5-20 GB. Without this the Deployment reports
# ProgressDeadlineExceeded while the model is still downloading, and the poller fails it.
IMAGE_PULL_ALLOWANCE_SECONDS = 900
# Endpoints controllers and kube-proxy take a moment to stop sending traffic to a pod that is
# going away; the engine keeps serving meanwhile instead of refusing connections.
PRESTOP_SLEEP_SECONDS = 5


@dataclass(frozen=True)
class ObjectNames:
    """Names of the objects a revision renders to, for the driver's get/delete calls."""

    namespace: str
    deployment: str  # this revision's Deployment
    service: str  # the deployment's Service, shared by all revisions
    model_cache: str | None  # the PVC, shared by all revisions; None without a model cache


def deployment_object_name(deployment_name: str, revision: int) -> str:
    return f"{deployment_name}-r{revision}"


def model_cache_name(deployment_name: str) -> str:
    return f"{deployment_name}-model-cache"


def object_names(spec: RenderSpec) -> ObjectNames:
    return ObjectNames(
        namespace=spec.namespace,
        deployment=deployment_object_name(spec.deployment_name, spec.revision),
        service=spec.deployment_name,
        model_cache=model_cache_name(spec.deployment_name) if spec.model_cache else None,
    )


def deployment_selector(deployment_id: int, revision: int | None = None) -> str:
    """Label selector for one deployment's objects (or one revision's), for list/delete calls."""
    selector = f"{MANAGED_SELECTOR},{LABEL_DEPLOYMENT_ID}={deployment_id}"
    if revision is not None:
        selector += f",{LABEL_REVISION}={revision}"
    return selector


def service_host(spec: RenderSpec) -> str:
    """In-cluster host name of the deployment's Service (port SERVICE_PORT)."""
    return f"{spec.deployment_name}.{spec.namespace}.svc"


def selector_labels(spec: RenderSpec) -> dict[str, str]:
    """What picks one revision's pods: the Deployment's (immutable) selector and the Service's."""
    return {LABEL_DEPLOYMENT_ID: str(spec.deployment_id), LABEL_REVISION: str(spec.revision)}


def deployment_labels(spec: RenderSpec) -> dict[str, str]:
    """Labels of objects that outlive a revision (the model cache PVC).

    They carry no revision: a sweep that deletes an old revision's objects by label must never
    catch the cache every revision shares.
    """
    labels = {
        LABEL_NAME: spec.engine,
        LABEL_INSTANCE: spec.deployment_name,
        LABEL_COMPONENT: COMPONENT,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_DEPLOYMENT_ID: str(spec.deployment_id),
    }
    if spec.project:
        labels[LABEL_PROJECT] = spec.project
    return labels


def revision_labels(spec: RenderSpec) -> dict[str, str]:
    """Labels of one revision's objects (and of the Service, which points at one revision)."""
    labels = deployment_labels(spec)
    labels[LABEL_VERSION] = str(spec.revision)
    labels[LABEL_REVISION] = str(spec.revision)
    return labels


RESERVED_LABELS = frozenset({
    LABEL_DEPLOYMENT_ID, LABEL_REVISION, LABEL_PROJECT, LABEL_NAME, LABEL_INSTANCE,
    LABEL_COMPONENT, LABEL_MANAGED_BY, LABEL_VERSION,
})  # fmt: skip
RESERVED_ANNOTATIONS = frozenset({
    ANNOTATION_ENGINE, ANNOTATION_MODEL, ANNOTATION_SERVED_MODEL_NAME, ANNOTATION_DEFAULT_CONTAINER,
})  # fmt: skip


def check_reserved_metadata(spec: RenderSpec) -> None:
    """Labels and annotations ModelDeck sets itself can't be given: the poller, the selectors
    and the gateway find objects by them. Said at save time, rather than dropped in silence."""
    for field_name, given, reserved in (
        ("labels", spec.labels, RESERVED_LABELS),
        ("annotations", spec.annotations, RESERVED_ANNOTATIONS),
    ):
        clash = sorted(set(given) & reserved)
        if clash:
            raise SpecError(
                field_name, f"“{clash[0]}” is set by ModelDeck; use a key of your own"
            )


# Images built for CPUs (vLLM's vllm-cpu-release-repo, TGI's -intel-cpu tags, TEI's cpu- tags).
def is_cpu_image(image: str) -> bool:
    return "cpu" in image.rsplit("/", 2)[-1].lower() or "cpu" in image.split(":")[0].lower()


def check_gpus_for_gpu_image(spec: RenderSpec) -> None:
    """A GPU build of vLLM or TGI with no GPU crash-loops (no CUDA device): refused unless the
    image is a CPU build."""
    if spec.gpus == 0 and not is_cpu_image(spec.image):
        raise SpecError(
            "gpus", f"“{spec.image}” is a GPU build of {spec.engine}: give it at least one GPU, "
            "or use a CPU image",
        )  # fmt: skip


def merge_metadata(ours: Mapping[str, str], users: Mapping[str, str]) -> dict[str, str]:
    """User labels/annotations added to ours; on a clash ours win, since the poller, the
    selectors and the driver all depend on them."""
    merged = dict(ours)
    for key in sorted(users):
        merged.setdefault(key, users[key])
    return merged


def model_annotations(spec: RenderSpec) -> dict[str, str]:
    return {
        ANNOTATION_ENGINE: spec.engine,
        ANNOTATION_MODEL: spec.model_ref,
        ANNOTATION_SERVED_MODEL_NAME: spec.served_name(),
    }


# --- Engine arguments -------------------------------------------------------------------------


def _is_flag(token: str) -> bool:
    # "-1" or "-.5" is a (negative) value, "-tp" is a short flag.
    return token.startswith("-") and len(token) > 1 and not (token[1].isdigit() or token[1] == ".")


def flag_key(token: str) -> str:
    """The identity of a flag: `--x=1`, `--x 1` and `--no-x` all set the same thing."""
    name = token.split("=", 1)[0]
    if name.startswith("--no-"):
        name = "--" + name[len("--no-") :]
    return name


def _options(args: Sequence[str]) -> list[tuple[str | None, list[str]]]:
    """Split argv into (flag key, tokens) groups; tokens before the first flag get key None."""
    groups: list[tuple[str | None, list[str]]] = []
    for token in args:
        if _is_flag(token):
            groups.append((flag_key(token), [token]))
        elif groups:
            groups[-1][1].append(token)
        else:
            groups.append((None, [token]))
    return groups


def merge_args(*sources: Sequence[str]) -> list[str]:
    """Concatenate argument lists where a later list wins for a flag an earlier one also sets.

    `merge_args(["--a", "1", "--b"], ["--a", "2"])` gives `["--b", "--a", "2"]`. A flag repeated
    inside one list is kept as is, since some flags are meant to repeat. Positional arguments
    before the first flag (vLLM's model) are never dropped.
    """
    merged: list[tuple[str | None, list[str]]] = []
    for source in sources:
        groups = _options(source)
        overridden = {key for key, _ in groups if key is not None}
        merged = [(key, tokens) for key, tokens in merged if key is None or key not in overridden]
        merged.extend(groups)
    return [token for _, tokens in merged for token in tokens]


def flags_in(args: Sequence[str]) -> set[str]:
    return {key for key, _ in _options(args) if key is not None}


def engine_var_flags(engine_vars: Mapping[str, str], table: FlagTable | None) -> list[str]:
    """Profile Bundle variables as CLI flags: `gpu_memory_utilization=0.9` becomes
    `--gpu-memory-utilization 0.9`. Booleans follow the flag's real kind in the engine's table:
    "true" is the bare flag; "false" is `--no-flag` for a BooleanOptionalAction flag, and left
    out for a store_true one (vLLM 0.8.5 has no `--no-enforce-eager`: it exits 2). A flag that
    takes a value gets "true"/"false" as its value. An empty value means "not set"."""
    args: list[str] = []
    for key in sorted(engine_vars):
        value = engine_vars[key].strip()
        name = "--" + key.replace("_", "-")
        if not value:
            continue
        kind = table.kind(name) if table else None
        if value.lower() in ("true", "false") and kind == flags.VALUE:
            args += [name, value.lower()]
        elif value.lower() == "true":
            args.append(name)
        elif value.lower() == "false":
            if kind == flags.NEGATABLE:
                args.append("--no-" + name[2:])
        else:
            args += [name, value]
    return args


def engine_args(
    spec: RenderSpec, base: Sequence[str], reserved: frozenset[str], *, table: FlagTable | None
) -> list[str]:
    """ModelDeck's flags, then the bundle's variables, default args and the deployment's extra
    args, each later one winning. Flags ModelDeck depends on (port, host, served name) may not
    be overridden: probes and the Service would point at nothing. Where the image's engine
    version has a recorded flag table, a flag it lacks is refused now rather than as exit 2."""
    var_args = engine_var_flags(spec.engine_vars, table)
    exact = flags.table_for(spec.engine, spec.image)
    for field_name, args in (
        ("engine_vars", var_args),
        ("bundle_args", spec.bundle_args),
        ("extra_args", spec.extra_args),
    ):
        clash = sorted(flags_in(args) & reserved)
        if clash:
            raise SpecError(field_name, f"{clash[0]} is set by ModelDeck and can't be overridden")
        problems = exact.problems(args) if exact else []
        if problems:
            raise SpecError(field_name, problems[0])
    return merge_args(base, var_args, spec.bundle_args, spec.extra_args)


def boolean_flag(table: FlagTable | None, name: str, on: bool) -> list[str]:
    """`--name` when on; when off, `--no-name` if the flag is negatable, else nothing (a
    store_true flag is off unless given)."""
    if on:
        return [name]
    kind = table.kind(name) if table else None
    return ["--no-" + name[2:]] if kind == flags.NEGATABLE else []


# --- Model location ---------------------------------------------------------------------------

_HF_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


@dataclass(frozen=True)
class ModelLocation:
    """Where an engine finds the weights: a Hub id, a URI it reads itself, or a mounted path."""

    ref: str  # what the engine is told to load
    revision: str | None = None  # Hub revision, only for Hugging Face models
    volume: dict[str, Any] | None = None
    mount: dict[str, Any] | None = None


def parse_pvc_uri(uri: str) -> tuple[str, str]:
    """`pvc://claim/some/dir` -> ("claim", "some/dir")."""
    rest = uri[len("pvc://") :]
    claim, _, path = rest.partition("/")
    path = path.strip("/")
    if not is_dns1123_subdomain(claim):
        raise SpecError("model_ref", f"{claim!r} is not a valid PersistentVolumeClaim name")
    if path and any(part in ("", ".", "..") for part in path.split("/")):
        raise SpecError("model_ref", "the path inside the claim may not contain '.', '..' or '//'")
    return claim, path


def check_model_source(
    spec: RenderSpec, *, sources: tuple[str, ...], schemes: tuple[str, ...]
) -> None:
    """Refuse model sources the engine can't load, at deploy time rather than as a crash loop."""
    if spec.model_source not in sources:
        raise SpecError("model_source", f"the {spec.engine} engine can't serve {spec.model_source} models")
    if spec.model_source == "huggingface" and not _HF_REPO_ID.match(spec.model_ref):
        raise SpecError("model_ref", "must be a Hugging Face repo id such as org/model")
    if spec.model_source == "custom":
        scheme = spec.model_ref.split("://", 1)[0] if "://" in spec.model_ref else ""
        if scheme not in schemes:
            allowed = ", ".join(f"{s}://" for s in schemes)
            raise SpecError("model_ref", f"the {spec.engine} engine loads custom models from {allowed} only")
        if scheme == "pvc":
            parse_pvc_uri(spec.model_ref)


def locate_model(spec: RenderSpec) -> ModelLocation:
    if spec.model_source == "huggingface":
        return ModelLocation(ref=spec.model_ref, revision=spec.model_revision)
    if spec.model_ref.startswith("pvc://"):
        # The whole claim is mounted read-only: an engine has no business writing to the
        # user's model store, and several revisions may read it at once.
        claim, path = parse_pvc_uri(spec.model_ref)
        return ModelLocation(
            ref=f"{MODEL_MOUNT_PATH}/{path}" if path else MODEL_MOUNT_PATH,
            volume={
                "name": MODEL_SOURCE_VOLUME,
                "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
            },
            mount={"name": MODEL_SOURCE_VOLUME, "mountPath": MODEL_MOUNT_PATH, "readOnly": True},
        )
    # s3:// and other URIs are handed to the engine as is (vLLM reads them itself); credentials
    # come through secret_env, loader flags through extra_args.
    return ModelLocation(ref=spec.model_ref)


# --- The engine contract ----------------------------------------------------------------------


@dataclass(frozen=True)
class EngineParts:
    """The engine-specific part of the pod: how to start the server and what it needs."""

    command: tuple[str, ...] = ()  # empty: the image's entrypoint
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # set by ModelDeck, in this order
    default_env: Mapping[str, str] = field(default_factory=dict)  # the user's env may override
    secret_env: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    volumes: tuple[dict[str, Any], ...] = ()
    volume_mounts: tuple[dict[str, Any], ...] = ()
    init_containers: tuple[dict[str, Any], ...] = ()  # run before the engine (TorchServe: fetch the .mar)


@dataclass(frozen=True)
class Engine:
    """One inference engine: its fixed facts, its rules, and how it fills the pod."""

    name: str
    default_port: int
    startup_path: str
    readiness_path: str
    liveness_path: str
    cache_mount_path: str
    owned_env: frozenset[str]  # env vars ModelDeck sets; the user's env may not
    validate: Callable[[RenderSpec], None]
    build: Callable[[RenderSpec], EngineParts]
    default_image_pull_secrets: tuple[str, ...] = ()
    pod_security_context: Mapping[str, Any] = field(default_factory=dict)
    # The image to run when it depends on more than the spec's image (TEI: the GPU's arch).
    image_for: Callable[[RenderSpec], str] | None = None

    def image(self, spec: RenderSpec) -> str:
        return self.image_for(spec) if self.image_for else spec.image

    def port(self, spec: RenderSpec) -> int:
        return spec.port or self.default_port

    def check_env(self, spec: RenderSpec) -> None:
        clash = sorted(set(spec.env) & self.owned_env)
        if clash:
            raise SpecError("env", f"“{clash[0]}” is set by ModelDeck for {self.name}")


# --- Objects ----------------------------------------------------------------------------------


def _metadata(
    name: str, spec: RenderSpec, labels: Mapping[str, str], annotations: Mapping[str, str]
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": spec.namespace,
        "labels": merge_metadata(labels, spec.labels),
    }
    merged_annotations = merge_metadata(annotations, spec.annotations)
    if merged_annotations:
        metadata["annotations"] = merged_annotations
    return metadata


def build_model_cache_pvc(spec: RenderSpec) -> dict[str, Any] | None:
    if spec.model_cache is None:
        return None
    pvc_spec: dict[str, Any] = {
        "accessModes": [spec.model_cache.access_mode],
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": spec.model_cache.size}},
    }
    if spec.model_cache.storage_class:
        pvc_spec["storageClassName"] = spec.model_cache.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(
            model_cache_name(spec.deployment_name), spec, deployment_labels(spec), {}
        ),
        "spec": pvc_spec,
    }


def build_service(spec: RenderSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec.deployment_name, spec, revision_labels(spec), {}),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(spec),
            "ports": [
                {
                    "name": PORT_NAME,
                    "port": SERVICE_PORT,
                    "targetPort": PORT_NAME,
                    "protocol": "TCP",
                    "appProtocol": "http",
                }
            ],
        },
    }


def _probe(path: str, *, period: int, timeout: int, failure_threshold: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": PORT_NAME, "scheme": "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "successThreshold": 1,
        "failureThreshold": failure_threshold,
    }


def progress_deadline_seconds(spec: RenderSpec) -> int:
    """Kubernetes marks the Deployment ProgressDeadlineExceeded (and the poller fails it) when no
    pod became ready within this: so it covers a wait for capacity, the image pull and the whole
    startup budget, in that order, or a slow but healthy start would be failed half-way."""
    return (
        spec.capacity_grace_seconds + IMAGE_PULL_ALLOWANCE_SECONDS + spec.startup_budget_seconds
    )


def startup_failure_threshold(spec: RenderSpec) -> int:
    return math.ceil(spec.startup_budget_seconds / PROBE_PERIOD_SECONDS)


def _tolerations(spec: RenderSpec) -> list[dict[str, Any]]:
    tolerations = [copy.deepcopy(dict(t)) for t in spec.tolerations]
    if spec.gpus > 0:
        covered = any(
            t.get("key") == GPU_RESOURCE or (not t.get("key") and t.get("operator") == "Exists")
            for t in tolerations
        )
        # GPU nodes are commonly tainted so that only GPU workloads land there.
        if not covered:
            tolerations.append(dict(GPU_TOLERATION))
    return tolerations


def _node_selector(spec: RenderSpec) -> dict[str, str]:
    selector = {key: spec.node_selector[key] for key in sorted(spec.node_selector)}
    if spec.gpu_type and len(spec.gpu_types) < 2:  # several flavors: an affinity `In` list
        # validate_common() refuses a node selector that contradicts gpu_type.
        selector[GPU_PRODUCT_LABEL] = spec.gpu_type
    return selector


def node_pool_weights(count: int) -> list[int]:
    """Preferred-affinity weights for node pools in order: 100 for the first down to 1 for the
    last (kube-scheduler takes 1..100), evenly spread so each pool outranks the next."""
    if count <= 1:
        return [100] * count
    return [round(100 - i * 99 / (count - 1)) for i in range(count)]


def pod_affinity(spec: RenderSpec) -> dict[str, Any] | None:
    """The spec's affinity with the scheduling ModelDeck adds: GPU flavors as a required
    `nvidia.com/gpu.product In [...]`, node pools as required (their union) and preferred
    (descending weights). Required terms are ORed by Kubernetes, so each added requirement is
    ANDed into every term the user gave."""
    affinity = copy.deepcopy(dict(spec.affinity)) if spec.affinity else {}
    alternatives: list[list[dict[str, Any]]] = [[]]  # OR of ANDs to add
    if len(spec.gpu_types) > 1:
        gpu = {"key": GPU_PRODUCT_LABEL, "operator": "In", "values": list(spec.gpu_types)}
        alternatives = [[gpu]]
    if spec.node_pools:
        union: dict[str, list[str]] = {}
        for pool in spec.node_pools:
            values = union.setdefault(pool.key, [])
            values += [v for v in pool.values if v not in values]
        pools = [{"key": key, "operator": "In", "values": values} for key, values in union.items()]
        alternatives = [exprs + [pool] for exprs in alternatives for pool in pools]
    if alternatives == [[]]:
        return affinity or None
    node = affinity.setdefault("nodeAffinity", {})
    required = node.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
    terms = required.get("nodeSelectorTerms") or [{}]
    required["nodeSelectorTerms"] = [
        {**term, "matchExpressions": [*(term.get("matchExpressions") or []), *exprs]}
        for term in terms
        for exprs in alternatives
    ]
    if spec.node_pools:
        preferred = node.setdefault("preferredDuringSchedulingIgnoredDuringExecution", [])
        for pool, weight in zip(spec.node_pools, node_pool_weights(len(spec.node_pools)), strict=True):
            expr = {"key": pool.key, "operator": "In", "values": list(pool.values)}
            preferred.append({"weight": weight, "preference": {"matchExpressions": [expr]}})
    return affinity


def _env(spec: RenderSpec, parts: EngineParts) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": name, "value": value} for name, value in parts.env]
    plain = {**parts.default_env, **spec.env}
    env += [{"name": name, "value": plain[name]} for name in sorted(plain)]
    # Only a reference travels with the manifest; the value stays in the Secret.
    env += [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        for name, (secret, key) in sorted(parts.secret_env.items())
    ]
    return env


def _bytes(quantity: str) -> int:
    return int(parse_quantity(quantity))


def format_bytes(n: int) -> str:
    """Bytes as a Kubernetes quantity in the largest binary unit that divides them."""
    for unit, size in (("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if n and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def pod_memory(spec: RenderSpec) -> str:
    """The container's memory request and limit: what the engine needs plus /dev/shm.

    /dev/shm is an emptyDir with medium Memory, a tmpfs whose pages are charged to the
    container's memory cgroup: with 16Gi of NCCL buffers in it, a 16Gi limit leaves the engine
    nothing and the kernel OOM-kills it. The limit is raised by the shm size instead."""
    return format_bytes(_bytes(spec.memory) + _bytes(spec.shm_size_or_default()))


# The scratch cache (no PVC) holds the weights once, plus the tokenizer, config and whatever
# the engine compiles (CUDA graphs, TRT-LLM engines): 25% and 5Gi on top of the weights.
SCRATCH_CACHE_DEFAULT = "50Gi"
SCRATCH_CACHE_MINIMUM = 10 << 30


def scratch_cache_size(spec: RenderSpec) -> str:
    """sizeLimit of the cache emptyDir, and the pod's ephemeral-storage request for it, so that
    the scheduler only picks a node with that much disk free and the kubelet does not evict
    the pod for filling the node's disk."""
    if not spec.model_bytes:
        return SCRATCH_CACHE_DEFAULT
    wanted = max(int(spec.model_bytes * 1.25) + (5 << 30), SCRATCH_CACHE_MINIMUM)
    return f"{math.ceil(wanted / (1 << 30))}Gi"


def _resources(spec: RenderSpec) -> dict[str, Any]:
    # No CPU limit: CFS throttling of the tokenizer and scheduler threads shows up directly as
    # latency, and the CPU request already reserves the node's share.
    memory = pod_memory(spec)
    requests: dict[str, Any] = {"cpu": spec.cpu, "memory": memory}
    limits: dict[str, Any] = {"memory": memory}
    if spec.model_cache is None:
        requests["ephemeral-storage"] = scratch_cache_size(spec)
    if spec.gpus > 0:
        # Extended resources can't be overcommitted: Kubernetes requires requests == limits.
        requests[GPU_RESOURCE] = str(spec.gpus)
        limits[GPU_RESOURCE] = str(spec.gpus)
    return {"requests": requests, "limits": limits}


def build_deployment(spec: RenderSpec, engine: Engine) -> dict[str, Any]:
    parts = engine.build(spec)
    port = engine.port(spec)
    cache_volume: dict[str, Any] = {"name": CACHE_VOLUME}
    if spec.model_cache is not None:
        cache_volume["persistentVolumeClaim"] = {
            "claimName": model_cache_name(spec.deployment_name)
        }
    else:
        cache_volume["emptyDir"] = {"sizeLimit": scratch_cache_size(spec)}
    volumes = [
        {
            "name": SHM_VOLUME,
            "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size_or_default()},
        },
        cache_volume,
        *(copy.deepcopy(v) for v in parts.volumes),
        *({"name": f"data-{i}", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
          for i, (claim, _) in enumerate(spec.data_volumes)),
    ]
    mounts = [
        {"name": SHM_VOLUME, "mountPath": "/dev/shm"},
        {"name": CACHE_VOLUME, "mountPath": engine.cache_mount_path},
        *(copy.deepcopy(m) for m in parts.volume_mounts),
        *({"name": f"data-{i}", "mountPath": path, "readOnly": True} for i, (_, path) in enumerate(spec.data_volumes)),
    ]

    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": engine.image(spec),
        "imagePullPolicy": "IfNotPresent",
    }
    if parts.command:
        container["command"] = list(parts.command)
    if parts.args:
        container["args"] = list(parts.args)
    container.update(
        {
            "ports": [{"name": PORT_NAME, "containerPort": port, "protocol": "TCP"}],
            "env": _env(spec, parts),
            "resources": _resources(spec),
            "volumeMounts": mounts,
            # Until the weights are downloaded and loaded the server isn't listening; the
            # startup probe holds off the other two for up to the whole startup budget.
            "startupProbe": _probe(
                engine.startup_path,
                period=PROBE_PERIOD_SECONDS,
                timeout=5,
                failure_threshold=startup_failure_threshold(spec),
            ),
            "readinessProbe": _probe(
                engine.readiness_path, period=PROBE_PERIOD_SECONDS, timeout=5, failure_threshold=3
            ),
            # Lenient: a server busy with a large batch answers health checks late, and
            # restarting it then would throw away minutes of loading at peak load.
            "livenessProbe": _probe(
                engine.liveness_path, period=15, timeout=10, failure_threshold=6
            ),
            "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SLEEP_SECONDS)]}}},
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "privileged": False,
                "capabilities": {"drop": ["ALL"]},
            },
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }
    )

    pod_security_context: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
    pod_security_context.update(copy.deepcopy(dict(engine.pod_security_context)))
    pod_spec: dict[str, Any] = {
        **({"initContainers": list(parts.init_containers)} if parts.init_containers else {}),
        "containers": [container],
        "volumes": volumes,
        "enableServiceLinks": False,  # hundreds of *_SERVICE_HOST vars help nobody, and can clash
        "automountServiceAccountToken": False,  # the engine never talks to the Kubernetes API
        "terminationGracePeriodSeconds": spec.termination_grace_seconds + PRESTOP_SLEEP_SECONDS,
        "securityContext": pod_security_context,
    }
    pull_secrets = (
        spec.image_pull_secrets
        if spec.image_pull_secrets is not None
        else engine.default_image_pull_secrets
    )
    if pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in pull_secrets]
    node_selector = _node_selector(spec)
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    tolerations = _tolerations(spec)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    affinity = pod_affinity(spec)
    if affinity:
        pod_spec["affinity"] = affinity

    labels = revision_labels(spec)
    annotations = model_annotations(spec)
    pod_annotations = {**annotations, ANNOTATION_DEFAULT_CONTAINER: CONTAINER_NAME}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(
            deployment_object_name(spec.deployment_name, spec.revision), spec, labels, annotations
        ),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector_labels(spec)},
            # A replica is never taken away before its replacement is ready.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            # A revision's pod template never changes (revisions are immutable), so old
            # ReplicaSets are only clutter.
            "revisionHistoryLimit": 1,
            "progressDeadlineSeconds": progress_deadline_seconds(spec),
            "template": {
                "metadata": {
                    "labels": merge_metadata(labels, spec.labels),
                    "annotations": merge_metadata(pod_annotations, spec.annotations),
                },
                "spec": pod_spec,
            },
        },
    }
