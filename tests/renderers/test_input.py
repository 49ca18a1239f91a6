"""What a spec must look like to be rendered, and how argument lists are merged."""

from __future__ import annotations

from typing import Any

import pytest

from deployments.renderers import (
    ModelCache,
    SpecError,
    merge_args,
    render,
    render_service,
    validate_spec,
)

from .specs import make_spec


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"deployment_name": "Chat"}, "deployment_name"),
        ({"deployment_name": "1chat"}, "deployment_name"),  # a Service name starts with a letter
        ({"deployment_name": "chat-"}, "deployment_name"),
        ({"deployment_name": "c" * 64}, "deployment_name"),
        ({"namespace": "team_a"}, "namespace"),
        ({"deployment_id": 0}, "deployment_id"),
        ({"revision": 0}, "revision"),
        ({"engine": "ollama"}, "engine"),
        ({"model_source": "civitai"}, "model_source"),
        ({"gpus": -1}, "gpus"),
        ({"replicas": -1}, "replicas"),
        ({"replicas": True}, "replicas"),
        ({"replicas": "2"}, "replicas"),
        ({"context_length": 0}, "context_length"),
        ({"cpu": "four"}, "cpu"),
        ({"memory": "-16Gi"}, "memory"),
        ({"shm_size": "lots"}, "shm_size"),
        ({"image": "vllm/vllm-openai"}, "image"),  # no tag: not an immutable snapshot
        ({"image": ""}, "image"),
        ({"model_ref": "not a repo id"}, "model_ref"),
        ({"model_revision": "abc def"}, "model_revision"),
        ({"served_model_name": "my model"}, "served_model_name"),
        ({"gpus": 0, "gpu_type": "NVIDIA-A100"}, "gpu_type"),
        ({"gpu_type": "NVIDIA A100"}, "gpu_type"),
        (
            {"gpu_type": "NVIDIA-A100", "node_selector": {"nvidia.com/gpu.product": "NVIDIA-L4"}},
            "node_selector",
        ),
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"startup_budget_seconds": 0}, "startup_budget_seconds"),
        ({"labels": {"team": "a b"}}, "labels"),
        ({"labels": {"bad key!": "x"}}, "labels"),
        ({"annotations": {"/nope": "x"}}, "annotations"),
        ({"node_selector": {"zone": "x" * 64}}, "node_selector"),
        ({"env": {"1BAD": "x"}}, "env"),
        ({"env": {"HF_TOKEN": "hf_x"}}, "env"),
        ({"secret_env": {"HF_TOKEN": ("Bad_Secret", "token")}}, "secret_env"),
        ({"secret_env": {"HF_TOKEN": ("hf",)}}, "secret_env"),
        ({"image_pull_secrets": ("Bad Secret",)}, "image_pull_secrets"),
        ({"tolerations": [{"key": "a", "operator": "Sometimes"}]}, "tolerations"),
        ({"tolerations": [{"key": "a", "colour": "blue"}]}, "tolerations"),
        ({"tolerations": [{"key": "a", "operator": "Exists", "value": "b"}]}, "tolerations"),
        (
            {"tolerations": [{"key": "a", "effect": "NoSchedule", "tolerationSeconds": 5}]},
            "tolerations",
        ),
        ({"affinity": {"nodeSelector": {}}}, "affinity"),
        ({"extra_args": ["serve-fast"]}, "extra_args"),
        ({"bundle_args": ["model", "--x"]}, "bundle_args"),
        ({"engine_vars": {"Max-Num-Seqs": "4"}}, "engine_vars"),
        ({"model_cache": ModelCache(size="lots")}, "model_cache.size"),
        (
            {"model_cache": ModelCache(size="1Gi", access_mode="ReadWriteSometimes")},
            "model_cache.access_mode",
        ),
        (
            {"model_cache": ModelCache(size="1Gi", storage_class="Fast SSD")},
            "model_cache.storage_class",
        ),
        ({"model_source": "custom", "model_ref": "pvc://Bad_Claim/x"}, "model_ref"),
        ({"model_source": "custom", "model_ref": "pvc://claim/../etc"}, "model_ref"),
        ({"model_source": "custom", "model_ref": "gs://bucket/model"}, "model_ref"),
        ({"model_source": "custom", "model_ref": "/models/llama"}, "model_ref"),
        ({"nim_profile": "tp4"}, "nim_profile"),
        ({"max_client_batch_size": 8}, "max_client_batch_size"),
    ],
)
def test_unrenderable_specs_are_refused_with_the_field_to_blame(
    overrides: dict[str, Any], field: str
) -> None:
    spec = make_spec("vllm", **overrides)
    with pytest.raises(SpecError) as excinfo:
        render(spec)
    assert excinfo.value.field == field
    assert str(excinfo.value).startswith(f"{field}: ")
    # The same check is reachable without rendering, for forms and the API.
    with pytest.raises(SpecError):
        spec.validate()
    with pytest.raises(SpecError):
        render_service(spec)


def test_a_valid_spec_validates() -> None:
    spec = make_spec()
    spec.validate()
    validate_spec(spec)


def test_the_longest_allowed_name_renders() -> None:
    objects = render(make_spec(deployment_name="c" * 63, revision=123456))
    assert objects[0]["metadata"]["name"] == "c" * 63 + "-r123456"


# --- merge_args -------------------------------------------------------------------------------


def test_later_lists_win_for_the_same_flag() -> None:
    assert merge_args(["--a", "1", "--b"], ["--a", "2"]) == ["--b", "--a", "2"]


def test_flags_with_equals_and_separate_values_are_the_same_flag() -> None:
    assert merge_args(["--max-model-len", "4096"], ["--max-model-len=8192"]) == [
        "--max-model-len=8192"
    ]
    assert merge_args(["--x=1"], ["--x", "2"]) == ["--x", "2"]


def test_a_negated_flag_replaces_the_positive_one() -> None:
    assert merge_args(["--enable-prefix-caching"], ["--no-enable-prefix-caching"]) == [
        "--no-enable-prefix-caching"
    ]


def test_positional_arguments_stay_in_front() -> None:
    assert merge_args(["model", "--port", "8000"], ["--dtype", "half"]) == [
        "model",
        "--port",
        "8000",
        "--dtype",
        "half",
    ]


def test_a_flag_repeated_in_one_list_is_kept() -> None:
    assert merge_args(["--middleware", "a", "--middleware", "b"], ["--x"]) == [
        "--middleware",
        "a",
        "--middleware",
        "b",
        "--x",
    ]
    assert merge_args(["--m", "a", "--m", "b"], ["--m", "c"]) == ["--m", "c"]


def test_negative_numbers_and_json_are_values_not_flags() -> None:
    assert merge_args(["--seed", "-1"], ["--override", '{"a": -1}']) == [
        "--seed",
        "-1",
        "--override",
        '{"a": -1}',
    ]
    assert merge_args(["--seed", "-1"], ["--seed", "7"]) == ["--seed", "7"]


def test_nothing_to_merge() -> None:
    assert merge_args() == []
    assert merge_args([], ["--x"]) == ["--x"]
