"""Deleting a project: refused while it has any deployment (external, deactivated, being deleted),
with the same words in the service, the console and the REST API; an empty project goes."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from catalog.models import CatalogModel
from deployments import services as deployment_services
from deployments.external import external_deployment_create
from deployments.models import ModelDeployment
from projects.models import Project
from projects.services import project_delete
from tests.conftest import login
from tests.factories import ProjectFactory, deployment, rest_api_client

pytestmark = pytest.mark.django_db



@pytest.fixture
def tmp_project(tenants, public_example_com) -> Project:
    """Project “tmp” as the audit had it: an external endpoint and a deactivated managed deployment."""
    project = ProjectFactory(organization=tenants.org, name="tmp", slug="tmp", gpu_quota=4)
    managed = deployment(project, user=tenants.owner, name="old-chat")
    deployment_services.deployment_deactivate(user=tenants.owner, deployment=managed)
    model = CatalogModel.objects.get(name="old-chat model")
    external_deployment_create(user=tenants.owner, project=project, model=model, name="ext-tmp",
                               url="https://llm.example.com/v1")  # fmt: skip
    assert project.gpu_used() == 0  # the old guard (GPUs in use) let this project go
    return project


def test_project_with_deployments_is_not_deleted_and_the_error_names_them(tenants, tmp_project):
    with pytest.raises(ValidationError) as exc:
        project_delete(user=tenants.owner, project=tmp_project)
    message = " ".join(exc.value.message_dict["deployments"])
    assert "Project “tmp” still has 2 deployments: “ext-tmp” (running), “old-chat” (deactivated)." in message
    assert "Delete them first" in message
    assert Project.objects.filter(pk=tmp_project.pk).exists()
    assert ModelDeployment.objects.filter(project=tmp_project).count() == 2


def test_deployment_being_deleted_still_blocks_and_says_why(tenants, tmp_project):
    managed = ModelDeployment.objects.get(project=tmp_project, name="old-chat")
    deployment_services.deployment_delete(user=tenants.owner, deployment=managed)
    managed.refresh_from_db()
    assert managed.state == "deleting"  # its pool (offline) has not confirmed the objects are gone
    with pytest.raises(ValidationError) as exc:
        project_delete(user=tenants.owner, project=tmp_project)
    message = " ".join(exc.value.messages)
    assert "“old-chat” (deleting)" in message and "once its compute pool has removed its objects" in message


def test_one_deployment_left_is_named_in_the_singular(tenants):
    project = ProjectFactory(organization=tenants.org, name="solo", slug="solo")
    deployment(project, user=tenants.owner, name="only")
    with pytest.raises(ValidationError) as exc:
        project_delete(user=tenants.owner, project=project)
    assert "still has 1 deployment: “only” (pending). Delete it first" in " ".join(exc.value.messages)


def test_empty_project_is_deleted(tenants):
    project = ProjectFactory(organization=tenants.org, name="empty", slug="empty")
    project_delete(user=tenants.owner, project=project)
    assert not Project.objects.filter(pk=project.pk).exists()


def test_console_shows_the_refusal_in_words_and_keeps_the_project(tenants, tmp_project):
    client = login(tenants.owner)
    page = client.get(tmp_project.get_absolute_url()).content.decode()
    # Nothing to confirm when the delete will be refused: the button says what to do instead.
    assert "Delete its deployments first" in page and "Delete project “tmp”?" not in page
    response = client.post(reverse("projects:delete", args=[tmp_project.pk]), follow=True)
    assert response.status_code == 200
    assert response.redirect_chain[-1][0] == tmp_project.get_absolute_url()
    text = response.content.decode()
    assert "still has 2 deployments: “ext-tmp” (running), “old-chat” (deactivated)" in text
    assert Project.objects.filter(pk=tmp_project.pk).exists()


def test_console_confirms_and_deletes_an_empty_project(tenants):
    project = ProjectFactory(organization=tenants.org, name="empty", slug="empty")
    client = login(tenants.owner)
    page = client.get(project.get_absolute_url()).content.decode()
    assert "Delete project “empty”? Its members, integrations, MaaS rules, environments and endpoints" in page
    response = client.post(reverse("projects:delete", args=[project.pk]))
    assert response.status_code == 302 and response.url == reverse("projects:list")
    assert not Project.objects.filter(pk=project.pk).exists()


def test_rest_delete_of_a_project_with_deployments_is_a_400_naming_them(tenants, tmp_project):
    api = rest_api_client(tenants.owner)
    response = api.delete(f"/api/v1/projects/{tmp_project.pk}/")
    assert response.status_code == 400, response.content
    assert "still has 2 deployments: “ext-tmp” (running), “old-chat” (deactivated)" in response.json()["deployments"][0]
    assert Project.objects.filter(pk=tmp_project.pk).exists()

    empty = ProjectFactory(organization=tenants.org, name="empty", slug="empty")
    assert api.delete(f"/api/v1/projects/{empty.pk}/").status_code == 204
    assert not Project.objects.filter(pk=empty.pk).exists()
