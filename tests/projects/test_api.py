"""REST API for organizations and projects: same services, same scoping, errors in the body."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from projects.models import Project
from tests.factories import rest_api_client


def api(user) -> APIClient:
    return rest_api_client(user)


@pytest.mark.django_db
def test_create_and_list_projects(tenants):
    client = api(tenants.owner)
    response = client.post("/api/v1/projects/", {"name": "API made", "slug": "api-made", "gpu_quota": 3}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["namespace"] == "acme-api-made"
    names = [p["name"] for p in client.get("/api/v1/projects/").json()["results"]]
    assert "API made" in names and "Secret" not in names
    # No slug: made from the name, like the console's form (the same service).
    unslugged = client.post("/api/v1/projects/", {"name": "API made"[::-1] + " Two"}, format="json")
    assert unslugged.status_code == 201 and unslugged.json()["slug"] == "edam-ipa-two", unslugged.json()


@pytest.mark.django_db
@pytest.mark.parametrize("quota", [-1, "two"])
def test_bad_quota_is_a_400_on_the_field(tenants, quota):
    response = api(tenants.owner).post("/api/v1/projects/", {"name": "Bad", "slug": "bad", "gpu_quota": quota}, format="json")
    assert response.status_code == 400
    assert "gpu_quota" in response.json()


@pytest.mark.django_db
def test_bad_slug_and_duplicate_are_400(tenants):
    client = api(tenants.owner)
    assert "slug" in client.post("/api/v1/projects/", {"name": "B", "slug": "Bad Slug"}, format="json").json()
    dup = client.post("/api/v1/projects/", {"name": "Research", "slug": "research2"}, format="json")
    assert dup.status_code == 400 and "already exists" in str(dup.json())


@pytest.mark.django_db
def test_outsider_gets_404_on_project_and_organization_objects(tenants):
    client = api(tenants.outsider)
    pk = tenants.project.pk
    assert client.get(f"/api/v1/projects/{pk}/").status_code == 404
    assert client.patch(f"/api/v1/projects/{pk}/", {"gpu_quota": 1}, format="json").status_code == 404
    assert client.delete(f"/api/v1/projects/{pk}/").status_code == 404
    assert client.get(f"/api/v1/organizations/{tenants.org.pk}/").status_code == 404
    assert client.post(f"/api/v1/organizations/{tenants.org.pk}/quota/", {"gpu_quota": 1}, format="json").status_code == 404
    # ...and cannot create a project in an organization it does not belong to
    response = client.post("/api/v1/projects/", {"name": "Sneak", "slug": "sneak", "organization": tenants.org.pk}, format="json")
    assert response.status_code == 404
    assert not Project.objects.filter(slug="sneak").exists()


@pytest.mark.django_db
def test_viewer_gets_403_on_writes(tenants):
    client = api(tenants.viewer)
    assert client.get(f"/api/v1/projects/{tenants.project.pk}/").status_code == 200
    assert client.patch(f"/api/v1/projects/{tenants.project.pk}/", {"gpu_quota": 1}, format="json").status_code == 403
    assert client.post(f"/api/v1/organizations/{tenants.org.pk}/quota/", {"gpu_quota": 1}, format="json").status_code == 403


@pytest.mark.django_db
def test_schema_and_root_are_served(tenants):
    client = api(tenants.owner)
    schema = client.get("/api/schema/")
    assert schema.status_code == 200 and b"/api/v1/projects/" in schema.content
    assert "projects" in client.get("/api/v1/").json()
    assert client.get("/api/docs/").status_code == 200


@pytest.mark.django_db
def test_every_collection_the_root_lists_answers_a_get(tenants):
    """The root listed /promotions/, which only takes a POST: following it gave a 405."""
    client = api(tenants.owner)
    listed = client.get("/api/v1/").json()
    assert len(listed) >= 15 and "promotions" not in listed
    failing = {name: status for name, url in listed.items() if (status := client.get(url).status_code) != 200}
    assert failing == {}
    # And in a browser (DRF's browsable pages): /usage/ was a 500 there.
    failing = {name: status for name, url in listed.items()
               if (status := client.get(url, HTTP_ACCEPT="text/html").status_code) != 200}  # fmt: skip
    assert failing == {}
