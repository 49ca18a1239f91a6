"""Hugging Face Text Generation Inference: `text-generation-launcher`, configured by flags."""

from __future__ import annotations

from . import flags
from .common import (
    HF_CACHE_MOUNT_PATH,
    HF_HOME,
    HF_HUB_CACHE,
    Engine,
    EngineParts,
    check_gpus_for_gpu_image,
    check_model_source,
    engine_args,
    locate_model,
)
from .input import RenderSpec, SpecError

# Not TGI's image default (80): a port above 1024 works whatever user the image runs as.
ENGINE_NAME = "tgi"
DEFAULT_PORT = 8080
HEALTH_PATH = "/health"

RESERVED_FLAGS = frozenset({"--hostname", "--port", "-p", "--model-id", "--huggingface-hub-cache"})


def build(spec: RenderSpec) -> EngineParts:
    model = locate_model(spec)
    table = flags.best_table(ENGINE_NAME, spec.image)
    base = [
        "--model-id",
        model.ref,
        # Kubernetes sets HOSTNAME to the pod's name and TGI reads its --hostname from that
        # variable; bind to every interface explicitly.
        "--hostname",
        "0.0.0.0",
        "--port",
        str(spec.port or DEFAULT_PORT),
    ]
    if model.revision:
        base += ["--revision", model.revision]
    if spec.gpus >= 1:
        base += ["--num-shard", str(spec.gpus)]
    if spec.context_length:
        max_input = spec.context_length - 1  # TGI wants room for at least one new token
        base += [
            "--max-input-tokens",  # the current name of the deprecated --max-input-length
            str(max_input),
            "--max-total-tokens",
            str(spec.context_length),
            # TGI 3 derives this itself (max input + 50); TGI 2 defaults to 4096 and refuses
            # to start when the input limit is larger, so it is given explicitly.
            "--max-batch-prefill-tokens",
            str(max_input + 50),
        ]
    if spec.max_client_batch_size is not None:
        base += ["--max-client-batch-size", str(spec.max_client_batch_size)]

    env: list[tuple[str, str]] = [("HF_HOME", HF_HOME), ("HUGGINGFACE_HUB_CACHE", HF_HUB_CACHE)]
    # Prefix caching is on by default where the model supports it, and TGI turns it off by
    # itself where it doesn't (VLMs, paged attention), so only "off" is said out loud.
    if not spec.prompt_caching:
        env.append(("PREFIX_CACHING", "0"))

    secret_env = dict(spec.secret_env)
    if "HF_TOKEN" in secret_env:
        # TGI before 2.0 read the token from the older variable name.
        secret_env.setdefault("HUGGING_FACE_HUB_TOKEN", secret_env["HF_TOKEN"])
    return EngineParts(
        args=tuple(engine_args(spec, base, RESERVED_FLAGS, table=table)),
        env=tuple(env),
        default_env={"USAGE_STATS": "off", "HF_HUB_DISABLE_TELEMETRY": "1"},
        secret_env=secret_env,
        volumes=(model.volume,) if model.volume else (),
        volume_mounts=(model.mount,) if model.mount else (),
    )


def validate(spec: RenderSpec) -> None:
    check_gpus_for_gpu_image(spec)
    check_model_source(spec, sources=("huggingface", "custom"), schemes=("pvc",))
    if spec.nim_profile:
        raise SpecError("nim_profile", "only applies to NIM")


ENGINE = Engine(
    name=ENGINE_NAME,
    default_port=DEFAULT_PORT,
    startup_path=HEALTH_PATH,
    readiness_path=HEALTH_PATH,
    liveness_path=HEALTH_PATH,
    cache_mount_path=HF_CACHE_MOUNT_PATH,
    owned_env=frozenset({"HF_HOME", "HUGGINGFACE_HUB_CACHE", "PREFIX_CACHING"}),
    validate=validate,
    build=build,
)
