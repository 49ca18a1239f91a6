"""REST API of pools, endpoints and deployments: the same services, scoping and errors in the body."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from deployments.models import ComputePool, DeploymentState, Endpoint, ModelDeployment
from tests.factories import rest_api_client

pytestmark = pytest.mark.django_db


def api(user) -> APIClient:
    return rest_api_client(user)


@pytest.fixture
def body(tenants, model, bundle, pool):
    return {
        "project": tenants.project.pk, "model": model.pk, "pool": pool.pk, "bundle": bundle.pk, "name": "chat",
        "spec": {"resources": {"cpu": "2", "memory": "8Gi", "gpus": 1}, "served_model_name": "qwen-chat"},
    }  # fmt: skip


def test_create_a_deployment_and_read_it_back(tenants, body):
    client = api(tenants.owner)
    response = client.post("/api/v1/deployments/", body, format="json")
    assert response.status_code == 201, response.json()
    data = response.json()
    assert data["name"] == "chat" and data["state"] == "pending" and data["current_revision"] == 1
    assert (
        data["served_model_name"] == "qwen-chat"
        and data["gpus_held"] == 1
        and data["sandbox"] is True
    )
    assert data["spec"]["image"] == "vllm/vllm-openai:v0.6.3"  # filled from the bundle
    listed = client.get("/api/v1/deployments/").json()["results"]
    assert [d["name"] for d in listed] == ["chat"]


def test_bad_spec_is_a_400_naming_the_field(tenants, body):
    body["spec"]["resources"]["gpus"] = "lots"
    response = api(tenants.owner).post("/api/v1/deployments/", body, format="json")
    assert response.status_code == 400 and "resources.gpus" in response.json()
    assert not ModelDeployment.objects.exists()


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [("cpu", "1e308", "At most 10,000 CPU cores per replica."),
     ("memory", "99999999999999999999Gi", "At most 64Ti of memory per replica.")],
)  # fmt: skip
def test_cpu_or_memory_beyond_any_node_is_a_400_on_the_field(tenants, body, field, value, words):
    # QA: the quota reservation multiplied it into its 64-bit counters: a 500 ("Server error.").
    body["spec"]["resources"][field] = value
    response = api(tenants.owner).post("/api/v1/deployments/", body, format="json")
    assert response.status_code == 400
    assert response.json()[f"resources.{field}"] == [words]
    assert not ModelDeployment.objects.exists()


def test_over_quota_is_a_400_with_the_numbers(tenants, body):
    body["spec"]["replicas"] = {"min": 3, "max": 3}
    body["spec"]["resources"]["gpus"] = 4
    response = api(tenants.owner).post("/api/v1/deployments/", body, format="json")
    assert response.status_code == 400
    message = " ".join(response.json()["resources.gpus"])
    assert "quota of 8 GPUs" in message and "12 more do not fit" in message


def test_objects_of_other_organizations_cannot_be_referenced(tenants, body):
    other_pool = ComputePool.objects.create(
        organization=tenants.other_org, name="theirs", kind="sandbox", engine_label="vllm"
    )
    response = api(tenants.owner).post(
        "/api/v1/deployments/", {**body, "pool": other_pool.pk}, format="json"
    )
    assert response.status_code == 400 and "pool" in response.json()


def test_update_partial_scale_rollback_revisions_events_manifests(tenants, deploy):
    deployment = deploy("chat")
    client = api(tenants.owner)
    url = f"/api/v1/deployments/{deployment.pk}/"
    response = client.patch(
        url, {"spec": {"context_length": 4096}, "reason": "Shorter"}, format="json"
    )
    assert response.status_code == 200 and response.json()["spec"]["context_length"] == 4096
    assert (
        response.json()["spec"]["resources"]["memory"] == "8Gi"
    )  # untouched keys keep their values
    replaced = client.put(
        url, {"spec": {"served_model_name": "chat", "resources": {"gpus": 1}}}, format="json"
    ).json()
    assert (
        replaced["spec"]["resources"]["memory"] == "16Gi"
        and replaced["spec"]["context_length"] is None
    )  # back to defaults
    scaled = client.post(url + "scale/", {"min": 1, "max": 2}, format="json").json()
    assert scaled["spec"]["replicas"] == {"min": 1, "max": 2} and scaled["gpus_held"] == 2
    assert client.post(url + "scale/", {"min": 3, "max": 2}, format="json").status_code == 400
    rolled = client.post(url + "rollback/", {"revision": 1}, format="json")
    assert rolled.status_code == 200 and rolled.json()["current_revision"] == 5
    missing = client.post(url + "rollback/", {"revision": 99}, format="json")
    assert missing.status_code == 400 and "revision" in missing.json()
    revisions = client.get(url + "revisions/").json()["results"]
    assert [r["number"] for r in revisions] == [5, 4, 3, 2, 1] and revisions[-1][
        "created_by"
    ] == "owner"
    events = client.get(url + "events/").json()["results"]
    assert any(e["reason"] == "Created" for e in events)
    manifests = client.get(url + "manifests/?revision=2").json()
    assert (
        manifests["revision"] == 2
        and "kind: Deployment" in manifests["yaml"]
        and "chat-r2" in manifests["yaml"]
    )
    assert client.get(url + "manifests/?revision=x").status_code == 400


def test_deactivate_activate_delete(tenants, deploy):
    deployment = deploy("chat")
    client = api(tenants.owner)
    url = f"/api/v1/deployments/{deployment.pk}/"
    assert client.post(url + "deactivate/").json()["state"] == "deactivated"
    assert tenants.project.gpu_used() == 0
    activated = client.post(url + "activate/")
    assert activated.json()["state"] == "pending" and tenants.project.gpu_used() == 1
    again = client.post(url + "activate/")
    assert again.status_code == 400 and "Only a deactivated deployment" in str(again.json())
    assert client.delete(url).status_code == 202
    assert ModelDeployment.objects.get(pk=deployment.pk).state == DeploymentState.DELETING


def test_pools_api_never_returns_the_kubeconfig(tenants, cluster, pool, operator):
    client = api(operator)
    ComputePool.objects.filter(pk=pool.pk).update(kubeconfig="secret-kubeconfig-text")
    data = client.get(f"/api/v1/pools/{pool.pk}/").json()
    assert (
        "secret-kubeconfig-text" not in str(data)
        and data["kubeconfig_set"] is True
        and data["sandbox"] is True
    )
    checked = client.post(f"/api/v1/pools/{pool.pk}/test/").json()
    assert (
        checked["ok"] is True
        and checked["version"].startswith("v1.")
        and checked["nodes"][0]["gpus"] >= 1
    )
    bad = client.post(
        "/api/v1/pools/",
        {"name": "x", "kind": "kubeconfig", "engine_label": "vllm", "kubeconfig": "nope"},
        format="json",
    )
    assert bad.status_code == 400 and "kubeconfig" in bad.json()


def test_endpoints_api(tenants):
    client = api(tenants.owner)
    response = client.post(
        "/api/v1/endpoints/",
        {"project": tenants.project.pk, "name": "chat", "path": "/chat"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    duplicate = client.post(
        "/api/v1/endpoints/",
        {"project": tenants.project.pk, "name": "chat2", "path": "/chat"},
        format="json",
    )
    assert duplicate.status_code == 400 and "path" in duplicate.json()
    other = client.post(
        "/api/v1/endpoints/",
        {"project": tenants.other_project.pk, "name": "x", "path": "/x"},
        format="json",
    )
    assert other.status_code == 400 and "project" in other.json()
    assert client.delete(f"/api/v1/endpoints/{response.json()['id']}/").status_code == 204


def _object_calls(deployment, pool, endpoint):
    d = f"/api/v1/deployments/{deployment.pk}/"
    return [
        ("get", d), ("patch", d), ("put", d), ("delete", d),
        ("post", d + "deactivate/"), ("post", d + "activate/"), ("post", d + "rollback/"), ("post", d + "scale/"),
        ("post", d + "nim-tag/"), ("get", d + "revisions/"), ("get", d + "events/"), ("get", d + "manifests/"),
        ("get", f"/api/v1/pools/{pool.pk}/"), ("patch", f"/api/v1/pools/{pool.pk}/"), ("delete", f"/api/v1/pools/{pool.pk}/"),
        ("post", f"/api/v1/pools/{pool.pk}/test/"),
        ("get", f"/api/v1/endpoints/{endpoint.pk}/"), ("delete", f"/api/v1/endpoints/{endpoint.pk}/"),
    ]  # fmt: skip


WRITE_BODY = {
    "spec": {"replicas": {"min": 1, "max": 2}},
    "min": 1,
    "max": 2,
    "revision": 1,
    "tag": "1.0",
    "name": "x",
}


def test_outsider_gets_404_on_every_object(tenants, deploy, pool):
    deployment = deploy("chat")
    endpoint = Endpoint.objects.create(project=tenants.project, name="e", path="/e")
    client = api(tenants.outsider)
    for method, url in _object_calls(deployment, pool, endpoint):
        response = getattr(client, method)(url, WRITE_BODY, format="json")
        assert response.status_code == 404, (method, url, response.status_code)
    for url in ["/api/v1/deployments/", "/api/v1/pools/", "/api/v1/endpoints/"]:
        assert client.get(url).json()["results"] == []
    deployment.refresh_from_db()
    assert (
        deployment.state == DeploymentState.PENDING
        and ComputePool.objects.filter(pk=pool.pk).exists()
    )


def test_viewer_reads_but_gets_403_on_writes(tenants, deploy, pool, body):
    deployment = deploy("first")
    endpoint = Endpoint.objects.create(project=tenants.project, name="e", path="/e")
    client = api(tenants.viewer)
    for method, url in _object_calls(deployment, pool, endpoint):
        response = getattr(client, method)(url, WRITE_BODY, format="json")
        expected = 200 if method == "get" else 403
        assert response.status_code == expected, (
            method,
            url,
            response.status_code,
            response.content[:200],
        )
    assert (
        client.post(
            "/api/v1/deployments/", {**body, "name": "viewer-made"}, format="json"
        ).status_code
        == 403
    )
    assert (
        client.post(
            "/api/v1/endpoints/",
            {"project": tenants.project.pk, "name": "v", "path": "/v"},
            format="json",
        ).status_code
        == 403
    )
    assert (
        client.post(
            "/api/v1/pools/",
            {"name": "v", "kind": "sandbox", "engine_label": "vllm"},
            format="json",
        ).status_code
        == 403
    )
    deployment.refresh_from_db()
    assert deployment.current_revision.number == 1 and deployment.state == DeploymentState.PENDING
    assert not ModelDeployment.objects.filter(name="viewer-made").exists()


def test_the_model_cannot_change_in_place(tenants, deploy):
    from catalog.models import CatalogModel

    deployment = deploy("chat")
    other = CatalogModel.objects.create(
        organization=tenants.org, name="Other", source="huggingface", repo_id="o/m"
    )
    response = api(tenants.owner).patch(
        f"/api/v1/deployments/{deployment.pk}/", {"model": other.pk}, format="json"
    )
    assert response.status_code == 400 and "create a new deployment" in " ".join(
        response.json()["model"]
    )
    deployment.refresh_from_db()
    assert deployment.model_id != other.pk and deployment.current_revision.number == 1


def test_listing_by_an_unknown_state_says_which_states_there_are(tenants, deploy):
    """QA: ?state=zzz answered an empty list, as if nothing were in that state."""
    deploy("chat")
    client = api(tenants.owner)
    assert [d["name"] for d in client.get("/api/v1/deployments/?state=pending").json()["results"]] == ["chat"]
    response = client.get("/api/v1/deployments/?state=Runing")
    assert response.status_code == 400
    assert "Unknown state “Runing”; one of: pending, deploying, running, failed" in str(response.json())


def test_a_pool_in_use_says_how_many_deployments_in_words(tenants, deploy, pool, operator):
    """QA: "1 deployment(s) still use compute pool …"."""
    from django.core.exceptions import ValidationError

    from deployments.services import pool_delete

    deploy("chat")
    with pytest.raises(ValidationError) as info:
        pool_delete(user=operator, pool=pool)
    assert info.value.messages == [f"1 deployment still uses compute pool “{pool.name}”; delete it first."]
