"""Fixtures for deployment tests: a sandbox cluster where a test needs one, a pool, a model and a bundle."""

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


def runs_on_commit_work(request: pytest.FixtureRequest) -> bool:
    """Whether this test's on-commit callbacks fire (the push is queued on commit).

    In a transactional test every service transaction really commits, so the push runs (Celery
    is eager in tests). In a plain ``django_db`` test the test's transaction is rolled back and
    never commits: no push ever runs, so a sandbox there would be started for nothing."""
    marker = request.node.get_closest_marker("django_db")
    return "transactional_db" in request.fixturenames or bool(marker and marker.kwargs.get("transaction"))


@pytest.fixture
def pool(request: pytest.FixtureRequest, tenants) -> ComputePool:
    """The sandbox pool: backed by a running sandbox where the push runs or the test asks for the
    cluster itself; elsewhere an unreachable address (port 9), since nothing will call it."""
    if runs_on_commit_work(request) or {"cluster", "emulator"} & set(request.fixturenames):
        api_url = request.getfixturevalue("cluster").url
    else:
        api_url = "http://127.0.0.1:9"
    return ComputePool.objects.create(
        organization=tenants.org, name="sandbox", kind=PoolKind.SANDBOX, api_url=api_url, engine_label="vllm",
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
    """deploy(name, **spec overrides) through the real service.

    The push is queued on commit: in transactional tests it runs (eagerly) against the sandbox;
    in plain ``django_db`` tests nothing commits, so the deployment stays Pending with its GPUs
    reserved — use ``deploy_pushed`` where the test needs the push to have run."""
    from deployments.services import deployment_create

    def _deploy(name: str = "chat", *, spec: dict | None = None, **kwargs) -> ModelDeployment:
        merged = {**BASE_SPEC, "served_model_name": name, **(spec or {})}
        return deployment_create(
            user=tenants.owner, project=tenants.project, model=kwargs.pop("model", model), pool=kwargs.pop("pool", pool),
            name=name, spec=merged, bundle=kwargs.pop("bundle", bundle), **kwargs,
        )  # fmt: skip

    return _deploy


@pytest.fixture
def deploy_pushed(deploy, cluster, django_capture_on_commit_callbacks) -> Callable[..., ModelDeployment]:
    """deploy(), then run the on-commit push as a real commit would (plain ``django_db`` tests)."""

    def _deploy_pushed(*args, **kwargs) -> ModelDeployment:
        with django_capture_on_commit_callbacks(execute=True):
            deployment = deploy(*args, **kwargs)
        deployment.refresh_from_db()
        return deployment

    return _deploy_pushed


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
