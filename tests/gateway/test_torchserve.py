"""TorchServe end to end in the sandbox: a `.mar` uploaded to the catalog deploys with the
built-in TorchServe bundle (an init container fetching the archive from a signed, expiring
artifact URL and checking its sha256), reaches Running, and answers predictions and
explanations through the gateway with a key, metered per request."""

from __future__ import annotations

import hashlib

import kubernetes_validate
import pytest
import requests
from django.core import signing
from django.core.files.uploadedfile import SimpleUploadedFile

from catalog import services as catalog_services
from catalog.artifacts import artifact_for_token, artifact_token
from catalog.models import ProfileBundle
from catalog.services import bundles_builtin_ensure
from deployments.models import ComputePool, DeploymentState, PoolKind
from deployments.renderers import render
from deployments.services import deployment_create
from deployments.spec import render_spec_for
from deployments.tasks import refresh_artifact_links
from gateway.models import UsageRecord
from gateway.tasks import flush_usage
from sandbox.engine import torchserve_scores
from sandbox.kubelet import SandboxCluster
from tests.deployments.conftest import wait_for
from tests.gateway.conftest import make_key

ARCHIVE = b"PK\x03\x04" + b"resnet-18 weights and handler " * 100


@pytest.fixture
def ts_cluster():
    sandbox = SandboxCluster(ready_delay=0.3, tick=0.05)
    sandbox.start()
    yield sandbox
    sandbox.stop()


@pytest.fixture
def torchserve_bundle(transactional_db) -> ProfileBundle:
    # Transactional tests flush the seeded rows; put the migration's own bundles back.
    bundles_builtin_ensure()
    return ProfileBundle.objects.get(organization=None, name="torchserve")


@pytest.fixture
def uploaded(tenants, settings, tmp_path):
    settings.MODELDECK_DATA_DIR = tmp_path
    return catalog_services.model_add_custom(
        user=tenants.owner, organization=tenants.org, name="resnet-18",
        artifact=SimpleUploadedFile("resnet-18.mar", ARCHIVE), task="image-classification",
    )  # fmt: skip


