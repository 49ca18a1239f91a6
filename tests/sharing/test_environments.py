"""Environments per project: pages (list, create, edit, delete) and API, scoped and audited."""

from __future__ import annotations

import pytest
from django.urls import reverse

from projects.models import Environment
from sharing.models import AuditEntry
from tests.conftest import login
from tests.factories import ProjectFactory
from tests.sharing import factories as f


@pytest.mark.django_db
def test_create_environment_through_the_form(tenants):
    pool = f.pool(tenants.org, name="prod-east")
    client = login(tenants.member)
    response = client.post(
        reverse("sharing:environment_create", args=[tenants.project.pk]),
        {
            "name": "Production",
            "slug": "prod",
            "allowed_pools": [pool.pk],
            "allowed_pool_labels": "region=us-east-1, us-west-2",
            "allowed_gpu_types": "H100, A100",
            "max_replicas": "2",
            "max_gpus_per_replica": "1",
        },
    )
    assert response.status_code == 302
    env = Environment.objects.get(project=tenants.project, slug="prod")
    assert list(env.allowed_pools.all()) == [pool]
    assert env.allowed_pool_labels == {"region": ["us-east-1", "us-west-2"]}
    assert env.allowed_gpu_types == ["H100", "A100"] and env.max_replicas == 2
    entry = AuditEntry.objects.get(object_type="environment", action="create")
    assert entry.diff["max_replicas"] == [None, 2]
    html = client.get(reverse("sharing:environments", args=[tenants.project.pk])).content.decode()
    assert "Production" in html and "prod-east" in html and "H100" in html


@pytest.mark.django_db
@pytest.mark.parametrize(
    "field, value, message",
    [
        ("max_replicas", "0", "greater than or equal to 1"),
        ("max_replicas", "lots", "whole number"),
        ("allowed_pool_labels", "region", "Line 1: write label=value"),
        ("slug", "Prod Env", "lowercase letters"),
    ],
)
def test_bad_input_is_an_error_on_the_field_and_keeps_the_rest(tenants, field, value, message):
    data = {"name": "Keep me", "slug": "keep", "max_replicas": "3", "allowed_gpu_types": "L4"}
    data[field] = value
    response = login(tenants.owner).post(
        reverse("sharing:environment_create", args=[tenants.project.pk]), data
    )
    html = response.content.decode()
    assert response.status_code == 200 and message in html and 'value="Keep me"' in html
    assert not Environment.objects.filter(name="Keep me").exists()


@pytest.mark.django_db
def test_duplicate_slug_is_refused(tenants):
    f.environment(tenants.project, name="Staging")
    response = login(tenants.owner).post(
        reverse("sharing:environment_create", args=[tenants.project.pk]),
        {"name": "Other", "slug": "staging"},
    )
    assert "already has an environment “staging”" in response.content.decode()


@pytest.mark.django_db
def test_htmx_validates_one_field(tenants):
    response = login(tenants.owner).post(
        reverse("sharing:environment_create", args=[tenants.project.pk]),
        {"name": "x", "slug": "x", "max_replicas": "-3", "_validate": "max_replicas"},
        HTTP_HX_REQUEST="true",
    )
    html = response.content.decode()
    assert 'id="field-max_replicas"' in html and 'id="field-name"' not in html


@pytest.mark.django_db
def test_edit_narrows_policies_and_records_the_diff(tenants):
    env = f.environment(tenants.project, name="Production", max_replicas=4)
    client = login(tenants.owner)
    response = client.post(
        reverse("sharing:environment_edit", args=[env.pk]),
        {"name": "Production", "max_replicas": "2", "allowed_gpu_types": "H100"},
    )
    assert response.status_code == 302
    env.refresh_from_db()
    assert env.max_replicas == 2 and env.slug == "production"
    entry = AuditEntry.objects.get(object_type="environment", action="update")
    assert entry.diff == {"allowed_gpu_types": [[], ["H100"]], "max_replicas": [4, 2]}


