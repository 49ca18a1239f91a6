"""Catalog list and model pages: the GPU memory estimate, custom models (upload, URIs), bundles and versions."""
# ruff: noqa: F811 - pytest fixtures are imported by name and then requested as arguments

from __future__ import annotations

import hashlib
import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from catalog import selectors, services
from catalog.demo import model_fields_from_snapshot
from catalog.models import CatalogModel, ProfileBundle
from sandbox.offline_hub import HUB_SNAPSHOT
from tests.catalog.catalog_fixtures import LLAMA_8B, QWEN_05B, builtin_bundles  # noqa: F401 - fixture
from tests.conftest import login

pytestmark = pytest.mark.django_db


@pytest.fixture
def llama(tenants):
    return CatalogModel.objects.create(
        organization=tenants.org,
        name="llama-8b",
        source="huggingface",
        **model_fields_from_snapshot(LLAMA_8B, HUB_SNAPSHOT),
    )


def test_catalog_list_filters_by_source_and_text(owner_client, tenants, llama):
    CatalogModel.objects.create(
        organization=tenants.org, name="my-weights", source="custom", storage_uri="s3://bucket/w"
    )
    CatalogModel.objects.create(
        organization=tenants.other_org,
        name="their-model",
        source="custom",
        storage_uri="s3://bucket/x",
    )
    html = owner_client.get(reverse("catalog:index")).content.decode()
    assert "llama-8b" in html and "my-weights" in html and "their-model" not in html
    html = owner_client.get(
        reverse("catalog:index"), {"source": "custom"}, HTTP_HX_REQUEST="true"
    ).content.decode()
    assert "my-weights" in html and "llama-8b" not in html and "<html" not in html
    html = owner_client.get(reverse("catalog:index"), {"q": "meta-llama"}).content.decode()
    assert "llama-8b" in html and "my-weights" not in html


def test_empty_catalog_says_what_to_do_next(owner_client):
    html = owner_client.get(reverse("catalog:index")).content.decode()
    assert "The catalog is empty" in html and "Search the Hugging Face Hub" in html


def test_model_page_shows_the_llama_8b_estimate(owner_client, llama):
    html = owner_client.get(llama.get_absolute_url()).content.decode()
    # GiB, as the deploy form and the GPUs' own memory; the decimal GB figure is the tooltip.
    assert 'title="16.1 GB (decimal)">15.0 GiB<' in html
    assert "128 KiB/token" in html
    assert "8,030,261,248" in html and "Deploy" in html and f"?model={llama.pk}" in html
    assert 'id="deployment-count">0<' in html and "No deployments yet" in html


def test_estimate_recalculates_for_context_concurrency_and_gpu(owner_client, llama):
    response = owner_client.get(
        llama.get_absolute_url(),
        {"context_length": "8192", "concurrency": "8", "gpu_type": "L4"},
        HTTP_HX_REQUEST="true",
    )
    html = response.content.decode()
    assert "<html" not in html
    # 128 KiB × 8192 × 8 = 8 GiB = 8.6 GB of KV cache; 16.1 GB weights + 8.6 GB don't fit one L4
    # (24 GiB × 0.9 − 2 GiB = 21 GB usable), so two.
    assert 'data-estimate="kv" title="8.6 GB (decimal)">8.0 GiB<' in html and "65,536 tokens" in html
    assert "Needs <strong>2 × NVIDIA L4 24GB</strong>" in html
    html = owner_client.get(
        llama.get_absolute_url(),
        {"context_length": "8192", "concurrency": "4", "gpu_type": "L4"},
        HTTP_HX_REQUEST="true",
    ).content.decode()
    assert "Needs <strong>1 × NVIDIA L4 24GB</strong>" in html
    html = owner_client.get(
        llama.get_absolute_url(),
        {"context_length": "8192", "concurrency": "1", "gpu_type": "H100-80GB"},
        HTTP_HX_REQUEST="true",
    ).content.decode()
    assert "Needs <strong>1 × NVIDIA H100 80GB</strong>" in html


def test_model_estimate_selector(llama):
    estimate = selectors.model_estimate(llama, context_length=131072, concurrency=1, gpu_type=None)
    assert round(estimate.weights_gb, 1) == 16.1 and estimate.kv_kib_per_token == 128
    assert (
        selectors.model_estimate(
            CatalogModel(name="x", source="custom"), context_length=1, concurrency=1, gpu_type=None
        )
        is None
    )


