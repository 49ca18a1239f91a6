"""The pre-download Job: a deployment with a cache claim (and no NIM Operator) fills the cache
with a Job first; the engine's Deployment is applied only once the Job is Complete; progress and
failures are read from the pool's Job list and shown on the deployment and in REST."""

from __future__ import annotations

import re

import pytest

from deployments.models import DeploymentEvent, ModelDeployment
from deployments.renderers.download import COMPONENT_DOWNLOAD
from sandbox.kubelet import SandboxCluster
from tests.conftest import login
from tests.deployments.conftest import state_of, wait_for
from tests.factories import rest_api_client

pytestmark = pytest.mark.django_db(transaction=True)

FILES = [
    "config.json", "generation_config.json", "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors", "tokenizer.json", "tokenizer_config.json",
    "pytorch_model.bin", "original/consolidated.00.pth",  # never loaded next to safetensors
]  # fmt: skip


@pytest.fixture
def cluster():
    """Download pods run 1.5 s each (the engine still starts in 0.3 s)."""
    sandbox = SandboxCluster(ready_delay=0.3, tick=0.05, job_duration=1.5)
    sandbox.start()
    yield sandbox
    sandbox.stop()


@pytest.fixture
def model(model):
    model.files = [{"path": path, "size": 1 << 30, "lfs": path.endswith(("safetensors", "bin", "pth"))}
                   for path in FILES]  # fmt: skip
    model.save(update_fields=["files"])
    return model


def _jobs(emulator, namespace: str) -> list[dict]:
    return emulator.list_objects("Job", namespace) or []


def _reason(deployment: ModelDeployment) -> str:
    deployment.refresh_from_db()
    return deployment.state_reason


def test_shared_cache_downloads_in_parts_with_progress_then_the_engine_starts(
    tenants, deploy, emulator
):
    deployment = deploy(spec={"model_cache": {"size": "50Gi", "access_mode": "ReadWriteMany"}})
    ns = tenants.project.namespace()
    [job] = _jobs(emulator, ns)
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 6
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == COMPONENT_DOWNLOAD
    # Held back while the weights download: no GPU is taken meanwhile.
    assert emulator.get_object("Deployment", ns, "chat-r1") is None
    assert state_of(deployment) == "deploying" and _reason(deployment).startswith("Downloading weights")

    # Four parts run at once (parallelism), then the last two: "4 of 6 files" on the way,
    # on the deployment's page and in REST alike.
    page = login(tenants.owner)
    wait_for(lambda: re.search(r"Downloading weights: [1-5] of 6 files",
                               page.get(deployment.get_absolute_url()).content.decode()))  # fmt: skip
    assert emulator.get_object("Deployment", ns, "chat-r1") is None
    api_reason = rest_api_client(tenants.owner).get(f"/api/v1/deployments/{deployment.pk}/").json()
    assert "of 6 files" in api_reason["state_reason"]

    wait_for(lambda: state_of(deployment) == "running", timeout=30)
    assert emulator.get_object("Deployment", ns, "chat-r1") is not None
    job = emulator.get_object("Job", ns, job["metadata"]["name"])
    assert job["status"]["completedIndexes"] == "0-5"
    assert DeploymentEvent.objects.filter(deployment=deployment, reason="DownloadingWeights").exists()


def test_a_one_node_cache_downloads_in_one_pod_and_says_so(tenants, deploy, emulator):
    deployment = deploy(spec={"model_cache": {"size": "50Gi"}})  # one replica: ReadWriteOnce
    [job] = _jobs(emulator, tenants.project.namespace())
    assert "completionMode" not in job["spec"] or job["spec"]["completionMode"] == "NonIndexed"
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["huggingface-cli", "download", "Qwen/Qwen2.5-0.5B-Instruct"]
    assert "pytorch_model.bin" not in command and "original/consolidated.00.pth" not in command
    assert command[-2:] == ["--revision", "a8b602d9dafd3a75d382e62757d83d89fca3be54"]
    wait_for(lambda: "6 files, one download job" in _reason(deployment))
    wait_for(lambda: state_of(deployment) == "running", timeout=30)


