"""Pods a real GPU cluster runs: memory with /dev/shm, bounded scratch disk, deadlines that
agree, the TEI image for the GPU's architecture, and input that can't reach a cluster wrong."""

from __future__ import annotations

from typing import Any

import pytest

from deployments.renderers import ModelCache, RenderSpec, SpecError, render
from deployments.renderers.common import IMAGE_PULL_ALLOWANCE_SECONDS

from .specs import AFFINITY, make_spec


def deployment_of(spec: RenderSpec) -> dict[str, Any]:
    return next(o for o in render(spec) if o["kind"] == "Deployment")


def container_of(spec: RenderSpec) -> dict[str, Any]:
    return deployment_of(spec)["spec"]["template"]["spec"]["containers"][0]


def volumes_of(spec: RenderSpec) -> dict[str, dict[str, Any]]:
    pod = deployment_of(spec)["spec"]["template"]["spec"]
    return {v["name"]: v for v in pod["volumes"]}


# --- Memory and disk ----------------------------------------------------------------------------


def test_memory_limit_leaves_the_engine_its_memory_beside_dev_shm() -> None:
    # 4 GPUs: /dev/shm is 16Gi of tmpfs charged to the container; with a 16Gi limit the engine
    # would have had nothing left.
    spec = make_spec("vllm", gpus=4, memory="16Gi")
    resources = container_of(spec)["resources"]
    assert volumes_of(spec)["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    assert resources["limits"]["memory"] == resources["requests"]["memory"] == "32Gi"


def test_memory_with_a_given_shm_size_in_mebibytes() -> None:
    resources = container_of(make_spec("vllm", memory="8Gi", shm_size="512Mi"))["resources"]
    assert resources["limits"]["memory"] == "8704Mi"


def test_scratch_cache_is_bounded_and_requested_from_the_weights() -> None:
    spec = make_spec("vllm", model_bytes=16_000_000_000)  # an 8B model in bf16
    # 16 GB * 1.25 + 5 GiB, rounded up to whole GiB
    assert volumes_of(spec)["model-cache"]["emptyDir"] == {"sizeLimit": "24Gi"}
    assert container_of(spec)["resources"]["requests"]["ephemeral-storage"] == "24Gi"


def test_scratch_cache_without_known_weights_still_has_a_limit() -> None:
    spec = make_spec("nim")
    assert volumes_of(spec)["model-cache"]["emptyDir"] == {"sizeLimit": "50Gi"}
    assert container_of(spec)["resources"]["requests"]["ephemeral-storage"] == "50Gi"


def test_a_claim_cache_asks_for_no_ephemeral_storage() -> None:
    spec = make_spec("vllm", model_cache=ModelCache(size="100Gi", access_mode="ReadWriteOnce"))
    assert "ephemeral-storage" not in container_of(spec)["resources"]["requests"]
    assert "emptyDir" not in volumes_of(spec)["model-cache"]


@pytest.mark.parametrize("mode", ["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"])
def test_cache_claim_keeps_the_access_mode_it_is_given(mode: str) -> None:
    objects = render(make_spec("vllm", model_cache=ModelCache(size="100Gi", access_mode=mode)))
    pvc = next(o for o in objects if o["kind"] == "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == [mode]


def test_progress_deadline_covers_capacity_wait_image_pull_and_startup() -> None:
    spec = make_spec("vllm", startup_budget_seconds=7200, capacity_grace_seconds=600)
    deployment = deployment_of(spec)
    probe = container_of(spec)["startupProbe"]
    assert probe["failureThreshold"] * probe["periodSeconds"] == 7200
    assert deployment["spec"]["progressDeadlineSeconds"] == (
        600 + IMAGE_PULL_ALLOWANCE_SECONDS + 7200
    )


# --- TEI image per GPU architecture (TEI v1.5.1 README, "Docker Images") ------------------------


@pytest.mark.parametrize(
    "gpu_type,tag",
    [
        ("Tesla-T4", "turing-1.5"),
        ("NVIDIA-A100-SXM4-80GB", "1.5"),
        ("NVIDIA-A10G", "86-1.5"),
        ("NVIDIA-L4", "89-1.5"),
        ("NVIDIA-H100-80GB-HBM3", "hopper-1.5"),
    ],
)
def test_tei_image_follows_the_gpus_compute_capability(gpu_type: str, tag: str) -> None:
    spec = make_spec("tei", gpu_type=gpu_type)
    assert container_of(spec)["image"] == f"ghcr.io/huggingface/text-embeddings-inference:{tag}"


def test_tei_cpu_image_and_unknown_gpus_keep_the_bundles_image() -> None:
    cpu = make_spec("tei", gpus=0, image="ghcr.io/huggingface/text-embeddings-inference:cpu-1.5")
    assert container_of(cpu)["image"].endswith(":cpu-1.5")
    other = make_spec("tei", gpu_type="Some-Future-GPU")
    assert container_of(other)["image"].endswith(":1.5")


def test_tei_refuses_a_gpu_it_does_not_support() -> None:
    with pytest.raises(SpecError) as err:
        render(make_spec("tei", gpu_type="Tesla-V100-SXM2-16GB"))
    assert err.value.field == "gpu_type" and "7.0" in err.value.message


# --- Input that can't reach a cluster wrong -----------------------------------------------------


@pytest.mark.parametrize("engine", ["vllm", "tgi"])
def test_a_gpu_engine_image_with_no_gpu_is_refused(engine: str) -> None:
    with pytest.raises(SpecError) as err:
        render(make_spec(engine, gpus=0))
    assert err.value.field == "gpus"


def test_a_cpu_build_runs_without_a_gpu() -> None:
    spec = make_spec("vllm", gpus=0, image="public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.8.5")
    assert "nvidia.com/gpu" not in container_of(spec)["resources"]["limits"]


@pytest.mark.parametrize(
    "affinity,words",
    [
        ({"nodeAffinity": 5}, "nodeAffinity must be a mapping"),
        ({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": []}}, "mapping"),
        (
            {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In"}]}]}}},
            "values must be non-empty",
        ),
        (
            {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "zone", "operator": "Near", "values": ["a"]}]}]}}},
            "operator must be one of",
        ),
        (
            {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1000, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname"}}]}},
            "weight must be a whole number from 1 to 100",
        ),
        (
            {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"a": "b"}}}]}},
            "topologyKey",
        ),
        ({"nodeAffinity": {"required": {}}}, "unexpected"),
    ],
)  # fmt: skip
def test_affinity_is_checked_against_the_kubernetes_schema(
    affinity: dict[str, Any], words: str
) -> None:
    with pytest.raises(SpecError) as err:
        render(make_spec("vllm", affinity=affinity))
    assert err.value.field == "affinity"
    assert words in err.value.message


def test_a_valid_affinity_passes() -> None:
    pod = deployment_of(make_spec("vllm", affinity=AFFINITY))["spec"]["template"]["spec"]
    assert pod["affinity"] == AFFINITY


@pytest.mark.parametrize(
    "toleration,words",
    [
        ({"key": 5, "operator": "Exists"}, "must be a string"),
        ({"key": "a", "effect": "NoExecute", "tolerationSeconds": "60"}, "whole number"),
    ],
)
def test_tolerations_are_checked_against_the_kubernetes_schema(
    toleration: dict[str, Any], words: str
) -> None:
    with pytest.raises(SpecError) as err:
        render(make_spec("vllm", tolerations=[toleration]))
    assert err.value.field == "tolerations" and words in err.value.message
