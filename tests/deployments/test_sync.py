"""Status sync: states and Kubernetes' reasons reach the deployment, in a bounded number of calls."""

from __future__ import annotations

import pytest

from catalog.models import CatalogModel
from deployments.models import (
    ComputePool,
    DeploymentEvent,
    DeploymentState,
    ModelDeployment,
    PoolKind,
    Revision,
)
from deployments.renderers import render, render_service
from deployments.spec import normalize_spec, render_spec_for
from deployments.tasks import sync_status
from sandbox.kubeapi import KubeEmulator
from tests.deployments.conftest import state_of, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_gpu_over_request_waits_for_capacity_instead_of_failing(deploy):
    # Pending is not Failed: cluster-autoscaler or Karpenter may be adding a node.
    deployment = deploy("big", spec={"resources": {"cpu": "2", "memory": "8Gi", "gpus": 5}})

    wait_for(lambda: "Waiting for capacity" in (state_of(deployment) and deployment.state_reason))

    assert deployment.state == DeploymentState.DEPLOYING
    assert deployment.state_reason.startswith(
        "Waiting for capacity (0/1 scheduled: insufficient nvidia.com/gpu)"
    )
    assert "15 min" in deployment.state_reason
    event = deployment.events.get(reason="WaitingForCapacity")
    assert event.type == "Warning" and "Insufficient nvidia.com/gpu" in event.message
    sync_status()
    assert state_of(deployment) == DeploymentState.DEPLOYING  # still within the grace period


def test_gpu_over_request_fails_with_the_schedulers_message_after_the_grace_period(deploy):
    deployment = deploy(
        "big",
        spec={"resources": {"cpu": "2", "memory": "8Gi", "gpus": 5}, "capacity_grace_seconds": 0},
    )

    wait_for(lambda: state_of(deployment) == DeploymentState.FAILED)

    assert "Insufficient nvidia.com/gpu" in deployment.state_reason
    assert deployment.state_reason.startswith("Unschedulable: 0/2 nodes are available")
    event = deployment.events.get(reason="Unschedulable")
    assert event.type == "Warning" and event.source == "kubernetes"


def test_bad_image_surfaces_image_pull_backoff(deploy):
    deployment = deploy("badimg", spec={"image": "vllm/vllm-openai-doesnotexist:v0.6.3"})

    wait_for(
        lambda: (
            state_of(deployment) == DeploymentState.FAILED
            and "ImagePullBackOff" in deployment.state_reason
        )
    )

    assert deployment.events.filter(reason="ImagePullBackOff").exists()


def test_crash_loop_surfaces_crash_loop_backoff(deploy):
    deployment = deploy("crashy", spec={"env": {"SANDBOX_CRASH": "1"}})

    wait_for(
        lambda: (
            state_of(deployment) == DeploymentState.FAILED
            and "CrashLoopBackOff" in deployment.state_reason
        )
    )


def test_repeated_reason_bumps_the_event_count_instead_of_adding_events(deploy):
    deployment = deploy(
        "big",
        spec={"resources": {"cpu": "2", "memory": "8Gi", "gpus": 5}, "capacity_grace_seconds": 0},
    )
    wait_for(lambda: state_of(deployment) == DeploymentState.FAILED)
    ModelDeployment.objects.filter(pk=deployment.pk).update(
        state_reason=""
    )  # make the next cycle see a change

    sync_status()

    events = deployment.events.filter(reason="Unschedulable")
    assert events.count() == 1
    assert events.get().count == 2


def test_unreachable_pool_marks_unknown_deletes_nothing_and_recovers(deploy, emulator):
    deployment = deploy("chat")
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)

    emulator.set_down(True)
    sync_status()
    assert state_of(deployment) == DeploymentState.UNKNOWN
    assert "can't be reached" in deployment.state_reason
    assert ComputePool.objects.get(pk=deployment.pool_id).reachable is False
    assert ModelDeployment.objects.filter(pk=deployment.pk).exists()

    emulator.set_down(False)
    sync_status()

    assert state_of(deployment) == DeploymentState.RUNNING
    assert emulator.get_object("Deployment", "acme-research", "chat-r1") is not None
    assert emulator.get_object("Service", "acme-research", "chat") is not None
    assert DeploymentEvent.objects.filter(deployment=deployment, reason="PoolUnreachable").exists()


def _put_running(emulator: KubeEmulator, deployment: ModelDeployment, revision: Revision) -> None:
    """Store a revision's objects as a healthy cluster would show them (no kubelet: fast)."""
    rs = render_spec_for(deployment, revision)
    (dep,) = [o for o in render(rs) if o["kind"] == "Deployment"]
    dep["status"] = {
        "replicas": 1,
        "readyReplicas": 1,
        "availableReplicas": 1,
        "updatedReplicas": 1,
    }
    emulator.put_object(dep)
    emulator.put_object(render_service(rs))
    template = dep["spec"]["template"]
    emulator.put_object(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"{dep['metadata']['name']}-abc12", "namespace": rs.namespace,
                         "labels": template["metadata"]["labels"]},
            "spec": template["spec"],
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"},
                                                          {"type": "PodScheduled", "status": "True"}]},
        }
    )  # fmt: skip


