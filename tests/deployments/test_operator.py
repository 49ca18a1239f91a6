"""Operator-native objects: a NIM deployment renders NIMService + NIMCache where the pool has the
NIM Operator (found by "Test connection"), a plain Deployment where it doesn't; the status sync
reads the NIMServices' conditions with one list call per pool."""

from __future__ import annotations

import base64

import pytest

from catalog.models import CatalogModel, ProfileBundle
from deployments.models import ComputePool, DeploymentState, PoolKind
from deployments.services import deployment_create, pool_test_connection
from deployments.spec import NGC_API_SECRET, NGC_PULL_SECRET
from deployments.tasks import sync_pool
from projects.models import IntegrationKind
from projects.services import integration_set
from sandbox.kubelet import SandboxCluster
from tests.deployments.conftest import state_of, wait_for

NGC_KEY = "nvapi-test-key"


@pytest.fixture
def nim_cluster():
    sandbox = SandboxCluster(ready_delay=0.3, tick=0.05, crds=["nim-operator"])
    sandbox.start()
    yield sandbox
    sandbox.stop()


@pytest.fixture
def nim_bundle(db) -> ProfileBundle:
    from catalog.services import bundles_builtin_ensure

    bundles_builtin_ensure()
    return ProfileBundle.objects.get(organization__isnull=True, name="nim-llm")


@pytest.fixture
def llama(tenants) -> CatalogModel:
    integration_set(user=tenants.owner, project=tenants.project, kind=IntegrationKind.NGC, secret=NGC_KEY)
    return CatalogModel.objects.create(
        organization=tenants.org, name="Llama 3.1 8B Instruct NIM", source="ngc",
        ngc_image="nvcr.io/nim/meta/llama-3.1-8b-instruct", ngc_tag="1.3.3",
    )  # fmt: skip


def _pool(tenants, cluster, name: str) -> ComputePool:
    pool = ComputePool.objects.create(
        organization=tenants.org, name=name, kind=PoolKind.SANDBOX, api_url=cluster.url, engine_label="nim"
    )
    pool_test_connection(user=None, pool=pool)  # the system, as the periodic check
    return pool


def _deploy(tenants, pool, bundle, model, name="llama"):
    return deployment_create(
        user=tenants.owner, project=tenants.project, model=model, pool=pool, name=name, bundle=bundle,
        spec={"resources": {"cpu": "4", "memory": "32Gi", "gpus": 1}, "model_cache": {"size": "80Gi"}},
    )  # fmt: skip


def test_test_connection_finds_the_nim_operator(tenants, nim_cluster, cluster):
    with_operator = _pool(tenants, nim_cluster, "nim-pool")
    plain = _pool(tenants, cluster, "plain-pool")
    assert with_operator.operators() == {"nim": True, "kserve": False, "gateway_api": False}
    assert plain.operators() == {"nim": False, "kserve": False, "gateway_api": False}


