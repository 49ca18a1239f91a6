"""Zero downtime, measured: the official openai client sends requests continuously through two live
gateways to a deployment on a sandbox cluster while it is updated (blue-green), rolled back,
scaled up and down, repriced, given new rate limits, fails a rollout (rolled back by itself) and
loses its Kubernetes API with the engine still up — and not one request fails.

Before the serving-revision rules every such change answered `409 deployment_not_running` for
several seconds (35 of 131 requests in the issue's run): this test counts them per phase.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import kubernetes
import openai
import pytest
import redis
from django.conf import settings
from django.db import connection

from deployments.models import DeploymentState, ModelDeployment
from deployments.services import deployment_rollback, deployment_update
from deployments.tasks import sync_status
from sandbox.engine import SimulatedEngine, run_engine_in_thread
from tests.deployments.conftest import state_of, wait_for
from tests.gateway.conftest import make_key, start_console

pytestmark = pytest.mark.django_db(transaction=True)

NS = "acme-research"
STALE = 1.2  # a gateway re-reads deployment rows at most a second later; each phase outlasts that
MIN_PER_PHASE = 15
MAX_REQUESTS = 20_000  # the traffic loop is bounded in count and in time, whatever happens
MAX_SECONDS = 300.0


@pytest.fixture
def engine(settings) -> Iterator[SimulatedEngine]:
    engine = SimulatedEngine()
    url, stop = run_engine_in_thread(engine=engine)
    settings.SANDBOX_ENGINE_URL = url
    yield engine
    stop()


@pytest.fixture
def gateways(engine, transactional_db):
    """Two gateway servers: separate caches and Redis clients, like two processes."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()  # rate-limit windows and the cache generation start empty
    servers = [start_console(), start_console()]
    yield servers
    for server in servers:
        server.stop()
    client.flushdb()
    client.close()


class Traffic:
    """One thread sending chat completions back to back with the official client (no retries),
    to each gateway in turn, counting answers and failures under the phase that was current
    when each request started."""

    def __init__(self, base_urls: list[str], key: str, model: str) -> None:
        self.clients = [openai.OpenAI(api_key=key, base_url=url, max_retries=0, timeout=30) for url in base_urls]
        self.model = model
        self.phase = "warm-up"
        self.ok: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        sent = 0
        while not self.stop.is_set() and sent < MAX_REQUESTS and time.monotonic() - started < MAX_SECONDS:
            phase = self.phase
            sent += 1
            try:
                client = self.clients[sent % len(self.clients)]
                answer = client.chat.completions.create(
                    model=self.model, messages=[{"role": "user", "content": "hi"}], max_tokens=4
                )
                assert answer.choices[0].message.content
                self.ok[phase] += 1
            except Exception as exc:  # every failure is counted and shown, none is lost
                self.failed[phase] += 1
                self.errors.append(f"{phase}: {exc!r}"[:300])
            time.sleep(0.01)

    def enter(self, phase: str) -> None:
        self.phase = phase

    def settle(self) -> None:
        """Let the current phase see enough requests, past the gateway's cache refresh."""
        after = time.monotonic() + STALE
        wait_for(lambda: time.monotonic() > after and self.ok[self.phase] + self.failed[self.phase] >= MIN_PER_PHASE,
                 timeout=60, sync=False)  # fmt: skip

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)


def kube_deployments(cluster) -> dict[str, str]:
    """Kubernetes Deployments in the namespace, name → uid, read with the kubernetes client."""
    config = kubernetes.client.Configuration()
    config.host = cluster.url
    if cluster.emulator.token:
        config.api_key = {"authorization": f"Bearer {cluster.emulator.token}"}
    with kubernetes.client.ApiClient(config) as api:
        listed = kubernetes.client.AppsV1Api(api).list_namespaced_deployment(NS)
    return {d.metadata.name: d.metadata.uid for d in listed.items}


def ready_replicas(cluster, name: str) -> int:
    dep = cluster.emulator.get_object("Deployment", NS, name) or {}
    return int((dep.get("status") or {}).get("readyReplicas") or 0)


