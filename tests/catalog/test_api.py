"""Catalog REST API: Hub search/detail/add through the real client, NGC, models, bundles, mappings, resolve."""
# ruff: noqa: F811 - pytest fixtures are imported by name and then requested as arguments

from __future__ import annotations

import pytest

from catalog.models import CatalogModel, MaaSMapping, ProfileBundle
from tests.catalog.catalog_fixtures import (  # noqa: F401 - fixtures
    LLAMA_8B,
    QWEN_05B,
    alice_project,
    api,
    bob_project,
    builtin_bundles,
    hub_env,
    ngc_env,
    ngc_project,
)

pytestmark = pytest.mark.django_db


def test_hub_search_with_filters(tenants, hub_env):
    body = (
        api(tenants.owner)
        .get(
            "/api/v1/models/hub-search/",
            {"q": "qwen", "author": "Qwen", "sort": "likes", "limit": 2},
        )
        .json()
    )
    ids = [m["repo_id"] for m in body["results"]]
    assert len(ids) == 2 and all(i.startswith("Qwen/") for i in ids) and body["has_next"] is True
    body = (
        api(tenants.owner).get("/api/v1/models/hub-search/", {"task": "sentence-similarity"}).json()
    )
    assert [m["repo_id"] for m in body["results"]] == ["sentence-transformers/all-MiniLM-L6-v2"]


def test_hub_detail(tenants, hub_env, hub_snapshot):
    body = api(tenants.owner).get("/api/v1/models/hub-detail/", {"repo_id": QWEN_05B}).json()
    assert body["sha"] == hub_snapshot[QWEN_05B]["sha"] and body["parameters"] == 494032768
    assert body["license"] == "apache-2.0" and body["config"]["num_hidden_layers"] == 24
    assert any(f["path"] == "model.safetensors" for f in body["files"])


def test_hub_add_pins_the_sha(tenants, hub_env, hub_snapshot):
    response = api(tenants.owner).post(
        "/api/v1/models/hub-add/", {"repo_id": QWEN_05B, "name": "qwen"}, format="json"
    )
    assert response.status_code == 201, response.json()
    assert response.json()["revision"] == hub_snapshot[QWEN_05B]["sha"]
    assert CatalogModel.objects.get(name="qwen").source == "huggingface"


@pytest.mark.parametrize(
    "mode, status, text",
    [("error", 502, "is failing (HTTP 500)"), ("stall", 504, "did not answer within 1 s")],
)
def test_hub_failures_are_gateway_errors_with_the_message_and_nothing_saved(
    tenants, hub_env, settings, mode, status, text
):
    settings.HUB_TIMEOUT_SECONDS = 1
    hub_env.stall_seconds = 3
    hub_env.mode = mode
    client = api(tenants.owner)
    search = client.get("/api/v1/models/hub-search/", {"q": "qwen"})
    assert search.status_code == status and text in search.json()["detail"]
    add = client.post("/api/v1/models/hub-add/", {"repo_id": QWEN_05B}, format="json")
    assert add.status_code == status and text in add.json()["detail"]
    assert not CatalogModel.objects.exists()


def test_gated_missing_and_bad_token_are_clear_400s(tenants, hub_env, bob_project):
    client = api(tenants.owner)
    gated = client.post(
        "/api/v1/models/hub-add/", {"repo_id": LLAMA_8B, "project": bob_project.pk}, format="json"
    )
    assert gated.status_code == 400 and "is gated" in gated.json()["repo_id"][0]
    missing = client.post("/api/v1/models/hub-add/", {"repo_id": "nobody/nothing"}, format="json")
    assert missing.status_code == 400 and "was not found on the Hub" in missing.json()["repo_id"][0]
    detail = client.get("/api/v1/models/hub-detail/", {"repo_id": "nobody/nothing"})
    assert detail.status_code == 404 and detail.json()["code"] == "not_found"
    from projects.services import integration_set

    integration_set(user=None, project=bob_project, kind="huggingface", secret="hf_bad")
    bad = client.get("/api/v1/models/hub-search/", {"q": "x", "project": bob_project.pk})
    assert bad.status_code == 400 and "rejected the token (401)" in bad.json()["detail"]
    assert not CatalogModel.objects.exists()


def test_custom_model_crud_and_bad_uri(tenants):
    client = api(tenants.owner)
    bad = client.post(
        "/api/v1/models/",
        {"source": "custom", "name": "c", "storage_uri": "s3:/oops"},
        format="json",
    )
    assert bad.status_code == 400 and "storage_uri" in bad.json()
    created = client.post(
        "/api/v1/models/",
        {
            "source": "custom",
            "name": "c",
            "storage_uri": "pvc://cache/llama",
            "parameters": 7_000_000_000,
        },
        format="json",
    )
    assert created.status_code == 201
    pk = created.json()["id"]
    assert (
        client.patch(f"/api/v1/models/{pk}/", {"name": "renamed"}, format="json").json()["name"]
        == "renamed"
    )
    assert [m["name"] for m in client.get("/api/v1/models/").json()["results"]] == ["renamed"]
    assert client.delete(f"/api/v1/models/{pk}/").status_code == 204
    assert not CatalogModel.objects.exists()


