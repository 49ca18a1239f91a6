"""The push task: convergence after a crash half-way, permanent errors recorded once, retries declared."""

from __future__ import annotations

import pytest
from django.db import connection

from deployments import kube
from deployments.models import DeploymentState
from deployments.tasks import push, push_deployment, sync_status
from tests.deployments.conftest import state_of, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_push_interrupted_before_the_service_converges_on_the_next_run(deploy, emulator, cluster):
    emulator.fail_next(1, 503, verb="patch", resource="services")
    deployment = deploy("chat")

    # The Deployment went in, the Service did not: the push stopped half-way.
    assert emulator.get_object("Deployment", "acme-research", "chat-r1") is not None
    assert emulator.get_object("Service", "acme-research", "chat") is None
    assert deployment.events.filter(reason="PushFailed").exists()

    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)

    assert emulator.get_object("Service", "acme-research", "chat") is not None
    deployment.refresh_from_db()
    assert deployment.serving_revision_id == deployment.current_revision_id


def test_transient_errors_raise_for_celery_to_retry_without_failing_the_deployment(
    deploy, emulator
):
    emulator.set_down(True)
    deployment = deploy("chat")
    assert state_of(deployment) == DeploymentState.PENDING

    with pytest.raises(kube.TransientKubeError):
        push(deployment.pk)

    assert state_of(deployment) == DeploymentState.PENDING
    emulator.set_down(False)
    push(deployment.pk)
    assert emulator.get_object("Deployment", "acme-research", "chat-r1") is not None


def test_push_task_declares_bounded_retries_with_backoff():
    assert kube.TransientKubeError in push_deployment.autoretry_for
    assert kube.PermanentKubeError not in push_deployment.autoretry_for
    assert push_deployment.max_retries == 5
    assert push_deployment.retry_backoff and push_deployment.retry_jitter


def test_a_422_is_recorded_on_the_deployment_and_never_retried(deploy, emulator):
    emulator.reset_counts()
    emulator.fail_next(
        1, 422, verb="patch", resource="deployments",
        message='Deployment.apps "chat-r1" is invalid: spec.template.spec.containers[0].image: Invalid value: "x"',
    )  # fmt: skip
    deployment = deploy("chat")

    assert state_of(deployment) == DeploymentState.FAILED
    assert deployment.state_reason.startswith("Kubernetes refused the Deployment as invalid (HTTP 422)")
    assert deployment.state_reason.endswith("Fix the spec and update the deployment.")
    # The answer's own text never reaches the user: a pool's address may answer anything.
    assert 'Invalid value: "x"' not in deployment.state_reason
    assert not deployment.events.filter(message__contains='Invalid value: "x"').exists()
    assert deployment.events.filter(type="Warning", reason="Invalid").exists()

    sync_status()
    sync_status()

    assert emulator.count(verb="patch", resource="deployments") == 1
    assert state_of(deployment) == DeploymentState.FAILED


def test_push_of_a_deleted_deployment_is_a_quiet_no_op(db):
    assert push(999_999) == "gone"