def test_a_mar_upload_deploys_on_torchserve_and_answers_through_the_gateway(
    tenants, gateway, engine, ts_cluster, torchserve_bundle, uploaded, settings, monkeypatch
):
    settings.ARTIFACT_BASE_URL = gateway.url
    pool = ComputePool.objects.create(
        organization=tenants.org, name="torch", kind=PoolKind.SANDBOX, api_url=ts_cluster.url,
        engine_label="torchserve",
    )  # fmt: skip
    deployment = deployment_create(
        user=tenants.owner, project=tenants.project, model=uploaded, pool=pool, name="resnet",
        spec={"resources": {"cpu": "2", "memory": "8Gi", "gpus": 1}, "served_model_name": "resnet"},
        bundle=torchserve_bundle,
    )  # fmt: skip
    wait_for(lambda: type(deployment).objects.get(pk=deployment.pk).state == DeploymentState.RUNNING, timeout=30)

    # What reached the cluster: the fetch-and-verify init container, TorchServe's command line.
    ns = tenants.project.namespace()
    pod_spec = ts_cluster.emulator.get_object("Deployment", ns, "resnet-r1")["spec"]["template"]["spec"]
    fetch = pod_spec["initContainers"][0]
    env = {e["name"]: e for e in fetch["env"]}
    assert env["MODEL_SHA256"]["value"] == hashlib.sha256(ARCHIVE).hexdigest() == uploaded.artifact_sha256
    assert "sha256sum -c" in fetch["command"][-1]
    secret_name = env["MODELDECK_ARTIFACT_URL"]["valueFrom"]["secretKeyRef"]["name"]
    engine_args = next(c for c in pod_spec["containers"] if c["name"] != "auth-proxy")["args"]
    assert engine_args[engine_args.index("--models") + 1] == "resnet=model.mar"

    # The signed URL in the Secret downloads exactly the uploaded archive; a tampered one doesn't.
    import base64

    secret = ts_cluster.emulator.get_object("Secret", ns, secret_name)
    url = base64.b64decode(secret["data"]["url"]).decode()
    assert url.startswith(gateway.url + "/catalog/artifacts/")
    fetched = requests.get(url, timeout=10)
    assert fetched.status_code == 200 and hashlib.sha256(fetched.content).hexdigest() == uploaded.artifact_sha256
    assert requests.get(url.rstrip("/") + "x/", timeout=10).status_code == 404

    key = make_key(tenants.owner, tenants.org)
    image = b"\x89PNG fake cat picture"
    response = requests.post(f"{gateway.url}/v1/deployments/resnet/predictions", data=image,
                             headers={"Authorization": f"Bearer {key}", "Content-Type": "image/png"}, timeout=10)  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.json() == torchserve_scores(image)
    assert engine.requests[-1].path == "/predictions/resnet" and engine.requests[-1].body == image
    explained = requests.post(f"{gateway.url}/v1/deployments/resnet/explanations", data=image,
                              headers={"Authorization": f"Bearer {key}"}, timeout=10)  # fmt: skip
    assert explained.status_code == 200 and "attributions" in explained.json()[0]

    # Same keys and access as the OpenAI routes: none is a 401, another organization's a 404.
    assert requests.post(f"{gateway.url}/v1/deployments/resnet/predictions", data=image, timeout=10).status_code == 401
    other = make_key(tenants.outsider, tenants.other_org)
    refused = requests.post(f"{gateway.url}/v1/deployments/resnet/predictions", data=image,
                            headers={"Authorization": f"Bearer {other}"}, timeout=10)  # fmt: skip
    assert refused.status_code == 404
    assert requests.post(f"{gateway.url}/v1/deployments/resnet/classify", data=image,
                         headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code == 404  # fmt: skip

    # The OpenAI routes say where a TorchServe model answers instead of proxying a 404.
    chat = requests.post(f"{gateway.url}/v1/chat/completions", timeout=10,
                         json={"model": "resnet", "messages": [{"role": "user", "content": "hi"}]},
                         headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    assert chat.status_code == 400 and "/v1/deployments/resnet/predictions" in chat.json()["error"]["message"]

    flush_usage()
    routes = sorted(UsageRecord.objects.filter(deployment_id=deployment.pk).values_list("route", "status_code"))
    assert routes == [("chat.completions", 400), ("explanations", 200), ("predictions", 200)]

    # Later pods (restarts, scale-ups) find a link still valid: the beat task renews it.
    later = signing.time.time() + settings.ARTIFACT_URL_TTL - 10
    monkeypatch.setattr(signing.time, "time", lambda: later)
    assert refresh_artifact_links() == 1
    secret = ts_cluster.emulator.get_object("Secret", ns, secret_name)
    renewed = base64.b64decode(secret["data"]["url"]).decode()
    assert renewed != url and artifact_for_token(renewed.rstrip("/").rsplit("/", 1)[1]) == uploaded


def test_torchserve_manifests_validate_and_non_mar_models_are_refused(tenants, torchserve_bundle, uploaded, tmp_path):
    pool = ComputePool.objects.create(
        organization=tenants.org, name="torch", kind=PoolKind.SANDBOX, api_url="http://127.0.0.1:9",
        engine_label="torchserve",
    )  # fmt: skip
    deployment = deployment_create(
        user=tenants.owner, project=tenants.project, model=uploaded, pool=pool, name="resnet",
        spec={"resources": {"cpu": "2", "memory": "8Gi", "gpus": 1}}, bundle=torchserve_bundle,
    )  # fmt: skip
    for obj in render(render_spec_for(deployment, deployment.current_revision)):
        # The Kubernetes 1.30 schemas in strict mode: the init container and its Secret reference too.
        kubernetes_validate.validate(obj, "1.30", strict=True)

    weights = catalog_services.model_add_custom(
        user=tenants.owner, organization=tenants.org, name="plain", storage_uri="s3://bucket/model.bin",
    )  # fmt: skip
    with pytest.raises(Exception, match=r"\.mar"):
        deployment_create(
            user=tenants.owner, project=tenants.project, model=weights, pool=pool, name="plain",
            spec={"resources": {"cpu": "2", "memory": "8Gi", "gpus": 1}}, bundle=torchserve_bundle,
        )  # fmt: skip


def test_an_artifact_link_expires_and_names_one_archive(uploaded, settings, monkeypatch):
    token = artifact_token(uploaded)
    assert artifact_for_token(token) == uploaded
    assert artifact_for_token(token[:-2] + ("yy" if token.endswith("xx") else "xx")) is None
    later = signing.time.time() + settings.ARTIFACT_URL_TTL + 1
    monkeypatch.setattr(signing.time, "time", lambda: later)
    assert artifact_for_token(token) is None


def test_the_migration_seeds_the_builtin_torchserve_bundle(db):
    bundle = ProfileBundle.objects.get(organization=None, name="torchserve")
    assert bundle.engine == "torchserve" and bundle.image == "pytorch/torchserve:0.12.0-gpu"
