"""Fixtures for deployment tests: a sandbox cluster per test, a sandbox pool pointing at it, a model and bundle."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from catalog.models import CatalogModel, ProfileBundle
from deployments.models import ComputePool, ModelDeployment, PoolKind
from sandbox.kubelet import SandboxCluster

BASE_SPEC = {"resources": {"cpu": "2", "memory": "8Gi", "gpus": 1}}


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings) -> None:
    # The shared `tenants` fixture sets five passwords; the production hasher makes that seconds.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def cluster() -> Iterator[SandboxCluster]:
    """A fresh emulator + simulated kubelet on a free port: 2 nodes with 4 NVIDIA L4 each."""
    sandbox = SandboxCluster(ready_delay=0.3, tick=0.05)
    sandbox.start()
    yield sandbox
    sandbox.stop()


@pytest.fixture
def emulator(cluster):
    return cluster.emulator


@pytest.fixture
def pool(tenants, cluster) -> ComputePool:
    return ComputePool.objects.create(
        organization=tenants.org, name="sandbox", kind=PoolKind.SANDBOX, api_url=cluster.url, engine_label="vllm",
        description="Simulated pool for tests.",
    )  # fmt: skip


@pytest.fixture
def bundle(tenants) -> ProfileBundle:
    return ProfileBundle.objects.create(
        organization=tenants.org, name="vllm-test", engine="vllm", image="vllm/vllm-openai:v0.6.3",
        default_args=["--max-num-seqs", "32"], labels={ProfileBundle.ENGINE_LABEL: "vllm"},
    )  # fmt: skip


@pytest.fixture
def model(tenants) -> CatalogModel:
    return CatalogModel.objects.create(
        organization=tenants.org, name="Qwen2.5 0.5B Instruct", source="huggingface",
        repo_id="Qwen/Qwen2.5-0.5B-Instruct", revision="a8b602d9dafd3a75d382e62757d83d89fca3be54",
        task="text-generation",
    )  # fmt: skip


@pytest.fixture
def deploy(tenants, model, bundle, pool) -> Callable[..., ModelDeployment]:
    """deploy(name, **spec overrides) through the real service (push runs on commit, eagerly)."""
    from deployments.services import deployment_create

    def _deploy(name: str = "chat", *, spec: dict | None = None, **kwargs) -> ModelDeployment:
        merged = {**BASE_SPEC, "served_model_name": name, **(spec or {})}
        return deployment_create(
            user=tenants.owner, project=tenants.project, model=kwargs.pop("model", model), pool=kwargs.pop("pool", pool),
            name=name, spec=merged, bundle=kwargs.pop("bundle", bundle), **kwargs,
        )  # fmt: skip

    return _deploy


def wait_for(
    predicate: Callable[[], object], *, timeout: float = 15.0, step: float = 0.05, sync: bool = True
) -> object:
    """Run status syncs until `predicate()` is truthy (the kubelet works in the background)."""
    from deployments.tasks import sync_status

    deadline = time.monotonic() + timeout
    while True:
        if sync:
            sync_status()
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(step)


def state_of(deployment: ModelDeployment) -> str:
    deployment.refresh_from_db()
    return deployment.state
