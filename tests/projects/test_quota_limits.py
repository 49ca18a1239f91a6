"""Quotas beyond GPUs (CPU cores, memory, active deployments) on organizations and projects, held
in the same row-locked ledger as GPUs: race-free, refused with the numbers, set by admins."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.db.models import Sum
from django.urls import reverse

from deployments import services as deployment_services
from deployments.models import ComputePool, PoolKind
from projects.models import GpuReservation
from projects.selectors import quota_limits
from projects.services import QuotaExceeded, quota_limits_set, quota_reserve
from tests.factories import OrganizationFactory, ProjectFactory, rest_api_client
from tests.projects.test_quota import _run_concurrently

GIB = 1024**3


@pytest.mark.django_db
def test_cpu_memory_and_deployment_quotas_refuse_with_the_numbers():
    org = OrganizationFactory(gpu_quota=100, memory_quota_gib=64)
    project = ProjectFactory(organization=org, gpu_quota=100, cpu_quota=8, deployment_quota=2)
    quota_reserve(project=project, holder="a", gpus=0, cpu_millicores=6000, memory_bytes=40 * GIB, deployments=1)
    with pytest.raises(QuotaExceeded, match=r"has a quota of 8 CPU cores, 6 are in use: 4 more do not fit"):
        quota_reserve(project=project, holder="b", gpus=0, cpu_millicores=4000, deployments=1)
    with pytest.raises(QuotaExceeded, match=r"Organization “.*” has a quota of 64 GiB of memory, 40 are in use: 32 more"):
        quota_reserve(project=project, holder="b", gpus=0, cpu_millicores=2000, memory_bytes=32 * GIB, deployments=1)
    quota_reserve(project=project, holder="b", gpus=0, cpu_millicores=2000, memory_bytes=8 * GIB, deployments=1)
    with pytest.raises(QuotaExceeded, match=r"has a quota of 2 active deployments, 2 are in use: 1 more does not fit"):
        quota_reserve(project=project, holder="c", gpus=0, deployments=1)
    # GPUs only (what the autoscaler asks): the other holdings stay as they were.
    quota_reserve(project=project, holder="a", gpus=3)
    row = GpuReservation.objects.get(holder="a")
    assert (row.gpus, row.cpu_millicores, row.deployments) == (3, 6000, 1)
    # Everything released: the row goes.
    quota_reserve(project=project, holder="a", gpus=0, cpu_millicores=0, memory_bytes=0, deployments=0)
    assert not GpuReservation.objects.filter(holder="a").exists()
    assert {limit["name"]: limit["used"] for limit in quota_limits(project)} == {
        "cpu_quota": 2, "memory_quota_gib": 8, "deployment_quota": 1}  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_fifty_threads_never_overshoot_the_cpu_quota():
    assert connection.vendor == "postgresql"
    project = ProjectFactory(gpu_quota=0, cpu_quota=13, organization=OrganizationFactory(gpu_quota=0))
    results = _run_concurrently([
        lambda i=i: quota_reserve(project=project, holder=f"d:{i}", gpus=0, cpu_millicores=1500, deployments=1)
        for i in range(50)
    ])  # fmt: skip
    granted = [r for r in results if isinstance(r, GpuReservation)]
    assert len(granted) == 8  # 8 × 1.5 = 12 ≤ 13; a 9th would need 13.5
    assert all(isinstance(r, (GpuReservation, QuotaExceeded)) for r in results)
    assert GpuReservation.objects.aggregate(t=Sum("cpu_millicores"))["t"] == 12000


@pytest.mark.django_db(transaction=True)
def test_fifty_threads_over_two_projects_never_overshoot_the_organizations_deployment_quota():
    org = OrganizationFactory(gpu_quota=0, deployment_quota=7)
    first, second = ProjectFactory(organization=org, gpu_quota=0), ProjectFactory(organization=org, gpu_quota=0)
    results = _run_concurrently([
        lambda i=i: quota_reserve(project=first if i % 2 else second, holder=f"d:{i}", gpus=0, deployments=1)
        for i in range(50)
    ])  # fmt: skip
    assert len([r for r in results if isinstance(r, GpuReservation)]) == 7
    assert GpuReservation.objects.aggregate(t=Sum("deployments"))["t"] == 7


@pytest.fixture
def model(tenants):
    from catalog.models import CatalogModel

    return CatalogModel.objects.create(organization=tenants.org, name="Qwen", source="huggingface",
                                       repo_id="Qwen/Qwen2.5-0.5B-Instruct", revision="a" * 40)  # fmt: skip


@pytest.fixture
def bundle(tenants):
    from catalog.models import ProfileBundle

    return ProfileBundle.objects.create(organization=tenants.org, name="vllm-test", engine="vllm",
                                        image="vllm/vllm-openai:v0.6.3", labels={ProfileBundle.ENGINE_LABEL: "vllm"})  # fmt: skip


@pytest.fixture
def offline_pool(tenants) -> ComputePool:
    return ComputePool.objects.create(organization=tenants.org, name="offline", kind=PoolKind.SANDBOX,
                                      api_url="http://127.0.0.1:9", engine_label="vllm")  # fmt: skip


@pytest.mark.django_db
def test_deployments_hold_cpu_memory_and_a_slot_and_give_them_back(tenants, model, bundle, offline_pool):
    quota_limits_set(user=tenants.owner, owner=tenants.project, cpu_quota=8, memory_quota_gib=None, deployment_quota=1)

    def deploy(name, **resources):
        return deployment_services.deployment_create(
            user=tenants.owner, project=tenants.project, model=model, pool=offline_pool, name=name, bundle=bundle,
            spec={"served_model_name": name, "replicas": {"min": 1, "max": 2},
                  "resources": {"cpu": "2", "memory": "8Gi", "gpus": 1, **resources}},
        )  # fmt: skip

    with pytest.raises(ValidationError) as exc:
        deploy("big", cpu="5")  # 2 replicas × 5 cores > 8
    assert "quota of 8 CPU cores, 0 are in use: 10 more do not fit" in " ".join(exc.value.message_dict["resources.cpu"])
    first = deploy("first")
    row = GpuReservation.objects.get(holder=first.gpu_holder())
    assert (row.gpus, row.cpu_millicores, row.memory_bytes, row.deployments) == (2, 4000, 16 * GIB, 1)
    with pytest.raises(ValidationError) as exc:
        deploy("second")
    assert "quota of 1 active deployment, 1 is in use" in " ".join(exc.value.message_dict["quota"])
    deployment_services.deployment_deactivate(user=tenants.owner, deployment=first)
    assert not GpuReservation.objects.exists()
    second = deploy("second")
    with pytest.raises(ValidationError):  # the slot is taken again
        deployment_services.deployment_activate(user=tenants.owner, deployment=first)
    assert GpuReservation.objects.get().holder == second.gpu_holder()


@pytest.mark.django_db
def test_only_admins_set_limits_and_never_below_what_is_held(tenants):
    with pytest.raises(PermissionDenied):
        quota_limits_set(user=tenants.member, owner=tenants.project, cpu_quota=4, memory_quota_gib=None, deployment_quota=None)
    quota_reserve(project=tenants.project, holder="x", gpus=0, cpu_millicores=3000, deployments=1)
    with pytest.raises(ValidationError) as exc:
        quota_limits_set(user=tenants.owner, owner=tenants.org, cpu_quota=2, memory_quota_gib=None, deployment_quota=None)
    assert "3 CPU cores are held now" in " ".join(exc.value.message_dict["cpu_quota"])
    with pytest.raises(ValidationError):
        quota_limits_set(user=tenants.owner, owner=tenants.org, cpu_quota=-1, memory_quota_gib=None, deployment_quota=None)


@pytest.mark.django_db
def test_rest_and_the_quotas_page(tenants, owner_client):
    client = rest_api_client(tenants.owner)
    url = f"/api/v1/projects/{tenants.project.pk}/limits/"
    response = client.post(url, {"cpu_quota": 16, "deployment_quota": 3}, format="json")
    assert response.status_code == 200, response.json()
    limits = {limit["name"]: limit["quota"] for limit in response.json()["limits"]}
    assert limits == {"cpu_quota": 16, "memory_quota_gib": None, "deployment_quota": 3}
    many = client.post(url, {"cpu_quota": "many"}, format="json")
    assert many.status_code == 400
    assert many.json() == {"cpu_quota": ["Give a whole number from 0 to 1,000,000,000, or nothing for no limit."]}
    # An empty value is no limit, as the page's empty box (QA: it was "A valid integer is required.").
    response = client.post(url, {"cpu_quota": "", "deployment_quota": " "}, format="json")
    assert response.status_code == 200, response.json()
    assert {limit["name"]: limit["quota"] for limit in response.json()["limits"]}["cpu_quota"] is None
    client.post(url, {"cpu_quota": 16, "deployment_quota": 3}, format="json")
    assert rest_api_client(tenants.outsider).get(url).status_code == 404
    assert rest_api_client(tenants.member).post(url, {"cpu_quota": 1}, format="json").status_code == 403
    org_url = f"/api/v1/organizations/{tenants.org.pk}/limits/"
    assert client.post(org_url, {"memory_quota_gib": 512}, format="json").json()["limits"][1]["quota"] == 512

    page = owner_client.get(reverse("sharing:quotas")).content.decode()
    assert 'id="quota-limits"' in page and f'id="quota-limits-{tenants.project.pk}"' in page
    owner_client.post(reverse("sharing:quota_limits_project", args=[tenants.project.pk]),
                      {"cpu_quota": "", "memory_quota_gib": "64", "deployment_quota": "5"})  # fmt: skip
    tenants.project.refresh_from_db()
    assert (tenants.project.cpu_quota, tenants.project.memory_quota_gib, tenants.project.deployment_quota) == (None, 64, 5)
    owner_client.post(reverse("sharing:quota_limits_project", args=[tenants.project.pk]), {"cpu_quota": "lots"})
    tenants.project.refresh_from_db()
    assert tenants.project.memory_quota_gib == 64  # refused whole: nothing changed
