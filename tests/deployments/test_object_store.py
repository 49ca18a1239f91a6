"""s3:// models on vLLM: refused at save time without the project's S3 credentials (form and REST,
on the model field), pushed with a ModelDeck-owned Secret, Running in the sandbox; engines that
can't read object stores are refused at save time."""

from __future__ import annotations

import base64
import json

import pytest
from django.urls import reverse

from catalog.models import CatalogModel, ProfileBundle
from deployments.models import ModelDeployment
from projects.models import IntegrationKind
from projects.services import integration_set
from tests.deployments.conftest import state_of, wait_for
from tests.deployments.test_views import GOOD
from tests.factories import rest_api_client

S3_CREDENTIALS = {
    "access_key_id": "AKIAEXAMPLE1234", "secret_access_key": "s3cr3t/key+value",
    "endpoint_url": "https://minio.example.com", "region": "us-east-1",
}  # fmt: skip
CPU_VLLM = "public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.8.5"


@pytest.fixture
def s3_model(tenants) -> CatalogModel:
    return CatalogModel.objects.create(
        organization=tenants.org, name="Llama from S3", source="custom",
        storage_uri="s3://models-bucket/llama/8b", task="text-generation",
    )  # fmt: skip


def _body(tenants, s3_model, bundle, pool) -> dict:
    return {
        "project": tenants.project.pk, "model": s3_model.pk, "pool": pool.pk, "bundle": bundle.pk,
        "name": "s3-chat", "spec": {"resources": {"cpu": "2", "memory": "8Gi", "gpus": 1}},
    }  # fmt: skip


@pytest.mark.django_db
def test_s3_model_without_s3_credentials_is_a_400_on_the_model(tenants, s3_model, bundle, pool):
    response = rest_api_client(tenants.owner).post(
        "/api/v1/deployments/", _body(tenants, s3_model, bundle, pool), format="json"
    )
    assert response.status_code == 400
    message = " ".join(response.json()["model"])
    assert "S3 credentials" in message and "Integrations" in message
    assert not ModelDeployment.objects.exists()


@pytest.mark.django_db
def test_s3_model_without_s3_credentials_is_a_field_error_on_the_form(
    owner_client, tenants, s3_model, bundle, pool
):
    data = {**GOOD, "project": str(tenants.project.pk), "model": str(s3_model.pk),
            "pool": str(pool.pk), "bundle": str(bundle.pk)}  # fmt: skip
    html = owner_client.post(reverse("deployments:create"), data).content.decode()
    assert "needs the project&#x27;s S3 credentials" in html or "needs the project's S3 credentials" in html
    assert not ModelDeployment.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("engine, image", [
    ("tgi", "ghcr.io/huggingface/text-generation-inference:3.0.1"),
    ("tei", "ghcr.io/huggingface/text-embeddings-inference:1.5"),
])  # fmt: skip
def test_engines_without_an_object_store_loader_refuse_s3_models(tenants, s3_model, pool, engine, image):
    integration_set(user=tenants.owner, project=tenants.project, kind=IntegrationKind.S3,
                    secret=json.dumps(S3_CREDENTIALS))  # fmt: skip
    bundle = ProfileBundle.objects.create(
        organization=tenants.org, name=f"{engine}-b", engine=engine, image=image,
        labels={ProfileBundle.ENGINE_LABEL: "vllm"},  # the pool's label, so only the engine differs
    )  # fmt: skip
    response = rest_api_client(tenants.owner).post(
        "/api/v1/deployments/", _body(tenants, s3_model, bundle, pool), format="json"
    )
    assert response.status_code == 400
    assert "pvc://" in " ".join(response.json()["model"])


@pytest.mark.django_db
def test_s3_integration_is_checked_field_by_field(tenants):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as err:
        integration_set(user=tenants.owner, project=tenants.project, kind=IntegrationKind.S3,
                        secret=json.dumps({**S3_CREDENTIALS, "endpoint_url": "file:///etc/passwd"}))  # fmt: skip
    assert "endpoint_url" in err.value.message_dict
    with pytest.raises(ValidationError) as err:
        integration_set(user=tenants.owner, project=tenants.project, kind=IntegrationKind.S3,
                        secret=json.dumps({"access_key_id": "AKIA"}))  # fmt: skip
    assert "secret_access_key" in err.value.message_dict
    saved = integration_set(user=tenants.owner, project=tenants.project, kind=IntegrationKind.S3,
                            secret=json.dumps(S3_CREDENTIALS))  # fmt: skip
    assert saved.secret_last4 == "1234"  # of the key id: the secret is never shown
    assert saved.s3_settings() == S3_CREDENTIALS


@pytest.mark.django_db
def test_s3_credentials_from_the_integrations_page(owner_client, tenants):
    url = reverse("projects:integrations", args=[tenants.project.pk])
    owner_client.post(url, {"kind": "s3", **{**S3_CREDENTIALS, "region": ""}})
    integration = tenants.project.integrations.get(kind=IntegrationKind.S3)
    assert integration.s3_settings() == {k: v for k, v in S3_CREDENTIALS.items() if k != "region"}
    bad = owner_client.post(url, {"kind": "s3", "access_key_id": "AKIA", "secret_access_key": ""})
    assert "Give a secret access key" in bad.content.decode()


@pytest.mark.django_db(transaction=True)
def test_s3_model_runs_with_a_secret_modeldeck_owns(tenants, s3_model, pool, emulator):
    integration_set(user=tenants.owner, project=tenants.project, kind=IntegrationKind.S3,
                    secret=json.dumps(S3_CREDENTIALS))  # fmt: skip
    bundle = ProfileBundle.objects.create(
        organization=tenants.org, name="vllm-cpu", engine="vllm", image=CPU_VLLM,
        labels={ProfileBundle.ENGINE_LABEL: "vllm"},
    )  # fmt: skip
    response = rest_api_client(tenants.owner).post(
        "/api/v1/deployments/", _body(tenants, s3_model, bundle, pool), format="json"
    )
    assert response.status_code == 201, response.json()
    deployment = ModelDeployment.objects.get(name="s3-chat")
    wait_for(lambda: state_of(deployment) == "running")
    ns = tenants.project.namespace()
    secret = emulator.get_object("Secret", ns, "modeldeck-s3")
    assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "modeldeck"
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data == {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE1234", "AWS_SECRET_ACCESS_KEY": "s3cr3t/key+value",
                    "AWS_ENDPOINT_URL": "https://minio.example.com", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    pod = emulator.get_object("Deployment", ns, "s3-chat-r1")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"][:1] == ["s3://models-bucket/llama/8b"]
    assert "runai_streamer" in container["args"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert refs["AWS_SECRET_ACCESS_KEY"] == {"name": "modeldeck-s3", "key": "AWS_SECRET_ACCESS_KEY"}


@pytest.mark.django_db
def test_checking_s3_credentials_calls_nothing_from_the_server(owner_client, tenants):
    integration_set(user=tenants.owner, project=tenants.project, kind=IntegrationKind.S3,
                    secret=json.dumps({**S3_CREDENTIALS, "endpoint_url": "http://127.0.0.1:9"}))  # fmt: skip
    owner_client.post(reverse("projects:integration_check", args=[tenants.project.pk, "s3"]))
    integration = tenants.project.integrations.get(kind=IntegrationKind.S3)
    assert integration.check_ok is True
    assert "does not call the store itself" in integration.check_message