def test_model_without_facts_explains_why_there_is_no_estimate(owner_client, tenants):
    model = CatalogModel.objects.create(
        organization=tenants.org,
        name="nim",
        source="ngc",
        ngc_image="nvcr.io/nim/meta/llama-3.1-8b-instruct",
        ngc_tag="1.3.3",
        ngc_tags=["1.3.3", "1.2.2"],
    )
    html = owner_client.get(model.get_absolute_url()).content.decode()
    assert "No estimate" in html and "1.2.2" in html


def test_upload_is_stored_under_the_data_dir_with_its_sha256(
    owner_client, tenants, settings, tmp_path
):
    settings.MODELDECK_DATA_DIR = tmp_path
    content = b"\x00weights" * 1000
    upload = SimpleUploadedFile("model.safetensors", content)
    response = owner_client.post(
        reverse("catalog:custom_create"),
        {"name": "uploaded", "task": "text-generation", "artifact": upload},
    )
    model = CatalogModel.objects.get(name="uploaded")
    assert response.status_code == 302
    assert model.artifact_sha256 == hashlib.sha256(content).hexdigest() and model.size_bytes == len(
        content
    )
    path = os.path.join(tmp_path, "artifacts", model.artifact.name)
    assert open(path, "rb").read() == content
    assert model.artifact_sha256 in owner_client.get(model.get_absolute_url()).content.decode()


def test_upload_over_the_size_limit_is_refused_and_nothing_is_kept(
    owner_client, settings, tmp_path
):
    settings.MODELDECK_DATA_DIR = tmp_path
    settings.MODELDECK_MAX_ARTIFACT_BYTES = 1000
    upload = SimpleUploadedFile("big.bin", b"x" * 5000)
    html = owner_client.post(
        reverse("catalog:custom_create"), {"name": "big", "artifact": upload}
    ).content.decode()
    assert "larger than the limit of 1,000 bytes" in html
    assert not CatalogModel.objects.exists()
    assert not os.path.exists(tmp_path / "artifacts") or not any(
        files for _, _, files in os.walk(tmp_path / "artifacts")
    )


@pytest.mark.parametrize(
    "uri, message",
    [
        ("ftp://host/model", "Unsupported scheme “ftp://”"),
        ("s3://", "is not a valid S3 bucket name"),
        ("s3://My_Bucket/model", "is not a valid S3 bucket name"),
        ("s3://bucket", "names a bucket but no path"),
        ("gs://bucket/model", "gs:// cannot be served by the pinned engines"),
        ("pvc:///path", "is not a valid PersistentVolumeClaim name"),
        ("pvc://Models/llama", "is not a valid PersistentVolumeClaim name"),
        ("hf://just-a-name", "is not a Hugging Face repo id"),
        ("hf://org/name@", "Nothing follows “@”"),
        ("models/llama", "has no scheme"),
        ("javascript:alert(1)", "“javascript:” is not a storage scheme"),
        ("s3://bucket/with space", "cannot contain spaces"),
    ],
)
def test_malformed_storage_uri_is_a_clear_error_on_the_field(owner_client, uri, message):
    html = owner_client.post(
        reverse("catalog:custom_create"), {"name": "c", "storage_uri": uri}
    ).content.decode()
    assert message in html and "has-error" in html
    assert not CatalogModel.objects.exists()


@pytest.mark.parametrize(
    "uri",
    [
        "s3://models-bucket/llama/8b",
        "pvc://model-cache/llama",
        "pvc://model-cache",
    ],
)
def test_valid_storage_uris_are_accepted(owner_client, uri):
    owner_client.post(
        reverse("catalog:custom_create"),
        {"name": "c", "storage_uri": uri, "parameters_billions": "7.5"},
    )
    model = CatalogModel.objects.get(name="c")
    assert model.storage_uri == uri and model.parameters == 7_500_000_000


def test_neither_uri_nor_file_is_refused(owner_client):
    html = owner_client.post(reverse("catalog:custom_create"), {"name": "c"}).content.decode()
    assert "Give either a storage URI or a file" in html


def test_storage_uri_is_validated_as_you_type(owner_client):
    response = owner_client.post(
        reverse("catalog:custom_create"),
        {"name": "c", "storage_uri": "s3://B", "_validate": "storage_uri"},
        HTTP_HX_REQUEST="true",
    )
    html = response.content.decode()
    assert (
        'id="field-storage_uri"' in html
        and "not a valid S3 bucket name" in html
        and 'id="field-name"' not in html
    )


def test_rename_and_delete_a_model(owner_client, llama):
    owner_client.post(
        reverse("catalog:model_edit", args=[llama.pk]), {"name": "renamed", "description": "d"}
    )
    llama.refresh_from_db()
    assert llama.name == "renamed"
    owner_client.post(reverse("catalog:model_delete", args=[llama.pk]))
    assert not CatalogModel.objects.filter(pk=llama.pk).exists()


