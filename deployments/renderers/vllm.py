"""vLLM: `vllm serve` and its OpenAI-compatible server."""

from __future__ import annotations

from . import flags
from .common import (
    HF_CACHE_MOUNT_PATH,
    HF_HOME,
    Engine,
    EngineParts,
    boolean_flag,
    check_gpus_for_gpu_image,
    check_model_source,
    engine_args,
    locate_model,
)
from .input import RenderSpec, SpecError

ENGINE_NAME = "vllm"
DEFAULT_PORT = 8000
HEALTH_PATH = "/health"

# Probes, the Service and the gateway rely on these; overriding them breaks the deployment.
RESERVED_FLAGS = frozenset({"--host", "--port", "--served-model-name", "--model"})


def build(spec: RenderSpec) -> EngineParts:
    model = locate_model(spec)
    table = flags.best_table(ENGINE_NAME, spec.image)
    base = [
        model.ref,
        "--host",
        "0.0.0.0",
        "--port",
        str(spec.port or DEFAULT_PORT),
        "--served-model-name",
        spec.served_name(),
    ]
    if model.revision:
        base += ["--revision", model.revision]  # vLLM pins the tokenizer to it as well
    if spec.context_length:
        base += ["--max-model-len", str(spec.context_length)]
    # A BooleanOptionalAction in 0.8.5: --no-enable-prefix-caching turns it off.
    base += boolean_flag(table, "--enable-prefix-caching", spec.prompt_caching)
    # 1 is vLLM's default; with 0 GPUs (a CPU image) there is nothing to split.
    if spec.gpus > 1:
        base += ["--tensor-parallel-size", str(spec.gpus)]
    return EngineParts(
        command=("vllm", "serve"),  # explicit: older images' entrypoint is the python module
        args=tuple(engine_args(spec, base, RESERVED_FLAGS, table=table)),
        env=(("HF_HOME", HF_HOME),),
        # A self-hosted console should not make its users' clusters phone home by default.
        default_env={"VLLM_NO_USAGE_STATS": "1", "HF_HUB_DISABLE_TELEMETRY": "1"},
        secret_env=dict(spec.secret_env),
        volumes=(model.volume,) if model.volume else (),
        volume_mounts=(model.mount,) if model.mount else (),
    )


def validate(spec: RenderSpec) -> None:
    # vLLM streams s3:// models itself (--load-format runai_streamer, credentials in env).
    check_gpus_for_gpu_image(spec)
    check_model_source(spec, sources=("huggingface", "custom"), schemes=("pvc", "s3"))
    if spec.nim_profile:
        raise SpecError("nim_profile", "only applies to NIM")
    if spec.max_client_batch_size is not None:
        raise SpecError("max_client_batch_size", "only applies to TGI and TEI")


ENGINE = Engine(
    name=ENGINE_NAME,
    default_port=DEFAULT_PORT,
    startup_path=HEALTH_PATH,
    readiness_path=HEALTH_PATH,
    liveness_path=HEALTH_PATH,
    cache_mount_path=HF_CACHE_MOUNT_PATH,
    owned_env=frozenset({"HF_HOME"}),
    validate=validate,
    build=build,
)
