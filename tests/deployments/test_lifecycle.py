"""A deployment's life on a sandbox cluster: create, run, update blue-green, deactivate, delete."""

from __future__ import annotations

import threading

import pytest

from deployments.models import DeploymentState, ModelDeployment
from deployments.renderers import LABEL_DEPLOYMENT_ID, LABEL_MANAGED_BY, LABEL_REVISION
from deployments.services import (
    deployment_activate,
    deployment_deactivate,
    deployment_delete,
    deployment_rollback,
    deployment_update,
)
from deployments.tasks import push, sync_status
from tests.deployments.conftest import state_of, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_create_applies_labelled_objects_into_the_project_namespace(deploy, emulator, tenants):
    deployment = deploy("chat")

    dep = emulator.get_object("Deployment", "acme-research", "chat-r1")
    svc = emulator.get_object("Service", "acme-research", "chat")
    assert dep is not None and svc is not None
    labels = dep["metadata"]["labels"]
    assert labels[LABEL_MANAGED_BY] == "modeldeck"
    assert labels[LABEL_DEPLOYMENT_ID] == str(deployment.pk)
    assert svc["spec"]["selector"][LABEL_REVISION] == "1"
    assert emulator.get_object("Namespace", None, "acme-research") is not None
    managers = {m["manager"] for m in dep["metadata"]["managedFields"]}
    assert "modeldeck" in managers


def test_pushing_again_changes_nothing(deploy, emulator):
    deployment = deploy("chat")
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)
    # The emulator records defaulted fields (clusterIP, dnsPolicy...) as the applier's on
    # create, which a real API server doesn't; one more apply settles that bookkeeping.
    push(deployment.pk)
    before = {
        kind: emulator.get_object(kind, "acme-research", name)["metadata"]["resourceVersion"]
        for kind, name in (("Deployment", "chat-r1"), ("Service", "chat"))
    }

    push(deployment.pk)
    push(deployment.pk)

    after = {
        kind: emulator.get_object(kind, "acme-research", name)["metadata"]["resourceVersion"]
        for kind, name in (("Deployment", "chat-r1"), ("Service", "chat"))
    }
    assert after == before


def test_status_moves_pending_deploying_running(deploy, emulator, cluster):
    seen = []
    emulator.set_down(True)  # the push can't reach the pool yet: the deployment waits
    cluster.kubelet.stop()  # and then holds the cluster still so each step can be seen
    deployment = deploy("chat")
    seen.append(state_of(deployment))
    emulator.set_down(False)
    sync_status()  # the sync sees nothing applied and queues the push again
    seen.append(state_of(deployment))
    cluster.kubelet.start()
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)
    seen.append(state_of(deployment))

    assert seen == [DeploymentState.PENDING, DeploymentState.DEPLOYING, DeploymentState.RUNNING]
    assert emulator.get_object("Deployment", "acme-research", "chat-r1") is not None
    events = list(deployment.events.values_list("reason", flat=True))
    assert "Created" in events and "Applied" in events and "Running" in events


def _ready_pods_behind_service(emulator, namespace: str, name: str) -> int:
    service = emulator.get_object("Service", namespace, name)
    if service is None:
        return -1
    selector = ",".join(f"{k}={v}" for k, v in service["spec"]["selector"].items())
    ready = 0
    for pod in emulator.list_objects("Pod", namespace, label_selector=selector):
        if pod["metadata"].get("deletionTimestamp"):
            continue
        conditions = (pod.get("status") or {}).get("conditions") or []
        ready += any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    return ready


def test_blue_green_update_never_leaves_the_service_without_ready_pods(deploy, emulator, tenants):
    deployment = deploy("chat")
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(_ready_pods_behind_service(emulator, "acme-research", "chat"))
            stop.wait(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        revision = deployment_update(user=tenants.owner, deployment=deployment,
                                     spec={"env": {"LOG_LEVEL": "debug"}}, reason="more logs")  # fmt: skip
        assert revision.number == 2
        # The push applied revision 2 next to revision 1, which keeps the traffic meanwhile.
        assert emulator.get_object("Deployment", "acme-research", "chat-r1") is not None
        wait_for(
            lambda: (
                state_of(deployment) == DeploymentState.RUNNING
                and deployment.serving_revision_id == revision.pk
            )
        )
        wait_for(
            lambda: emulator.get_object("Deployment", "acme-research", "chat-r1") is None,
            sync=False,
        )
    finally:
        stop.set()
        sampler.join()

    assert len(samples) > 20
    assert min(samples) >= 1, f"the Service had no ready pods at some point: {samples}"
    service = emulator.get_object("Service", "acme-research", "chat")
    assert service["spec"]["selector"]["modeldeck.io/revision"] == "2"
    assert deployment.events.filter(reason="ServiceSwitched").exists()


def test_failed_new_revision_keeps_the_old_one_serving(deploy, emulator, tenants):
    deployment = deploy("chat")
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)

    deployment_update(
        user=tenants.owner,
        deployment=deployment,
        spec={"image": "vllm/vllm-openai-doesnotexist:v1"},
    )
    wait_for(lambda: state_of(deployment) == DeploymentState.FAILED)

    # The failed rollout rolled back by itself (tests/deployments/test_rollout.py says more).
    assert deployment.state_reason.endswith("; revision 1 still serving.")
    assert _ready_pods_behind_service(emulator, "acme-research", "chat") >= 1
    assert (
        emulator.get_object("Service", "acme-research", "chat")["spec"]["selector"][
            "modeldeck.io/revision"
        ]
        == "1"
    )