def test_builtin_nim_bundle_runs_as_nimservice_and_nimcache_where_the_operator_is(
    tenants, nim_cluster, nim_bundle, llama
):
    pool = _pool(tenants, nim_cluster, "nim-pool")
    deployment = _deploy(tenants, pool, nim_bundle, llama)
    ns = tenants.project.namespace()

    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING, timeout=30)

    emulator = nim_cluster.emulator
    service = emulator.get_object("NIMService", ns, "llama-r1")
    cache = emulator.get_object("NIMCache", ns, "llama-model-cache")
    assert service is not None and cache is not None
    spec = service["spec"]
    assert spec["image"] == {"repository": "nvcr.io/nim/meta/llama-3.1-8b-instruct", "tag": "1.3.3",
                             "pullPolicy": "IfNotPresent", "pullSecrets": [NGC_PULL_SECRET]}  # fmt: skip
    assert spec["authSecret"] == NGC_API_SECRET
    assert spec["storage"]["nimCache"] == {"name": "llama-model-cache"}
    assert spec["expose"]["service"] == {"type": "ClusterIP", "port": 8000}
    assert cache["spec"]["source"]["ngc"]["authSecret"] == NGC_API_SECRET
    assert cache["spec"]["storage"]["pvc"]["size"] == "80Gi"
    assert cache["status"]["state"] == "Ready"
    ready = {c["type"]: c["status"] for c in service["status"]["conditions"]}
    assert ready["NIM_SERVICE_READY"] == "True"
    # The operator's own Deployment serves it; ModelDeck applied no Deployment of its own.
    workload = emulator.get_object("Deployment", ns, "llama-r1")
    assert workload["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "k8s-nim-operator"
    assert workload["metadata"]["ownerReferences"][0]["kind"] == "NIMService"
    assert emulator.list_objects("Deployment", ns, "app.kubernetes.io/managed-by=modeldeck") == []
    # NIM has no API key of its own: a header-checking proxy runs beside it, keyed from our Secret.
    pod = emulator.list_objects("Pod", ns, "app=llama-r1")[0]
    sidecar = next(c for c in pod["spec"]["containers"] if c["name"] == "auth-proxy")
    key_ref = sidecar["env"][0]["valueFrom"]["secretKeyRef"]
    secret = emulator.get_object("Secret", ns, key_ref["name"])
    deployment.refresh_from_db()
    assert base64.b64decode(secret["data"][key_ref["key"]]).decode() == deployment.engine_credential
    assert secret["metadata"]["labels"]["modeldeck.io/deployment-id"] == str(deployment.pk)
    # The deployment's Service reaches the NIM pods through the proxy's port.
    svc = emulator.get_object("Service", ns, "llama")
    assert svc["spec"]["ports"][0]["targetPort"] == 8480
    assert svc["spec"]["selector"] == {"modeldeck.io/deployment-id": str(deployment.pk), "modeldeck.io/revision": "1"}


def test_builtin_nim_bundle_runs_as_a_deployment_without_the_operator(tenants, cluster, nim_bundle, llama):
    pool = _pool(tenants, cluster, "plain-pool")
    deployment = _deploy(tenants, pool, nim_bundle, llama)
    ns = tenants.project.namespace()

    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING, timeout=30)

    workload = cluster.emulator.get_object("Deployment", ns, "llama-r1")
    assert workload["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "modeldeck"
    names = [c["name"] for c in workload["spec"]["template"]["spec"]["containers"]]
    assert names == ["inference", "auth-proxy"]
    with pytest.raises(KeyError):
        cluster.emulator.list_objects("NIMService", ns)


def test_sync_reads_nimservices_with_one_list_call_and_reports_their_failure(
    tenants, nim_bundle, llama
):
    sandbox = SandboxCluster(ready_delay=0.3, tick=0.05, crds=["nim-operator"],
                             bad_images=["nvcr.io/nim/meta/llama-3.1-8b-instruct:9.9.9"])  # fmt: skip
    sandbox.start()
    try:
        pool = _pool(tenants, sandbox, "nim-pool")
        good = _deploy(tenants, pool, nim_bundle, llama, name="good")
        bad = deployment_create(
            user=tenants.owner, project=tenants.project, model=llama, pool=pool, name="bad", bundle=nim_bundle,
            spec={"resources": {"cpu": "4", "memory": "32Gi", "gpus": 1}, "nim_tag": "9.9.9",
                  "served_model_name": "bad-llama"},
        )  # fmt: skip
        wait_for(lambda: state_of(good) == DeploymentState.RUNNING, timeout=30)
        wait_for(lambda: state_of(bad) == DeploymentState.FAILED, timeout=30)
        bad.refresh_from_db()
        assert "ImagePullBackOff" in bad.state_reason or "ErrImagePull" in bad.state_reason

        sandbox.emulator.reset_counts()
        stats = sync_pool(pool)
        # Deployments, Pods and one more for the NIMServices; the pods' Events at most once, and
        # only in a cycle that decides some row again (the failed one may still be re-decided).
        events = sandbox.emulator.count(verb="list", resource="events")
        assert events <= 1
        assert stats["list_calls"] == 3 + events
        assert sandbox.emulator.count(verb="list", resource="nimservices") == 1
        assert sandbox.emulator.count(verb="list") == 3 + events
    finally:
        sandbox.stop()
