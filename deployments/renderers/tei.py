"""Hugging Face Text Embeddings Inference: `text-embeddings-router`, for /v1/embeddings."""

from __future__ import annotations

import re

from . import flags
from .common import (
    HF_CACHE_MOUNT_PATH,
    HF_HOME,
    HF_HUB_CACHE,
    Engine,
    EngineParts,
    check_model_source,
    engine_args,
    locate_model,
)
from .gpus import compute_capability
from .input import RenderSpec, SpecError

ENGINE_NAME = "tei"
DEFAULT_PORT = 8080
HEALTH_PATH = "/health"

RESERVED_FLAGS = frozenset({"--hostname", "--port", "-p", "--model-id", "--huggingface-hub-cache"})

# TEI publishes one CUDA image per GPU architecture (README "Docker Images", v1.5.1): the plain
# tag is built for compute capability 8.0 only and refuses other GPUs at start.
# Volta (7.0) and older are not supported at all.
ARCH_TAG_PREFIX: dict[tuple[int, int], str] = {
    (7, 5): "turing-",
    (8, 0): "",
    (8, 6): "86-",
    (8, 9): "89-",
    (9, 0): "hopper-",
}
_TEI_TAG = re.compile(r"^(?:(cpu|turing|hopper|86|89)-)?(\d+\.\d+(?:\.\d+)?)$")
_TEI_REPO = "text-embeddings-inference"


def image_for(spec: RenderSpec) -> str:
    """The bundle's TEI image with the tag for the GPU type's architecture: `:1.5` on an
    NVIDIA-H100 becomes `:hopper-1.5`, on a Tesla-T4 `:turing-1.5`. CPU images, unknown GPU
    types and images that aren't TEI's own tags are left as given."""
    repo, sep, tag = spec.image.rpartition(":")
    m = _TEI_TAG.match(tag) if sep and "@" not in spec.image else None
    if not m or not repo.endswith(_TEI_REPO) or m.group(1) == "cpu" or spec.gpus < 1:
        return spec.image
    cc = compute_capability(spec.gpu_type)
    if cc is None or cc not in ARCH_TAG_PREFIX:
        return spec.image
    return f"{repo}:{ARCH_TAG_PREFIX[cc]}{m.group(2)}"


def build(spec: RenderSpec) -> EngineParts:
    # context_length and prompt_caching don't apply: an embedding model's input limit is its
    # own, and an encoder keeps no KV cache to reuse.
    model = locate_model(spec)
    table = flags.best_table(ENGINE_NAME, spec.image)
    base = [
        "--model-id",
        model.ref,
        # Kubernetes sets HOSTNAME to the pod's name and TEI reads --hostname from it.
        "--hostname",
        "0.0.0.0",
        "--port",
        str(spec.port or DEFAULT_PORT),
    ]
    if model.revision:
        base += ["--revision", model.revision]
    if spec.max_client_batch_size is not None:
        base += ["--max-client-batch-size", str(spec.max_client_batch_size)]

    secret_env = dict(spec.secret_env)
    if "HF_TOKEN" in secret_env:
        # TEI before 1.7 read the token from HF_API_TOKEN.
        secret_env.setdefault("HF_API_TOKEN", secret_env["HF_TOKEN"])
    return EngineParts(
        # The image's entrypoint is the router, for the CPU and GPU images alike.
        args=tuple(engine_args(spec, base, RESERVED_FLAGS, table=table)),
        env=(("HF_HOME", HF_HOME), ("HUGGINGFACE_HUB_CACHE", HF_HUB_CACHE)),
        default_env={"HF_HUB_DISABLE_TELEMETRY": "1"},
        secret_env=secret_env,
        volumes=(model.volume,) if model.volume else (),
        volume_mounts=(model.mount,) if model.mount else (),
    )


def validate(spec: RenderSpec) -> None:
    check_model_source(spec, sources=("huggingface", "custom"), schemes=("pvc",))
    if spec.gpus > 1:
        raise SpecError("gpus", "TEI runs a model on one GPU; add replicas to scale out")
    cc = compute_capability(spec.gpu_type) if spec.gpus else None
    if cc is not None and cc < (7, 5):
        raise SpecError(
            "gpu_type",
            f"Text Embeddings Inference does not support {spec.gpu_type} (compute capability "
            f"{cc[0]}.{cc[1]}; it needs 7.5 or newer)",
        )
    for other in spec.gpu_types[1:] if spec.gpus else ():
        occ = compute_capability(other)
        if occ is not None and occ < (7, 5):
            raise SpecError("gpu_types", f"Text Embeddings Inference does not support {other}")
        if ARCH_TAG_PREFIX.get(occ) != ARCH_TAG_PREFIX.get(cc):
            # One image per revision, and TEI's GPU images are built per architecture.
            raise SpecError(
                "gpu_types", f"TEI's GPU images are built per architecture: {spec.gpu_type} and "
                f"{other} need different images; list GPU types of one architecture",
            )  # fmt: skip
    if spec.nim_profile:
        raise SpecError("nim_profile", "only applies to NIM")


ENGINE = Engine(
    name=ENGINE_NAME,
    default_port=DEFAULT_PORT,
    startup_path=HEALTH_PATH,
    readiness_path=HEALTH_PATH,
    liveness_path=HEALTH_PATH,
    cache_mount_path=HF_CACHE_MOUNT_PATH,
    owned_env=frozenset({"HF_HOME", "HUGGINGFACE_HUB_CACHE"}),
    validate=validate,
    build=build,
    image_for=image_for,
)