def test_sync_over_1000_deployments_on_5_pools_lists_15_times_then_10_when_steady(
    tenants, bundle, model
):
    emulators = [KubeEmulator() for _ in range(5)]
    for emulator in emulators:
        emulator.start()
    try:
        spec = normalize_spec(
            # A CPU build: a GPU image of vLLM with no GPU is refused.
            {"resources": {"cpu": "1", "memory": "1Gi", "gpus": 0},
             "image": "public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.8.5"},
            bundle=bundle, model=model,
        )
        pools = [
            ComputePool.objects.create(
                organization=tenants.org,
                name=f"pool-{i}",
                kind=PoolKind.SANDBOX,
                api_url=e.url,
                engine_label="vllm",
            )  # fmt: skip
            for i, e in enumerate(emulators)
        ]
        rows = ModelDeployment.objects.bulk_create(
            ModelDeployment(
                project=tenants.project,
                model=model,
                bundle=bundle,
                pool=pools[i % 5],
                name=f"d{i}",
                state=DeploymentState.DEPLOYING,
            )  # fmt: skip
            for i in range(1000)
        )
        revisions = Revision.objects.bulk_create(
            Revision(deployment=row, number=1, spec={**spec, "served_model_name": row.name})
            for row in rows
        )
        for row, revision in zip(rows, revisions, strict=True):
            row.current_revision = row.serving_revision = revision
        ModelDeployment.objects.bulk_update(rows, ["current_revision", "serving_revision"])
        loaded = ModelDeployment.objects.select_related(
            "project__organization", "model", "bundle", "pool"
        )
        by_pool = {p.pk: e for p, e in zip(pools, emulators, strict=True)}
        for row in loaded:
            _put_running(by_pool[row.pool_id], row, row.current_revision)
        for emulator in emulators:
            emulator.reset_counts()

        totals = sync_status()

        list_calls = sum(e.count(verb="list") for e in emulators)
        assert list_calls <= 15  # Deployments, Pods and Pod events: three per pool
        assert totals["list_calls"] == list_calls
        assert sum(e.count() for e in emulators) == list_calls  # nothing but the listings
        assert ModelDeployment.objects.filter(state=DeploymentState.RUNNING).count() == 1000

        sync_status()  # settles every pool's cursor
        for emulator in emulators:
            emulator.reset_counts()
        steady = sync_status()

        # Nothing to decide again: Deployments and Pods per pool, no Pod events.
        list_calls = sum(e.count(verb="list") for e in emulators)
        assert list_calls <= 10 and steady["list_calls"] == list_calls
        assert steady["decided"] == 0
        assert sum(e.count(resource="events") for e in emulators) == 0
    finally:
        for emulator in emulators:
            emulator.stop()


def test_models_from_other_pools_are_not_touched_by_a_pools_outage(
    deploy, tenants, model, bundle, cluster
):
    other = KubeEmulator()
    other.start()
    other_pool = ComputePool.objects.create(organization=tenants.org, name="other", kind=PoolKind.SANDBOX,
                                            api_url=other.url, engine_label="vllm")  # fmt: skip
    other.stop()
    healthy = deploy("chat")
    wait_for(lambda: state_of(healthy) == DeploymentState.RUNNING)
    stranded = deploy("stranded", pool=other_pool)

    sync_status()

    assert state_of(stranded) == DeploymentState.UNKNOWN
    assert state_of(healthy) == DeploymentState.RUNNING
    assert CatalogModel.objects.count() == 1


def test_pods_kubernetes_events_reach_the_events_tab_without_a_call_per_deployment(deploy):
    deployment = deploy("chat")
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)
    sync_status()

    pod_events = deployment.events.filter(source="pod")
    reasons = set(pod_events.values_list("reason", flat=True))
    assert {"Scheduled", "Pulling", "Pulled", "Started"} <= reasons
    pulled = pod_events.get(reason="Pulled")
    assert "vllm/vllm-openai" in pulled.message

    before = {e.pk: e.count for e in pod_events}
    sync_status()  # the same events again: nothing new is written
    assert {e.pk: e.count for e in deployment.events.filter(source="pod")} == before


def test_a_pending_pods_failed_scheduling_event_is_shown(deploy):
    deployment = deploy("big", spec={"resources": {"cpu": "2", "memory": "8Gi", "gpus": 5}})
    wait_for(lambda: deployment.events.filter(source="pod", reason="FailedScheduling").exists())
    event = deployment.events.get(source="pod", reason="FailedScheduling")
    assert event.type == "Warning" and "Insufficient nvidia.com/gpu" in event.message
