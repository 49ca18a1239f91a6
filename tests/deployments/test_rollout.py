"""Rollouts on a sandbox cluster: a failed rollout rolls back by itself (the old revision keeps
serving, the new one's objects go, the deployment says so and can be retried), and the GPU
quota covers both revisions while both hold pods, or the update says so and offers recreate."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from deployments.models import DeploymentState, ModelDeployment, Revision
from deployments.renderers import GPU_RESOURCE
from deployments.services import deployment_update
from deployments.tasks import sync_status
from projects.models import GpuReservation
from tests.deployments.conftest import state_of, wait_for
from tests.factories import rest_api_client

pytestmark = pytest.mark.django_db(transaction=True)

NS = "acme-research"


def deployments_on_pool(emulator) -> list[str]:
    return sorted(d["metadata"]["name"] for d in emulator.list_objects("Deployment", NS))


def service_revision(emulator) -> str:
    return emulator.get_object("Service", NS, "chat")["spec"]["selector"]["modeldeck.io/revision"]


def ready_pods_behind_service(emulator) -> int:
    selector = emulator.get_object("Service", NS, "chat")["spec"]["selector"]
    ready = 0
    for pod in emulator.list_objects("Pod", NS):
        labels = pod["metadata"].get("labels") or {}
        if pod["metadata"].get("deletionTimestamp") or any(labels.get(k) != v for k, v in selector.items()):
            continue
        conditions = (pod.get("status") or {}).get("conditions") or []
        ready += any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    return ready


def rolled_back(deployment: ModelDeployment) -> bool:
    return state_of(deployment) == DeploymentState.FAILED and deployment.state_reason.startswith("Update failed: ")


def running_on(deployment: ModelDeployment, number: int) -> bool:
    return state_of(deployment) == DeploymentState.RUNNING and deployment.serving_revision.number == number


def test_a_rollout_whose_image_cant_be_pulled_rolls_back_by_itself(deploy, emulator, tenants, owner_client):
    deployment = deploy("chat")
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)

    deployment_update(user=tenants.owner, deployment=deployment, spec={"image": "vllm/vllm-openai-doesnotexist:v1"})
    wait_for(lambda: rolled_back(deployment))

    # "Update failed: <Kubernetes' reason>; revision N still serving" — state, REST, console, events.
    assert "ImagePull" in deployment.state_reason or "ErrImagePull" in deployment.state_reason
    assert deployment.state_reason.endswith("; revision 1 still serving.")
    current = deployment.current_revision
    assert (current.number, deployment.serving_revision_id, current.pods_revision) == (3, current.pk, 1)
    assert current.spec == deployment.revisions.get(number=1).spec
    assert current.reason == "Automatic rollback: revision 2 failed"
    # The failed revision's objects are removed; revision 1's pods kept the traffic all along.
    assert deployments_on_pool(emulator) == ["chat-r1"]
    assert service_revision(emulator) == "1" and ready_pods_behind_service(emulator) >= 1
    assert tenants.project.gpu_used() == 1  # no surge left behind
    reasons = set(deployment.events.values_list("reason", flat=True))
    assert {"RolloutFailed", "RolledBack"} <= reasons
    body = rest_api_client(tenants.owner).get(f"/api/v1/deployments/{deployment.pk}/").json()
    assert body["state"] == "failed" and body["state_reason"] == deployment.state_reason
    assert (body["current_revision"], body["serving_revision"]) == (3, 3)
    page = owner_client.get(deployment.get_absolute_url()).content.decode()
    assert "Update failed: " in page and "revision 1 still serving" in page and "Rolled back:" in page

    # It stays so (the sync doesn't flip it back to Running or roll back twice)...
    reason = deployment.state_reason
    sync_status()
    sync_status()
    assert state_of(deployment) == DeploymentState.FAILED and deployment.state_reason == reason
    assert Revision.objects.filter(deployment=deployment).count() == 3

    # ...and is never stuck: retrying the failed revision (a rollback to it) rolls out again and
    # rolls back again; a fixed update then serves.
    retried = rest_api_client(tenants.owner).post(
        f"/api/v1/deployments/{deployment.pk}/rollback/", {"revision": 2}, format="json"
    )
    assert retried.status_code == 200, retried.content[:300]
    assert retried.json()["current_revision"] == 4 and retried.json()["state"] == "deploying"
    wait_for(lambda: rolled_back(deployment) and deployment.current_revision.number == 5)
    deployment_update(user=tenants.owner, deployment=deployment, spec={"env": {"LOG_LEVEL": "debug"}})
    wait_for(lambda: running_on(deployment, 6))
    wait_for(lambda: deployments_on_pool(emulator) == ["chat-r6"], sync=False)


def test_a_crash_looping_rollout_rolls_back_by_itself(deploy, emulator, tenants):
    deployment = deploy("chat")
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)

    deployment_update(user=tenants.owner, deployment=deployment, spec={"env": {"SANDBOX_CRASH": "1"}})
    wait_for(lambda: rolled_back(deployment))

    assert "CrashLoopBackOff" in deployment.state_reason
    assert deployment.state_reason.endswith("; revision 1 still serving.")
    assert deployments_on_pool(emulator) == ["chat-r1"] and service_revision(emulator) == "1"
    assert ready_pods_behind_service(emulator) >= 1


def test_a_rollout_that_finds_no_capacity_within_the_grace_rolls_back(deploy, emulator, tenants):
    tenants.project.gpu_quota = 16  # the surge fits the quota; no node has 8 GPUs
    tenants.project.save(update_fields=["gpu_quota"])
    deployment = deploy("chat")
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)

    deployment_update(user=tenants.owner, deployment=deployment,
                      spec={"resources": {"gpus": 8}, "capacity_grace_seconds": 0})  # fmt: skip
    assert tenants.project.gpu_used() == 9  # 8 for revision 2, 1 for revision 1 meanwhile
    wait_for(lambda: rolled_back(deployment))

    assert "Unschedulable" in deployment.state_reason
    assert deployments_on_pool(emulator) == ["chat-r1"]
    assert tenants.project.gpu_used() == 1


def test_a_first_rollout_that_fails_has_nothing_to_roll_back_to(deploy, emulator):
    deployment = deploy("chat", spec={"image": "vllm/vllm-openai-doesnotexist:v1"})

    wait_for(lambda: state_of(deployment) == DeploymentState.FAILED)

    assert not deployment.state_reason.startswith("Update failed")
    assert deployment.current_revision.number == 1
    assert deployments_on_pool(emulator) == ["chat-r1"]


# --- Quota during rollouts ----------------------------------------------------------------------


class GpuSampler:
    """Samples, in a thread, the GPUs the cluster's pods ask for against the deployment's
    reservation in the database (read before and after the pods, so neither a reservation that
    grows before the pods nor one that shrinks after them reads as a breach)."""

    def __init__(self, emulator, holder: str) -> None:
        self.emulator, self.holder = emulator, holder
        self.samples: list[tuple[int, int]] = []  # (GPUs of pods, reservation)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _reserved(self) -> int:
        row = GpuReservation.objects.filter(holder=self.holder).values_list("gpus", flat=True).first()
        return row or 0

    def _pod_gpus(self) -> int:
        total = 0
        for pod in self.emulator.list_objects("Pod", NS):
            for container in pod["spec"]["containers"]:
                limits = (container.get("resources") or {}).get("limits") or {}
                total += int(limits.get(GPU_RESOURCE, 0))
        return total

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                before = self._reserved()
                pods = self._pod_gpus()
                after = self._reserved()
                self.samples.append((pods, max(before, after)))
                self.stop.wait(0.005)
        finally:
            connection.close()

    def __enter__(self) -> GpuSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)

    def breaches(self) -> list[tuple[int, int]]:
        return [(pods, reserved) for pods, reserved in self.samples if pods > reserved]


def test_the_reservation_covers_the_pods_of_both_revisions_during_a_blue_green_update(deploy, emulator, tenants):
    # Before: the reservation followed the new spec alone, so revision 1's pod and revision 2's
    # pod held 2 GPUs while the quota showed 1 (the issue saw 3 against 2).
    deployment = deploy("chat")
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)

    with GpuSampler(emulator, deployment.gpu_holder()) as sampler:
        deployment_update(user=tenants.owner, deployment=deployment, spec={"env": {"LOG_LEVEL": "debug"}})
        assert tenants.project.gpu_used() == 2  # both revisions, while both hold pods
        wait_for(lambda: running_on(deployment, 2))
        wait_for(lambda: deployments_on_pool(emulator) == ["chat-r2"], sync=False)

    assert max(pods for pods, _ in sampler.samples) == 2  # the rollout really overlapped
    assert sampler.breaches() == []
    assert tenants.project.gpu_used() == 1  # the surge is given back once traffic moved


def test_when_the_quota_cant_cover_the_surge_the_update_says_so_and_recreate_stays_within_it(
    deploy, emulator, tenants, owner_client
):
    tenants.project.gpu_quota = 1
    tenants.project.save(update_fields=["gpu_quota"])
    deployment = deploy("chat")
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)
    client = rest_api_client(tenants.owner)
    url = f"/api/v1/deployments/{deployment.pk}/"

    refused = client.patch(url, {"spec": {"env": {"LOG_LEVEL": "debug"}}}, format="json")

    assert refused.status_code == 400, refused.content[:300]
    message = " ".join(refused.json()["update_strategy"])
    assert "2 in all" in message and "quota of 1 GPU," in message and "recreate" in message
    assert Revision.objects.filter(deployment=deployment).count() == 1
    assert deployments_on_pool(emulator) == ["chat-r1"]
    bad = client.patch(url, {"spec": {}, "update_strategy": "sideways"}, format="json")
    assert bad.status_code == 400 and "update_strategy" in bad.json()
    # The console's edit form offers the same choice.
    page = owner_client.get(f"/deployments/{deployment.pk}/edit/").content.decode()
    assert 'name="update_strategy"' in page and 'value="recreate"' in page

    with GpuSampler(emulator, deployment.gpu_holder()) as sampler:
        response = client.patch(url, {"spec": {"env": {"LOG_LEVEL": "debug"}}, "update_strategy": "recreate"},
                                format="json")  # fmt: skip
        assert response.status_code == 200, response.content[:300]
        body = response.json()
        assert body["current_revision"] == 2 and "requests are refused until it is ready" in body["state_reason"]
        assert deployments_on_pool(emulator) == ["chat-r2"]  # revision 1 stopped before revision 2 started
        wait_for(lambda: running_on(deployment, 2))

    assert sampler.breaches() == []
    assert max(reserved for _, reserved in sampler.samples) == 1
    assert tenants.project.gpu_used() == 1
    assert service_revision(emulator) == "2"
    assert "(recreate)" in deployment.current_revision.reason


def test_a_change_that_needs_no_rollout_keeps_the_surge_of_a_rollout_in_progress(deploy, emulator, tenants, cluster):
    deployment = deploy("chat")
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)
    cluster.kubelet.stop()  # revision 2 stays unready: both revisions hold pods

    deployment_update(user=tenants.owner, deployment=deployment, spec={"env": {"LOG_LEVEL": "debug"}})
    deployment_update(user=tenants.owner, deployment=deployment, spec={"pricing": {"input_per_million": "1"}})

    assert tenants.project.gpu_used() == 2
    cluster.kubelet.start()
    wait_for(lambda: running_on(deployment, 3))
    assert tenants.project.gpu_used() == 1


def test_rolling_back_a_hanging_rollout_to_the_serving_revision_reuses_its_pods_at_once(deploy, emulator, tenants):
    tenants.project.gpu_quota = 16
    tenants.project.save(update_fields=["gpu_quota"])
    deployment = deploy("chat")
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)
    uid = emulator.get_object("Deployment", NS, "chat-r1")["metadata"]["uid"]
    # Revision 2 waits for a node with 8 GPUs (within the default 15-minute capacity grace).
    deployment_update(user=tenants.owner, deployment=deployment, spec={"resources": {"gpus": 8}})
    sync_status()
    assert state_of(deployment) == DeploymentState.DEPLOYING and deployments_on_pool(emulator) == ["chat-r1", "chat-r2"]

    revision = rest_api_client(tenants.owner).post(
        f"/api/v1/deployments/{deployment.pk}/rollback/", {"revision": 1}, format="json"
    ).json()

    # Revision 3 is revision 1's spec on revision 1's pods: it serves at once, nothing new starts.
    assert (revision["current_revision"], revision["serving_revision"]) == (3, 3)
    assert Revision.objects.get(deployment=deployment, number=3).pods_revision == 1
    assert deployments_on_pool(emulator) == ["chat-r1"]
    assert emulator.get_object("Deployment", NS, "chat-r1")["metadata"]["uid"] == uid
    assert tenants.project.gpu_used() == 1
    wait_for(lambda: running_on(deployment, 3))


def test_a_rollout_past_its_progress_deadline_is_a_failed_rollout(deploy, emulator, tenants, cluster):
    from deployments import kube
    from deployments.tasks import decide

    deployment = deploy("chat")
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)
    cluster.kubelet.stop()
    deployment_update(user=tenants.owner, deployment=deployment, spec={"env": {"LOG_LEVEL": "debug"}})
    deployment.refresh_from_db()
    # What the status sync reads when the Deployment controller gives up on revision 2
    # (Progressing=False, ProgressDeadlineExceeded) while revision 1 is ready.
    observed = kube.observe(
        [
            {"metadata": {"namespace": NS, "labels": {"modeldeck.io/deployment-id": str(deployment.pk),
                                                      "modeldeck.io/revision": str(n)}},
             "spec": {"replicas": 1}, "status": status}
            for n, status in (
                (1, {"readyReplicas": 1}),
                (2, {"conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                                     "message": 'ReplicaSet "chat-r2-5d9" has timed out progressing.'}]}),
            )
        ],
        [],
    )  # fmt: skip

    decision = decide(deployment, observed[deployment.pk])

    assert decision.rollback and decision.state == DeploymentState.FAILED
    assert decision.reason.startswith("Update failed: ProgressDeadlineExceeded")
    assert decision.reason.endswith("; revision 1 still serving.")


def test_a_rollout_the_api_server_refuses_for_good_rolls_back(deploy, emulator, tenants):
    deployment = deploy("chat")
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)
    # The push of revision 2's Deployment is refused (422: retrying can't fix it).
    emulator.fail_next(1, 422, verb="patch", resource="deployments", message="spec.template: Invalid value")

    deployment_update(user=tenants.owner, deployment=deployment, spec={"env": {"LOG_LEVEL": "debug"}})

    assert rolled_back(deployment)
    assert "refused the Deployment as invalid (HTTP 422)" in deployment.state_reason  # ModelDeck's words
    assert ".;" not in deployment.state_reason
    assert deployment.state_reason.endswith("; revision 1 still serving.")
    assert deployments_on_pool(emulator) == ["chat-r1"] and service_revision(emulator) == "1"
    assert tenants.project.gpu_used() == 1
