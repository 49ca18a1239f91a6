"""Concurrent and failed lifecycle operations leave nothing behind: no lost update, no duplicate
served name, no gap in revision numbers (real PostgreSQL, one thread per request)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from django.db import connection
from rest_framework.test import APIClient

from deployments import kube
from deployments.models import DeploymentState, ModelDeployment, Revision
from deployments.renderers import deployment_selector
from deployments.services import deployment_delete, deployment_update
from deployments.tasks import push, sync_status
from tests.deployments.conftest import state_of, wait_for
from tests.factories import rest_api_client

pytestmark = pytest.mark.django_db(transaction=True)

# Twenty one-field changes, each to a different field of the spec (dotted path → new value).
ONE_FIELD_CHANGES: list[tuple[str, object]] = [
    ("rate_limits.organization.rpm", 601),
    ("rate_limits.organization.tpm", 60_001),
    ("rate_limits.user.rpm", 602),
    ("rate_limits.user.tpm", 60_002),
    ("rate_limits.api_key.rpm", 603),
    ("rate_limits.api_key.tpm", 60_003),
    ("pricing.input_per_million", "0.11"),
    ("pricing.output_per_million", "0.22"),
    ("context_length", 4096),
    ("prompt_caching", False),
    ("resources.cpu", "3"),
    ("resources.memory", "9Gi"),
    ("autoscaling.target", 5),
    ("extra_args", ["--max-num-seqs", "16"]),
    ("env", {"LOG_LEVEL": "debug"}),
    ("labels", {"team": "search"}),
    ("annotations", {"owner": "search-team"}),
    ("node_selector", {"pool": "l4"}),
    ("tolerations", [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]),
    ("served_model_name", "chat-v2"),
]


def nested(path: str, value: object) -> dict:
    out: dict = {}
    node = out
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return out


def lookup(spec: dict, path: str) -> object:
    for part in path.split("."):
        spec = spec[part]
    return spec


def api(user) -> APIClient:
    return rest_api_client(user)


def run_together(calls: list[Callable[[], object]]) -> list[object]:
    """Each call in its own thread (its own database connection), released at the same instant."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = calls[i]()
        except BaseException as exc:  # reported by the test, not lost in the thread
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def test_twenty_concurrent_patches_lose_no_field(tenants, deploy):
    deployment = deploy("chat")
    original = deployment.current_revision.spec
    for path, value in ONE_FIELD_CHANGES:
        assert lookup(original, path) != value, path  # every change really changes something
    url = f"/api/v1/deployments/{deployment.pk}/"
    clients = [api(tenants.owner) for _ in ONE_FIELD_CHANGES]

    responses = run_together([
        (lambda c=c, p=p, v=v: c.patch(url, {"spec": nested(p, v)}, format="json"))
        for c, (p, v) in zip(clients, ONE_FIELD_CHANGES, strict=True)
    ])  # fmt: skip

    assert [getattr(r, "status_code", r) for r in responses] == [200] * len(ONE_FIELD_CHANGES)
    final = ModelDeployment.objects.get(pk=deployment.pk).current_revision.spec
    assert {p: lookup(final, p) for p, _ in ONE_FIELD_CHANGES} == dict(ONE_FIELD_CHANGES)
    revisions = list(Revision.objects.filter(deployment=deployment).order_by("number"))
    assert [r.number for r in revisions] == list(range(1, len(ONE_FIELD_CHANGES) + 2))
    # No revision reverts another's field: each one changes exactly one of the twenty fields,
    # from its original value to the requested one.
    wanted = dict(ONE_FIELD_CHANGES)
    for before, after in zip(revisions, revisions[1:], strict=False):
        changed = [p for p in wanted if lookup(before.spec, p) != lookup(after.spec, p)]
        assert len(changed) == 1, (after.number, changed)
        assert lookup(before.spec, changed[0]) == lookup(original, changed[0])
        assert lookup(after.spec, changed[0]) == wanted[changed[0]]


def test_ten_concurrent_creates_with_one_served_name_make_exactly_one(tenants, model, bundle, pool):
    clients = [api(tenants.owner) for _ in range(10)]
    bodies = [
        {"project": tenants.project.pk, "model": model.pk, "pool": pool.pk, "bundle": bundle.pk,
         "name": f"chat-{i}", "spec": {"resources": {"cpu": "1", "memory": "2Gi", "gpus": 1},
                                       "served_model_name": "shared-name"}}
        for i in range(10)
    ]  # fmt: skip

    responses = run_together([
        (lambda c=c, b=b: c.post("/api/v1/deployments/", b, format="json"))
        for c, b in zip(clients, bodies, strict=True)
    ])  # fmt: skip

    codes = sorted(getattr(r, "status_code", repr(r)) for r in responses)
    assert codes == [201] + [400] * 9, [r.content[:300] for r in responses]
    for response in responses:
        if response.status_code == 400:
            assert "shared-name" in " ".join(response.json()["served_model_name"])
    assert ModelDeployment.objects.count() == 1
    assert ModelDeployment.objects.get().served_name() == "shared-name"