def until(predicate, *, sync: bool = True) -> object:
    """wait_for with room for a loaded machine (the traffic, two gateways and a kubelet share it)."""
    return wait_for(predicate, timeout=60, sync=sync)


def running_on(deployment: ModelDeployment, number: int) -> bool:
    return state_of(deployment) == DeploymentState.RUNNING and deployment.serving_revision.number == number


def test_no_request_fails_through_updates_rollbacks_scaling_pricing_limits_a_failed_rollout_and_an_api_outage(
    deploy, cluster, gateways, tenants
):
    deployment = deploy("chat")
    until(lambda: state_of(deployment) == DeploymentState.RUNNING)
    key = make_key(tenants.member, tenants.org)
    owner = tenants.owner

    with Traffic([gateway.base_url for gateway in gateways], key, "chat") as traffic:
        traffic.settle()

        traffic.enter("update (blue-green)")
        deployment_update(user=owner, deployment=deployment, spec={"env": {"LOG_LEVEL": "debug"}})
        until(lambda: running_on(deployment, 2) and set(kube_deployments(cluster)) == {"chat-r2"})
        traffic.settle()

        traffic.enter("rollback")
        deployment_rollback(user=owner, deployment=deployment, revision_number=1)
        until(lambda: running_on(deployment, 3) and set(kube_deployments(cluster)) == {"chat-r3"})
        traffic.settle()

        # Neither a price nor the replica count makes a new Kubernetes Deployment (same uid).
        before = kube_deployments(cluster)
        traffic.enter("pricing change")
        deployment_update(user=owner, deployment=deployment, spec={"pricing": {"input_per_million": "0.75"}})
        assert running_on(deployment, 4)
        traffic.settle()

        traffic.enter("scale up")
        deployment_update(user=owner, deployment=deployment, spec={"replicas": {"min": 2, "max": 2}})
        until(lambda: ready_replicas(cluster, "chat-r3") == 2 and running_on(deployment, 5))
        traffic.settle()

        traffic.enter("scale down")
        deployment_update(user=owner, deployment=deployment, spec={"replicas": {"min": 1, "max": 1}})
        until(lambda: ready_replicas(cluster, "chat-r3") == 1 and running_on(deployment, 6))
        traffic.settle()
        assert kube_deployments(cluster) == before

        traffic.enter("rate-limit change")
        deployment_update(user=owner, deployment=deployment,
                          spec={"rate_limits": {"api_key": {"rpm": 100_000, "tpm": 10_000_000}}})  # fmt: skip
        assert running_on(deployment, 7)
        traffic.settle()
        assert kube_deployments(cluster) == before

        traffic.enter("failed rollout, rolled back by itself")
        deployment_update(user=owner, deployment=deployment, spec={"image": "vllm/vllm-openai-doesnotexist:v1"})
        until(lambda: state_of(deployment) == DeploymentState.FAILED
                 and deployment.state_reason.startswith("Update failed: "))  # fmt: skip
        until(lambda: set(kube_deployments(cluster)) == {"chat-r3"}, sync=False)
        traffic.settle()

        traffic.enter("Kubernetes API down, engine up")
        cluster.emulator.set_down(True)
        try:
            until(lambda: state_of(deployment) == DeploymentState.UNKNOWN)
            traffic.settle()
            sync_status()
            traffic.settle()
        finally:
            cluster.emulator.set_down(False)

        traffic.enter("API back")
        until(lambda: state_of(deployment) != DeploymentState.UNKNOWN)
        traffic.settle()
    connection.close()

    phases = list(traffic.ok.keys() | traffic.failed.keys())
    report = {phase: (traffic.ok[phase] + traffic.failed[phase], traffic.failed[phase]) for phase in phases}
    print("requests sent / failed per phase:", report)
    assert len(phases) == 10
    assert all(traffic.ok[phase] >= MIN_PER_PHASE for phase in phases), report
    assert sum(traffic.failed.values()) == 0, traffic.errors[:10]
