"""The status sync's steady cycle: lean decoding of list responses, and settled deployments
whose objects and rows are unchanged are not decided again (resourceVersion fingerprints)."""

from __future__ import annotations

import json

import pytest

from deployments import tasks
from deployments.kube import lean, pod_problem
from deployments.models import ComputePool, DeploymentState, ModelDeployment, PoolKind
from deployments.renderers import LABEL_DEPLOYMENT_ID
from deployments.tasks import sync_status
from sandbox.kubeapi import KubeEmulator
from tests.deployments.conftest import state_of, wait_for
from tests.deployments.test_sync import _put_running

pytestmark = pytest.mark.django_db(transaction=True)

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "chat-r1-abc12", "namespace": "acme", "resourceVersion": "41",
        "uid": "u-1", "labels": {LABEL_DEPLOYMENT_ID: "7"}, "managedFields": [{"manager": "kubelet"}],
    },
    "spec": {"containers": [{"name": "engine", "image": "x", "env": [{"name": "A", "value": "b"}]}]},
    "status": {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "True"}],
        "containerStatuses": [{"name": "engine", "ready": False, "restartCount": 3, "state": {
            "waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image x"}}}],
    },
}  # fmt: skip


def test_lean_decoding_keeps_what_status_rules_read_and_drops_the_rest():
    body = json.dumps({"kind": "PodList", "metadata": {"resourceVersion": "99"}, "items": [POD]})
    decoded = lean.decode_list(body.encode(), lean.PodList)
    (pod,) = decoded["items"]
    assert "containers" not in pod.get("spec", {}) and "managedFields" not in pod["metadata"]
    assert pod["metadata"]["resourceVersion"] == "41" and decoded["metadata"]["resourceVersion"] == "99"
    # The rule reads the same reason from the lean dict as from the full object.
    assert pod_problem(pod) == pod_problem(POD)
    assert pod_problem(pod).reason == "ImagePullBackOff"
    assert lean.fingerprints([pod], label=LABEL_DEPLOYMENT_ID) == {7: (("chat-r1-abc12", "u-1", "41"),)}


@pytest.fixture
def bare(tenants):
    """A pool on an emulator with no kubelet: objects change only when the test changes them."""
    emulator = KubeEmulator()
    emulator.start()
    pool = ComputePool.objects.create(organization=tenants.org, name="bare", kind=PoolKind.SANDBOX,
                                      api_url=emulator.url, engine_label="vllm")  # fmt: skip
    yield pool, emulator
    emulator.stop()


def test_steady_cycle_decides_nothing_until_the_pool_or_the_row_changes(deploy, bare):
    pool, emulator = bare
    deployment = deploy("chat", pool=pool)
    _put_running(emulator, deployment, deployment.current_revision)
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)
    sync_status()  # settles the cursor
    emulator.reset_counts()

    steady = sync_status()

    # Deployments and Pods are still listed, but nothing is decided again, so the pods' Events
    # (recorded only for rows decided again) are not read.
    assert steady["decided"] == 0 and steady["list_calls"] == 2 and emulator.count() == 2
    assert emulator.count(resource="events") == 0
    assert state_of(deployment) == DeploymentState.RUNNING
    # A change in the cluster (the pod can't pull its image any more) bumps resourceVersions.
    (dep,) = emulator.list_objects("Deployment", label_selector=f"{LABEL_DEPLOYMENT_ID}={deployment.pk}")
    dep["status"] = {"replicas": 1, "readyReplicas": 0}
    emulator.put_object(dep)
    (pod,) = emulator.list_objects("Pod", label_selector=f"{LABEL_DEPLOYMENT_ID}={deployment.pk}")
    pod["status"] = POD["status"]
    emulator.put_object(pod)

    changed = sync_status()

    # A row to decide again: its pods' Events are read too.
    assert changed["decided"] == 1 and changed["list_calls"] == 3
    assert emulator.count(verb="list", resource="events") == 1
    assert state_of(deployment) == DeploymentState.FAILED
    assert "ImagePullBackOff" in deployment.state_reason


def test_a_row_changed_in_the_database_is_decided_again(deploy):
    deployment = deploy("chat")
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)
    sync_status()
    ModelDeployment.objects.filter(pk=deployment.pk).update(state_reason="edited elsewhere")

    assert sync_status()["decided"] == 1
    assert state_of(deployment) == DeploymentState.RUNNING
    assert deployment.state_reason.endswith("replicas ready.")


def test_every_row_is_decided_again_after_the_resync_period(deploy, monkeypatch):
    deployment = deploy("chat")
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)
    sync_status()
    assert sync_status()["decided"] == 0
    monkeypatch.setattr(tasks, "SYNC_RESYNC_SECONDS", 0.0)
    assert sync_status()["decided"] == 1