def test_rename_onto_a_taken_served_name_is_a_400(tenants, deploy):
    deploy("first")
    second = deploy("second")
    response = api(tenants.owner).patch(
        f"/api/v1/deployments/{second.pk}/", {"spec": {"served_model_name": "first"}}, format="json"
    )
    assert response.status_code == 400
    assert "first" in " ".join(response.json()["served_model_name"])
    assert ModelDeployment.objects.get(pk=second.pk).served_name() == "second"


# --- Nothing is left behind ---------------------------------------------------------------------


def objects_on_pool(emulator, deployment_id: int, revision: int | None = None) -> list[str]:
    """Deployments, Services, Pods and PVCs on the cluster labelled with this deployment (read back
    from the emulator's store, not from ModelDeck's rows)."""
    selector = dict(part.split("=") for part in deployment_selector(deployment_id, revision).split(","))
    found = []
    for kind in ("Deployment", "Service", "Pod", "PersistentVolumeClaim"):
        for obj in emulator.list_objects(kind, "acme-research"):
            labels = obj["metadata"].get("labels") or {}
            if all(labels.get(k) == v for k, v in selector.items()):
                found.append(f"{kind}/{obj['metadata']['name']}")
    return sorted(found)


def test_delete_during_a_slow_push_leaves_no_object(tenants, deploy, emulator, monkeypatch):
    emulator.set_down(True)
    deployment = deploy("chat")  # the pool can't be reached: Pending, nothing applied yet
    emulator.set_down(False)
    paused, release = threading.Event(), threading.Event()
    real_apply = kube.apply

    def slow_apply(k, obj):
        # The push stalls just before it creates the Kubernetes Deployment (a slow API server).
        if obj.get("kind") == "Deployment" and not paused.is_set():
            paused.set()
            release.wait(30)
        return real_apply(k, obj)

    monkeypatch.setattr(kube, "apply", slow_apply)
    outcome: list[str] = []

    def slow_push() -> None:
        try:
            outcome.append(push(deployment.pk))
        finally:
            connection.close()

    thread = threading.Thread(target=slow_push)
    thread.start()
    assert paused.wait(30)
    # Meanwhile the user deletes: the teardown runs on commit and finishes first.
    deployment_delete(user=tenants.owner, deployment=deployment)
    assert not ModelDeployment.objects.filter(pk=deployment.pk).exists()
    release.set()
    thread.join(30)

    sync_status()
    sync_status()
    assert outcome == ["deleted-meanwhile"]
    assert objects_on_pool(emulator, deployment.pk) == []
    assert tenants.project.gpu_used() == 0


def test_objects_of_a_deployment_that_is_gone_are_removed_by_the_sync(tenants, deploy, emulator):
    deployment = deploy("chat")
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)
    assert objects_on_pool(emulator, deployment.pk)
    # The row goes without a teardown (a crash, a restored backup): an orphan of any origin.
    ModelDeployment.objects.filter(pk=deployment.pk).delete()

    sync_status()
    sync_status()

    assert objects_on_pool(emulator, deployment.pk) == []


def test_a_superseded_revision_that_never_served_is_removed_after_the_grace(tenants, deploy, emulator, monkeypatch):
    deployment = deploy("chat")
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)
    # Revisions 2 and 3 ask for more GPUs than a node has (4 L4 each): they never become ready.
    # The project's quota covers the blue-green surge (revision 1's GPU beside the new 8).
    tenants.project.gpu_quota = 16
    tenants.project.save(update_fields=["gpu_quota"])
    for cpu in ("3", "4"):
        deployment_update(user=tenants.owner, deployment=deployment,
                          spec={"resources": {"cpu": cpu, "gpus": 8}, "replicas": {"min": 1, "max": 1}})  # fmt: skip
    deployment.refresh_from_db()
    assert deployment.current_revision.number == 3 and deployment.serving_revision.number == 1
    sync_status()
    assert objects_on_pool(emulator, deployment.pk, 2)  # within the grace: left alone

    monkeypatch.setattr("deployments.tasks.SUPERSEDED_GRACE_SECONDS", 0.0)
    sync_status()

    assert not [o for o in objects_on_pool(emulator, deployment.pk, 2) if o.startswith("Deployment/")]
    assert emulator.get_object("Deployment", "acme-research", "chat-r1") is not None  # serving
    assert emulator.get_object("Deployment", "acme-research", "chat-r3") is not None  # current
    assert "RevisionRemoved" in set(deployment.events.values_list("reason", flat=True))


# --- The task queue is down ---------------------------------------------------------------------


