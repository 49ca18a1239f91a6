"""A project delete racing a deploy into that project (real PostgreSQL, one thread per request):
whichever commits first, the other sees it and refuses in words; no deployment is removed with
its project, and no deploy lands in a project that is gone."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import ProtectedError

from catalog.models import CatalogModel
from deployments import external as external_module
from deployments.external import external_deployment_create
from deployments.models import ModelDeployment, Revision
from projects import services as project_services
from projects.models import Organization, Project
from projects.services import project_delete
from tests.factories import ProjectFactory, deployment

pytestmark = pytest.mark.django_db(transaction=True)

WAIT_S = 10  # the longest a paused request waits for the test to let it go
BLOCKED_S = 1.0  # how long the other request gets to finish, if nothing makes it wait


class Paused:
    """Wraps ``real`` so that its first call stops the calling thread (inside its transaction)
    until the test calls go(); later calls pass straight through."""

    def __init__(self, real: Callable) -> None:
        self.real, self.reached, self.released = real, threading.Event(), threading.Event()

    def __call__(self, *args, **kwargs):
        result = self.real(*args, **kwargs)
        if not self.reached.is_set():
            self.reached.set()
            self.released.wait(WAIT_S)
        return result

    def go(self) -> None:
        self.released.set()


def in_thread(call: Callable[[], object]) -> tuple[threading.Thread, list]:
    """Run ``call`` in a thread of its own (its own database connection); its result or
    exception lands in the returned list."""
    out: list = []

    def run() -> None:
        try:
            out.append(call())
        except BaseException as exc:  # reported by the test, not lost in the thread
            out.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


@pytest.fixture
def project(tenants, public_example_com) -> Project:
    return ProjectFactory(organization=tenants.org, name="tmp", slug="tmp", gpu_quota=4)


@pytest.fixture
def model(tenants) -> CatalogModel:
    return CatalogModel.objects.create(organization=tenants.org, name="ext model", source="custom",
                                       storage_uri="s3://models/ext")  # fmt: skip


def create_external(tenants, project: Project, model: CatalogModel) -> Callable[[], object]:
    return lambda: external_deployment_create(user=tenants.owner, project=project, model=model,
                                              name="ext-race", url="https://llm.example.com/v1")  # fmt: skip


def test_a_deploy_committed_while_the_delete_waits_makes_the_delete_refuse(
    tenants, project, model, monkeypatch
):
    """The deploy has inserted its row and not committed yet when the delete starts: the delete
    waits for it, then counts it and refuses; the deployment is there, whole."""
    paused = Paused(external_module.event_record)  # called after the insert, before the commit
    monkeypatch.setattr(external_module, "event_record", paused)
    deploy, deployed = in_thread(create_external(tenants, project, model))
    assert paused.reached.wait(WAIT_S)
    delete, deleted = in_thread(lambda: project_delete(user=tenants.owner, project=project))
    delete.join(BLOCKED_S)
    paused.go()
    deploy.join(WAIT_S)
    delete.join(WAIT_S)

    assert isinstance(deployed[0], ModelDeployment), deployed
    assert isinstance(deleted[0], ValidationError), deleted
    assert "Project “tmp” still has 1 deployment: “ext-race” (running). Delete it first" in (
        " ".join(deleted[0].message_dict["deployments"])
    )
    kept = ModelDeployment.objects.get(pk=deployed[0].pk)
    assert kept.project_id == project.pk and Project.objects.filter(pk=project.pk).exists()
    assert Revision.objects.filter(deployment=kept).count() == 1


def test_a_deploy_started_after_the_delete_counted_is_refused_in_words(
    tenants, project, model, monkeypatch
):
    """The delete has counted no deployment and is about to delete: an external deploy into the
    project waits for it, then says the project is gone (not a name clash, not a 500)."""
    paused = Paused(project_services._deployments_left_message)
    monkeypatch.setattr(project_services, "_deployments_left_message", paused)
    delete, deleted = in_thread(lambda: project_delete(user=tenants.owner, project=project))
    assert paused.reached.wait(WAIT_S)
    deploy, deployed = in_thread(create_external(tenants, project, model))
    deploy.join(BLOCKED_S)
    paused.go()
    delete.join(WAIT_S)
    deploy.join(WAIT_S)

    assert deleted == [None]
    assert isinstance(deployed[0], ValidationError), deployed
    assert deployed[0].message_dict == {"project": ["Project “tmp” has been deleted."]}
    assert not Project.objects.filter(pk=project.pk).exists()
    assert not ModelDeployment.objects.filter(name="ext-race").exists()


def test_a_managed_deploy_racing_the_delete_is_refused_in_words(tenants, project, monkeypatch):
    """The same for a managed deploy, which also reserves GPUs in the project's quota."""
    paused = Paused(project_services._deployments_left_message)
    monkeypatch.setattr(project_services, "_deployments_left_message", paused)
    delete, deleted = in_thread(lambda: project_delete(user=tenants.owner, project=project))
    assert paused.reached.wait(WAIT_S)
    deploy, deployed = in_thread(lambda: deployment(project, user=tenants.owner, name="chat-race"))
    deploy.join(BLOCKED_S)
    paused.go()
    delete.join(WAIT_S)
    deploy.join(WAIT_S)

    assert deleted == [None]
    assert isinstance(deployed[0], ValidationError), deployed
    assert deployed[0].message_dict == {"project": ["Project “tmp” has been deleted."]}
    assert not ModelDeployment.objects.filter(name="chat-race").exists()


def test_deployments_the_count_missed_stop_the_delete_and_are_kept(
    tenants, project, model, monkeypatch
):
    """Whatever the count saw, the delete itself can't take a deployment with it: the foreign
    key protects it, and the refusal names it as the count would have."""
    managed = deployment(project, user=tenants.owner, name="old-chat")
    external_deployment_create(user=tenants.owner, project=project, model=model, name="ext-tmp",
                               url="https://llm.example.com/v1")  # fmt: skip
    real = project_services._deployments_left_message
    calls: list[int] = []

    def count_saw_nothing_once(*args):
        calls.append(1)
        return "" if len(calls) == 1 else real(*args)

    monkeypatch.setattr(project_services, "_deployments_left_message", count_saw_nothing_once)
    with pytest.raises(ValidationError) as exc:
        project_delete(user=tenants.owner, project=project)
    assert "Project “tmp” still has 2 deployments: “ext-tmp” (running), “old-chat” (pending)." in (
        " ".join(exc.value.message_dict["deployments"])
    )
    assert set(ModelDeployment.objects.filter(project=project).values_list("name", flat=True)) == {
        "old-chat",
        "ext-tmp",
    }
    assert Revision.objects.filter(deployment=managed).exists()

    # Nor can the rows be deleted around the service (the Django admin, an organization's delete).
    with pytest.raises(ProtectedError):
        Project.objects.get(pk=project.pk).delete()
    with pytest.raises(ProtectedError):
        Organization.objects.get(pk=tenants.org.pk).delete()
    assert ModelDeployment.objects.filter(project=project).count() == 2
