"""Spec rules at save time (the service the form, the API and `apply -f` share), and what the
saved spec renders: cache access mode, startup budget, context length, affinity, GPUs."""

from __future__ import annotations

import math

import pytest
from django.core.exceptions import ValidationError

from catalog.models import CatalogModel, ProfileBundle
from deployments.renderers import render
from deployments.spec import render_spec_for

pytestmark = pytest.mark.django_db

BASE = {"resources": {"cpu": "2", "memory": "8Gi", "gpus": 1}}


@pytest.fixture
def offline_pool(tenants):
    from deployments.models import ComputePool, PoolKind

    return ComputePool.objects.create(
        organization=tenants.org, name="offline", kind=PoolKind.SANDBOX,
        api_url="http://127.0.0.1:9", engine_label="vllm",
    )  # fmt: skip


@pytest.fixture
def qwen(tenants) -> CatalogModel:
    # Qwen2.5-0.5B-Instruct's own facts: 32,768 positions, one 988 MB safetensors file.
    return CatalogModel.objects.create(
        organization=tenants.org, name="Qwen2.5 0.5B Instruct", source="huggingface",
        repo_id="Qwen/Qwen2.5-0.5B-Instruct", revision="a8b602d9dafd3a75d382e62757d83d89fca3be54",
        task="text-generation", config={"max_position_embeddings": 32768},
        files=[{"path": "model.safetensors", "size": 988_097_824}, {"path": "config.json", "size": 659}],
    )  # fmt: skip


@pytest.fixture
def big_model(tenants) -> CatalogModel:
    return CatalogModel.objects.create(
        organization=tenants.org, name="Big", source="huggingface", repo_id="org/big",
        revision="0" * 40, config={"max_position_embeddings": 131072},
        files=[{"path": f"model-{i}.safetensors", "size": 5_000_000_000} for i in range(28)],
    )  # fmt: skip


@pytest.fixture
def vllm_bundle(tenants) -> ProfileBundle:
    return ProfileBundle.objects.create(
        organization=tenants.org, name="vllm-test", engine="vllm", image="vllm/vllm-openai:v0.8.5",
        labels={ProfileBundle.ENGINE_LABEL: "vllm"},
    )  # fmt: skip


@pytest.fixture
def create(tenants, offline_pool, qwen, vllm_bundle):
    from deployments.services import deployment_create

    def _create(spec: dict, *, model=None, bundle=None, name: str = "chat"):
        return deployment_create(
            user=tenants.owner, project=tenants.project, model=model or qwen, pool=offline_pool,
            name=name, bundle=bundle or vllm_bundle, spec={**BASE, **spec},
        )  # fmt: skip

    return _create


def _objects(deployment) -> dict[str, dict]:
    rs = render_spec_for(deployment, deployment.current_revision)
    return {o["kind"]: o for o in render(rs)}


def _errors(exc: pytest.ExceptionInfo[ValidationError]) -> dict[str, str]:
    return {k: " ".join(v) for k, v in exc.value.message_dict.items()}


# --- Model cache access mode --------------------------------------------------------------------