@pytest.mark.django_db
def test_delete_refuses_while_deployments_use_it(tenants):
    env = f.environment(tenants.project, name="Production")
    dep = f.deployment(tenants.project, environment=env)
    client = login(tenants.owner)
    response = client.post(reverse("sharing:environment_delete", args=[env.pk]), follow=True)
    assert "1 deployment runs in environment “Production”" in response.content.decode()
    dep.delete()
    client.post(reverse("sharing:environment_delete", args=[env.pk]))
    assert not Environment.objects.filter(pk=env.pk).exists()
    assert AuditEntry.objects.filter(
        object_type="environment", action="delete", object_id=str(env.pk)
    ).exists()


@pytest.mark.django_db
def test_viewer_cannot_change_environments(tenants):
    env = f.environment(tenants.project, name="Production")
    client = login(tenants.viewer)
    assert client.get(reverse("sharing:environments", args=[tenants.project.pk])).status_code == 200
    assert (
        client.post(
            reverse("sharing:environment_create", args=[tenants.project.pk]),
            {"name": "X", "slug": "x"},
        ).status_code
        == 403
    )
    assert (
        client.post(reverse("sharing:environment_edit", args=[env.pk]), {"name": "Y"}).status_code
        == 403
    )
    assert client.post(reverse("sharing:environment_delete", args=[env.pk])).status_code == 403
    assert Environment.objects.filter(pk=env.pk, name="Production").exists()


@pytest.mark.django_db
def test_outsider_gets_404_on_every_environment_page(tenants):
    env = f.environment(tenants.project, name="Production")
    client = login(tenants.outsider)
    for url in [
        reverse("sharing:environments", args=[tenants.project.pk]),
        reverse("sharing:environment_create", args=[tenants.project.pk]),
        reverse("sharing:environment_edit", args=[env.pk]),
    ]:
        assert client.get(url).status_code == 404, url
    assert client.post(reverse("sharing:environment_delete", args=[env.pk])).status_code == 404


@pytest.mark.django_db
def test_pools_of_another_organization_are_not_offered_or_accepted(tenants):
    foreign = f.pool(tenants.other_org, name="globex-gpu")
    client = login(tenants.owner)
    url = reverse("sharing:environment_create", args=[tenants.project.pk])
    assert "globex-gpu" not in client.get(url).content.decode()
    response = client.post(url, {"name": "P", "slug": "p", "allowed_pools": [foreign.pk]})
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()


# ---------------------------------------------------------------- API


@pytest.mark.django_db
def test_api_crud(tenants):
    pool = f.pool(tenants.org)
    client = login(tenants.owner)
    url = reverse("environment-list")
    created = client.post(
        url,
        {
            "project": tenants.project.pk,
            "name": "Staging",
            "slug": "staging",
            "allowed_pools": [pool.pk],
            "max_replicas": 3,
        },
        content_type="application/json",
    )
    assert created.status_code == 201, created.content
    env_id = created.json()["id"]
    detail = reverse("environment-detail", args=[env_id])
    patched = client.patch(
        detail, {"max_replicas": 1, "allowed_gpu_types": ["L4"]}, content_type="application/json"
    )
    assert patched.status_code == 200 and patched.json()["max_replicas"] == 1
    bad = client.patch(
        detail, {"allowed_pool_labels": {"region": "us-east-1"}}, content_type="application/json"
    )
    assert bad.status_code == 400 and "allowed_pool_labels" in bad.json()
    assert (
        client.patch(detail, {"slug": "other"}, content_type="application/json").status_code == 400
    )
    dup = client.post(
        url,
        {"project": tenants.project.pk, "name": "Again", "slug": "staging"},
        content_type="application/json",
    )
    assert dup.status_code == 400 and "slug" in dup.json()
    assert [
        e["name"] for e in client.get(url, {"project": tenants.project.pk}).json()["results"]
    ] == ["Staging"]
    assert client.delete(detail).status_code == 204


