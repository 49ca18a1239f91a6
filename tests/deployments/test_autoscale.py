"""Autoscaling and scale-to-zero in the sandbox, end to end: the gateway measures (gateway/load.py),
the autoscaler decides and scales the serving revision in place (deployments/autoscale.py), the
GPU quota bounds it, and requests to a deployment at zero are held until a replica is ready.

The pool is exposed through the sandbox's ingress (only Ready pods answer, 503 otherwise), so a
held request that got a 200 really waited for a pod. A background thread plays Celery beat
(the autoscaler and the status sync every 0.25 s)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.db import connection
from openai import OpenAI
from rest_framework.test import APIClient

from deployments.autoscale import EmbeddedAutoscaler, autoscale_all
from deployments.models import (
    ComputePool,
    DeploymentScale,
    DeploymentState,
    ModelDeployment,
    PoolExposure,
    PoolKind,
)
from deployments.services import deployment_create, deployment_deactivate, pool_test_connection
from deployments.tasks import sync_status
from gateway import memstore
from projects.models import Project
from sandbox.kubelet import SandboxCluster
from tests.deployments.conftest import BASE_SPEC
from tests.gateway.conftest import _clean_redis, engine_server, make_key, start_console  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db(transaction=True)

COLD_START = 1.0  # the sandbox's seconds from scheduling to Ready
CHAT = {"model": "qwen", "messages": [{"role": "user", "content": "hi"}]}


class Beat(threading.Thread):
    """Celery beat's two periodic tasks that matter here, run in a loop."""

    def __init__(self, *, autoscale: bool = True) -> None:
        super().__init__(daemon=True)
        self.stopped = threading.Event()
        self.errors: list[BaseException] = []
        self.autoscale = autoscale  # False: the embedded mode's autoscaler runs beside the gateway

    def run(self) -> None:
        try:
            while not self.stopped.is_set():
                try:
                    if self.autoscale:
                        autoscale_all()
                    sync_status()
                except Exception as exc:  # noqa: BLE001 - reported by the test
                    self.errors.append(exc)
                finally:
                    connection.close()  # as a worker between tasks: the pool is small (4)
                self.stopped.wait(0.25)
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=10)


@pytest.fixture
def world(request, engine_server, settings, tenants, bundle, model, tmp_path):  # noqa: F811 - the imported fixture
    """The sandbox pool behind an ingress, beat, and (on first use) a gateway; with Redis, or
    (`indirect` param "embedded") without it, as `make run` runs: the gateway measures in its
    process's memory and EmbeddedAutoscaler decides there, beat only syncs."""
    embedded = getattr(request, "param", "redis") == "embedded"
    if embedded:
        settings.REDIS_URL = None
        settings.MODELDECK_DATA_DIR = tmp_path
        memstore.STORE.reset()
    _, engine_url = engine_server
    settings.SANDBOX_ENGINE_URL = "http://127.0.0.1:9"  # only the ingress route can answer
    settings.MODELDECK_AUTOSCALE_WINDOW_SECONDS = 2
    settings.MODELDECK_GATEWAY_HOLD_QUEUE = 50
    cluster = SandboxCluster(ready_delay=COLD_START, tick=0.05, engine_url=engine_url)
    cluster.start()
    pool = ComputePool.objects.create(
        organization=tenants.org, name="edge", kind=PoolKind.SANDBOX, api_url=cluster.url,
        engine_label="vllm", exposure=PoolExposure.INGRESS, exposure_host="models.example.test",
        exposure_address=cluster.network.url, ingress_class="nginx", ingress_namespace="ingress-nginx",
    )  # fmt: skip
    pool_test_connection(user=None, pool=pool)
    beat = Beat(autoscale=not embedded)
    autoscaler = EmbeddedAutoscaler(tick=0.25) if embedded else None
    servers = []

    class World:
        def __init__(self) -> None:
            self.cluster, self.pool, self.beat = cluster, pool, beat

        def gateway(self):
            if not servers:
                servers.append(start_console())
            return servers[0]

        def deploy(self, *, replicas: dict, autoscaling: dict) -> ModelDeployment:
            deployment = deployment_create(
                user=tenants.owner, project=tenants.project, model=model, pool=pool, name="qwen",
                bundle=bundle, spec={**BASE_SPEC, "served_model_name": "qwen", "replicas": replicas,
                                     "autoscaling": autoscaling},
            )  # fmt: skip
            if not beat.is_alive():
                beat.start()
                if autoscaler is not None:
                    autoscaler.start()
            return deployment

        def key(self) -> str:
            return make_key(tenants.owner, tenants.org)

    yield World()
    if autoscaler is not None and autoscaler.is_alive():
        autoscaler.stop()
    beat.stop()
    for server in servers:
        server.stop()
    cluster.stop()
    assert not beat.errors, beat.errors


