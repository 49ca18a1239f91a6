"""The suggested runtime of each model, with its reason: one rule (catalog.maas.suggest_runtime)
shown in the catalog list, the model page, the REST API and the deploy form."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from catalog import services
from catalog.maas import suggest_runtime
from catalog.models import CatalogModel

pytestmark = pytest.mark.django_db


def _model(tenants, name: str, **fields) -> CatalogModel:
    return CatalogModel.objects.create(organization=tenants.org, name=name, **fields)


@pytest.mark.parametrize(
    ("fields", "engine", "words"),
    [
        ({"source": "huggingface", "task": "text-generation"}, "vllm", "text generation"),
        ({"source": "huggingface", "task": "feature-extraction"}, "tei", "embedding"),
        ({"source": "huggingface", "task": "sentence-similarity"}, "tei", "embedding"),
        ({"source": "huggingface", "task": "text-ranking"}, "tei", "rerankers"),
        ({"source": "ngc", "ngc_image": "nvcr.io/nim/meta/llama-3.1-8b-instruct", "task": "text-generation"}, "nim", "NIM"),
        ({"source": "custom", "storage_uri": "s3://bucket/resnet.mar", "task": "image-classification"}, "torchserve", ".mar"),
        ({"source": "huggingface", "task": "automatic-speech-recognition"}, "", "no built-in runtime serves automatic-speech-recognition"),
        ({"source": "custom", "storage_uri": "s3://bucket/weights.bin"}, "", "task is unknown"),
    ],
)
def test_each_kind_of_model_gets_its_runtime_and_reason(tenants, fields, engine, words):
    found = suggest_runtime(_model(tenants, "m", **fields))
    assert found.engine == engine
    assert words in found.reason


def test_an_uploaded_mar_archive_suggests_torchserve(tenants, settings, tmp_path):
    settings.MODELDECK_DATA_DIR = tmp_path
    model = services.model_add_custom(
        user=tenants.owner, organization=tenants.org, name="resnet",
        artifact=SimpleUploadedFile("resnet-18.mar", b"PK\x03\x04 not really a zip"),
    )  # fmt: skip
    assert suggest_runtime(model).engine == "torchserve"


def test_catalog_model_page_api_and_deploy_form_show_the_suggestion(tenants, owner_client, outsider_client):
    chat = _model(tenants, "chat", source="huggingface", repo_id="Qwen/Qwen2.5-0.5B-Instruct", task="text-generation")
    _model(tenants, "asr", source="huggingface", repo_id="openai/whisper-tiny", task="automatic-speech-recognition")

    listing = owner_client.get(reverse("catalog:index")).content.decode()
    assert "Suggested runtime" in listing and "vLLM" in listing and "none built in" in listing

    page = owner_client.get(chat.get_absolute_url()).content.decode()
    assert 'id="runtime-suggestion"' in page and "vLLM serves text generation" in page

    body = owner_client.get(f"/api/v1/models/{chat.pk}/").json()
    assert body["suggested_runtime"]["engine"] == "vllm" and "text generation" in body["suggested_runtime"]["reason"]
    assert outsider_client.get(f"/api/v1/models/{chat.pk}/").status_code == 404

    panel = owner_client.post(
        reverse("deployments:create") + f"?model={chat.pk}",
        {"project": tenants.project.pk, "_panel": "bundle"},
    ).content.decode()
    assert 'id="runtime-suggestion"' in panel and "vLLM" in panel
