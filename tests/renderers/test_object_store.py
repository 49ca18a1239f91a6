"""s3:// weights: vLLM's Run:ai streamer with the project's S3 credentials from a Secret; other
engines refuse object-store URIs at save time."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from deployments.renderers import RenderSpec, SpecError, render_all
from deployments.renderers.flags import table_for

from .specs import make_spec

S3_ENV = {
    name: ("modeldeck-s3", name)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")
}
CPU_VLLM = "public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.8.5"


def s3_spec(engine: str = "vllm", **overrides: Any) -> RenderSpec:
    fields: dict[str, Any] = {
        "model_source": "custom", "model_ref": "s3://models-bucket/llama/8b", "secret_env": S3_ENV,
        "served_model_name": "llama",
    }  # fmt: skip
    fields.update(overrides)
    return make_spec(engine, **fields)


def container(spec: RenderSpec) -> dict[str, Any]:
    deployment = next(o for o in render_all(spec) if o["kind"] == "Deployment")
    return deployment["spec"]["template"]["spec"]["containers"][0]


def test_s3_model_streams_with_the_run_ai_loader_and_the_projects_credentials() -> None:
    spec = s3_spec()
    c = container(spec)
    args = c["args"]
    assert args[0] == "s3://models-bucket/llama/8b"
    assert args[args.index("--load-format") + 1] == "runai_streamer"
    env = {e["name"]: e for e in c["env"]}
    for name in S3_ENV:
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "modeldeck-s3", "key": name}
        assert "value" not in env[name]
    # An S3-compatible endpoint: path-style addressing, no EC2 metadata lookup (vLLM's docs).
    assert env["RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING"]["value"] == "0"
    assert env["AWS_EC2_METADATA_DISABLED"]["value"] == "true"
    for obj in render_all(spec):
        assert kubernetes_validate.validate(obj, "1.30", strict=True) == "1.30"


def test_plain_aws_s3_needs_no_compatibility_switches() -> None:
    env = {e["name"] for e in container(s3_spec(secret_env={k: v for k, v in S3_ENV.items()
                                                            if k != "AWS_ENDPOINT_URL"}))["env"]}  # fmt: skip
    assert "AWS_ACCESS_KEY_ID" in env and "RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING" not in env


def test_load_format_is_a_flag_of_the_pinned_vllm() -> None:
    table = table_for("vllm", CPU_VLLM)
    assert table is not None and table.version == "0.8.5"
    assert table.problems(["--load-format", "runai_streamer"]) == []
    assert "runai_streamer" in table.flags["--load-format"]["values_modeldeck_renders"]


def test_a_hub_model_gets_no_streamer() -> None:
    assert "--load-format" not in container(make_spec("vllm"))["args"]


def test_another_load_format_for_an_s3_model_is_refused() -> None:
    with pytest.raises(SpecError) as err:
        render_all(s3_spec(extra_args=("--load-format", "safetensors")))
    assert err.value.field == "extra_args" and "runai_streamer" in err.value.message
    # Saying the same thing again is fine.
    args = container(s3_spec(extra_args=("--load-format", "runai_streamer")))["args"]
    assert args.count("--load-format") == 1


def test_s3_keys_as_plain_env_are_refused() -> None:
    with pytest.raises(SpecError) as err:
        render_all(s3_spec(env={"AWS_SECRET_ACCESS_KEY": "oops"}, secret_env={}))
    assert err.value.field == "env" and "credential" in err.value.message


@pytest.mark.parametrize("engine", ["tgi", "tei", "nim"])
def test_engines_without_an_object_store_loader_refuse_s3(engine: str) -> None:
    with pytest.raises(SpecError) as err:
        render_all(s3_spec(engine, secret_env={}))
    assert err.value.field == "model_ref" and "pvc://" in err.value.message


@pytest.mark.parametrize("uri", ["gs://bucket/model", "hf://org/model"])
def test_vllm_refuses_uris_the_catalog_no_longer_accepts(uri: str) -> None:
    with pytest.raises(SpecError) as err:
        render_all(s3_spec(model_ref=uri, secret_env={}))
    assert err.value.field == "model_ref"
