"""Another organization's catalog objects are a 404 everywhere; viewers get 403 on API writes."""
# ruff: noqa: F811 - pytest fixtures are imported by name and then requested as arguments

from __future__ import annotations

import pytest
from django.urls import reverse

from catalog import services
from catalog.models import CatalogModel, MaaSMapping, ProfileBundle
from tests.catalog.catalog_fixtures import api, builtin_bundles  # noqa: F401 - fixture
from tests.conftest import login

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme(tenants):
    """Acme's model, bundle and rule, which Globex's outsider must never reach."""
    model = CatalogModel.objects.create(
        organization=tenants.org, name="acme-model", source="custom", storage_uri="s3://acme/model"
    )
    bundle = services.bundle_create(
        user=tenants.owner,
        organization=tenants.org,
        name="acme-vllm",
        engine="vllm",
        image="vllm/vllm-openai:v0.8.5",
    )
    rule = services.mapping_create(
        user=tenants.owner, project=tenants.project, source="custom", bundle=bundle
    )
    return model, bundle, rule


def test_outsider_gets_404_on_every_catalog_page(tenants, acme):
    model, bundle, rule = acme
    client = login(tenants.outsider)
    pages = [
        ("get", reverse("catalog:model_detail", args=[model.pk])),
        ("get", reverse("catalog:model_detail", args=[model.pk]) + "?gpu_type=L4&concurrency=1"),
        ("get", reverse("catalog:model_edit", args=[model.pk])),
        ("post", reverse("catalog:model_edit", args=[model.pk])),
        ("post", reverse("catalog:model_delete", args=[model.pk])),
        ("post", reverse("catalog:model_refresh_tags", args=[model.pk])),
        ("get", reverse("catalog:bundle_detail", args=[bundle.pk])),
        ("get", reverse("catalog:bundle_edit", args=[bundle.pk])),
        ("post", reverse("catalog:bundle_edit", args=[bundle.pk])),
        ("post", reverse("catalog:bundle_delete", args=[bundle.pk])),
        ("get", reverse("catalog:mappings", args=[tenants.project.pk])),
        ("post", reverse("catalog:mappings", args=[tenants.project.pk])),
        (
            "get",
            reverse("catalog:mapping_resolve", args=[tenants.project.pk]) + f"?model={model.pk}",
        ),
        ("post", reverse("catalog:mapping_move", args=[rule.pk])),
        ("post", reverse("catalog:mapping_delete", args=[rule.pk])),
    ]
    for method, url in pages:
        response = getattr(client, method)(url)
        assert response.status_code == 404, (method, url, response.status_code)
    # ...and the outsider's own resolve page cannot be pointed at Acme's model
    own = reverse("catalog:mapping_resolve", args=[tenants.other_project.pk]) + f"?model={model.pk}"
    assert client.get(own).status_code == 404
    # Listings do not show Acme's objects
    assert "acme-model" not in client.get(reverse("catalog:index")).content.decode()
    assert "acme-vllm" not in client.get(reverse("catalog:bundles")).content.decode()
    assert (
        CatalogModel.objects.filter(pk=model.pk).exists()
        and MaaSMapping.objects.filter(pk=rule.pk).exists()
    )


