"""Hugging Face Text Embeddings Inference: `text-embeddings-router`, for /v1/embeddings."""

from __future__ import annotations

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
from .input import RenderSpec, SpecError

DEFAULT_PORT = 8080
HEALTH_PATH = "/health"

RESERVED_FLAGS = frozenset({"--hostname", "--port", "-p", "--model-id", "--huggingface-hub-cache"})


def build(spec: RenderSpec) -> EngineParts:
    # context_length and prompt_caching don't apply: an embedding model's input limit is its
    # own, and an encoder keeps no KV cache to reuse.
    model = locate_model(spec)
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
        args=tuple(engine_args(spec, base, RESERVED_FLAGS, negatable=False)),
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
    if spec.nim_profile:
        raise SpecError("nim_profile", "only applies to NIM")


ENGINE = Engine(
    name="tei",
    default_port=DEFAULT_PORT,
    startup_path=HEALTH_PATH,
    readiness_path=HEALTH_PATH,
    liveness_path=HEALTH_PATH,
    cache_mount_path=HF_CACHE_MOUNT_PATH,
    owned_env=frozenset({"HF_HOME", "HUGGINGFACE_HUB_CACHE"}),
    validate=validate,
    build=build,
)