@pytest.mark.django_db
def test_api_scoping(tenants):
    env = f.environment(tenants.project, name="Production")
    outsider = login(tenants.outsider)
    detail = reverse("environment-detail", args=[env.pk])
    assert outsider.get(detail).status_code == 404
    assert (
        outsider.patch(detail, {"max_replicas": 9}, content_type="application/json").status_code
        == 404
    )
    assert outsider.delete(detail).status_code == 404
    assert env.pk not in [
        e["id"] for e in outsider.get(reverse("environment-list")).json()["results"]
    ]
    created = outsider.post(
        reverse("environment-list"),
        {"project": tenants.project.pk, "name": "X", "slug": "x"},
        content_type="application/json",
    )
    assert created.status_code == 400 and "project" in created.json()
    viewer = login(tenants.viewer)
    assert (
        viewer.patch(detail, {"max_replicas": 9}, content_type="application/json").status_code
        == 403
    )
    assert viewer.delete(detail).status_code == 403


def _restricted_environment(tenants) -> Environment:
    env = f.environment(
        tenants.project, name="Production", slug="prod", pools=[f.pool(tenants.org)],
        description="Live traffic", allowed_pool_labels={"region": ["us-east-1"]},
        allowed_gpu_types=["H100"], max_replicas=4, max_gpus_per_replica=2,
    )  # fmt: skip
    return env


@pytest.mark.django_db
def test_api_put_replaces_the_environment_and_omitted_fields_return_to_their_defaults(tenants):
    env = _restricted_environment(tenants)
    body = {"project": tenants.project.pk, "name": "Prod", "slug": "prod", "max_replicas": 2}
    response = login(tenants.owner).put(
        reverse("environment-detail", args=[env.pk]), body, content_type="application/json"
    )
    assert response.status_code == 200, response.content
    got = response.json()
    assert (got["name"], got["max_replicas"]) == ("Prod", 2)
    # Not sent, so no longer set: a PUT is the whole environment, not a PATCH.
    assert got["description"] == "" and got["allowed_pools"] == []
    assert got["allowed_pool_labels"] == {} and got["allowed_gpu_types"] == []
    assert got["max_gpus_per_replica"] is None
    env.refresh_from_db()
    assert env.description == "" and env.max_gpus_per_replica is None and not env.allowed_pools.exists()


@pytest.mark.django_db
def test_api_put_without_the_required_fields_is_a_400_on_them_and_changes_nothing(tenants):
    env = _restricted_environment(tenants)
    response = login(tenants.owner).put(
        reverse("environment-detail", args=[env.pk]), {"max_replicas": 3}, content_type="application/json"
    )
    assert response.status_code == 400
    assert set(response.json()) == {"project", "name", "slug"}
    env.refresh_from_db()
    assert (env.max_replicas, env.description) == (4, "Live traffic")


@pytest.mark.django_db
def test_api_patch_changes_only_the_fields_given(tenants):
    env = _restricted_environment(tenants)
    response = login(tenants.owner).patch(
        reverse("environment-detail", args=[env.pk]), {"max_replicas": 3}, content_type="application/json"
    )
    assert response.status_code == 200, response.content
    got = response.json()
    assert got["max_replicas"] == 3 and got["description"] == "Live traffic"
    assert got["allowed_gpu_types"] == ["H100"] and len(got["allowed_pools"]) == 1


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["put", "patch"])
def test_api_refuses_to_move_an_environment_or_change_its_slug(tenants, method):
    env = _restricted_environment(tenants)
    other = ProjectFactory(organization=tenants.org, name="Other", slug="other")
    client = login(tenants.owner)
    detail = reverse("environment-detail", args=[env.pk])
    full = {"project": tenants.project.pk, "name": "Production", "slug": "prod"}
    moved = getattr(client, method)(detail, {**full, "project": other.pk}, content_type="application/json")
    assert moved.status_code == 400
    assert moved.json() == {"project": ["An environment's project cannot change."]}
    renamed = getattr(client, method)(detail, {**full, "slug": "live"}, content_type="application/json")
    assert renamed.json() == {"slug": ["An environment's slug cannot change."]}
    env.refresh_from_db()
    assert (env.project_id, env.slug) == (tenants.project.pk, "prod")


@pytest.mark.django_db
def test_api_put_by_a_viewer_is_refused_before_the_body_is_read(tenants):
    env = _restricted_environment(tenants)
    response = login(tenants.viewer).put(
        reverse("environment-detail", args=[env.pk]), {}, content_type="application/json"
    )
    assert response.status_code == 403 and "project" not in response.json()