def test_estimate_endpoint(tenants):
    from catalog.demo import model_fields_from_snapshot
    from sandbox.offline_hub import HUB_SNAPSHOT


    model = CatalogModel.objects.create(
        organization=tenants.org,
        name="llama",
        source="huggingface",
        **model_fields_from_snapshot(LLAMA_8B, HUB_SNAPSHOT),
    )
    body = (
        api(tenants.owner)
        .get(
            f"/api/v1/models/{model.pk}/estimate/",
            {"context_length": 8192, "concurrency": 2, "gpu_type": "H100-80GB"},
        )
        .json()
    )
    assert (
        round(body["estimate"]["weights_gb"], 1) == 16.1
        and body["estimate"]["kv_kib_per_token"] == 128
    )
    assert body["estimate"]["gpus"] == 1
    bad = api(tenants.owner).get(f"/api/v1/models/{model.pk}/estimate/", {"gpu_type": "TPU"})
    assert bad.status_code == 400 and "Unknown GPU type" in bad.json()["gpu_type"][0]


def test_ngc_images_tags_and_add(tenants, ngc_env, ngc_project, ngc_snapshot):
    client = api(tenants.owner)
    images = client.get("/api/v1/ngc/images/", {"q": "llama"}).json()
    assert "nvcr.io/nim/meta/llama-3.1-8b-instruct" in [i["image"] for i in images["items"]]
    tags = client.get(
        "/api/v1/ngc/tags/", {"image": "nim/meta/llama-3.1-8b-instruct", "project": ngc_project.pk}
    ).json()
    assert tags["tags"][0] == "1.3.3" and "1.2.2" in tags["tags"]
    added = client.post(
        "/api/v1/models/",
        {
            "source": "ngc",
            "image": "nim/meta/llama-3.1-8b-instruct",
            "tag": "1.2.2",
            "project": ngc_project.pk,
        },
        format="json",
    )
    assert added.status_code == 201, added.json()
    model = CatalogModel.objects.get(pk=added.json()["id"])
    assert model.ngc_image == "nvcr.io/nim/meta/llama-3.1-8b-instruct" and model.ngc_tag == "1.2.2"
    assert model.ngc_tags == list(tags["tags"]) and model.task == "text-generation"
    wrong = client.post(
        "/api/v1/models/",
        {
            "source": "ngc",
            "image": "nim/meta/llama-3.1-8b-instruct",
            "tag": "9.9",
            "name": "x",
            "project": ngc_project.pk,
        },
        format="json",
    )
    assert wrong.status_code == 400 and "has no tag “9.9”" in wrong.json()["tag"][0]


def test_ngc_without_key_or_with_unentitled_key(tenants, ngc_env):
    from projects.services import integration_set
    from tests.catalog.conftest import NGC_UNENTITLED_KEY

    client = api(tenants.owner)
    no_key = client.post(
        "/api/v1/models/",
        {"source": "ngc", "image": "nim/meta/llama-3.1-8b-instruct", "project": tenants.project.pk},
        format="json",
    )
    assert no_key.status_code == 400 and "has no NGC API key" in no_key.json()["project"][0]
    # QA: without a project it read "No project was chosen and so no project has no NGC API key".
    no_project = client.post("/api/v1/models/", {"source": "ngc", "image": "nim/meta/llama-3.1-8b-instruct"}, format="json")
    assert no_project.status_code == 400
    assert no_project.json()["project"] == [
        "Choose a project: its NGC API key reads the image from NGC (set one on the project's Integrations page)."
    ]
    integration_set(user=None, project=tenants.project, kind="ngc", secret=NGC_UNENTITLED_KEY)
    denied = client.get(
        "/api/v1/ngc/tags/",
        {"image": "nim/meta/llama-3.1-8b-instruct", "project": tenants.project.pk},
    )
    assert denied.status_code == 403 and "entitlement" in denied.json()["detail"]