def scale_of(deployment: ModelDeployment) -> DeploymentScale | None:
    return DeploymentScale.objects.filter(deployment=deployment).first()


def until(predicate, timeout: float = 20.0, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not met in time")


def pods_of(world, deployment) -> int:
    ns = deployment.project.namespace()
    return sum(
        1 for pod in world.cluster.emulator.list_objects("Pod", ns)
        if pod["metadata"]["labels"].get("modeldeck.io/deployment-id") == str(deployment.pk)
        and not pod["metadata"].get("deletionTimestamp")
    )  # fmt: skip


def at_zero(world, deployment) -> bool:
    scale = scale_of(deployment)
    return scale is not None and scale.desired == 0 and scale.ready == 0 and pods_of(world, deployment) == 0


TO_ZERO = {"metric": "concurrency", "target": 1, "scale_down_delay_seconds": 0,
           "scale_to_zero_after_seconds": 2, "cold_start_hold_seconds": 30}  # fmt: skip


def test_idle_deployment_goes_to_zero_after_the_window_and_gives_its_gpus_back(world, tenants):
    deployment = world.deploy(replicas={"min": 0, "max": 1}, autoscaling=TO_ZERO)
    until(lambda: (scale_of(deployment) or DeploymentScale()).ready == 1)
    assert deployment.gpus_held() == 1  # admission reserved the start replica (min 0 starts at 1)

    until(lambda: at_zero(world, deployment))

    event = deployment.events.filter(reason="Autoscaled", message__startswith="1 → 0").get()
    assert "no request for" in event.message and "scale to zero after 2 s" in event.message
    until(lambda: deployment.gpus_held() == 0)
    client = APIClient()
    client.force_authenticate(tenants.owner)
    scale = client.get(f"/api/v1/deployments/{deployment.pk}/").json()["scale"]
    assert scale["desired"] == 0 and scale["ready"] == 0 and scale["reason"].startswith("1 → 0")
    # Its logs say why there are none and what brings a pod back (was 503 "no pods right now").
    logs = client.get(f"/api/v1/deployments/{deployment.pk}/logs/")
    assert logs.status_code == 409 and logs.json()["scaled_to_zero"] is True, logs.content
    assert "scaled to zero while idle" in logs.json()["detail"] and "The next request" in logs.json()["detail"]


@pytest.mark.parametrize("world", ["redis", "embedded"], indirect=True)
def test_request_at_zero_is_held_until_a_replica_is_ready_streams_too(world):
    deployment = world.deploy(replicas={"min": 0, "max": 1}, autoscaling=TO_ZERO)
    until(lambda: at_zero(world, deployment))
    client = OpenAI(base_url=world.gateway().base_url, api_key=world.key(), max_retries=0, timeout=60)
    reached_before = len(world.cluster.network.requests)

    started = time.monotonic()
    reply = client.chat.completions.create(**CHAT)
    waited = time.monotonic() - started

    assert reply.choices[0].message.content == "You said: hi"
    assert waited >= COLD_START  # held through the pod's start, not refused
    assert len(world.cluster.network.requests) == reached_before + 1  # through the ingress, to a Ready pod
    assert deployment.events.filter(reason="Autoscaled", message__startswith="0 → 1").exists()

    until(lambda: at_zero(world, deployment))
    stream = client.chat.completions.create(**CHAT, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "You said: hi"


@pytest.mark.parametrize("world", ["redis", "embedded"], indirect=True)
def test_six_long_requests_with_target_one_and_max_two_ask_for_exactly_two(world):
    deployment = world.deploy(
        replicas={"min": 1, "max": 2},
        autoscaling={"metric": "concurrency", "target": 1, "scale_down_delay_seconds": 2},
    )
    until(lambda: (scale_of(deployment) or DeploymentScale()).ready == 1)
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                scale = scale_of(deployment)
            finally:
                connection.close()  # back to the small pool between reads: the gateway needs it
            seen.append(scale.desired if scale and scale.desired is not None else 0)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    url, secret = world.gateway().base_url + "/chat/completions", world.key()

    def call(_: int) -> int:
        return httpx.post(url, json=CHAT, headers={"authorization": f"Bearer {secret}",
                                                   "x-sandbox-latency-ms": "3000"}, timeout=60).status_code  # fmt: skip

    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(call, range(6)))
    # Timed from the load's end, not from when ready == 2 was seen: a second replica that turns
    # Ready late on a busy machine would leave less than the delay between the two.
    load_ended_at = time.monotonic()
    assert statuses == [200] * 6
    until(lambda: (scale_of(deployment).ready == 2))

    # ... and back down to the minimum once the load has stayed low for the delay.
    until(lambda: scale_of(deployment).desired == 1, timeout=20)
    stop.set()
    watcher.join()
    assert max(seen) == 2 and 2 in seen  # reached exactly 2, never more
    assert time.monotonic() - load_ended_at >= 1.0  # the load stayed low for the delay first
    up = deployment.events.get(reason="Autoscaled", message__startswith="1 → 2")
    assert "in flight, target 1 per replica" in up.message
    down = deployment.events.get(reason="Autoscaled", message__startswith="2 → 1")
    assert "(below for 2 s)" in down.message


def test_quota_of_one_gpu_holds_at_one_and_says_so(world, tenants):
    Project.objects.filter(pk=tenants.project.pk).update(gpu_quota=1)
    deployment = world.deploy(replicas={"min": 1, "max": 2}, autoscaling={"metric": "concurrency", "target": 1})
    until(lambda: (scale_of(deployment) or DeploymentScale()).ready == 1)
    url, secret = world.gateway().base_url + "/chat/completions", world.key()

    def call(_: int) -> int:
        return httpx.post(url, json=CHAT, headers={"authorization": f"Bearer {secret}",
                                                   "x-sandbox-latency-ms": "2500"}, timeout=60).status_code  # fmt: skip

    with ThreadPoolExecutor(4) as pool:
        future = pool.map(call, range(4))
        until(lambda: scale_of(deployment).reason.startswith("Held at"))
        statuses = list(future)
    assert statuses == [200] * 4
    scale = scale_of(deployment)
    assert scale.desired == 1 and deployment.gpus_held() == 1
    assert scale.reason == "Held at 1 of 2 replicas by the project's GPU quota."
    assert deployment.events.filter(reason="HeldByQuota", type="Warning").count() == 1
    assert pods_of(world, deployment) == 1


def test_full_queue_and_past_hold_time_get_503_model_starting_with_retry_after(world, settings, tenants):
    settings.MODELDECK_GATEWAY_HOLD_QUEUE = 1
    deployment = world.deploy(replicas={"min": 0, "max": 1}, autoscaling={**TO_ZERO, "cold_start_hold_seconds": 10})
    until(lambda: at_zero(world, deployment))
    url, secret = world.gateway().base_url + "/chat/completions", world.key()
    headers = {"authorization": f"Bearer {secret}"}

    holds = world.gateway().app.gateway.holds
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(httpx.post, url, json=CHAT, headers=headers, timeout=60)
        # The first one waits in the queue (a fixed 0.3 s sleep lost the race to a slow first
        # request on a busy machine: the second one was queued and the first refused).
        until(lambda: holds.waiting.get(deployment.pk) == 1, step=0.01)
        second = httpx.post(url, json=CHAT, headers=headers, timeout=60)
        assert second.status_code == 503 and second.headers["retry-after"] == "10"
        error = second.json()["error"]
        assert error["code"] == "model_starting" and "is starting" in error["message"]
        assert "too many requests are already waiting" in error["message"]
        assert first.result().status_code == 200

    # Past the hold time: a cold start longer than the deployment holds requests.
    until(lambda: at_zero(world, deployment))
    world.cluster.kubelet.ready_delay = 4.0
    ModelDeployment.objects.filter(pk=deployment.pk).update()  # no-op; the spec below shortens the hold
    from deployments.services import deployment_update

    deployment_update(user=tenants.owner, deployment=deployment,
                      spec={"autoscaling": {"cold_start_hold_seconds": 1}})  # fmt: skip
    time.sleep(1.1)  # the gateway re-reads deployment rows within a second
    started = time.monotonic()
    late = httpx.post(url, json=CHAT, headers=headers, timeout=60)
    assert late.status_code == 503 and late.headers["retry-after"] == "10"
    assert "longer than the deployment holds requests" in late.json()["error"]["message"]
    assert 1.0 <= time.monotonic() - started < 4.0

    # Deactivated: refused at once, nothing held.
    deployment_deactivate(user=tenants.owner, deployment=deployment)
    time.sleep(1.1)
    started = time.monotonic()
    refused = httpx.post(url, json=CHAT, headers=headers, timeout=60)
    assert refused.status_code == 409 and time.monotonic() - started < 1.0
    assert DeploymentState.DEACTIVATED == ModelDeployment.objects.get(pk=deployment.pk).state
