"""Gateway fixtures: the simulated engine, live gateways (uvicorn in threads), Running deployments, keys."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass

import pytest
import redis
import uvicorn
from django.conf import settings
from django.utils import timezone

from catalog.models import CatalogModel, ProfileBundle
from deployments.models import ComputePool, DeploymentState, ModelDeployment, PoolKind, Revision
from projects.keys import api_key_create
from sandbox.engine import SimulatedEngine, run_engine_in_thread

UNLIMITED = {"rpm": None, "tpm": None}


def make_spec(
    served_model_name: str, *, rate_limits: dict | None = None, pricing: dict | None = None
) -> dict:
    """A canonical spec (the deployment-spec contract), as normalize_spec would produce it."""
    return {
        "engine": "vllm",
        "image": "vllm/vllm-openai:v0.6.3",
        "served_model_name": served_model_name,
        "replicas": {"min": 1, "max": 1},
        "context_length": 8192,
        "prompt_caching": True,
        "resources": {"cpu": "4", "memory": "16Gi", "gpus": 1, "gpu_type": ""},
        "env": {},
        "labels": {},
        "annotations": {},
        "tolerations": [],
        "node_selector": {},
        "affinity": None,
        "extra_args": [],
        "model_cache": None,
        "nim_profile": "",
        "nim_tag": "",
        "autoscaling": {"enabled": False, "metric": "concurrency", "target": 8},
        "rate_limits": {
            "organization": dict(UNLIMITED),
            "user": dict(UNLIMITED),
            "api_key": dict(UNLIMITED),
            **(rate_limits or {}),
        },
        "pricing": pricing
        or {"currency": "USD", "input_per_million": "0.00", "output_per_million": "0.00"},
    }


def make_deployment(
    project,
    name: str,
    *,
    served_model_name: str | None = None,
    state: str = DeploymentState.RUNNING,
    rate_limits: dict | None = None,
    pricing: dict | None = None,
) -> ModelDeployment:
    org = project.organization
    model, _ = CatalogModel.objects.get_or_create(
        organization=org,
        name=f"{name}-model",
        defaults={"source": "huggingface", "repo_id": f"acme/{name}"},
    )
    bundle, _ = ProfileBundle.objects.get_or_create(
        organization=org,
        name="gateway-test-vllm",
        version=1,
        defaults={"engine": "vllm", "image": "vllm/vllm-openai:v0.6.3"},
    )
    pool, _ = ComputePool.objects.get_or_create(
        organization=org,
        name="sandbox",
        defaults={"kind": PoolKind.SANDBOX, "engine_label": "vllm"},
    )
    deployment = ModelDeployment.objects.create(
        project=project,
        model=model,
        bundle=bundle,
        pool=pool,
        name=name,
        state=state,
        state_changed_at=timezone.now(),
    )
    revision = Revision.objects.create(
        deployment=deployment,
        number=1,
        spec=make_spec(served_model_name or name, rate_limits=rate_limits, pricing=pricing),
    )
    deployment.current_revision = deployment.serving_revision = revision
    deployment.save(update_fields=["current_revision", "serving_revision"])
    return deployment


def make_key(user, organization, name: str = "test key", **kwargs) -> str:
    _, secret = api_key_create(user=user, organization=organization, name=name, **kwargs)
    return secret


@dataclass
class Server:
    url: str
    app: object
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        _close_server_connections()


def _close_server_connections() -> None:
    """End the database sessions the stopped server's worker threads left open (Django under
    ASGI keeps one per thread), so the test database can be flushed and dropped."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


def start_console(**options) -> Server:
    """console.asgi's composition (gateway under /v1, Django for the rest) on a free loopback port."""
    from django.core.asgi import get_asgi_application

    from gateway.app import mount

    app = mount(get_asgi_application(), **options)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="on", timeout_keep_alive=30
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the console did not start")
        time.sleep(0.01)
    return Server(f"http://127.0.0.1:{sock.getsockname()[1]}", app, server, thread)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # The tenants fixture hashes four passwords per test; PBKDF2 makes that seconds.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _clean_redis():
    """Rate-limit windows, the usage buffer and the cache generation start empty in every test."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def engine_server():
    engine = SimulatedEngine()
    url, stop = run_engine_in_thread(engine=engine)
    yield engine, url
    stop()


@pytest.fixture
def engine(engine_server, settings):
    engine, url = engine_server
    settings.SANDBOX_ENGINE_URL = url
    engine.requests.clear()
    return engine


@pytest.fixture
def gateway(engine, transactional_db):
    server = start_console()
    yield server
    server.stop()


@pytest.fixture
def gateways(engine, transactional_db):
    """Two gateway servers: separate caches, pools and Redis clients, like two processes."""
    servers = [start_console(), start_console()]
    yield servers
    for server in servers:
        server.stop()


def run_coroutine(make):
    """asyncio.run in a thread of its own: in the whole suite's order a browser test's event loop
    can still be running in the main thread, where asyncio.run refuses to start."""
    result: dict = {}

    def target():
        try:
            result["value"] = asyncio.run(make())
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]