def test_bundles_create_version_and_list(tenants):
    client = api(tenants.owner)
    created = client.post(
        "/api/v1/bundles/",
        {
            "name": "tei-gpu",
            "engine": "tei",
            "image": "ghcr.io/huggingface/text-embeddings-inference:1.5",
            "variables": [{"name": "max_batch_tokens", "type": "integer", "default": 8192}],
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    pk = created.json()["id"]
    v2 = client.patch(
        f"/api/v1/bundles/{pk}/",
        {"image": "ghcr.io/huggingface/text-embeddings-inference:1.6"},
        format="json",
    )
    assert v2.status_code == 201 and v2.json()["version"] == 2 and v2.json()["id"] != pk
    versions = client.get(f"/api/v1/bundles/{pk}/versions/").json()
    assert versions["count"] == 2 and [v["version"] for v in versions["results"]] == [2, 1]
    names = [(b["name"], b["version"]) for b in client.get("/api/v1/bundles/").json()["results"]]
    assert ("tei-gpu", 2) in names and ("tei-gpu", 1) not in names and ("vllm", 1) in names
    bad = client.post(
        "/api/v1/bundles/", {"name": "x", "engine": "vllm", "image": "no-tag"}, format="json"
    )
    assert bad.status_code == 400 and "image" in bad.json()
    builtin = ProfileBundle.objects.get(organization__isnull=True, name="vllm")
    refused = client.patch(f"/api/v1/bundles/{builtin.pk}/", {"image": "x:1"}, format="json")
    # The console's edit page words it the same.
    assert refused.status_code == 403 and refused.json() == {
        "detail": "Built-in bundles can't be edited; duplicate it to change it: the copy is your "
        "organization's own bundle."
    }
    # PATCH makes a new version; there is no PUT, and its 405 says to use PATCH.
    put = client.put(f"/api/v1/bundles/{pk}/", {"image": "x:1"}, format="json")
    assert put.status_code == 405 and put.json() == {
        "detail": "PUT (replace the whole object) is not offered here; send the fields to change with PATCH."
    }


def test_mappings_crud_reorder_and_resolve(tenants):
    client = api(tenants.owner)
    vllm = ProfileBundle.objects.get(organization__isnull=True, name="vllm")
    tei = ProfileBundle.objects.get(organization__isnull=True, name="tei")
    model = CatalogModel.objects.create(
        organization=tenants.org,
        name="bge",
        source="huggingface",
        repo_id="BAAI/bge-large-en-v1.5",
        task="feature-extraction",
        parameters=335141888,
    )
    a = client.post(
        "/api/v1/mappings/",
        {"project": tenants.project.pk, "source": "huggingface", "bundle": vllm.pk},
        format="json",
    ).json()
    b = client.post(
        "/api/v1/mappings/",
        {
            "project": tenants.project.pk,
            "source": "huggingface",
            "task": "feature-extraction",
            "bundle": tei.pk,
        },
        format="json",
    ).json()
    assert (a["position"], b["position"]) == (1, 2)
    resolved = client.get(
        "/api/v1/mappings/resolve/", {"project": tenants.project.pk, "model": model.pk}
    ).json()
    assert resolved["bundle"]["name"] == "vllm" and resolved["position"] == 1
    order = client.post(
        "/api/v1/mappings/reorder/",
        {"project": tenants.project.pk, "order": [b["id"], a["id"]]},
        format="json",
    )
    assert [r["id"] for r in order.json()] == [b["id"], a["id"]]
    resolved = client.get(
        f"/api/v1/models/{model.pk}/bundle/", {"project": tenants.project.pk}
    ).json()
    assert resolved["bundle"]["name"] == "tei" and resolved["checks"][0]["matched"] is True
    bad_order = client.post(
        "/api/v1/mappings/reorder/",
        {"project": tenants.project.pk, "order": [a["id"]]},
        format="json",
    )
    assert bad_order.status_code == 400 and "order" in bad_order.json()
    inverted = client.patch(
        f"/api/v1/mappings/{a['id']}/", {"min_parameters": 10, "max_parameters": 1}, format="json"
    )
    assert inverted.status_code == 400 and "max_parameters" in inverted.json()
    huge = client.patch(f"/api/v1/mappings/{a['id']}/", {"min_parameters": 10**20}, format="json")
    assert huge.status_code == 400 and huge.json()["min_parameters"] == ["At most 1,000,000 billion parameters."]
    assert client.delete(f"/api/v1/mappings/{a['id']}/").status_code == 204
    assert list(MaaSMapping.objects.values_list("position", flat=True)) == [1]
    no_match = client.get(
        "/api/v1/mappings/resolve/",
        {
            "project": tenants.project.pk,
            "model": CatalogModel.objects.create(
                organization=tenants.org, name="n", source="ngc", ngc_image="nvcr.io/nim/x/y"
            ).pk,
        },
    ).json()
    assert (
        no_match["bundle"] is None and "None of the 1 MaaS mapping rule(s)" in no_match["message"]
    )


def test_malformed_ids_in_queries_are_400_or_ignored_never_500(tenants):
    client = api(tenants.owner)
    assert client.get("/api/v1/models/", {"organization": "abc"}).status_code == 200
    assert client.get("/api/v1/mappings/", {"project": "abc"}).status_code == 200
    bad = client.post(
        "/api/v1/models/",
        {"source": "custom", "name": "c", "storage_uri": "s3://a/b", "organization": "abc"},
        format="json",
    )
    assert bad.status_code == 400 and "organization" in bad.json()
    assert (
        client.get("/api/v1/mappings/resolve/", {"project": "x", "model": "y"}).status_code == 400
    )
    assert client.get("/api/v1/models/1/estimate/", {"concurrency": "0"}).status_code in (400, 404)
