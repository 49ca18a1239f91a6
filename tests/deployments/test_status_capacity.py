"""Pending is not Failed: a pod waiting for a node is "Waiting for capacity" for the grace
period; image pull errors and crash loops fail at once. decide() over listed pods, no cluster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from deployments.kube import observe
from deployments.models import DeploymentState
from deployments.tasks import decide

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SCHEDULER = (
    "0/2 nodes are available: 2 Insufficient nvidia.com/gpu. preemption: 0/2 nodes are "
    "available: 2 No preemption victims found for incoming pod."
)


def _deployment(spec: dict[str, Any] | None = None) -> SimpleNamespace:
    revision = SimpleNamespace(
        pk=1, number=1, spec={"replicas": {"min": 1, "max": 1}, **(spec or {})},
        pods_number=lambda: 1,  # Revision.pods_number(): its own pods
    )
    return SimpleNamespace(
        state=DeploymentState.DEPLOYING, state_reason="", current_revision=revision,
        serving_revision=None,
    )  # fmt: skip


def _labels() -> dict[str, str]:
    return {"modeldeck.io/deployment-id": "7", "modeldeck.io/revision": "1"}


def _k8s_deployment() -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "labels": _labels()}, "spec": {"replicas": 1},
            "status": {}}  # fmt: skip


def _unscheduled_pod(minutes_ago: float, name: str = "p1") -> dict[str, Any]:
    since = (NOW - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "metadata": {"name": name, "namespace": "ns", "labels": _labels()},
        "spec": {},
        "status": {"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": SCHEDULER, "lastTransitionTime": since}]},
    }  # fmt: skip


def _crashing_pod() -> dict[str, Any]:
    return {
        "metadata": {"name": "p2", "namespace": "ns", "labels": _labels()},
        "spec": {"nodeName": "gpu-0"},
        "status": {"phase": "Running", "containerStatuses": [{"state": {"waiting": {
            "reason": "CrashLoopBackOff", "message": "back-off 40s restarting"}}}]},
    }  # fmt: skip


def _decide(pods: list[dict[str, Any]], spec: dict[str, Any] | None = None):
    observed = observe([_k8s_deployment()], pods)
    return decide(_deployment(spec), observed[7], now=NOW)


def test_an_unschedulable_pod_is_waiting_for_capacity_within_the_grace_period() -> None:
    decision = _decide([_unscheduled_pod(minutes_ago=5)])
    assert decision.state == DeploymentState.DEPLOYING
    assert decision.reason.startswith(
        "Waiting for capacity (0/1 scheduled: insufficient nvidia.com/gpu)"
    )
    assert decision.problem.reason == "WaitingForCapacity"  # an event for the Events tab


def test_it_fails_with_the_schedulers_words_after_the_default_15_minutes() -> None:
    decision = _decide([_unscheduled_pod(minutes_ago=16)])
    assert decision.state == DeploymentState.FAILED
    assert decision.reason.startswith("Unschedulable: 0/2 nodes are available")
    assert "still unscheduled after 15 min" in decision.reason


def test_the_grace_period_is_the_deployments_own() -> None:
    assert _decide([_unscheduled_pod(16)], {"capacity_grace_seconds": 3600}).state == (
        DeploymentState.DEPLOYING
    )
    assert _decide([_unscheduled_pod(1)], {"capacity_grace_seconds": 30}).state == (
        DeploymentState.FAILED
    )
    assert _decide([_unscheduled_pod(0)], {"capacity_grace_seconds": 0}).state == (
        DeploymentState.FAILED
    )


def test_a_crash_loop_fails_at_once_even_beside_a_pod_waiting_for_capacity() -> None:
    decision = _decide([_unscheduled_pod(1), _crashing_pod()])
    assert decision.state == DeploymentState.FAILED
    assert decision.reason.startswith("CrashLoopBackOff")


def test_image_pull_errors_stay_immediate_failures() -> None:
    pod = _crashing_pod()
    pod["status"]["containerStatuses"][0]["state"]["waiting"] = {
        "reason": "ImagePullBackOff", "message": "Back-off pulling image"}  # fmt: skip
    decision = _decide([pod])
    assert decision.state == DeploymentState.FAILED and "ImagePullBackOff" in decision.reason