def test_cache_for_one_replica_is_read_write_once(create) -> None:
    deployment = create({"model_cache": {"size": "20Gi"}})
    assert _objects(deployment)["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_cache_shared_by_replicas_is_read_write_many(create) -> None:
    deployment = create({"model_cache": {"size": "20Gi"}, "replicas": {"min": 1, "max": 3}})
    assert _objects(deployment)["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]


def test_cache_access_mode_can_be_set_and_is_honoured(create) -> None:
    deployment = create({"model_cache": {"size": "20Gi", "access_mode": "ReadWriteOncePod"}})
    assert deployment.current_revision.spec["model_cache"]["access_mode"] == "ReadWriteOncePod"
    pvc = _objects(deployment)["PersistentVolumeClaim"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteOncePod"]


def test_a_bad_cache_access_mode_is_a_field_error(create) -> None:
    with pytest.raises(ValidationError) as exc:
        create({"model_cache": {"size": "20Gi", "access_mode": "ReadEverything"}})
    assert "ReadWriteOnce" in _errors(exc)["model_cache"]


# --- Startup budget -----------------------------------------------------------------------------


def _startup_seconds(deployment) -> int:
    probe = _objects(deployment)["Deployment"]["spec"]["template"]["spec"]["containers"][0][
        "startupProbe"
    ]
    return probe["failureThreshold"] * probe["periodSeconds"]


def test_startup_budget_is_sized_from_the_models_weights(create, big_model) -> None:
    small = create({})
    big = create({}, model=big_model, name="big")
    # 600 s plus the download at 50 MB/s: 988 MB -> 619 s; 140 GB -> 3,400 s.
    assert _startup_seconds(small) == 10 * math.ceil((600 + 988_097_824 // 50_000_000) / 10)
    assert _startup_seconds(big) == 3400
    progress = _objects(big)["Deployment"]["spec"]["progressDeadlineSeconds"]
    assert progress == 900 + 900 + 3400  # capacity grace + image pull + startup


def test_startup_budget_can_be_set_per_deployment(create) -> None:
    deployment = create({"startup_budget_seconds": 7200})
    assert _startup_seconds(deployment) == 7200
    with pytest.raises(ValidationError) as exc:
        create({"startup_budget_seconds": 5}, name="tiny")
    assert "startup_budget_seconds" in _errors(exc)


def test_capacity_grace_can_be_set_and_is_stored(create) -> None:
    deployment = create({"capacity_grace_seconds": 1800})
    assert deployment.current_revision.spec["capacity_grace_seconds"] == 1800
    with pytest.raises(ValidationError) as exc:
        create({"capacity_grace_seconds": -1}, name="neg")
    assert "capacity_grace_seconds" in _errors(exc)


# --- Context length -----------------------------------------------------------------------------


def test_context_length_above_the_models_maximum_is_refused(create) -> None:
    with pytest.raises(ValidationError) as exc:
        create({"context_length": 10_000_000})
    message = _errors(exc)["context_length"]
    assert "32,768" in message and "RoPE" in message


def test_context_length_within_the_maximum_is_fine(create) -> None:
    assert create({"context_length": 32768}).current_revision.spec["context_length"] == 32768


def test_a_bundle_declaring_rope_scaling_may_go_beyond(create, tenants) -> None:
    yarn = ProfileBundle.objects.create(
        organization=tenants.org, name="vllm-yarn", engine="vllm", image="vllm/vllm-openai:v0.8.5",
        default_args=["--rope-scaling", '{"rope_type":"yarn","factor":4.0,'
                      '"original_max_position_embeddings":32768}'],
        labels={ProfileBundle.ENGINE_LABEL: "vllm"},
    )  # fmt: skip
    deployment = create({"context_length": 131072}, bundle=yarn)
    args = _objects(deployment)["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--rope-scaling" in args and "131072" in args


# --- Affinity, GPUs, reserved labels ------------------------------------------------------------


def test_a_wrongly_typed_affinity_is_a_field_error_at_save(create) -> None:
    with pytest.raises(ValidationError) as exc:
        create({"affinity": {"nodeAffinity": 5}})
    assert "nodeAffinity must be a mapping" in _errors(exc)["affinity"]


def test_vllm_with_zero_gpus_is_refused(create) -> None:
    with pytest.raises(ValidationError) as exc:
        create({"resources": {"cpu": "2", "memory": "8Gi", "gpus": 0}})
    assert "GPU" in _errors(exc)["resources.gpus"]


def test_a_reserved_label_is_refused_with_a_message(create) -> None:
    with pytest.raises(ValidationError) as exc:
        create({"labels": {"app.kubernetes.io/managed-by": "helm"}})
    assert "set by ModelDeck" in _errors(exc)["labels"]


def test_a_flag_vllm_085_does_not_have_is_refused(create) -> None:
    with pytest.raises(ValidationError) as exc:
        create({"extra_args": ["--max-num-seqz", "64"]})
    assert "--max-num-seqz is not a vllm 0.8.5 flag" in _errors(exc)["extra_args"]
