"""Fixtures for the sandbox tests: an API emulator, a whole sandbox cluster, real clients.

These tests need no Django; run them alone with
`.venv/bin/pytest -p no:django --confcutdir=tests/sandbox tests/sandbox`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from sandbox.kubeapi import KubeEmulator
from sandbox.kubelet import SandboxCluster

APPLY = "application/apply-patch+yaml"


@pytest.fixture(scope="session", autouse=True)
def _warm_kubernetes_client() -> None:
    """The client builds its pydantic validators on first use of an API class (~1 s each);
    pay that once per session rather than inside whichever test comes first."""
    api = client.ApiClient(client.Configuration(host="http://127.0.0.1:9"))
    for api_class in (client.CoreV1Api, client.AppsV1Api, client.CustomObjectsApi):
        api_class(api)
    api.close()


@pytest.fixture
def emulator() -> Iterator[KubeEmulator]:
    emu = KubeEmulator()
    emu.start()
    yield emu
    emu.stop()


def api_client(url: str, **config: Any) -> client.ApiClient:
    configuration = client.Configuration(host=url)
    for key, value in config.items():
        setattr(configuration, key, value)
    return client.ApiClient(configuration)


@pytest.fixture
def kube(emulator: KubeEmulator) -> Iterator[client.ApiClient]:
    api = api_client(emulator.url)
    yield api
    api.close()


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Iterator[SandboxCluster]:
    """A sandbox cluster with fast timings; `@pytest.mark.parametrize("cluster", [{...}],
    indirect=True)` passes Kubelet/emulator options."""
    options = {"ready_delay": 0.2, "tick": 0.03, **getattr(request, "param", {})}
    sandbox = SandboxCluster(**options)
    sandbox.start()
    yield sandbox
    sandbox.stop()


@pytest.fixture
def cluster_api(cluster: SandboxCluster) -> Iterator[client.ApiClient]:
    api = api_client(cluster.url)
    yield api
    api.close()


def deployment(
    name: str,
    *,
    image: str = "vllm/vllm-openai:v0.6.3",
    replicas: int = 1,
    gpus: int = 1,
    labels: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    pod_spec: dict | None = None,
) -> dict:
    """A Deployment manifest shaped like the ones ModelDeck renders."""
    container: dict = {
        "name": "engine",
        "image": image,
        "ports": [{"name": "http", "containerPort": 8000}],
        "resources": {"limits": {"nvidia.com/gpu": str(gpus)}} if gpus else {},
    }
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/managed-by": "modeldeck", **(labels or {})},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container], **(pod_spec or {})},
            },
        },
    }


def apply(apps: client.AppsV1Api, namespace: str, body: dict, **kwargs: Any) -> Any:
    return apps.patch_namespaced_deployment(
        body["metadata"]["name"], namespace, body, field_manager="modeldeck",
        _content_type=APPLY, **kwargs,
    )  # fmt: skip


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll until `predicate()` is truthy; return its value or fail with the last one. The
    timeout only bounds a failing wait: with the fast timings a condition takes well under a
    second here, two to three times that on a busy CI machine (1.5 s was too close)."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value:
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")
        time.sleep(interval)
        value = predicate()
    return value
