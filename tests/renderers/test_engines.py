"""Each engine's command line, environment, volumes and probes."""

from __future__ import annotations

from typing import Any

import pytest

from deployments.renderers import RenderSpec, SpecError, render

from .specs import SHA, big_spec, cpu_spec, make_spec, pvc_spec


def container_of(spec: RenderSpec) -> dict[str, Any]:
    return pod_spec_of(spec)["containers"][0]


def pod_spec_of(spec: RenderSpec) -> dict[str, Any]:
    deployment = next(o for o in render(spec) if o["kind"] == "Deployment")
    return deployment["spec"]["template"]["spec"]


def args_of(spec: RenderSpec) -> list[str]:
    return container_of(spec).get("args", [])


def env_of(spec: RenderSpec) -> dict[str, Any]:
    """Plain env vars as name -> value; Secret references as name -> (secret, key)."""
    env: dict[str, Any] = {}
    for entry in container_of(spec)["env"]:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = (ref["name"], ref["key"])
    return env


def flag_value(args: list[str], flag: str) -> str:
    assert args.count(flag) == 1, f"{flag} given {args.count(flag)} times in {args}"
    return args[args.index(flag) + 1]


def mounts_of(spec: RenderSpec) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container_of(spec)["volumeMounts"]}


def probe_paths(spec: RenderSpec) -> tuple[str, str, str]:
    c = container_of(spec)
    return tuple(
        c[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")
    )  # type: ignore[return-value]


# --- vLLM -------------------------------------------------------------------------------------


def test_vllm_serves_the_hub_model_with_modeldecks_flags() -> None:
    spec = make_spec("vllm", model_revision=SHA, context_length=8192)
    container = container_of(spec)
    args = container["args"]
    assert container["command"] == ["vllm", "serve"]
    assert args[0] == "meta-llama/Llama-3.1-8B-Instruct"
    assert flag_value(args, "--served-model-name") == "meta-llama/Llama-3.1-8B-Instruct"
    assert flag_value(args, "--revision") == SHA
    assert flag_value(args, "--max-model-len") == "8192"
    assert flag_value(args, "--port") == "8000"
    assert flag_value(args, "--host") == "0.0.0.0"
    assert "--enable-prefix-caching" in args
    assert "--no-enable-prefix-caching" not in args
    assert "--tensor-parallel-size" not in args  # one GPU is vLLM's default
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert probe_paths(spec) == ("/health", "/health", "/health")


def test_vllm_leaves_out_what_is_not_set() -> None:
    args = args_of(make_spec("vllm", prompt_caching=False))
    assert "--revision" not in args
    assert "--max-model-len" not in args
    assert "--no-enable-prefix-caching" in args
    assert "--enable-prefix-caching" not in args


def test_vllm_splits_the_model_over_the_replicas_gpus() -> None:
    assert flag_value(args_of(big_spec("vllm")), "--tensor-parallel-size") == "4"
    assert "--tensor-parallel-size" not in args_of(cpu_spec("vllm"))


def test_vllm_merges_bundle_args_engine_vars_and_extra_args_later_winning() -> None:
    args = args_of(big_spec("vllm"))
    # bundle: --gpu-memory-utilization 0.9 --max-num-seqs 128; extra: --max-num-seqs 64
    assert flag_value(args, "--gpu-memory-utilization") == "0.9"
    assert flag_value(args, "--max-num-seqs") == "64"
    assert args[-3:] == ["--max-num-seqs", "64", "--enable-chunked-prefill"]  # extra args last
    assert flag_value(args, "--dtype") == "bfloat16"  # engine variable
    assert "--trust-remote-code" in args  # "true" engine variable
    assert flag_value(args, "--served-model-name") == "big-model"


def test_vllm_extra_args_can_turn_a_modeldeck_flag_around() -> None:
    args = args_of(make_spec("vllm", extra_args=["--no-enable-prefix-caching"]))
    assert "--no-enable-prefix-caching" in args
    assert "--enable-prefix-caching" not in args


def test_vllm_false_engine_variable_negates_the_flag() -> None:
    args = args_of(make_spec("vllm", engine_vars={"enable_chunked_prefill": "false", "seed": ""}))
    assert "--no-enable-chunked-prefill" in args
    assert "--seed" not in args  # an empty variable is not set


def test_vllm_keeps_the_hub_cache_on_the_cache_volume() -> None:
    spec = big_spec("vllm")
    assert env_of(spec)["HF_HOME"] == "/model-cache/huggingface"
    assert mounts_of(spec)["/model-cache"]["name"] == "model-cache"
    assert env_of(spec)["HF_TOKEN"] == ("hf-token", "token")


def test_vllm_serves_a_model_from_a_claim_read_only() -> None:
    spec = pvc_spec("vllm")
    args = args_of(spec)
    assert args[0] == "/mnt/models/llama/8b-finetune"
    assert flag_value(args, "--served-model-name") == "llama-ft"
    assert mounts_of(spec)["/mnt/models"] == {
        "name": "model-source",
        "mountPath": "/mnt/models",
        "readOnly": True,
    }
    volumes = pod_spec_of(spec)["volumes"]
    assert {
        "name": "model-source",
        "persistentVolumeClaim": {"claimName": "model-store", "readOnly": True},
    } in volumes


def test_a_custom_model_without_a_served_name_is_served_under_the_deployment_name() -> None:
    spec = make_spec("vllm", model_source="custom", model_ref="pvc://store")
    assert args_of(spec)[0] == "/mnt/models"
    assert flag_value(args_of(spec), "--served-model-name") == "chat"


def test_vllm_hands_an_s3_uri_to_the_engine() -> None:
    spec = make_spec(
        "vllm",
        model_source="custom",
        model_ref="s3://models/llama-8b",
        extra_args=["--load-format", "runai_streamer"],
    )
    assert args_of(spec)[0] == "s3://models/llama-8b"
    assert flag_value(args_of(spec), "--load-format") == "runai_streamer"


@pytest.mark.parametrize("flag", ["--port", "--host", "--served-model-name", "--port=9000"])
def test_vllm_refuses_to_let_args_move_the_port_or_rename_the_model(flag: str) -> None:
    with pytest.raises(SpecError) as excinfo:
        render(make_spec("vllm", extra_args=[flag, "x"] if "=" not in flag else [flag]))
    assert excinfo.value.field == "extra_args"
    with pytest.raises(SpecError) as excinfo:
        render(make_spec("vllm", engine_vars={"port": "9000"}))
    assert excinfo.value.field == "engine_vars"


def test_a_custom_port_moves_the_flag_and_the_container_port_together() -> None:
    container = container_of(make_spec("vllm", port=9000))
    assert flag_value(container["args"], "--port") == "9000"
    assert container["ports"][0]["containerPort"] == 9000


# --- NIM --------------------------------------------------------------------------------------


def test_nim_runs_the_image_with_its_defaults() -> None:
    spec = make_spec("nim")
    container = container_of(spec)
    pod = pod_spec_of(spec)
    env = env_of(spec)
    assert container["image"] == "nvcr.io/nim/meta/llama-3.1-8b-instruct:1.3.3"
    assert "command" not in container and "args" not in container  # the image starts NIM itself
    assert pod["imagePullSecrets"] == [{"name": "modeldeck-ngc-pull"}]
    assert env["NGC_API_KEY"] == ("modeldeck-ngc-api-key", "NGC_API_KEY")
    assert env["NIM_SERVED_MODEL_NAME"] == "meta/llama-3.1-8b-instruct"
    assert env["NIM_CACHE_PATH"] == "/opt/nim/.cache"
    assert env["NIM_SERVER_PORT"] == "8000"
    assert env["NIM_ENABLE_KV_CACHE_REUSE"] == "1"
    assert "NIM_MODEL_PROFILE" not in env
    assert "NIM_MAX_MODEL_LEN" not in env
    assert "NIM_MODEL_NAME" not in env  # the model is in the image
    assert mounts_of(spec)["/opt/nim/.cache"]["name"] == "model-cache"
    assert {"name": "model-cache", "emptyDir": {"sizeLimit": "50Gi"}} in pod["volumes"]
    assert container["ports"][0]["containerPort"] == 8000
    assert probe_paths(spec) == ("/v1/health/ready", "/v1/health/ready", "/v1/health/live")


def test_nim_passes_profile_context_length_and_cache_claim() -> None:
    spec = big_spec("nim")
    env = env_of(spec)
    pod = pod_spec_of(spec)
    assert env["NIM_MODEL_PROFILE"] == "tensorrt_llm-h100-fp8-tp4-throughput"
    assert env["NIM_MAX_MODEL_LEN"] == "32768"
    assert env["NIM_SERVED_MODEL_NAME"] == "big-model"
    assert env["NIM_LOG_LEVEL"] == "INFO"  # engine variable
    assert {
        "name": "model-cache",
        "persistentVolumeClaim": {"claimName": "big-model-cache"},
    } in pod["volumes"]
    assert pod["imagePullSecrets"] == [{"name": "registry-cred"}]  # given, replaces the default


def test_nim_without_prompt_caching_leaves_kv_cache_reuse_off() -> None:
    assert "NIM_ENABLE_KV_CACHE_REUSE" not in env_of(make_spec("nim", prompt_caching=False))


def test_nim_runs_as_its_own_user_and_can_write_the_cache() -> None:
    context = pod_spec_of(big_spec("nim"))["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == context["fsGroup"] == 1000
    assert context["fsGroupChangePolicy"] == "OnRootMismatch"


def test_nim_serves_hub_and_claim_models_through_nim_model_name() -> None:
    hub = make_spec("nim", model_source="huggingface", model_ref="Qwen/Qwen2.5-7B-Instruct")
    assert env_of(hub)["NIM_MODEL_NAME"] == "hf://Qwen/Qwen2.5-7B-Instruct"
    claim = pvc_spec("nim")
    assert env_of(claim)["NIM_MODEL_NAME"] == "/mnt/models/llama/8b-finetune"
    assert env_of(claim)["NIM_SERVED_MODEL_NAME"] == "llama-ft"
    assert "/mnt/models" in mounts_of(claim)


def test_nim_refuses_what_it_cannot_run() -> None:
    for overrides, field in [
        ({"gpus": 0}, "gpus"),
        ({"extra_args": ["--max-num-seqs", "8"]}, "extra_args"),
        ({"env": {"NIM_CACHE_PATH": "/tmp"}}, "env"),
        ({"engine_vars": {"served_model_name": "x"}}, "engine_vars"),
        ({"model_source": "custom", "model_ref": "s3://bucket/model"}, "model_ref"),
    ]:
        with pytest.raises(SpecError) as excinfo:
            render(make_spec("nim", **overrides))
        assert excinfo.value.field == field, overrides


# --- TGI --------------------------------------------------------------------------------------


def test_tgi_launcher_flags() -> None:
    spec = big_spec("tgi")
    args = args_of(spec)
    assert "command" not in container_of(spec)  # the image's entrypoint is the launcher
    assert flag_value(args, "--model-id") == "mistralai/Mistral-7B-Instruct-v0.3"
    assert flag_value(args, "--revision") == SHA
    assert flag_value(args, "--num-shard") == "4"
    assert flag_value(args, "--max-total-tokens") == "32768"
    assert flag_value(args, "--max-input-tokens") == "32767"
    assert int(flag_value(args, "--max-batch-prefill-tokens")) >= 32767
    assert flag_value(args, "--port") == "8080"
    assert flag_value(args, "--hostname") == "0.0.0.0"
    assert flag_value(args, "--dtype") == "bfloat16"  # bundle args
    assert flag_value(args, "--quantize") == "fp8"  # engine variable
    assert args[-2:] == ["--max-concurrent-requests", "256"]
    assert container_of(spec)["ports"][0]["containerPort"] == 8080
    assert probe_paths(spec) == ("/health", "/health", "/health")


def test_tgi_leaves_out_what_is_not_set() -> None:
    args = args_of(cpu_spec("tgi"))
    for flag in ("--revision", "--num-shard", "--max-total-tokens", "--max-input-tokens"):
        assert flag not in args
    assert "PREFIX_CACHING" not in env_of(cpu_spec("tgi"))


def test_tgi_prompt_caching_off_is_said_explicitly() -> None:
    assert env_of(make_spec("tgi", prompt_caching=False))["PREFIX_CACHING"] == "0"


def test_tgi_shares_the_hub_cache_layout_and_gets_the_token_under_both_names() -> None:
    env = env_of(make_spec("tgi"))
    assert env["HF_HOME"] == "/model-cache/huggingface"
    assert env["HUGGINGFACE_HUB_CACHE"] == "/model-cache/huggingface/hub"
    assert env["HF_TOKEN"] == env["HUGGING_FACE_HUB_TOKEN"] == ("hf-token", "token")


def test_tgi_loads_a_claim_model_from_the_mount() -> None:
    spec = pvc_spec("tgi")
    assert flag_value(args_of(spec), "--model-id") == "/mnt/models/llama/8b-finetune"
    assert "--revision" not in args_of(spec)


# --- TEI --------------------------------------------------------------------------------------


def test_tei_router_flags() -> None:
    spec = big_spec("tei")
    args = args_of(spec)
    assert flag_value(args, "--model-id") == "BAAI/bge-large-en-v1.5"
    assert flag_value(args, "--revision") == SHA
    assert flag_value(args, "--port") == "8080"
    assert flag_value(args, "--hostname") == "0.0.0.0"
    assert flag_value(args, "--max-client-batch-size") == "64"
    assert flag_value(args, "--pooling") == "cls"
    assert args[-2:] == ["--max-batch-tokens", "65536"]
    assert probe_paths(spec) == ("/health", "/health", "/health")
    env = env_of(spec)
    assert env["HF_TOKEN"] == env["HF_API_TOKEN"] == ("hf-token", "token")
    assert env["HUGGINGFACE_HUB_CACHE"] == "/model-cache/huggingface/hub"


def test_tei_leaves_out_what_is_not_set() -> None:
    args = args_of(cpu_spec("tei"))
    assert "--max-client-batch-size" not in args
    assert "--revision" not in args
    assert "--max-model-len" not in args_of(make_spec("tei", context_length=512))


def test_tei_runs_on_one_gpu_at_most() -> None:
    with pytest.raises(SpecError) as excinfo:
        render(make_spec("tei", gpus=2))
    assert excinfo.value.field == "gpus"


@pytest.mark.parametrize("engine", ["tgi", "tei"])
def test_hub_engines_refuse_s3_models(engine: str) -> None:
    with pytest.raises(SpecError) as excinfo:
        render(make_spec(engine, model_source="custom", model_ref="s3://bucket/model"))
    assert excinfo.value.field == "model_ref"


@pytest.mark.parametrize("engine", ["vllm", "tgi", "tei"])
def test_hub_engines_refuse_ngc_models(engine: str) -> None:
    with pytest.raises(SpecError) as excinfo:
        render(make_spec(engine, model_source="ngc"))
    assert excinfo.value.field == "model_source"


@pytest.mark.parametrize("engine", ["tgi", "tei"])
def test_hub_engines_refuse_args_that_move_the_port(engine: str) -> None:
    for args in (
        ["--port", "80"],
        ["-p", "80"],
        ["--hostname", "127.0.0.1"],
        ["--model-id", "x/y"],
    ):
        with pytest.raises(SpecError):
            render(make_spec(engine, extra_args=args))
