"""External deployments in the REST API: create, read (the key never comes back), update,
scoping (404 across organizations), field errors for refused URLs, and delete (nothing on a pool)."""

from __future__ import annotations

import logging

import pytest

from deployments.models import ModelDeployment
from tests.factories import rest_api_client

pytestmark = pytest.mark.django_db



@pytest.fixture
def body(tenants, model, deploy):
    managed = deploy("burst")
    return {
        "kind": "external", "project": tenants.project.pk, "model": model.pk, "name": "onprem",
        "external_url": "https://llm.example.com/v1", "api_key": "sk-onprem-abcdef1234",
        "overflow": str(managed.pk), "served_model_name": "llama-onprem", "options": {"timeout_s": 10},
    }  # fmt: skip


def test_create_read_update_an_external_deployment(tenants, body, public_example_com):
    client = rest_api_client(tenants.owner)
    response = client.post("/api/v1/deployments/", body, format="json")
    assert response.status_code == 201, response.json()
    data = response.json()
    assert (data["kind"], data["state"], data["pool"], data["bundle"]) == ("external", "running", None, None)
    assert data["external_key_last4"] == "1234" and "api_key" not in data
    assert data["spec"]["external"]["timeout_s"] == 10 and data["spec"]["external"]["overflow"] == "burst"
    row = ModelDeployment.objects.get(pk=data["id"])
    assert row.external_credential == "sk-onprem-abcdef1234"
    stored = ModelDeployment.objects.filter(pk=row.pk).values_list("external_credential", flat=True)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT external_credential FROM deployments_modeldeployment WHERE id=%s", [row.pk])
        assert "sk-onprem" not in cursor.fetchone()[0]  # encrypted at rest
    assert stored  # (the ORM decrypts)

    patched = client.patch(f"/api/v1/deployments/{row.pk}/", {"options": {"max_concurrency": 4}}, format="json")
    assert patched.status_code == 200, patched.json()
    assert patched.json()["spec"]["external"]["max_concurrency"] == 4
    assert patched.json()["current_revision"] == 2 and patched.json()["external_key_last4"] == "1234"

    bad = client.patch(f"/api/v1/deployments/{row.pk}/", {"external_url": "http://169.254.169.254/"}, format="json")
    assert bad.status_code == 400 and "external_url" in bad.json()

    assert rest_api_client(tenants.outsider).get(f"/api/v1/deployments/{row.pk}/").status_code == 404
    assert rest_api_client(tenants.outsider).patch(
        f"/api/v1/deployments/{row.pk}/", {"external_url": "https://x.example.com"}, format="json"
    ).status_code == 404


def test_refused_url_and_foreign_overflow_are_field_errors(tenants, body):
    body["external_url"] = "file:///etc/passwd"
    body["overflow"] = "no-such-deployment"
    response = rest_api_client(tenants.owner).post("/api/v1/deployments/", body, format="json")
    assert response.status_code == 400
    assert {"external_url", "overflow"} <= set(response.json())
    assert not ModelDeployment.objects.filter(kind="external").exists()


def test_a_viewer_may_not_create_one(tenants, body):
    response = rest_api_client(tenants.viewer).post("/api/v1/deployments/", body, format="json")
    assert response.status_code in (403, 404)


def test_delete_removes_the_row_with_nothing_pushed(tenants, body, public_example_com, django_capture_on_commit_callbacks):
    client = rest_api_client(tenants.owner)
    pk = client.post("/api/v1/deployments/", body, format="json").json()["id"]
    with django_capture_on_commit_callbacks(execute=True):
        assert client.delete(f"/api/v1/deployments/{pk}/").status_code == 202
    assert not ModelDeployment.objects.filter(pk=pk).exists()


MANIFEST = """
apiVersion: modeldeck.io/v1
kind: ModelDeployment
metadata: {{name: onprem, project: {project}}}
spec:
  kind: external
  model: {model}
  url: https://llm.example.com/v1
  api_key: sk-from-file-9876
  overflow: burst
  served_model_name: llama-onprem
  options: {{max_concurrency: {concurrency}}}
"""


def test_apply_creates_then_configures_then_leaves_unchanged(tenants, model, deploy, public_example_com):
    from deployments.apply import Context, apply_documents, load_documents

    deploy("burst")
    ctx = Context(user=tenants.owner, organization=tenants.org)
    out: list[str] = []

    def apply(concurrency: int) -> int:
        text = MANIFEST.format(project=tenants.project.slug, model=model.name, concurrency=concurrency)
        return apply_documents(ctx, load_documents(text), dry_run=False, write=out.append)

    assert apply(8) == 0, out
    row = ModelDeployment.objects.get(name="onprem")
    assert row.is_external and row.overflow.name == "burst" and row.external_credential == "sk-from-file-9876"
    assert "sk-from-file" not in "\n".join(out)  # the key is never echoed
    assert apply(8) == 0 and "unchanged" in out[-1]
    assert apply(16) == 0 and "configured" in out[-1] and "max_concurrency" in out[-1]
    row.refresh_from_db()
    assert row.spec()["external"]["max_concurrency"] == 16

    bad = MANIFEST.format(project=tenants.project.slug, model=model.name, concurrency=1).replace(
        "https://llm.example.com/v1", "http://127.0.0.1:6379"
    ).replace("name: onprem", "name: local")
    assert apply_documents(ctx, load_documents(bad), dry_run=False, write=out.append) == 1
    assert "loopback" in out[-1] and not ModelDeployment.objects.filter(name="local").exists()


def test_routes_of_managed_deployments_answer_in_words_for_an_external_one(tenants, body, public_example_com, caplog):
    from tests.conftest import login

    client = rest_api_client(tenants.owner)
    pk = client.post("/api/v1/deployments/", body, format="json").json()["id"]
    manifests = client.get(f"/api/v1/deployments/{pk}/manifests/")
    assert manifests.status_code == 400 and "no Kubernetes objects" in str(manifests.json())
    # No pods here, for good: a conflict (409), not an outage (503) that Django logs as an error.
    with caplog.at_level(logging.WARNING, logger="django.request"):
        replicas = client.get(f"/api/v1/deployments/{pk}/replicas/")
        logs = client.get(f"/api/v1/deployments/{pk}/logs/")
    assert replicas.status_code == 409 and "external deployment runs no pods" in replicas.json()["detail"]
    assert logs.status_code == 409 and "external deployment runs no pods" in logs.json()["detail"]
    assert logs.json()["lines"] == [] and logs.json()["pods"] == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    scale = client.post(f"/api/v1/deployments/{pk}/scale/", {"min": 1, "max": 2}, format="json")
    assert scale.status_code == 400 and "external deployment" in str(scale.json())
    put = client.put(f"/api/v1/deployments/{pk}/", {"spec": {}}, format="json")
    assert put.status_code == 400
    listing = login(tenants.owner).get("/deployments/").content.decode()
    assert "onprem" in listing and '<span class="badge">External</span>' in listing