def test_deactivate_frees_the_quota_and_activate_reserves_it_again(deploy, emulator, tenants):
    deployment = deploy("chat", spec={"replicas": {"min": 1, "max": 2}})
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)
    assert tenants.project.gpu_used() == 2

    deployment_deactivate(user=tenants.owner, deployment=deployment)

    assert state_of(deployment) == DeploymentState.DEACTIVATED
    assert tenants.project.gpu_used() == 0
    assert emulator.get_object("Deployment", "acme-research", "chat-r1")["spec"]["replicas"] == 0
    wait_for(lambda: not emulator.list_objects("Pod", "acme-research"), sync=False)
    sync_status()
    assert state_of(deployment) == DeploymentState.DEACTIVATED

    deployment_activate(user=tenants.owner, deployment=deployment)

    assert tenants.project.gpu_used() == 2
    assert emulator.get_object("Deployment", "acme-research", "chat-r1")["spec"]["replicas"] == 1
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)
    reasons = list(deployment.events.values_list("reason", flat=True))
    assert "Deactivated" in reasons and "Activated" in reasons


def test_activate_is_refused_when_the_gpus_went_to_someone_else(deploy, tenants):
    first = deploy("chat", spec={"replicas": {"min": 1, "max": 4}})  # 4 of the project's 8 GPUs
    deployment_deactivate(user=tenants.owner, deployment=first)
    deploy("other", spec={"replicas": {"min": 1, "max": 6}})  # takes 6 of 8

    with pytest.raises(Exception) as exc:
        deployment_activate(user=tenants.owner, deployment=first)

    assert "quota of 8 GPUs, 6 are in use: 4 more do not fit" in str(exc.value)
    assert state_of(first) == DeploymentState.DEACTIVATED


def test_delete_removes_the_objects_then_the_row(deploy, emulator, tenants):
    deployment = deploy("chat")
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)

    deployment_delete(user=tenants.owner, deployment=deployment)

    wait_for(lambda: not ModelDeployment.objects.filter(pk=deployment.pk).exists())
    assert emulator.get_object("Deployment", "acme-research", "chat-r1") is None
    assert emulator.get_object("Service", "acme-research", "chat") is None
    assert emulator.list_objects("Pod", "acme-research") == []
    assert tenants.project.gpu_used() == 0


def test_delete_waits_while_the_pool_is_down(deploy, emulator, tenants):
    deployment = deploy("chat")
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)
    emulator.set_down(True)

    deployment_delete(user=tenants.owner, deployment=deployment)
    sync_status()

    assert state_of(deployment) == DeploymentState.DELETING
    emulator.set_down(False)
    wait_for(lambda: not ModelDeployment.objects.filter(pk=deployment.pk).exists())
    assert emulator.get_object("Service", "acme-research", "chat") is None


def test_rollback_makes_a_new_revision_from_the_old_spec(deploy, emulator, tenants):
    deployment = deploy("chat")
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)
    deployment_update(
        user=tenants.owner, deployment=deployment, spec={"extra_args": ["--max-num-seqs", "8"]}
    )
    wait_for(
        lambda: (
            state_of(deployment) == DeploymentState.RUNNING
            and deployment.serving_revision.number == 2
        )
    )

    revision = deployment_rollback(user=tenants.owner, deployment=deployment, revision_number=1)

    assert revision.number == 3
    assert revision.spec == deployment.revisions.get(number=1).spec
    wait_for(
        lambda: (
            state_of(deployment) == DeploymentState.RUNNING
            and deployment.serving_revision.number == 3
        )
    )
    args = emulator.get_object("Deployment", "acme-research", "chat-r3")["spec"]["template"][
        "spec"
    ]["containers"][0]["args"]
    assert "8" not in args