def test_bundle_edit_makes_a_new_version_and_keeps_the_old(owner_client, tenants):
    owner_client.post(
        reverse("catalog:bundle_create"),
        {
            "name": "vllm-h100",
            "engine": "vllm",
            "image": "vllm/vllm-openai:v0.8.5",
            "default_args": '["--dtype", "auto"]',
            "variables": '[{"name": "max_num_seqs", "type": "integer", "default": 128}]',
            "labels": "{}",
        },
    )
    v1 = ProfileBundle.objects.get(organization=tenants.org, name="vllm-h100")
    assert (
        v1.version == 1
        and v1.labels == {"modeldeck.io/inference-engine": "vllm"}
        and v1.variables[0]["default"] == 128
    )
    response = owner_client.post(
        reverse("catalog:bundle_edit", args=[v1.pk]),
        {
            "engine": "vllm",
            "image": "vllm/vllm-openai:v0.9.2",
            "default_args": "[]",
            "variables": "[]",
            "labels": '{"modeldeck.io/inference-engine": "vllm-h100"}',
        },
    )
    v2 = ProfileBundle.objects.get(organization=tenants.org, name="vllm-h100", version=2)
    assert response.status_code == 302 and response["Location"] == v2.get_absolute_url()
    v1.refresh_from_db()
    assert (
        v1.image == "vllm/vllm-openai:v0.8.5"
        and v2.image.endswith("v0.9.2")
        and v2.engine_label() == "vllm-h100"
    )
    page = owner_client.get(v2.get_absolute_url()).content.decode()
    assert "v1" in page and "v2" in page
    listing = owner_client.get(reverse("catalog:bundles")).content.decode()
    assert (
        f'href="{v2.get_absolute_url()}"' in listing
        and f'href="{v1.get_absolute_url()}"' not in listing
    )


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("image", "vllm/vllm-openai", "with a tag or digest"),
        (
            "variables",
            '[{"name": "x", "type": "integer", "default": "many"}]',
            "is not a valid integer",
        ),
        ("variables", '[{"name": "Bad Name", "type": "string"}]', "is not a valid name"),
        ("default_args", "not json", "Not valid JSON"),
        ("default_args", "[" * 5000 + "]" * 5000, "Nested too deeply"),
        ("variables", "[" * 40 + "]" * 40, "Nested too deeply"),
        ("labels", '{"bad key!": "x"}', "is not a valid Kubernetes label"),
    ],
)
def test_bad_bundle_input_is_an_error_on_the_field(owner_client, field, value, message):
    data = {
        "name": "b",
        "engine": "vllm",
        "image": "vllm/vllm-openai:v0.8.5",
        "default_args": "[]",
        "variables": "[]",
        "labels": "{}",
    }
    data[field] = value
    html = owner_client.post(reverse("catalog:bundle_create"), data).content.decode()
    assert message in html and not ProfileBundle.objects.filter(name="b").exists()


def test_builtin_bundles_are_listed_and_cannot_be_edited(owner_client):
    vllm = ProfileBundle.objects.get(organization__isnull=True, name="vllm")
    listing = owner_client.get(reverse("catalog:bundles")).content.decode()
    for name in ("vllm", "nim-llm", "tgi", "tei"):
        assert f">{name}<" in listing
    assert owner_client.get(reverse("catalog:bundle_edit", args=[vllm.pk])).status_code == 403
    with pytest.raises(Exception, match="Built-in bundles can't be edited"):
        services.bundle_update(user=_FakeUser(), bundle=vllm, image="x:1")


@pytest.mark.parametrize("method", ["get", "post"])
def test_editing_a_builtin_bundle_says_why_and_offers_to_duplicate_it(owner_client, method):
    """QA: an organization admin opening a built-in bundle's edit page got a bare "Not allowed",
    with "an admin can give you another role" — they are the admin."""
    vllm = ProfileBundle.objects.get(organization__isnull=True, name="vllm")
    response = getattr(owner_client, method)(reverse("catalog:bundle_edit", args=[vllm.pk]))
    assert response.status_code == 403
    page = response.content.decode()
    assert "Built-in bundles can&#x27;t be edited; duplicate it to change it" in page
    duplicate = reverse("catalog:bundle_create") + f"?from={vllm.pk}"
    assert f'<a class="btn primary" href="{duplicate}">Duplicate</a>' in page
    assert "another role" not in page and "Sign in" not in page
    assert 'class="sidebar"' in page  # signed in: the console around it, no sign-in card
    assert ProfileBundle.objects.filter(name="vllm").count() == 1


