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

# s3:// weights: vLLM's Run:ai Model Streamer loader (`--load-format runai_streamer`, a value of
# vLLM's LoadFormat enum in vllm/config.py since 0.6.6; "To run model from AWS S3 object store:
# vllm serve s3://core-llm/Llama-3-8b --load-format runai_streamer", docs.vllm.ai/en/v0.8.5/
# models/extensions/runai_model_streamer.html). The image needs the `vllm[runai]` extra.
# Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_ENDPOINT_URL / AWS_DEFAULT_REGION
# from the project's S3 Secret (deployments/spec.py S3_ENV). For S3-compatible stores the same
# page sets RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING=0 and AWS_EC2_METADATA_DISABLED=true.
# gs:// is not in 0.8.5's streamer (later vLLM docs add it); the catalog refuses gs:// URIs.
STREAMER_LOAD_FORMAT = "runai_streamer"
S3_COMPATIBLE_ENV = {"RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING": "0", "AWS_EC2_METADATA_DISABLED": "true"}

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
    default_env = {"VLLM_NO_USAGE_STATS": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    if streams_from_object_store(spec):
        base += ["--load-format", STREAMER_LOAD_FORMAT]
        if "AWS_ENDPOINT_URL" in spec.secret_env:
            # An S3-compatible store (MinIO, Ceph, Cloud Storage's interop endpoint): path-style
            # addressing, and no EC2 metadata lookup for credentials that come from the Secret.
            default_env.update(S3_COMPATIBLE_ENV)
    return EngineParts(
        command=("vllm", "serve"),  # explicit: older images' entrypoint is the python module
        args=tuple(engine_args(spec, base, RESERVED_FLAGS, table=table)),
        env=(("HF_HOME", HF_HOME),),
        # A self-hosted console should not make its users' clusters phone home by default.
        default_env=default_env,
        secret_env=dict(spec.secret_env),
        volumes=(model.volume,) if model.volume else (),
        volume_mounts=(model.mount,) if model.mount else (),
    )


def streams_from_object_store(spec: RenderSpec) -> bool:
    return spec.model_source == "custom" and spec.model_ref.startswith("s3://")


def _given_load_format(args: tuple[str, ...]) -> str | None:
    for i, token in enumerate(args):
        if token.startswith("--load-format="):
            return token.split("=", 1)[1]
        if token in ("--load-format", "--load_format") and i + 1 < len(args):
            return args[i + 1]
    return None


def validate(spec: RenderSpec) -> None:
    # vLLM streams s3:// models itself (--load-format runai_streamer, credentials in env).
    check_gpus_for_gpu_image(spec)
    check_model_source(spec, sources=("huggingface", "custom"), schemes=("pvc", "s3"))
    if streams_from_object_store(spec):
        for name in ("bundle_args", "extra_args"):
            given = _given_load_format(getattr(spec, name))
            if given not in (None, STREAMER_LOAD_FORMAT):
                raise SpecError(
                    name, f"an s3:// model loads with --load-format {STREAMER_LOAD_FORMAT}, not {given}"
                )
        if "load_format" in spec.engine_vars and spec.engine_vars["load_format"].strip() not in (
            "", STREAMER_LOAD_FORMAT,
        ):  # fmt: skip
            raise SpecError("engine_vars", f"an s3:// model loads with load_format {STREAMER_LOAD_FORMAT}")
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
