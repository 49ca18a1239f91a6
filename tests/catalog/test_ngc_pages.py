"""NIM pages against the offline NGC: list images, read tags with the project's key, add an image at a tag."""
# ruff: noqa: F811 - pytest fixtures are imported by name and then requested as arguments

from __future__ import annotations

import pytest
from django.urls import reverse

from catalog.models import CatalogModel
from tests.catalog.catalog_fixtures import builtin_bundles, ngc_env, ngc_project  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db
IMAGE = "nim/meta/llama-3.1-8b-instruct"


def test_nim_images_are_listed_and_searchable(owner_client, ngc_env):
    html = owner_client.get(reverse("catalog:ngc_images")).content.decode()
    assert (
        "nvcr.io/nim/meta/llama-3.1-8b-instruct" in html
        and "nvcr.io/nim/nvidia/nv-embedqa-e5-v5" in html
    )
    html = owner_client.get(
        reverse("catalog:ngc_images"), {"q": "embed"}, HTTP_HX_REQUEST="true"
    ).content.decode()
    assert "nv-embedqa-e5-v5" in html and "llama-3.1-70b" not in html and "<html" not in html


def test_image_page_shows_tags_and_adds_the_chosen_one(owner_client, ngc_env, ngc_project, tenants):
    url = reverse("catalog:ngc_image", args=[IMAGE])
    html = owner_client.get(url).content.decode()
    assert "1.3.3" in html and "1.1.2" in html
    response = owner_client.post(
        url, {"image": IMAGE, "tag": "1.2.2", "name": "llama-nim", "project": ngc_project.pk}
    )
    model = CatalogModel.objects.get(name="llama-nim")
    assert response.status_code == 302
    assert (model.ngc_image, model.ngc_tag) == ("nvcr.io/nim/meta/llama-3.1-8b-instruct", "1.2.2")
    assert model.ngc_tags[0] == "1.3.3" and "1.2.2" in model.ngc_tags
    detail = owner_client.get(model.get_absolute_url()).content.decode()
    assert "nvcr.io/nim/meta/llama-3.1-8b-instruct:1.2.2" in detail


def test_image_page_without_a_key_says_where_to_set_one(owner_client, ngc_env):
    html = owner_client.get(reverse("catalog:ngc_image", args=[IMAGE])).content.decode()
    assert "Choose a project with an NGC API key" in html


def test_ngc_failure_is_a_clear_message(owner_client, ngc_env):
    ngc_env.mode = "error"
    html = owner_client.get(reverse("catalog:ngc_images")).content.decode()
    assert "is failing (HTTP 500)" in html


def test_refresh_tags_rereads_them(owner_client, ngc_env, ngc_project, tenants):
    model = CatalogModel.objects.create(
        organization=tenants.org,
        name="n",
        source="ngc",
        ngc_image="nvcr.io/" + IMAGE,
        ngc_tag="1.3.3",
        ngc_tags=["1.3.3"],
    )
    owner_client.post(
        reverse("catalog:model_refresh_tags", args=[model.pk]) + f"?project={ngc_project.pk}"
    )
    model.refresh_from_db()
    assert "1.1.0" in model.ngc_tags and len(model.ngc_tags) > 1


def test_ngc_key_check_button(owner_client, ngc_env, ngc_project):
    owner_client.post(reverse("projects:integration_check", args=[ngc_project.pk, "ngc"]))
    integration = ngc_project.integrations.get(kind="ngc")
    assert integration.check_ok is True and "accepted" in integration.check_message