def test_a_failed_deployment_is_retried_as_it_is_once_its_cause_is_gone(deploy, emulator, tenants):
    """A push refused for a cause outside the spec (here one 403 from the pool: its credentials,
    since fixed) left the deployment Failed for good: Update had nothing to change and activate
    needs a deactivated one. Retry applies the same revision again: console, REST, and refusals."""
    from django.core.exceptions import ValidationError
    from rest_framework.test import APIClient

    from deployments.services import deployment_retry
    from sharing.models import AuditEntry
    from tests.conftest import login

    emulator.fail_next(1, 403, verb="patch", resource="deployments", message="forbidden: token expired")
    deployment = deploy("chat")
    assert state_of(deployment) == DeploymentState.FAILED
    page = login(tenants.member).get(deployment.get_absolute_url()).content.decode()
    assert 'id="retry-button"' in page and "then <em>Retry</em>" in page
    viewer = login(tenants.viewer).post(f"/deployments/{deployment.pk}/retry/")
    assert viewer.status_code == 403 and state_of(deployment) == DeploymentState.FAILED

    response = login(tenants.member).post(f"/deployments/{deployment.pk}/retry/")
    assert response.status_code == 302
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)
    assert deployment.current_revision.number == 1  # the same revision, not a new one
    assert deployment.events.filter(reason="Retried", message="Revision 1 applied again by member.").exists()
    assert AuditEntry.objects.filter(action="retry", object_id=str(deployment.pk)).count() == 1
    assert 'id="retry-button"' not in login(tenants.member).get(deployment.get_absolute_url()).content.decode()

    api = APIClient()
    api.force_authenticate(tenants.member)
    refused = api.post(f"/api/v1/deployments/{deployment.pk}/retry/")
    assert refused.status_code == 400 and "Only a failed deployment can be retried" in str(refused.json())
    outsider = APIClient()
    outsider.force_authenticate(tenants.outsider)
    assert outsider.post(f"/api/v1/deployments/{deployment.pk}/retry/").status_code == 404

    emulator.fail_next(1, 403, verb="patch", resource="deployments", message="forbidden")
    from deployments.services import deployment_update

    deployment_update(user=tenants.owner, deployment=deployment, spec={**deployment.spec(), "context_length": 2048})
    wait_for(lambda: state_of(deployment) == DeploymentState.FAILED)
    deployment.refresh_from_db()
    # A failed update was rolled back and still serves: Roll back to the failed revision retries it.
    assert deployment.state_reason.startswith("Update failed: ")
    with pytest.raises(ValidationError, match="rolled back"):
        deployment_retry(user=tenants.owner, deployment=deployment)
    assert 'id="retry-button"' not in login(tenants.member).get(deployment.get_absolute_url()).content.decode()


def test_a_sync_cycle_asked_for_while_one_runs_in_the_process_is_skipped(deploy, monkeypatch):
    """`make run`'s worker runs tasks in threads: a cycle that outlasts beat's period must not run
    beside the next one over the same per-process cursors."""
    import threading

    from deployments import tasks

    deployment = deploy("chat")
    inside, release = threading.Event(), threading.Event()
    real_sync_pool = tasks.sync_pool
    calls: list[int] = []

    def slow_sync_pool(pool):
        calls.append(pool.pk)
        inside.set()
        assert release.wait(10)
        return real_sync_pool(pool)

    monkeypatch.setattr(tasks, "sync_pool", slow_sync_pool)
    first: dict = {}

    def first_cycle() -> None:
        try:
            first.update(sync_status())
        finally:
            connection.close()  # back to the pool: a thread's connection is never returned otherwise

    thread = threading.Thread(target=first_cycle)
    thread.start()
    try:
        assert inside.wait(10)
        skipped = sync_status()  # the first cycle is still inside its pool
    finally:
        release.set()
        thread.join(10)
    assert skipped == {"pools": 0, "deployments": 0, "changed": 0, "pushed": 0, "list_calls": 0, "decided": 0}
    assert calls == [deployment.pool_id]  # the second cycle touched nothing
    assert first["pools"] == 1 and first["deployments"] == 1
    assert sync_status()["pools"] == 1  # the next one, once the first is done, runs


def test_an_autoscale_pass_asked_for_while_one_runs_in_the_process_is_skipped(db, monkeypatch):
    import threading

    from deployments import tasks

    inside, release = threading.Event(), threading.Event()
    passes: list[int] = []

    def slow_pass():
        passes.append(1)
        inside.set()
        assert release.wait(10)
        return {"deployments": 3, "changed": 1}

    monkeypatch.setattr(tasks, "autoscale_all", slow_pass)
    first: dict = {}
    thread = threading.Thread(target=lambda: first.update(tasks.autoscale()))
    thread.start()
    try:
        assert inside.wait(10)
        skipped = tasks.autoscale()
    finally:
        release.set()
        thread.join(10)
    assert skipped == {"deployments": 0, "changed": 0} and len(passes) == 1
    assert first == {"deployments": 3, "changed": 1}
    assert tasks.autoscale() == {"deployments": 3, "changed": 1} and len(passes) == 2
