"""Promoting a revision between environments through the page and the API, with deployments.services."""

from __future__ import annotations

import pytest
from django.urls import reverse

from deployments.models import ModelDeployment
from sharing.models import AuditEntry
from tests.conftest import login
from tests.sharing import factories as f


@pytest.fixture
def stages(tenants):
    staging = f.environment(tenants.project, name="Staging")
    production = f.environment(tenants.project, name="Production", slug="prod", max_replicas=2)
    dep = f.deployment(
        tenants.project,
        name="llama",
        environment=staging,
        revisions=[
            f.spec(replicas=1, served="llama-chat"),
            f.spec(replicas=4, served="llama-chat"),
        ],
    )
    return staging, production, dep


@pytest.mark.django_db
def test_page_checks_then_promotes_into_a_new_deployment(tenants, stages):
    staging, production, dep = stages
    client = login(tenants.member)
    url = reverse("sharing:deployment_promote", args=[dep.pk])
    html = client.get(url).content.decode()
    assert (
        "Staging" not in html.split('name="target_environment"')[1].split("</select>")[0]
    )  # not its own
    checked = client.post(
        url, {"revision": "1", "target_environment": production.pk}
    ).content.decode()
    assert 'id="promotion-plan"' in checked and "as a new deployment “llama-prod”" in checked
    assert not ModelDeployment.objects.filter(
        name="llama-prod"
    ).exists()  # nothing changes before confirming
    response = client.post(
        url, {"revision": "1", "target_environment": production.pk, "confirm": "1"}
    )
    assert response.status_code == 302
    promoted = ModelDeployment.objects.get(project=tenants.project, name="llama-prod")
    assert promoted.environment == production
    assert promoted.current_revision.spec["served_model_name"] == "llama-chat-prod"
    entry = AuditEntry.objects.get(action="promote")
    assert entry.object_id == str(promoted.pk)
    assert entry.diff["environment"] == ["staging", "prod"]


@pytest.mark.django_db
def test_page_refuses_a_revision_the_target_forbids_and_names_the_rule(tenants, stages):
    staging, production, dep = stages
    response = login(tenants.owner).post(
        reverse("sharing:deployment_promote", args=[dep.pk]),
        {"revision": "2", "target_environment": production.pk, "confirm": "1"},
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert "Environment “Production” allows at most 2 replicas; the spec asks for 4." in html
    assert not ModelDeployment.objects.filter(environment=production).exists()


@pytest.mark.django_db
def test_viewer_gets_403_and_outsider_404(tenants, stages):
    staging, production, dep = stages
    url = reverse("sharing:deployment_promote", args=[dep.pk])
    body = {"revision": "1", "target_environment": production.pk, "confirm": "1"}
    assert login(tenants.viewer).post(url, body).status_code == 403
    assert login(tenants.outsider).get(url).status_code == 404
    assert login(tenants.outsider).post(url, body).status_code == 404
    assert not ModelDeployment.objects.filter(environment=production).exists()


@pytest.mark.django_db
def test_api_dry_run_then_promote(tenants, stages):
    staging, production, dep = stages
    client = login(tenants.owner)
    url = reverse("promotion-list")
    dry = client.post(
        url,
        {"deployment": dep.pk, "revision": 1, "target_environment": production.pk, "dry_run": True},
        content_type="application/json",
    )
    assert (
        dry.status_code == 200
        and dry.json()["call"] == "deployment_create"
        and dry.json()["name"] == "llama-prod"
    )
    refused = client.post(
        url,
        {"deployment": dep.pk, "revision": 2, "target_environment": production.pk},
        content_type="application/json",
    )
    assert refused.status_code == 400
    assert refused.json()["target_environment"] == [
        "Environment “Production” allows at most 2 replicas; the spec asks for 4."
    ]
    missing = client.post(
        url,
        {"deployment": dep.pk, "revision": 9, "target_environment": production.pk},
        content_type="application/json",
    )
    assert missing.status_code == 400 and "revision" in missing.json()
    done = client.post(
        url,
        {"deployment": dep.pk, "revision": 1, "target_environment": production.pk},
        content_type="application/json",
    )
    assert done.status_code == 201, done.content
    assert ModelDeployment.objects.get(pk=done.json()["deployment"]).environment == production


@pytest.mark.django_db
def test_api_scoping(tenants, stages):
    staging, production, dep = stages
    url = reverse("promotion-list")
    body = {"deployment": dep.pk, "revision": 1, "target_environment": production.pk}
    assert (
        login(tenants.outsider).post(url, body, content_type="application/json").status_code == 404
    )
    assert login(tenants.viewer).post(url, body, content_type="application/json").status_code == 403