class Broker:
    """Switches Celery between really publishing (not eager) to a broker nobody listens on, and
    the test suite's in-process worker (eager)."""

    def __init__(self) -> None:
        from console.celery import app

        self.app = app
        self.saved = (app.conf.broker_url, app.conf.task_always_eager, app.conf.task_publish_retry_policy)

    def down(self) -> None:
        import socket

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()  # a free port, now closed: connection refused
        self.app.conf.broker_url = f"redis://127.0.0.1:{port}/0"
        self.app.conf.task_always_eager = False
        self.app.conf.task_publish_retry_policy = {"max_retries": 1, "interval_start": 0, "interval_step": 0.1}
        self._reset_pool()

    def up(self) -> None:
        self.app.conf.broker_url, self.app.conf.task_always_eager, self.app.conf.task_publish_retry_policy = self.saved
        self._reset_pool()

    def _reset_pool(self) -> None:
        # Forget the connection pools bound to the previous broker URL (what Celery does after a fork).
        from kombu import pools

        self.app._pool = None
        self.app.amqp._producer_pool = None
        pools.reset()


@pytest.fixture
def broker():
    broker = Broker()
    yield broker
    broker.up()


def test_broker_down_saves_the_change_and_the_periodic_task_pushes_it(tenants, deploy, emulator, broker):
    from deployments.tasks import push_waiting

    deployment = deploy("chat")
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)
    client = api(tenants.owner)
    client.raise_request_exception = False  # a 500 is an answer to count, not an exception
    broker.down()

    response = client.patch(
        f"/api/v1/deployments/{deployment.pk}/", {"spec": {"extra_args": ["--max-num-seqs", "8"]}}, format="json"
    )

    assert response.status_code == 200, response.content[:500]
    body = response.json()
    assert body["current_revision"] == 2
    assert "waiting to be pushed" in body["state_reason"]
    assert emulator.get_object("Deployment", "acme-research", "chat-r2") is None  # not pushed
    assert push_waiting() == 0  # still down: stays waiting

    broker.up()  # the queue is back (the suite's worker runs in-process)
    assert push_waiting() == 1

    assert emulator.get_object("Deployment", "acme-research", "chat-r2") is not None
    assert ModelDeployment.objects.get(pk=deployment.pk).push_waiting_since is None
    assert push_waiting() == 0


# --- Changes that don't touch the pods don't roll out -------------------------------------------


def test_a_pricing_change_and_a_scale_make_no_new_kubernetes_deployment(tenants, deploy, emulator):
    deployment = deploy("chat")
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)
    first_pod = {p["metadata"]["uid"] for p in emulator.list_objects("Pod", "acme-research")}
    client = api(tenants.owner)
    url = f"/api/v1/deployments/{deployment.pk}/"

    priced = client.patch(url, {"spec": {"pricing": {"input_per_million": "0.50"}}}, format="json").json()
    # Pricing reaches the gateway on commit: the new revision serves at once, nothing rolls out.
    assert priced["current_revision"] == 2 and priced["serving_revision"] == 2
    assert priced["state"] == DeploymentState.RUNNING
    scaled = client.post(url + "scale/", {"min": 2, "max": 2}, format="json")
    assert scaled.status_code == 200, scaled.content[:300]
    assert scaled.json()["current_revision"] == 3 and scaled.json()["serving_revision"] == 3

    def two_ready() -> bool:
        dep = emulator.get_object("Deployment", "acme-research", "chat-r1")
        return (dep.get("status") or {}).get("readyReplicas") == 2

    wait_for(two_ready)
    names = [d["metadata"]["name"] for d in emulator.list_objects("Deployment", "acme-research")]
    assert names == ["chat-r1"]
    assert emulator.get_object("Deployment", "acme-research", "chat-r1")["spec"]["replicas"] == 2
    pods = {p["metadata"]["uid"] for p in emulator.list_objects("Pod", "acme-research")}
    assert first_pod <= pods and len(pods) == 2  # the first pod kept running; one was added
    assert emulator.get_object("Service", "acme-research", "chat")["spec"]["selector"]["modeldeck.io/revision"] == "1"
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)
    reasons = list(Revision.objects.filter(deployment=deployment).order_by("number").values_list("reason", flat=True))
    assert "no rollout needed" in reasons[1] and "scaled in place" in reasons[2]


def test_a_change_to_what_the_pods_run_still_rolls_out_blue_green(tenants, deploy, emulator):
    deployment = deploy("chat")
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)
    deployment_update(user=tenants.owner, deployment=deployment, spec={"pricing": {"input_per_million": "1"}})
    deployment_update(user=tenants.owner, deployment=deployment, spec={"extra_args": ["--max-num-seqs", "8"]})

    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING and deployment.serving_revision.number == 3)
    names = [d["metadata"]["name"] for d in emulator.list_objects("Deployment", "acme-research")]
    assert names == ["chat-r3"]
    assert emulator.get_object("Deployment", "acme-research", "chat-r3") is not None
