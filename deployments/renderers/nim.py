"""NVIDIA NIM for LLMs: the model ships in the image, configured by NIM_* environment variables."""

from __future__ import annotations

from . import flags
from .common import Engine, EngineParts, check_model_source, locate_model
from .input import RenderSpec, SpecError

DEFAULT_PORT = 8000
CACHE_PATH = "/opt/nim/.cache"
READY_PATH = "/v1/health/ready"
LIVE_PATH = "/v1/health/live"

# Secrets ModelDeck creates from the project's NGC integration. Names of its own (prefixed):
# a cluster's existing `ngc-secret` / `ngc-api` belong to someone else and are never taken over.
DEFAULT_PULL_SECRET = "modeldeck-ngc-pull"  # docker-registry Secret for nvcr.io ($oauthtoken)
DEFAULT_API_KEY_SECRET = ("modeldeck-ngc-api-key", "NGC_API_KEY")  # NIM downloads profiles with it
# NIM images run as this user; the pod's fsGroup lets it write the model cache volume.
NIM_UID = 1000

OWNED_ENV = frozenset(
    {
        "NIM_CACHE_PATH",
        "NIM_SERVER_PORT",
        "NIM_SERVED_MODEL_NAME",
        "NIM_MAX_MODEL_LEN",
        "NIM_MODEL_PROFILE",
        "NIM_ENABLE_KV_CACHE_REUSE",
        "NIM_MODEL_NAME",
    }
)


def engine_var_env(engine_vars: dict[str, str]) -> dict[str, str]:
    """Profile Bundle variables as NIM settings: `max_batch_size=64` becomes
    NIM_MAX_BATCH_SIZE=64; "true"/"false" become 1/0 as NIM's documentation writes them."""
    env: dict[str, str] = {}
    for key in sorted(engine_vars):
        value = engine_vars[key].strip()
        if not value:
            continue
        name = key.upper()
        if not name.startswith("NIM_"):
            name = f"NIM_{name}"
        env[name] = {"true": "1", "false": "0"}.get(value.lower(), value)
    return env


def build(spec: RenderSpec) -> EngineParts:
    env: list[tuple[str, str]] = [
        ("NIM_CACHE_PATH", CACHE_PATH),
        ("NIM_SERVER_PORT", str(spec.port or DEFAULT_PORT)),
        ("NIM_SERVED_MODEL_NAME", spec.served_name()),
    ]
    volumes: tuple[dict, ...] = ()
    mounts: tuple[dict, ...] = ()
    if spec.model_source != "ngc":
        # A multi-LLM NIM image serves whatever NIM_MODEL_NAME points at: a Hub repo or a
        # mounted directory. (A Hub revision can't be pinned through NIM; the tag pins NIM.)
        model = locate_model(spec)
        env.append(
            (
                "NIM_MODEL_NAME",
                f"hf://{model.ref}" if spec.model_source == "huggingface" else model.ref,
            )
        )
        volumes = (model.volume,) if model.volume else ()
        mounts = (model.mount,) if model.mount else ()
    if spec.nim_profile:
        env.append(("NIM_MODEL_PROFILE", spec.nim_profile))
    if spec.context_length:
        env.append(("NIM_MAX_MODEL_LEN", str(spec.context_length)))
    # NIM's KV cache reuse is off unless asked for.
    if spec.prompt_caching:
        env.append(("NIM_ENABLE_KV_CACHE_REUSE", "1"))

    secret_env = dict(spec.secret_env)
    secret_env.setdefault("NGC_API_KEY", DEFAULT_API_KEY_SECRET)
    return EngineParts(
        env=tuple(env),
        default_env=engine_var_env(dict(spec.engine_vars)),
        secret_env=secret_env,
        volumes=volumes,
        volume_mounts=mounts,
    )


def validate(spec: RenderSpec) -> None:
    check_model_source(spec, sources=("ngc", "huggingface", "custom"), schemes=("pvc",))
    if spec.model_source == "ngc" and any(c.isspace() for c in spec.model_ref):
        raise SpecError(
            "model_ref", "must be the NIM's model name, e.g. meta/llama-3.1-8b-instruct"
        )
    if spec.gpus < 1:
        raise SpecError("gpus", "NIM for LLMs needs at least one GPU")
    # NIM takes its configuration from the environment; arguments would replace the image's
    # start command and the server would never come up.
    for name in ("bundle_args", "extra_args"):
        if getattr(spec, name):
            raise SpecError(name, "NIM is configured with environment variables, not arguments")
    if spec.max_client_batch_size is not None:
        raise SpecError("max_client_batch_size", "only applies to TGI and TEI")
    clash = sorted(set(engine_var_env(dict(spec.engine_vars))) & OWNED_ENV)
    if clash:
        raise SpecError("engine_vars", f"“{clash[0]}” is set by ModelDeck")
    # NIM's "flags" are its documented environment variables; an undocumented one is ignored
    # by NIM without a word, so a typo'd bundle variable is refused here instead.
    table = flags.table_for("nim", spec.image)
    if table is not None:
        unknown = sorted(set(engine_var_env(dict(spec.engine_vars))) - set(table.env))
        if unknown:
            raise SpecError(
                "engine_vars", f"{unknown[0]} is not a documented NIM {table.version} variable"
            )


ENGINE = Engine(
    name="nim",
    default_port=DEFAULT_PORT,
    startup_path=READY_PATH,
    readiness_path=READY_PATH,
    liveness_path=LIVE_PATH,
    cache_mount_path=CACHE_PATH,
    owned_env=OWNED_ENV,
    validate=validate,
    build=build,
    default_image_pull_secrets=(DEFAULT_PULL_SECRET,),
    pod_security_context={
        "runAsUser": NIM_UID,
        "runAsGroup": NIM_UID,
        "runAsNonRoot": True,
        "fsGroup": NIM_UID,
        # A 100 GB cache would otherwise be chown'ed file by file on every pod start.
        "fsGroupChangePolicy": "OnRootMismatch",
    },
)