def test_outsider_gets_404_on_every_catalog_api_object(tenants, acme):
    model, bundle, rule = acme
    client = api(tenants.outsider)
    calls = [
        ("get", f"/api/v1/models/{model.pk}/", None),
        ("patch", f"/api/v1/models/{model.pk}/", {"name": "x"}),
        ("delete", f"/api/v1/models/{model.pk}/", None),
        ("get", f"/api/v1/models/{model.pk}/estimate/", None),
        ("get", f"/api/v1/models/{model.pk}/bundle/?project={tenants.other_project.pk}", None),
        ("get", f"/api/v1/bundles/{bundle.pk}/", None),
        ("patch", f"/api/v1/bundles/{bundle.pk}/", {"image": "a:1"}),
        ("delete", f"/api/v1/bundles/{bundle.pk}/", None),
        ("get", f"/api/v1/bundles/{bundle.pk}/versions/", None),
        ("get", f"/api/v1/mappings/{rule.pk}/", None),
        ("patch", f"/api/v1/mappings/{rule.pk}/", {"task": "x"}),
        ("delete", f"/api/v1/mappings/{rule.pk}/", None),
        (
            "post",
            "/api/v1/mappings/",
            {
                "project": tenants.project.pk,
                "source": "custom",
                "bundle": ProfileBundle.objects.get(organization__isnull=True, name="vllm").pk,
            },
        ),
        ("post", "/api/v1/mappings/reorder/", {"project": tenants.project.pk, "order": [rule.pk]}),
        ("get", f"/api/v1/mappings/resolve/?project={tenants.project.pk}&model={model.pk}", None),
        (
            "get",
            f"/api/v1/mappings/resolve/?project={tenants.other_project.pk}&model={model.pk}",
            None,
        ),
        (
            "post",
            "/api/v1/models/",
            {
                "source": "custom",
                "name": "sneak",
                "storage_uri": "s3://a/b",
                "organization": tenants.org.pk,
            },
        ),
        (
            "post",
            "/api/v1/bundles/",
            {"name": "sneak", "engine": "vllm", "image": "a:1", "organization": tenants.org.pk},
        ),
        ("get", f"/api/v1/models/hub-search/?project={tenants.project.pk}", None),
        ("get", f"/api/v1/ngc/tags/?image=nim/meta/x&project={tenants.project.pk}", None),
    ]
    for method, url, data in calls:
        response = (
            getattr(client, method)(url, data, format="json")
            if data is not None
            else getattr(client, method)(url)
        )
        assert response.status_code == 404, (method, url, response.status_code)
    assert client.get("/api/v1/models/").json()["results"] == []
    assert "acme-vllm" not in str(client.get("/api/v1/bundles/").json())
    assert client.get("/api/v1/mappings/").json()["results"] == []
    assert (
        not CatalogModel.objects.filter(name="sneak").exists()
        and not ProfileBundle.objects.filter(name="sneak").exists()
    )
    # Mapping the outsider's own project onto Acme's bundle is refused as an unknown bundle.
    response = client.post(
        "/api/v1/mappings/",
        {"project": tenants.other_project.pk, "source": "custom", "bundle": bundle.pk},
        format="json",
    )
    assert response.status_code == 400 and "bundle" in response.json()


def test_viewer_gets_403_on_api_writes(tenants, acme):
    model, bundle, rule = acme
    client = api(tenants.viewer)
    assert client.get(f"/api/v1/models/{model.pk}/").status_code == 200
    calls = [
        ("post", "/api/v1/models/", {"source": "custom", "name": "v", "storage_uri": "s3://a/b"}),
        ("patch", f"/api/v1/models/{model.pk}/", {"name": "v"}),
        ("delete", f"/api/v1/models/{model.pk}/", None),
        ("post", "/api/v1/bundles/", {"name": "v", "engine": "vllm", "image": "a:1"}),
        ("patch", f"/api/v1/bundles/{bundle.pk}/", {"image": "a:2"}),
        ("delete", f"/api/v1/bundles/{bundle.pk}/", None),
        (
            "post",
            "/api/v1/mappings/",
            {"project": tenants.project.pk, "source": "custom", "bundle": bundle.pk},
        ),
        ("patch", f"/api/v1/mappings/{rule.pk}/", {"task": "x"}),
        ("delete", f"/api/v1/mappings/{rule.pk}/", None),
        ("post", "/api/v1/mappings/reorder/", {"project": tenants.project.pk, "order": [rule.pk]}),
    ]
    for method, url, data in calls:
        response = (
            getattr(client, method)(url, data, format="json")
            if data is not None
            else getattr(client, method)(url)
        )
        assert response.status_code == 403, (method, url, response.status_code)
    assert CatalogModel.objects.get(pk=model.pk).name == "acme-model"
    assert (
        ProfileBundle.objects.filter(organization=tenants.org).count() == 1
        and MaaSMapping.objects.count() == 1
    )