def test_a_viewer_refused_a_builtin_bundle_edit_is_offered_no_duplicate(tenants):
    vllm = ProfileBundle.objects.get(organization__isnull=True, name="vllm")
    response = login(tenants.viewer).get(reverse("catalog:bundle_edit", args=[vllm.pk]))
    page = response.content.decode()
    assert response.status_code == 403 and "Built-in bundles can&#x27;t be edited" in page
    assert "?from=" not in page and "Sign in" not in page


def test_the_403_page_asks_only_a_signed_out_visitor_to_sign_in(tenants, db):
    from django.test import Client

    url = reverse("catalog:bundle_edit", args=[ProfileBundle.objects.get(organization__isnull=True, name="vllm").pk])
    signed_out = Client().get(url)  # login_required: to the sign-in page, not a 403 card
    assert signed_out.status_code == 302 and signed_out["Location"].startswith(reverse("login"))
    for user in (tenants.owner, tenants.viewer, tenants.outsider):
        response = login(user).get(url)
        assert response.status_code == 403 and "Sign in" not in response.content.decode(), user


class _FakeUser:
    is_superuser = False
    is_authenticated = True


def test_viewer_gets_403_on_every_catalog_write(tenants, llama):
    client = login(tenants.viewer)
    bundle = services.bundle_create(
        user=tenants.owner,
        organization=tenants.org,
        name="mine",
        engine="tgi",
        image="ghcr.io/huggingface/text-generation-inference:3.0.1",
    )
    assert client.get(llama.get_absolute_url()).status_code == 200
    for url, data in [
        (reverse("catalog:custom_create"), {"name": "v", "storage_uri": "s3://bucket/x"}),
        (reverse("catalog:model_edit", args=[llama.pk]), {"name": "v"}),
        (reverse("catalog:model_delete", args=[llama.pk]), {}),
        (reverse("catalog:model_refresh_tags", args=[llama.pk]), {}),
        (reverse("catalog:hub_model", args=[QWEN_05B]), {"repo_id": QWEN_05B}),
        (reverse("catalog:bundle_create"), {"name": "x", "engine": "vllm", "image": "a:1"}),
        (reverse("catalog:bundle_edit", args=[bundle.pk]), {"engine": "vllm", "image": "a:1"}),
        (reverse("catalog:bundle_delete", args=[bundle.pk]), {}),
    ]:
        assert client.post(url, data).status_code == 403, url
    assert CatalogModel.objects.get(pk=llama.pk).name == "llama-8b"
    assert ProfileBundle.objects.filter(name="mine").count() == 1


def test_upload_form_still_checks_csrf(tenants, settings, tmp_path):
    from django.test import Client

    settings.MODELDECK_DATA_DIR = tmp_path
    client = Client(enforce_csrf_checks=True)
    client.force_login(tenants.owner)
    upload = SimpleUploadedFile("w.bin", b"abc")
    assert (
        client.post(
            reverse("catalog:custom_create"), {"name": "nocsrf", "artifact": upload}
        ).status_code
        == 403
    )
    page = client.get(reverse("catalog:custom_create"))
    token = page.cookies["csrftoken"].value
    upload = SimpleUploadedFile("w.bin", b"abc")
    response = client.post(
        reverse("catalog:custom_create"),
        {"name": "withcsrf", "artifact": upload, "csrfmiddlewaretoken": token},
    )
    assert response.status_code == 302 and CatalogModel.objects.filter(name="withcsrf").exists()
    assert not CatalogModel.objects.filter(name="nocsrf").exists()


def test_duplicating_a_builtin_bundle_prefills_the_form(owner_client, tenants):
    vllm = ProfileBundle.objects.get(organization__isnull=True, name="vllm")
    assert "Duplicate" in owner_client.get(vllm.get_absolute_url()).content.decode()
    html = owner_client.get(reverse("catalog:bundle_create") + f"?from={vllm.pk}").content.decode()
    assert 'value="vllm-acme"' in html and vllm.image in html and "gpu_memory_utilization" in html
    assert "modeldeck.io/builtin" not in html


def test_deleting_a_model_with_deployments_names_them(owner_client, tenants):
    """QA: the refusal said "has 2 deployment(s)" without saying which to delete first."""
    from tests.gateway.conftest import make_deployment

    first = make_deployment(tenants.project, "chat")
    second = make_deployment(tenants.project, "chat-b")
    type(second).objects.filter(pk=second.pk).update(model=first.model)
    response = owner_client.post(reverse("catalog:model_delete", args=[first.model.pk]), follow=True)
    assert (f"{first.model.name} has 2 deployments: “chat”, “chat-b”; delete them before the model."
            in response.content.decode())  # fmt: skip
    assert CatalogModel.objects.filter(pk=first.model.pk).exists()
