"""vLLM on a pool with KServe: ServingRuntime + InferenceService (RawDeployment) per revision, the
status sync reading the InferenceServices' conditions, and a blue-green update switching over."""

from __future__ import annotations

import pytest

from deployments.models import ComputePool, DeploymentState, PoolKind
from deployments.services import deployment_update, pool_test_connection
from deployments.tasks import sync_pool
from sandbox.kubelet import SandboxCluster
from tests.deployments.conftest import state_of, wait_for


@pytest.fixture
def kserve_cluster():
    sandbox = SandboxCluster(ready_delay=0.3, tick=0.05, crds=["kserve"])
    sandbox.start()
    yield sandbox
    sandbox.stop()


@pytest.fixture
def kserve_pool(tenants, kserve_cluster) -> ComputePool:
    pool = ComputePool.objects.create(
        organization=tenants.org, name="kserve", kind=PoolKind.SANDBOX, api_url=kserve_cluster.url,
        engine_label="vllm",
    )  # fmt: skip
    pool_test_connection(user=None, pool=pool)  # the system, as the periodic check
    return pool


def test_vllm_runs_as_an_inferenceservice_with_its_serving_runtime(tenants, deploy, kserve_pool, kserve_cluster):
    assert kserve_pool.operators()["kserve"] is True
    deployment = deploy("chat", pool=kserve_pool)
    ns = tenants.project.namespace()

    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING, timeout=30)

    emulator = kserve_cluster.emulator
    runtime = emulator.get_object("ServingRuntime", ns, "chat-r1")
    isvc = emulator.get_object("InferenceService", ns, "chat-r1")
    container = runtime["spec"]["containers"][0]
    assert container["name"] == "kserve-container"
    assert container["command"] == ["vllm", "serve"] and container["args"][0] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert runtime["spec"]["supportedModelFormats"][0]["name"] == "modeldeck-vllm"
    predictor = isvc["spec"]["predictor"]
    assert predictor["model"] == {"modelFormat": {"name": "modeldeck-vllm"}, "runtime": "chat-r1"}
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert {c["type"]: c["status"] for c in isvc["status"]["conditions"]}["Ready"] == "True"
    # KServe's predictor Deployment runs it; ModelDeck's own Deployment `chat-r1` does not exist.
    assert emulator.get_object("Deployment", ns, "chat-r1-predictor") is not None
    assert emulator.get_object("Deployment", ns, "chat-r1") is None
    # The deployment's Service selects the predictor pods by ModelDeck's labels.
    pods = emulator.list_objects("Pod", ns, f"modeldeck.io/deployment-id={deployment.pk},modeldeck.io/revision=1")
    assert pods and all(p["metadata"]["labels"]["component"] == "predictor" for p in pods)

    kserve_cluster.emulator.reset_counts()
    # Deployments, Pods, InferenceServices; the pods' Events only in a cycle that decides a row
    # again (on a loaded machine the simulated kubelet may still be changing a pod: then 4).
    calls = sync_pool(kserve_pool)["list_calls"]
    assert calls == 3 + kserve_cluster.emulator.count(verb="list", resource="events") <= 4
    assert kserve_cluster.emulator.count(verb="list", resource="inferenceservices") == 1


def test_an_update_switches_to_the_new_inferenceservice_and_removes_the_old(tenants, deploy, kserve_pool, kserve_cluster):
    deployment = deploy("chat", pool=kserve_pool)
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING, timeout=30)
    deployment_update(user=tenants.owner, deployment=deployment, spec={"context_length": 4096})

    def switched() -> bool:
        deployment.refresh_from_db()
        return deployment.state == DeploymentState.RUNNING and deployment.serving_revision.number == 2

    wait_for(switched, timeout=30)
    ns = tenants.project.namespace()
    emulator = kserve_cluster.emulator
    assert emulator.get_object("Service", ns, "chat")["spec"]["selector"]["modeldeck.io/revision"] == "2"
    assert emulator.get_object("InferenceService", ns, "chat-r1") is None
    assert "--max-model-len" in emulator.get_object("ServingRuntime", ns, "chat-r2")["spec"]["containers"][0]["args"]
