"""Storage URIs: what the catalog accepts is what a deployment serves (one rule: form, REST, apply -f)."""
# ruff: noqa: F811 - pytest fixtures are imported by name and then requested as arguments

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from catalog import services
from catalog.models import CatalogModel
from tests.catalog.catalog_fixtures import QWEN_05B, api, builtin_bundles, hub_env  # noqa: F401
from tests.conftest import login


def test_gs_uri_is_refused_on_rest_with_the_way_to_serve_it(tenants):
    response = api(tenants.owner).post(
        "/api/v1/models/",
        {"source": "custom", "name": "g", "storage_uri": "gs://my-bucket/llama/8b"},
        format="json",
    )
    assert response.status_code == 400
    message = " ".join(response.json()["storage_uri"])
    assert "gs:// cannot be served" in message
    assert "s3://my-bucket/llama/8b" in message and "https://storage.googleapis.com" in message
    assert not CatalogModel.objects.exists()


def test_gs_uri_is_refused_by_the_service_apply_uses(tenants):
    # `apply -f` adds custom models through model_add_custom, like the form and REST.
    with pytest.raises(ValidationError) as caught:
        services.model_add_custom(user=tenants.owner, organization=tenants.org, name="g",
                                  storage_uri="gs://b/m")  # fmt: skip
    assert "gs:// cannot be served" in caught.value.message_dict["storage_uri"][0]


def test_hf_uri_becomes_a_hub_model_pinned_to_a_commit(tenants, hub_env):
    response = api(tenants.owner).post(
        "/api/v1/models/",
        {"source": "custom", "name": "qwen-small", "storage_uri": f"hf://{QWEN_05B}@main"},
        format="json",
    )
    assert response.status_code == 201, response.content
    model = CatalogModel.objects.get(name="qwen-small")
    assert model.source == "huggingface" and model.repo_id == QWEN_05B
    assert len(model.revision) == 40 and model.storage_uri == ""
    assert model.revision == hub_env.repos[QWEN_05B].record["sha"]


def test_hf_uri_from_the_form_becomes_a_hub_model(tenants, hub_env):
    login(tenants.owner).post(
        reverse("catalog:custom_create"), {"name": "q", "storage_uri": f"hf://{QWEN_05B}"}
    )
    model = CatalogModel.objects.get(name="q")
    assert (model.source, model.repo_id) == ("huggingface", QWEN_05B)


def test_hf_uri_of_a_repo_the_hub_lacks_is_an_error_on_the_uri(tenants, hub_env):
    response = api(tenants.owner).post(
        "/api/v1/models/",
        {"source": "custom", "name": "x", "storage_uri": "hf://nobody/no-such-model"},
        format="json",
    )
    assert response.status_code == 400 and "storage_uri" in response.json()
    assert not CatalogModel.objects.exists()


def test_s3_and_pvc_stay_custom_models(tenants):
    for name, uri in (("s", "s3://models-bucket/llama/8b"), ("p", "pvc://cache/llama")):
        model = services.model_add_custom(user=tenants.owner, organization=tenants.org, name=name,
                                          storage_uri=uri)  # fmt: skip
        assert (model.source, model.storage_uri) == ("custom", uri)


def _apply(tenants, text: str) -> tuple[int, str]:
    from deployments.apply import Context, apply_documents, load_documents

    out: list[str] = []
    errors = apply_documents(Context(user=tenants.owner, organization=tenants.org), load_documents(text),
                             dry_run=False, write=out.append)  # fmt: skip
    return errors, "\n".join(out)


HF_MODEL = f"""
apiVersion: modeldeck.io/v1
kind: Model
metadata: {{name: qwen-hf}}
spec: {{source: custom, storage_uri: "hf://{QWEN_05B}"}}
"""


def test_apply_adds_an_hf_uri_as_a_hub_model_and_stays_idempotent(tenants, hub_env):
    errors, out = _apply(tenants, HF_MODEL)
    assert errors == 0, out
    assert CatalogModel.objects.get(name="qwen-hf").source == "huggingface"
    errors, out = _apply(tenants, HF_MODEL)  # the same file again changes nothing
    assert errors == 0 and "unchanged" in out, out


def test_apply_refuses_a_gs_uri_with_the_catalogs_words(tenants):
    errors, out = _apply(tenants, HF_MODEL.replace(f"hf://{QWEN_05B}", "gs://bucket/model"))
    assert errors == 1 and "gs:// cannot be served" in out
    assert not CatalogModel.objects.exists()