def test_a_failed_download_fails_the_deployment_with_its_reason(tenants, deploy, emulator):
    deployment = deploy(spec={"model_cache": {"size": "50Gi"}, "env": {"SANDBOX_CRASH": "1"}})
    wait_for(lambda: state_of(deployment) == "failed", timeout=30)
    reason = _reason(deployment)
    assert "Downloading the weights failed" in reason and "BackoffLimitExceeded" in reason
    assert "SANDBOX_CRASH=1" in reason  # the downloader's last log line, from the pod
    assert emulator.get_object("Deployment", tenants.project.namespace(), "chat-r1") is None
    assert DeploymentEvent.objects.filter(deployment=deployment, reason="DownloadFailed").exists()


def test_without_a_cache_claim_there_is_no_job(tenants, deploy, emulator):
    deployment = deploy()
    wait_for(lambda: state_of(deployment) == "running")
    assert _jobs(emulator, tenants.project.namespace()) == []


def test_delete_removes_the_job(tenants, deploy, emulator):
    from deployments.services import deployment_delete

    deployment = deploy(spec={"model_cache": {"size": "50Gi"}})
    wait_for(lambda: state_of(deployment) == "running", timeout=30)
    deployment_delete(user=tenants.owner, deployment=deployment)
    wait_for(lambda: not ModelDeployment.objects.filter(pk=deployment.pk).exists(), timeout=30)
    assert _jobs(emulator, tenants.project.namespace()) == []


def test_nim_without_the_operator_fills_its_cache_with_download_to_cache(tenants, emulator, cluster):
    from catalog.models import CatalogModel, ProfileBundle
    from catalog.services import bundles_builtin_ensure
    from deployments.models import ComputePool, PoolKind
    from deployments.services import deployment_create
    from projects.services import integration_set

    integration_set(user=tenants.owner, project=tenants.project, kind="ngc", secret="nvapi-test-key")
    bundles_builtin_ensure()
    pool = ComputePool.objects.create(organization=tenants.org, name="nim-pool", kind=PoolKind.SANDBOX,
                                      api_url=cluster.url, engine_label="nim")  # fmt: skip
    model = CatalogModel.objects.create(
        organization=tenants.org, name="Llama NIM", source="ngc",
        ngc_image="nvcr.io/nim/meta/llama-3.1-8b-instruct", ngc_tag="1.3.3",
    )  # fmt: skip
    deployment = deployment_create(
        user=tenants.owner, project=tenants.project, model=model, pool=pool, name="llama",
        bundle=ProfileBundle.objects.get(organization=None, name="nim-llm"),
        spec={"resources": {"cpu": "4", "memory": "16Gi", "gpus": 1}, "model_cache": {"size": "100Gi"}},
    )  # fmt: skip
    [job] = _jobs(emulator, tenants.project.namespace())
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["download-to-cache"]
    wait_for(lambda: state_of(deployment) == "running", timeout=30)
    assert emulator.get_object("Deployment", tenants.project.namespace(), "llama-r1") is not None


def test_a_rollout_that_downloads_again_keeps_the_old_revision_serving(tenants, deploy, emulator):
    from deployments.services import deployment_update

    deployment = deploy(spec={"model_cache": {"size": "50Gi"}})
    wait_for(lambda: state_of(deployment) == "running", timeout=30)
    # A new image is a new download Job (its pod template is immutable, its name says what it runs).
    deployment_update(user=tenants.owner, deployment=deployment, spec={"image": "vllm/vllm-openai:v0.8.5"})
    ns = tenants.project.namespace()
    assert len(_jobs(emulator, ns)) == 2
    wait_for(lambda: "Revision 1 keeps serving" in _reason(deployment))
    assert emulator.get_object("Deployment", ns, "chat-r2") is None
    assert emulator.get_object("Service", ns, "chat")["spec"]["selector"]["modeldeck.io/revision"] == "1"
    wait_for(lambda: state_of(deployment) == "running" and deployment.serving_revision.number == 2, timeout=30)
