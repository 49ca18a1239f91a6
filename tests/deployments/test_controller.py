"""The ModelDeployment controller end to end in the sandbox: a resource created with the real
`kubernetes` client becomes a deployment that reaches Running, its status is written back
through the status subresource, the deployment is read-only in REST and the console, and
deleting the resource removes the deployment."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kubernetes import client

from deployments.controller import controller_sync
from deployments.models import ComputePool, DeploymentState, ModelDeployment, PoolKind
from deployments.services import deployment_update, pool_test_connection
from sandbox.kubelet import SandboxCluster
from sharing.models import AuditEntry
from tests.conftest import login
from tests.deployments.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

GROUP, VERSION, PLURAL = "modeldeck.io", "v1", "modeldeployments"
CRD_FILE = Path(__file__).resolve().parents[2] / "deploy" / "crds" / "modeldeployment.yaml"


@pytest.fixture
def crd_cluster():
    sandbox = SandboxCluster(ready_delay=0.3, tick=0.05, crds=["modeldeck"])
    sandbox.start()
    yield sandbox
    sandbox.stop()


@pytest.fixture
def crd_pool(tenants, crd_cluster) -> ComputePool:
    pool = ComputePool.objects.create(
        organization=tenants.org, name="edge", kind=PoolKind.SANDBOX, api_url=crd_cluster.url,
        engine_label="vllm",
    )  # fmt: skip
    pool_test_connection(user=None, pool=pool)
    pool.refresh_from_db()
    return pool


@pytest.fixture
def custom(crd_cluster, tenants) -> client.CustomObjectsApi:
    api = client.ApiClient(client.Configuration(host=crd_cluster.url))
    # The cluster's admin made the namespaces (the project's, another organization's, default).
    core = client.CoreV1Api(api)
    for ns in (tenants.project.namespace(), tenants.other_project.namespace()):
        core.create_namespace({"metadata": {"name": ns}})
    return client.CustomObjectsApi(api)


def resource(name: str, spec: dict) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment", "metadata": {"name": name}, "spec": spec}


def spec_for(model, bundle) -> dict:
    return {"model": model.name, "bundle": bundle.name, "served_model_name": "edge-chat",
            "resources": {"cpu": "2", "memory": "8Gi", "gpus": 1}}  # fmt: skip


def read(custom, ns: str, name: str) -> dict:
    return custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)


def test_the_shipped_crd_names_the_kind_the_controller_lists():
    crd = yaml.safe_load(CRD_FILE.read_text())
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == f"{PLURAL}.{GROUP}"
    assert crd["spec"]["names"]["kind"] == "ModelDeployment"
    version = crd["spec"]["versions"][0]
    assert version["name"] == VERSION and version["subresources"] == {"status": {}}
    spec_props = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert {"model", "bundle", "pool", "served_model_name", "replicas", "resources", "state"} <= set(spec_props)


def test_a_resource_becomes_a_running_deployment_with_status_and_goes_when_deleted(
    tenants, crd_pool, crd_cluster, custom, model, bundle
):
    assert crd_pool.serves_modeldeployments()
    ns = tenants.project.namespace()
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, resource("edge-chat", spec_for(model, bundle)))

    deployment = wait_for(lambda: ModelDeployment.objects.filter(project=tenants.project, name="edge-chat").first())
    assert deployment.managed_by_resource == f"{ns}/edge-chat"
    assert deployment.pool == crd_pool and deployment.created_by is None
    wait_for(lambda: ModelDeployment.objects.get(pk=deployment.pk).state == DeploymentState.RUNNING, timeout=30)

    def status_says_running() -> dict | None:
        status = read(custom, ns, "edge-chat").get("status") or {}
        return status if status.get("state") == "Running" else None

    status = wait_for(status_says_running)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Applied"]["status"] == "True" and conditions["Ready"]["status"] == "True"
    assert status["deploymentId"] == deployment.pk and status["servedModelName"] == "edge-chat"
    assert status["endpoint"].endswith("/v1") and status["observedGeneration"] == 1
    assert AuditEntry.objects.filter(action="resource_apply", object_id=str(deployment.pk)).exists()

    # One list call per cycle, whatever the number of resources; a settled status is not rewritten.
    crd_cluster.emulator.reset_counts()
    stats = controller_sync(crd_pool)
    assert crd_cluster.emulator.count(verb="list", resource=PLURAL) == 1
    assert stats.status_writes == 0 and stats.applied == 0

    custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "edge-chat")
    wait_for(lambda: not ModelDeployment.objects.filter(pk=deployment.pk).exists(), timeout=30)
    assert AuditEntry.objects.filter(action="resource_deleted", object_id=str(deployment.pk)).exists()


def test_a_spec_change_on_the_resource_rolls_out_and_bad_spec_is_a_condition(
    tenants, crd_pool, custom, model, bundle
):
    ns = tenants.project.namespace()
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, resource("edge-chat", spec_for(model, bundle)))
    controller_sync(crd_pool)
    deployment = ModelDeployment.objects.get(project=tenants.project, name="edge-chat")
    assert deployment.current_revision.number == 1

    custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "edge-chat", {"spec": {"context_length": 4096}})
    controller_sync(crd_pool)
    deployment.refresh_from_db()
    assert deployment.current_revision.number == 2
    assert deployment.current_revision.spec["context_length"] == 4096

    custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "edge-chat", {"spec": {"replicas": {"min": "many"}}})
    controller_sync(crd_pool)
    status = read(custom, ns, "edge-chat")["status"]
    applied = {c["type"]: c for c in status["conditions"]}["Applied"]
    assert applied["status"] == "False" and applied["reason"] == "Invalid" and "replicas" in applied["message"]
    assert status["observedGeneration"] == 3
    deployment.refresh_from_db()
    assert deployment.current_revision.number == 2  # the bad generation changed nothing


def test_a_resource_outside_a_project_namespace_or_over_a_console_deployment_is_refused(
    tenants, crd_pool, custom, model, bundle, deploy
):
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, resource("stray", spec_for(model, bundle)))
    # Another organization's project namespace is not this pool's to deploy into.
    custom.create_namespaced_custom_object(
        GROUP, VERSION, tenants.other_project.namespace(), PLURAL, resource("sneaky", spec_for(model, bundle))
    )
    console_made = deploy("taken", pool=crd_pool)
    ns = tenants.project.namespace()
    custom.create_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, resource("taken", {**spec_for(model, bundle), "served_model_name": "other"})
    )
    controller_sync(crd_pool)

    for namespace, name, reason in (("default", "stray", "NoProject"),
                                    (tenants.other_project.namespace(), "sneaky", "NoProject"),
                                    (ns, "taken", "Conflict")):  # fmt: skip
        applied = {c["type"]: c for c in read(custom, namespace, name)["status"]["conditions"]}["Applied"]
        assert (applied["status"], applied["reason"]) == ("False", reason)
    assert not ModelDeployment.objects.filter(name__in=["stray", "sneaky"]).exists()
    console_made.refresh_from_db()
    assert console_made.managed_by_resource == "" and console_made.served_name() == "taken"


def test_a_managed_deployment_is_read_only_in_rest_and_console(tenants, crd_pool, custom, model, bundle):
    ns = tenants.project.namespace()
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, resource("edge-chat", spec_for(model, bundle)))
    controller_sync(crd_pool)
    deployment = ModelDeployment.objects.get(project=tenants.project, name="edge-chat")
    message = f"Managed by ModelDeployment {ns}/edge-chat on pool edge; change it there."
    assert deployment.managed_message() == message

    owner = login(tenants.owner)
    response = owner.patch(f"/api/v1/deployments/{deployment.pk}/", {"spec": {"context_length": 4096}},
                           content_type="application/json")  # fmt: skip
    assert response.status_code == 400 and message in str(response.json())
    response = owner.post(f"/api/v1/deployments/{deployment.pk}/deactivate/")
    assert response.status_code == 400 and message in str(response.json())
    assert owner.delete(f"/api/v1/deployments/{deployment.pk}/").status_code == 400
    assert owner.get(f"/api/v1/deployments/{deployment.pk}/").json()["managed_by"] == message

    page = owner.get(f"/deployments/{deployment.pk}/").content.decode()
    assert "Managed by ModelDeployment" in page and f"{ns}/edge-chat" in page
    response = owner.post(f"/deployments/{deployment.pk}/deactivate/", follow=True)
    assert response.status_code == 200 and "change it there" in response.content.decode()
    deployment.refresh_from_db()
    assert deployment.state != DeploymentState.DEACTIVATED
    with pytest.raises(Exception, match="change it there"):
        deployment_update(user=tenants.owner, deployment=deployment, spec={"context_length": 4096})
    # An outsider still gets 404, not the message.
    assert login(tenants.outsider).get(f"/api/v1/deployments/{deployment.pk}/").status_code == 404
