"""Project namespaces can't collide: stored, unique, chosen once at creation, never changed."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django.db import IntegrityError, transaction

from catalog.models import CatalogModel, ProfileBundle
from deployments.models import ComputePool, DeploymentState, PoolKind
from deployments.renderers.common import LABEL_DEPLOYMENT_ID
from deployments.services import deployment_create
from projects.models import Project, Role
from projects.services import project_create, project_update
from tests.deployments.conftest import cluster, state_of, wait_for  # noqa: F401 - fixture
from tests.factories import MembershipFactory, OrganizationFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


def tenant(org_slug: str, project_slug: str):
    org = OrganizationFactory(name=f"Org {org_slug}", slug=org_slug)
    admin = MembershipFactory(organization=org, role=Role.ADMIN, user=UserFactory(username=f"admin-{org_slug}")).user
    project = project_create(user=admin, organization=org, name=f"P {project_slug}", slug=project_slug)
    return org, admin, project


def test_colliding_slugs_get_different_namespaces_and_the_first_keeps_the_readable_one():
    _, _, first = tenant("demo", "x-y")
    org, _, second = tenant("demo-x", "y")
    assert first.namespace() == "demo-x-y"
    assert second.namespace() == f"md-{org.pk}-y"
    for project in (first, second):
        project.full_clean()  # a DNS-1123 label of at most 63 characters


def test_namespace_is_never_changed_and_is_unique_in_the_database():
    _, admin, project = tenant("acme", "research")
    project_update(user=admin, project=project, name="Renamed", description="", gpu_quota=2)
    project.refresh_from_db()
    assert project.namespace() == "acme-research"
    other_org, _, other = tenant("globex", "web")
    with pytest.raises(IntegrityError), transaction.atomic():
        Project.objects.filter(pk=other.pk).update(kube_namespace="acme-research")
    with pytest.raises(IntegrityError), transaction.atomic():
        Project.objects.create(organization=other_org, name="Bypass", slug="bypass")  # no namespace chosen


def test_longest_slugs_and_kubernetes_reserved_names_still_give_valid_namespaces():
    _, _, long = tenant("o" * 30, "p" * 30)
    assert long.namespace() == "o" * 30 + "-" + "p" * 30 and len(long.namespace()) <= 63
    org, _, system = tenant("kube", "system")
    assert system.namespace() == f"md-{org.pk}-system"  # never Kubernetes' own kube-system


def test_migration_keeps_existing_namespaces_and_splits_the_ones_that_collided():
    migration = importlib.import_module("projects.migrations.0002_project_namespace_and_api_key_revocation")
    _, _, first = tenant("demo", "x-y")
    org, _, second = tenant("demo-x", "y")
    kept, _, _ = tenant("acme", "research")
    migration.copy_current_namespaces(apps, None)
    namespaces = dict(Project.objects.values_list("slug", "kube_namespace"))
    assert namespaces["x-y"] == "demo-x-y"  # what Project.namespace() computed before
    assert namespaces["research"] == "acme-research"
    assert namespaces["y"] == f"md-{org.pk}-y"


def _deploy(org, admin, project, cluster_url: str):
    pool = ComputePool.objects.create(
        organization=org, name="sandbox", kind=PoolKind.SANDBOX, api_url=cluster_url, engine_label="vllm"
    )
    bundle = ProfileBundle.objects.create(
        organization=org, name="vllm-test", engine="vllm", image="vllm/vllm-openai:v0.6.3",
        labels={ProfileBundle.ENGINE_LABEL: "vllm"},
    )  # fmt: skip
    model = CatalogModel.objects.create(
        organization=org, name="Qwen2.5 0.5B Instruct", source="huggingface",
        repo_id="Qwen/Qwen2.5-0.5B-Instruct", revision="a8b602d9dafd3a75d382e62757d83d89fca3be54",
        task="text-generation",
    )  # fmt: skip
    return deployment_create(
        user=admin, project=project, model=model, pool=pool, bundle=bundle, name="chat",
        spec={"resources": {"cpu": "2", "memory": "8Gi", "gpus": 1}, "served_model_name": "chat"},
    )  # fmt: skip


def test_two_tenants_with_colliding_slugs_deploy_the_same_name_side_by_side(cluster):  # noqa: F811
    first_org, first_admin, first = tenant("demo", "x-y")
    second_org, second_admin, second = tenant("demo-x", "y")
    one = _deploy(first_org, first_admin, first, cluster.url)
    two = _deploy(second_org, second_admin, second, cluster.url)
    wait_for(lambda: state_of(one) == DeploymentState.RUNNING and state_of(two) == DeploymentState.RUNNING)
    emulator = cluster.emulator
    for project in (first, second):
        assert emulator.get_object("Service", project.namespace(), "chat") is not None
    owners = {
        emulator.get_object("Service", p.namespace(), "chat")["metadata"]["labels"].get(LABEL_DEPLOYMENT_ID)
        for p in (first, second)
    }
    assert owners == {str(one.pk), str(two.pk)}
