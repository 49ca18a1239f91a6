"""GPU quota reservations hold under concurrency (PostgreSQL row locks)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from projects.models import GpuReservation
from projects.services import QuotaExceeded, quota_release, quota_reserve
from tests.factories import OrganizationFactory, ProjectFactory


def _run_concurrently(jobs: list) -> list:
    """Run each job in its own thread with its own DB connection, all released at once."""
    barrier = threading.Barrier(len(jobs))
    results: list = [None] * len(jobs)

    def worker(i, job):
        try:
            barrier.wait()
            results[i] = job()
        except Exception as exc:  # record refusals; the test counts them
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i, job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.mark.django_db
def test_reserve_within_quota_and_refuse_over_it():
    project = ProjectFactory(gpu_quota=4, organization=OrganizationFactory(gpu_quota=10))
    quota_reserve(project=project, holder="deployment:1", gpus=3)
    with pytest.raises(QuotaExceeded) as refused:
        quota_reserve(project=project, holder="deployment:2", gpus=2)
    assert "quota of 4 GPUs, 3 are in use" in str(refused.value)
    assert project.gpu_used() == 3


@pytest.mark.django_db
def test_growing_a_reservation_counts_only_the_difference():
    project = ProjectFactory(gpu_quota=4)
    quota_reserve(project=project, holder="deployment:1", gpus=3)
    quota_reserve(project=project, holder="deployment:1", gpus=4)
    assert project.gpu_used() == 4
    quota_reserve(project=project, holder="deployment:1", gpus=1)
    assert project.gpu_used() == 1
    quota_release(holder="deployment:1")
    assert project.gpu_used() == 0


@pytest.mark.django_db
def test_negative_reservation_is_refused():
    project = ProjectFactory(gpu_quota=4)
    with pytest.raises(Exception, match="cannot be negative"):
        quota_reserve(project=project, holder="x", gpus=-1)


@pytest.mark.django_db(transaction=True)
def test_fifty_threads_never_overshoot_the_project_quota():
    assert connection.vendor == "postgresql"
    project = ProjectFactory(gpu_quota=17, organization=OrganizationFactory(gpu_quota=1000))
    results = _run_concurrently(
        [lambda i=i: quota_reserve(project=project, holder=f"deployment:{i}", gpus=1) for i in range(50)]
    )
    granted = [r for r in results if isinstance(r, GpuReservation)]
    refused = [r for r in results if isinstance(r, QuotaExceeded)]
    assert len(granted) == 17
    assert len(refused) == 33
    assert project.gpu_used() == 17


@pytest.mark.django_db(transaction=True)
def test_fifty_threads_over_two_projects_never_overshoot_the_organization_quota():
    org = OrganizationFactory(gpu_quota=23)
    first = ProjectFactory(organization=org, gpu_quota=100)
    second = ProjectFactory(organization=org, gpu_quota=100)
    jobs = [
        (lambda i=i: quota_reserve(project=first if i % 2 else second, holder=f"deployment:{i}", gpus=2))
        for i in range(50)
    ]
    results = _run_concurrently(jobs)
    granted = [r for r in results if isinstance(r, GpuReservation)]
    assert len(granted) == 11  # 11 × 2 = 22 ≤ 23; a 12th would need 24
    assert org.gpu_used() == 22
    assert first.gpu_used() + second.gpu_used() == 22
    assert all(isinstance(r, (GpuReservation, QuotaExceeded)) for r in results)
