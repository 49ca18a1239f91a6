"""The renderers' input (RenderSpec): one revision of a deployment as plain, Django-free data,
and the Kubernetes syntax rules every engine shares. The deployment spec itself, its defaults
and its validation are deployments/spec.py, which builds this input and applies these rules."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from . import k8s_schema

ENGINES = ("vllm", "nim", "tgi", "tei", "torchserve")
MODEL_SOURCES = ("huggingface", "ngc", "custom")
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"  # set by NVIDIA GPU feature discovery
PVC_ACCESS_MODES = ("ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod", "ReadOnlyMany")

# A large model's download plus its load onto the GPUs can take tens of minutes; the default
# startup budget is generous on purpose, because a pod killed at 99% downloaded starts over.
DEFAULT_STARTUP_BUDGET_SECONDS = 1800

# How long a pod may wait for a node with room (cluster-autoscaler or Karpenter adding a GPU node
# takes minutes) before the deployment is Failed.
DEFAULT_CAPACITY_GRACE_SECONDS = 900

# Long generations are still streaming when a pod is told to stop; give them time to finish.
DEFAULT_TERMINATION_GRACE_SECONDS = 60

# Kubernetes' own validation rules, so that a bad spec fails here with a field name instead of
# as a 422 from the API server half-way through a push.
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_QUANTITY = re.compile(
    r"^\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)
_ENGINE_VAR = re.compile(r"^[a-z][a-z0-9_]*$")
TOLERATION_KEYS = ("key", "operator", "value", "effect", "tolerationSeconds")
AFFINITY_KEYS = ("nodeAffinity", "podAffinity", "podAntiAffinity")
_TOLERATION_KEYS = frozenset(TOLERATION_KEYS)
_AFFINITY_KEYS = frozenset(AFFINITY_KEYS)

# Plain env vars that would put a credential into the pod spec (and so into etcd, the Manifests
# tab and every `kubectl get -o yaml`). Credentials must come from a Secret via secret_env.
CREDENTIAL_ENV_NAMES = frozenset(
    {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_API_TOKEN", "NGC_API_KEY", "NVIDIA_API_KEY",
     "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
)


@dataclass(frozen=True)
class NodePool:
    """One node pool of a deployment's ordered preference: the nodes whose label `key` has one
    of `values` (Run:ai's node pools are a label on the nodes, e.g. run.ai/node-pool)."""

    key: str
    values: tuple[str, ...]


MAX_NODE_POOLS = 16  # kube-scheduler weights are 1..100: room for a clear descending order


class SpecError(ValueError):
    """A spec the renderers cannot turn into valid Kubernetes objects; `field` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class ModelCache:
    """A PersistentVolumeClaim the model weights are downloaded to, shared by all revisions."""

    size: str
    storage_class: str | None = None
    # Every replica of every revision mounts the same claim, possibly on different nodes at the
    # same time during a blue-green switch, hence ReadWriteMany. Single-node clusters whose
    # storage only offers ReadWriteOnce (local-path, hostpath) can ask for that instead.
    access_mode: str = "ReadWriteMany"


@dataclass(frozen=True)
class Exposure:
    """How the deployment is reached from outside the cluster (the pool's exposure); see
    renderers/exposure.py. mode: in_cluster | ingress | gateway_api."""

    mode: str = "in_cluster"
    base_host: str = ""
    ingress_class: str = ""
    tls_secret: str = ""
    gateway_name: str = ""
    gateway_namespace: str = ""
    # Namespaces whose pods may call the engines (ingress controller, gateway proxies, ModelDeck).
    admit_namespaces: tuple[str, ...] = ()


OPERATORS = ("nim-operator", "kserve")


@dataclass(frozen=True)
class RenderSpec:
    """Everything a renderer needs to turn one revision into Kubernetes objects.

    Built by the Django layer from a deployment revision, its bundle and its project. Sequences
    are stored as tuples and mappings are copied, so a spec can't change behind a renderer's back.
    """

    deployment_id: int
    deployment_name: str  # DNS-1035 label: it is also the Service's name
    revision: int
    namespace: str
    engine: str  # one of ENGINES
    image: str  # full reference with a tag or digest
    model_ref: str  # HF repo id; s3://bucket/path or pvc://claim/path; NIM: the model name
    model_source: str = "huggingface"  # one of MODEL_SOURCES
    model_revision: str | None = None  # Hugging Face commit sha the revision is pinned to
    served_model_name: str | None = None  # the name clients send as "model"; see served_name()
    project: str | None = None  # project slug, for the modeldeck.io/project label
    replicas: int = 1
    context_length: int | None = None
    prompt_caching: bool = True  # vLLM and TGI cache prefixes by default; so do we
    cpu: str = "4"
    memory: str = "16Gi"
    gpus: int = 1  # per replica
    gpu_type: str | None = None  # value of the nvidia.com/gpu.product node label
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # name -> (secret, key)
    # None means the engine's default (NIM: modeldeck-ngc-pull); () means none at all.
    image_pull_secrets: tuple[str, ...] | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    node_selector: Mapping[str, str] = field(default_factory=dict)
    affinity: Mapping[str, Any] | None = None
    bundle_args: tuple[str, ...] = ()  # the Profile Bundle's default engine arguments
    extra_args: tuple[str, ...] = ()  # deployment-level arguments; they win over the bundle's
    engine_vars: Mapping[str, str] = field(default_factory=dict)  # bundle variables -> flags/env
    model_cache: ModelCache | None = None
    nim_profile: str | None = None
    max_client_batch_size: int | None = None  # TEI only
    shm_size: str | None = None  # None: see shm_size_or_default()
    # Gallery data sources (deployments/galleries.py): (claim name, mount path), mounted read-only.
    data_volumes: tuple[tuple[str, str], ...] = ()
    port: int | None = None  # None: the engine's default port
    startup_budget_seconds: int = DEFAULT_STARTUP_BUDGET_SECONDS
    termination_grace_seconds: int = DEFAULT_TERMINATION_GRACE_SECONDS
    exposure: Exposure | None = None  # None: in-cluster Service only, no route, no NetworkPolicy
    # The engine requires the deployment's credential (a Secret ModelDeck owns; renderers/exposure.py).
    engine_credential: bool = False
    operator: str | None = None  # render operator-native objects: one of OPERATORS
    capacity_grace_seconds: int = DEFAULT_CAPACITY_GRACE_SECONDS
    model_bytes: int | None = None  # size of the weights, where the catalog knows it
    # Hub files the pre-download Job fetches (renderers/download.py); () means the whole repo.
    download_files: tuple[str, ...] = ()
    # An uploaded artifact (model_ref artifact://<model id>/<file>): its sha256, checked in the
    # pod, and the Secret holding the short-lived signed URL the pod fetches it from.
    model_sha256: str | None = None
    artifact_url_secret: str | None = None
    # Several GPU flavors (nvidia.com/gpu.product values), any of them; the first is gpu_type.
    gpu_types: tuple[str, ...] = ()
    # Node pools in order of preference; scheduling is limited to their union.
    node_pools: tuple[NodePool, ...] = ()

    def __post_init__(self) -> None:
        # Detach from what the caller handed in: lists become tuples, mappings are copied.
        set_ = object.__setattr__
        for name in ("env", "labels", "annotations", "node_selector", "engine_vars"):
            set_(self, name, dict(getattr(self, name) or {}))
        set_(self, "secret_env", {k: tuple(v) for k, v in dict(self.secret_env or {}).items()})
        for name in ("bundle_args", "extra_args", "download_files"):
            set_(self, name, tuple(getattr(self, name) or ()))
        set_(self, "tolerations", tuple(copy.deepcopy(t) for t in self.tolerations or ()))
        if self.image_pull_secrets is not None:
            set_(self, "image_pull_secrets", tuple(self.image_pull_secrets))
        if self.affinity is not None:
            set_(self, "affinity", copy.deepcopy(self.affinity))
        set_(self, "gpu_types", tuple(self.gpu_types or ()))
        set_(self, "node_pools", tuple(
            NodePool(p["key"], tuple(p["values"])) if isinstance(p, Mapping) else p
            for p in self.node_pools or ()
        ))  # fmt: skip
        if isinstance(self.model_cache, Mapping):
            set_(self, "model_cache", ModelCache(**self.model_cache))
        if isinstance(self.exposure, Mapping):
            exposure = dict(self.exposure)
            exposure["admit_namespaces"] = tuple(exposure.get("admit_namespaces") or ())
            set_(self, "exposure", Exposure(**exposure))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RenderSpec:
        """Build a spec from JSON-shaped data (a revision's stored spec); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(unknown[0], "is not a render spec field")
        for f in fields(cls):
            if f.default is MISSING and f.default_factory is MISSING and f.name not in data:
                raise SpecError(f.name, "is required")
        cache = data.get("model_cache")
        if isinstance(cache, Mapping):
            cache_fields = {f.name for f in fields(ModelCache)}
            if "size" not in cache or not set(cache) <= cache_fields:
                raise SpecError(
                    "model_cache", f"takes {', '.join(sorted(cache_fields))}; size is required"
                )
        try:
            return cls(**data)
        except (TypeError, ValueError) as exc:  # e.g. a number where a list belongs
            raise SpecError("spec", str(exc)) from exc

    def served_name(self) -> str:
        """The model name clients use; a mounted path makes a poor name, so custom models fall
        back to the deployment's name."""
        if self.served_model_name:
            return self.served_model_name
        if self.model_source == "custom":
            return self.deployment_name
        return self.model_ref

    def shm_size_or_default(self) -> str:
        """Size of /dev/shm.

        Tensor parallelism moves activations between the GPU worker processes through shared
        memory (NCCL), which needs gigabytes; a single-GPU server only uses it for inter-process
        queues, and a CPU one barely at all. /dev/shm is a tmpfs whose pages count against the
        container's memory limit, so it is not made bigger than the work needs.
        """
        if self.shm_size:
            return self.shm_size
        if self.gpus > 1:
            return "16Gi"
        if self.gpus == 1:
            return "2Gi"
        return "1Gi"

    def validate(self) -> None:
        """Raise SpecError for anything the renderers can't render, engine rules included."""
        # The engine rules live with the engines; they import this module, hence the late import.
        from deployments.renderers import validate_spec

        validate_spec(self)


def validate_common(spec: RenderSpec) -> None:
    """The rules every engine shares. Engine-specific rules are in each engine's module."""
    _check_int("deployment_id", spec.deployment_id, minimum=1)
    _check_int("revision", spec.revision, minimum=1)
    if not _is_dns1035_label(spec.deployment_name):
        raise SpecError(
            "deployment_name",
            "must be at most 63 lower-case letters, digits and '-', start with a letter and "
            "end with a letter or digit",
        )
    if not (len(spec.namespace) <= 63 and _DNS1123_LABEL.match(spec.namespace)):
        raise SpecError("namespace", "must be a DNS-1123 label")
    if spec.engine not in ENGINES:
        raise SpecError("engine", f"must be one of {', '.join(ENGINES)}")
    if spec.model_source not in MODEL_SOURCES:
        raise SpecError("model_source", f"must be one of {', '.join(MODEL_SOURCES)}")
    _check_image(spec.image)
    if not spec.model_ref or spec.model_ref != spec.model_ref.strip():
        raise SpecError("model_ref", "is required and may not have surrounding spaces")
    if spec.model_revision is not None and not re.fullmatch(
        r"[A-Za-z0-9._/-]+", spec.model_revision
    ):
        raise SpecError("model_revision", "must be a commit sha, tag or branch name")
    if spec.served_model_name is not None and (
        not spec.served_model_name.strip() or any(c.isspace() for c in spec.served_model_name)
    ):
        raise SpecError("served_model_name", "may not be blank or contain spaces")
    if spec.project is not None and not is_label_value(spec.project):
        raise SpecError("project", "must be a valid label value (the project's slug)")

    _check_int("replicas", spec.replicas, minimum=0)
    _check_int("gpus", spec.gpus, minimum=0)
    if spec.context_length is not None:
        _check_int("context_length", spec.context_length, minimum=2)
    if not isinstance(spec.prompt_caching, bool):
        raise SpecError("prompt_caching", "must be true or false")
    _check_quantity("cpu", spec.cpu)
    _check_quantity("memory", spec.memory)
    if spec.shm_size is not None:
        _check_quantity("shm_size", spec.shm_size)
    if spec.gpu_type is not None:
        if spec.gpus == 0:
            raise SpecError("gpu_type", "only applies when gpus is at least 1")
        if not spec.gpu_type or not is_label_value(spec.gpu_type):
            raise SpecError("gpu_type", "must be a valid label value, e.g. NVIDIA-A100-SXM4-80GB")
    if spec.port is not None:
        _check_int("port", spec.port, minimum=1, maximum=65535)
    _check_int("startup_budget_seconds", spec.startup_budget_seconds, minimum=30, maximum=86400)
    _check_int("termination_grace_seconds", spec.termination_grace_seconds, minimum=0, maximum=3600)
    _check_int("capacity_grace_seconds", spec.capacity_grace_seconds, minimum=0, maximum=86400)
    if spec.model_bytes is not None:
        _check_int("model_bytes", spec.model_bytes, minimum=0)
    if spec.max_client_batch_size is not None:
        _check_int("max_client_batch_size", spec.max_client_batch_size, minimum=1)
    if spec.nim_profile is not None and not re.fullmatch(r"[A-Za-z0-9._:-]+", spec.nim_profile):
        raise SpecError("nim_profile", "must be a profile id or name")

    _check_env(spec)
    _check_metadata("labels", spec.labels, values_are_labels=True)
    _check_metadata("annotations", spec.annotations, values_are_labels=False)
    _check_metadata("node_selector", spec.node_selector, values_are_labels=True)
    given_gpu_product = spec.node_selector.get(GPU_PRODUCT_LABEL)
    if spec.gpu_type and given_gpu_product not in (None, spec.gpu_type):
        raise SpecError(
            "node_selector", f"{GPU_PRODUCT_LABEL}={given_gpu_product} contradicts gpu_type"
        )
    _check_scheduling(spec)
    if spec.image_pull_secrets is not None:
        for name in spec.image_pull_secrets:
            if not is_dns1123_subdomain(name):
                raise SpecError("image_pull_secrets", f"{name!r} is not a valid Secret name")
    _check_tolerations(spec.tolerations)
    _check_affinity(spec.affinity)
    for name in ("bundle_args", "extra_args"):
        _check_args(name, getattr(spec, name))
    for key, value in spec.engine_vars.items():
        if not _ENGINE_VAR.match(key):
            raise SpecError(
                "engine_vars", f"{key!r} must be snake_case, e.g. gpu_memory_utilization"
            )
        if not isinstance(value, str):
            raise SpecError("engine_vars", f"“{key}”: values are strings")
    for path in spec.download_files:
        if (not isinstance(path, str) or not path or path.startswith("/") or "\0" in path
                or any(part in ("", ".", "..") for part in path.split("/"))):  # fmt: skip
            raise SpecError("download_files", f"{path!r} is not a file path inside the repo")
    if spec.model_cache is not None:
        _check_quantity("model_cache.size", spec.model_cache.size)
        if spec.model_cache.storage_class is not None and not is_dns1123_subdomain(
            spec.model_cache.storage_class
        ):
            raise SpecError("model_cache.storage_class", "is not a valid StorageClass name")
        if spec.model_cache.access_mode not in PVC_ACCESS_MODES:
            raise SpecError(
                "model_cache.access_mode", f"must be one of {', '.join(PVC_ACCESS_MODES)}"
            )


def _check_int(name: str, value: object, *, minimum: int, maximum: int | None = None) -> None:
    # bool is an int in Python; `replicas=True` is a bug upstream, not a count.
    if not isinstance(value, int) or isinstance(value, bool):
        raise SpecError(name, "must be a whole number")
    if value < minimum:
        raise SpecError(name, f"must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise SpecError(name, f"must be at most {maximum}")


def is_quantity(value: object) -> bool:
    """A Kubernetes resource quantity such as 4, 500m, 16Gi or 1e9."""
    return isinstance(value, str) and bool(_QUANTITY.match(value))


def _check_quantity(name: str, value: object) -> None:
    if not is_quantity(value):
        raise SpecError(name, f"{value!r} is not a Kubernetes quantity such as 4, 500m or 16Gi")


def _check_image(image: str) -> None:
    if not image or any(c.isspace() for c in image):
        raise SpecError("image", "is required and may not contain spaces")
    last = image.rsplit("/", 1)[-1]
    # A revision is an immutable snapshot; an image without a tag or digest is not.
    if ":" not in last and "@" not in image:
        raise SpecError("image", "needs a tag or digest, e.g. vllm/vllm-openai:v0.6.3")


def _check_env(spec: RenderSpec) -> None:
    for name, value in spec.env.items():
        if not _ENV_NAME.match(name):
            raise SpecError("env", f"{name!r} is not a valid environment variable name")
        if not isinstance(value, str):
            raise SpecError("env", f"“{name}”: values are strings")
        if name in CREDENTIAL_ENV_NAMES:
            raise SpecError("env", f"“{name}” is a credential: reference a Secret through secret_env")
        if name in spec.secret_env:
            raise SpecError("env", f"“{name}” is also set from a Secret")
    for name, ref in spec.secret_env.items():
        if not _ENV_NAME.match(name):
            raise SpecError("secret_env", f"{name!r} is not a valid environment variable name")
        if len(ref) != 2 or not all(isinstance(part, str) for part in ref):
            raise SpecError("secret_env", f"“{name}”: expected (secret name, key)")
        secret, key = ref
        if not is_dns1123_subdomain(secret):
            raise SpecError("secret_env", f"“{name}”: {secret!r} is not a valid Secret name")
        if not _SECRET_KEY.match(key):
            raise SpecError("secret_env", f"“{name}”: {key!r} is not a valid Secret key")


def _check_metadata(name: str, items: Mapping[str, str], *, values_are_labels: bool) -> None:
    for key, value in items.items():
        if not is_qualified_name(key):
            raise SpecError(name, f"{key!r} is not a valid key")
        if not isinstance(value, str):
            raise SpecError(name, f"“{key}”: values are strings")
        if values_are_labels and not is_label_value(value):
            raise SpecError(name, f"“{key}”: {value!r} is not a valid label value")


def _check_scheduling(spec: RenderSpec) -> None:
    """GPU flavors and node-pool priority: label syntax, and no contradiction with the node
    selector (the pod would never schedule)."""
    if spec.gpu_types:
        if spec.gpus == 0:
            raise SpecError("gpu_types", "only apply when gpus is at least 1")
        for value in spec.gpu_types:
            if not isinstance(value, str) or not value or not is_label_value(value):
                raise SpecError("gpu_types", f"{value!r} is not a valid label value, e.g. NVIDIA-L4")
        if spec.gpu_type and spec.gpu_types[0] != spec.gpu_type:
            raise SpecError("gpu_types", "the first GPU type is gpu_type")
        given = spec.node_selector.get(GPU_PRODUCT_LABEL)
        if given is not None and len(spec.gpu_types) > 1:
            raise SpecError(
                "node_selector", f"{GPU_PRODUCT_LABEL}={given} contradicts the list of GPU types"
            )
    if len(spec.node_pools) > MAX_NODE_POOLS:
        raise SpecError("node_pools", f"at most {MAX_NODE_POOLS} node pools")
    for pool in spec.node_pools:
        if not isinstance(pool, NodePool) or not is_qualified_name(pool.key):
            raise SpecError("node_pools", f"{getattr(pool, 'key', pool)!r} is not a valid label key")
        if not pool.values or not all(isinstance(v, str) and v and is_label_value(v) for v in pool.values):
            raise SpecError("node_pools", f"{pool.key}: give label values such as a100-pool")
    keys = {pool.key for pool in spec.node_pools}
    if len(keys) == 1:
        (key,) = keys
        allowed = {v for pool in spec.node_pools for v in pool.values}
        selected = spec.node_selector.get(key)
        if selected is not None and selected not in allowed:
            raise SpecError(
                "node_pools", f"the node selector asks for {key}={selected}, which none of the "
                f"node pools ({', '.join(sorted(allowed))}) has",
            )  # fmt: skip


def _check_affinity(affinity: Any) -> None:
    """Against Kubernetes' schema and the API server's rules: a wrongly typed affinity must
    never reach a cluster (`nodeAffinity: 5` once wedged one)."""
    if affinity is None:
        return
    if not isinstance(affinity, Mapping) or not set(affinity) <= _AFFINITY_KEYS:
        raise SpecError(
            "affinity", "must be a Kubernetes affinity: nodeAffinity, podAffinity, podAntiAffinity"
        )
    errors = k8s_schema.affinity_errors(dict(affinity))
    if errors:
        raise SpecError("affinity", errors[0])


def _check_tolerations(tolerations: Sequence[Mapping[str, Any]]) -> None:
    for index, toleration in enumerate(tolerations):
        errors = k8s_schema.toleration_errors(toleration, index)
        if errors:
            raise SpecError("tolerations", errors[0])
        if not isinstance(toleration, Mapping) or not set(toleration) <= _TOLERATION_KEYS:
            raise SpecError(
                "tolerations", "each one has only key, operator, value, effect, tolerationSeconds"
            )
        if toleration.get("operator", "Equal") not in ("Equal", "Exists"):
            raise SpecError("tolerations", "operator is Equal or Exists")
        if toleration.get("effect", "") not in ("", "NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise SpecError("tolerations", "effect is NoSchedule, PreferNoSchedule or NoExecute")
        # The API server's own rules for the combinations, refused there with a 422.
        if toleration.get("operator") == "Exists" and toleration.get("value"):
            raise SpecError("tolerations", "an Exists toleration takes no value")
        if "tolerationSeconds" in toleration and toleration.get("effect") != "NoExecute":
            raise SpecError("tolerations", "tolerationSeconds only goes with effect NoExecute")


def _check_args(name: str, args: Sequence[str]) -> None:
    for arg in args:
        if not isinstance(arg, str) or "\0" in arg:
            raise SpecError(name, "arguments are strings")
    # Arguments are appended after ModelDeck's own flags, where a bare word would be read as
    # the value of the flag before it.
    if args and not args[0].startswith("-"):
        raise SpecError(name, f"must start with a --flag, not {args[0]!r}")


def is_qualified_name(key: str) -> bool:
    """Kubernetes label/annotation key: an optional DNS subdomain prefix, '/', a name."""
    prefix, slash, name = key.rpartition("/")
    if slash and not is_dns1123_subdomain(prefix):
        return False
    return 0 < len(name) <= 63 and bool(_LABEL_NAME.match(name))


def is_label_value(value: str) -> bool:
    return len(value) <= 63 and bool(_LABEL_VALUE.match(value))


def is_dns1123_subdomain(value: str) -> bool:
    return 0 < len(value) <= 253 and bool(_DNS1123_SUBDOMAIN.match(value))


def _is_dns1035_label(value: str) -> bool:
    return len(value) <= 63 and bool(_DNS1035_LABEL.match(value))
