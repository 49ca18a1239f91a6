"""The pre-download Job's manifest: valid batch/v1, the engine's own downloader, the cache claim,
parts only where the claim can be shared; none where an operator or the engine does it."""

from __future__ import annotations

import dataclasses
from typing import Any

import kubernetes_validate
import pytest

from deployments.renderers import ModelCache, RenderSpec, SpecError, render, render_all
from deployments.renderers.download import job_name

from .specs import SHA, big_spec, make_spec

FILES = tuple(f"model-{i:05d}-of-00020.safetensors" for i in range(1, 21)) + ("config.json",)


def job_of(spec: RenderSpec) -> dict[str, Any] | None:
    return next((o for o in render(spec) if o["kind"] == "Job"), None)


def cached(engine: str = "vllm", mode: str = "ReadWriteOnce", **overrides: Any) -> RenderSpec:
    fields: dict[str, Any] = {"model_cache": ModelCache(size="200Gi", access_mode=mode),
                              "model_revision": SHA if engine != "nim" else None}  # fmt: skip
    fields.update(overrides)
    return make_spec(engine, **fields)


@pytest.mark.parametrize("spec", [
    cached(), cached(mode="ReadWriteMany", download_files=FILES), cached("tgi"), cached("nim"),
    big_spec("vllm", download_files=FILES, model_cache=ModelCache(size="1Ti", access_mode="ReadWriteMany")),
], ids=["vllm-rwo", "vllm-rwx-parts", "tgi", "nim", "vllm-big"])  # fmt: skip
def test_the_job_is_valid_kubernetes_and_comes_before_the_deployment(spec: RenderSpec) -> None:
    objects = render_all(spec)
    kinds = [o["kind"] for o in objects]
    assert kinds.index("PersistentVolumeClaim") < kinds.index("Job") < kinds.index("Deployment")
    for obj in objects:
        assert kubernetes_validate.validate(obj, "1.30", strict=True) == "1.30"


def test_the_job_mounts_the_cache_claim_where_the_engine_reads_it() -> None:
    spec = cached()
    job = job_of(spec)
    pod = job["spec"]["template"]["spec"]
    [volume] = pod["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] == "chat-model-cache"
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["HF_HOME"]["value"] == "/model-cache/huggingface"  # the engine's HF_HOME
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token"}
    assert container["volumeMounts"] == [{"name": "model-cache", "mountPath": "/model-cache"}]
    assert "nvidia.com/gpu" not in str(container["resources"])  # no GPU held while downloading
    assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 3
    assert job["spec"]["activeDeadlineSeconds"] == spec.startup_budget_seconds


def test_files_come_before_the_options_hugging_face_cli_reads() -> None:
    command = job_of(cached(download_files=("config.json", "model.safetensors")))["spec"]["template"][
        "spec"]["containers"][0]["command"]  # fmt: skip
    assert command == ["huggingface-cli", "download", "meta-llama/Llama-3.1-8B-Instruct",
                       "config.json", "model.safetensors", "--revision", SHA]  # fmt: skip


def test_a_shared_claim_splits_the_files_over_an_indexed_job() -> None:
    job = job_of(cached(mode="ReadWriteMany", download_files=FILES))
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 16, 4)
    script = spec["template"]["spec"]["containers"][0]["command"][2]
    assert all(name in script for name in FILES) and '"$JOB_COMPLETION_INDEX"' in script
    assert job["metadata"]["annotations"]["modeldeck.io/download-files"] == str(len(FILES))


def test_nim_downloads_its_profile_with_download_to_cache() -> None:
    job = job_of(cached("nim", nim_profile="tensorrt_llm-l4-bf16-tp1"))
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["download-to-cache", "--profiles", "tensorrt_llm-l4-bf16-tp1"]
    env = {e["name"]: e for e in container["env"]}
    assert env["NIM_CACHE_PATH"]["value"] == "/opt/nim/.cache"
    assert env["NGC_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "modeldeck-ngc-api-key"
    assert job["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "modeldeck-ngc-pull"}]


@pytest.mark.parametrize("spec", [
    make_spec("vllm"),  # no claim: each pod downloads into its own scratch volume
    cached("tei"),  # TEI's image has no downloader; it fills the claim on its first start
    cached("nim", operator="nim-operator"),  # NIMCache does it
    cached("vllm", operator="kserve"),  # KServe's storage initializer does it
    cached(model_source="custom", model_ref="pvc://models/llama", model_revision=None),
], ids=["no-claim", "tei", "nim-operator", "kserve", "pvc-model"])  # fmt: skip
def test_no_job_where_something_else_fills_the_cache(spec: RenderSpec) -> None:
    assert job_of(spec) is None


def test_the_job_name_changes_with_what_it_downloads_only() -> None:
    spec = cached()
    assert job_name(spec) == job_name(dataclasses.replace(spec, revision=9, replicas=3))
    assert job_name(spec) != job_name(dataclasses.replace(spec, model_revision="f" * 40))
    assert len(job_name(dataclasses.replace(spec, deployment_name="x" * 63))) <= 63


@pytest.mark.parametrize("path", ["../etc/passwd", "/abs", "a//b", ""])
def test_download_files_must_be_paths_inside_the_repo(path: str) -> None:
    with pytest.raises(SpecError) as err:
        render(cached(download_files=(path,)))
    assert err.value.field == "download_files"
