"""The hourly usage rollups: folded from the records exactly once (also by two workers at once,
also when a slow writer commits a lower id late), and the usage pages' totals equal the records'
sums whether the records are folded yet or not."""

from __future__ import annotations

import random
import threading
from datetime import UTC, timedelta
from decimal import Decimal

import pytest
from django.db import connection, connections
from django.db.models import Count, Q, Sum
from django.urls import reverse
from django.utils import timezone

from gateway import reports, rollup
from gateway.models import (
    UsageDeploymentHour,
    UsageHour,
    UsageKeyHour,
    UsageNameHour,
    UsageNameKeyHour,
    UsageRecord,
)
from projects.keys import api_key_create
from tests.conftest import login
from tests.gateway.conftest import make_deployment
from tests.gateway.test_devhub_views import record


def _records_sums(records=None) -> dict:
    row = (records if records is not None else UsageRecord.objects.all()).aggregate(
        requests=Count("pk"),
        errors=Count("pk", filter=Q(status_code__gte=400)),
        prompt=Sum("prompt_tokens"),
        completion=Sum("completion_tokens"),
        cost=Sum("cost"),
    )
    return {k: v or 0 for k, v in row.items()}


def _rollup_sums(model) -> dict:
    row = model.objects.aggregate(
        requests=Sum("requests"),
        errors=Sum("errors"),
        prompt=Sum("prompt_tokens"),
        completion=Sum("completion_tokens"),
        cost=Sum("cost"),
    )
    return {k: v or 0 for k, v in row.items()}


def _seed(tenants, count: int, *, seed: int = 3) -> None:
    rng = random.Random(seed)
    keys = [
        api_key_create(user=tenants.member, organization=tenants.org, name=f"k{i}")[0]
        for i in range(3)
    ]
    deployments = [make_deployment(tenants.project, f"r{seed}-{i}") for i in range(4)]
    now = timezone.now()
    for i in range(count):
        record(
            rng.choice(deployments), rng.choice(keys), request_id=f"seed-{seed}-{i}",
            status_code=rng.choice((200, 200, 200, 429, 500)),
            prompt_tokens=rng.randint(1, 900), completion_tokens=rng.randint(0, 400),
            latency_ms=rng.uniform(5, 4000), cost=Decimal(rng.randint(1, 10_000)) / Decimal(10**8),
            created_at=now - timedelta(minutes=rng.randint(0, 60 * 40)),
        )  # fmt: skip


@pytest.mark.django_db
def test_folded_rollups_add_up_exactly_to_the_records_and_folding_again_adds_nothing(tenants):
    _seed(tenants, 300)

    assert rollup.fold(batch=50) == 300

    expected = _records_sums()
    assert _rollup_sums(UsageHour) == expected
    assert _rollup_sums(UsageKeyHour) == expected
    assert _rollup_sums(UsageDeploymentHour) == expected  # every record here has a deployment
    assert _rollup_sums(UsageNameKeyHour) == expected == _rollup_sums(UsageNameHour)
    assert rollup.fold() == 0 and _rollup_sums(UsageHour) == expected
    # One row per hour and group: the hours are the records' own.
    hours = {
        r.created_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        for r in UsageRecord.objects.all()
    }
    assert set(UsageHour.objects.values_list("hour", flat=True)) == hours


@pytest.mark.django_db
def test_page_totals_equal_the_records_sums_before_and_after_folding(tenants):
    _seed(tenants, 120)
    rollup.fold()
    _seed(tenants, 80, seed=4)  # the tail: not folded yet
    now = timezone.now()
    for key in ("24h", "7d", "30d", "1h"):
        rng = reports.range_for(key)
        scope = reports.Scope(organization_id=tenants.org.pk)
        totals, series = reports.summary(scope, rng, now)
        expected = _records_sums(UsageRecord.objects.filter(created_at__gte=rng.start(now)))
        got = {"requests": totals["requests"], "errors": totals["errors"], "prompt": totals["prompt_tokens"],
               "completion": totals["completion_tokens"], "cost": totals["cost"]}  # fmt: skip
        assert got == expected, key
        assert sum(series["requests"]) == expected["requests"]
    rollup.fold()
    totals, _ = reports.summary(
        reports.Scope(organization_id=tenants.org.pk), reports.range_for("30d"), now
    )
    assert totals["requests"] == 200 and totals["cost"] == _records_sums()["cost"]


@pytest.mark.django_db
def test_breakdowns_add_rollup_and_tail_per_deployment_and_key(tenants):
    key, _ = api_key_create(user=tenants.member, organization=tenants.org, name="k")
    a, b = make_deployment(tenants.project, "alpha"), make_deployment(tenants.project, "beta")
    for _ in range(3):
        record(a, key, prompt_tokens=5)
    record(b, key)
    rollup.fold()
    record(a, key, prompt_tokens=7)  # tail
    fetch = reports.breakdown_fetch(reports.Scope(organization_id=tenants.org.pk),
                                    reports.range_for("24h"), timezone.now(), "deployment")  # fmt: skip
    rows, total = fetch(["-requests", "-name"], 0, 10)
    assert total == 2
    assert [(r["name"], r["requests"], r["tokens_in"]) for r in rows] == [
        ("alpha", 4, 22),
        ("beta", 1, 10),
    ]
    other, _ = api_key_create(user=tenants.owner, organization=tenants.org, name="other")
    record(b, other)
    record(b, other)
    rollup.fold()
    mine = reports.Scope(organization_id=tenants.org.pk, api_key_ids=(key.pk,))
    rows, _ = reports.breakdown_fetch(mine, reports.range_for("24h"), timezone.now(), "deployment")(
        ["-requests", "-name"], 0, 10
    )
    assert [(r["name"], r["requests"]) for r in rows] == [("alpha", 4), ("beta", 1)]
    html = login(tenants.member).get(reverse("devhub:organization_usage")).content.decode()
    assert 'id="stat-requests">7<' in html


@pytest.mark.django_db
def test_latency_percentiles_come_from_the_histogram_within_a_bin(tenants):
    key, _ = api_key_create(user=tenants.member, organization=tenants.org, name="k")
    d = make_deployment(tenants.project, "lat")
    for ms in range(100, 200):  # 100..199 ms: p50 ≈ 150
        record(d, key, latency_ms=float(ms))
    record(d, key, latency_ms=5000.0, status_code=500)  # errors are not in the latency
    rollup.fold()
    totals, _ = reports.summary(
        reports.Scope(deployment_id=d.pk), reports.range_for("24h"), timezone.now()
    )
    assert totals["errors"] == 1 and 140 <= totals["p50"] <= 160 and 190 <= totals["p95"] <= 200


@pytest.mark.django_db(transaction=True)
def test_two_folds_at_once_add_every_record_exactly_once(tenants):
    _seed(tenants, 400)
    barrier = threading.Barrier(2)
    results = []

    def worker():
        try:
            barrier.wait()
            results.append(rollup.fold(batch=25))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rollup.fold()  # whatever a worker left when it saw the other one claim first

    assert _rollup_sums(UsageHour) == _records_sums() == _rollup_sums(UsageKeyHour)
    assert _rollup_sums(UsageDeploymentHour) == _records_sums() == _rollup_sums(UsageNameHour)
    assert _rollup_sums(UsageNameKeyHour) == _records_sums()


@pytest.mark.django_db(transaction=True)
def test_a_record_committed_late_with_a_lower_id_is_not_skipped(tenants):
    key, _ = api_key_create(user=tenants.member, organization=tenants.org, name="k")
    d = make_deployment(tenants.project, "late")
    record(d, key, request_id="early")
    slow_inserted = threading.Event()
    release = threading.Event()

    def slow_writer():
        # Takes its id first, commits last (a usage flush that stalls inside its transaction).
        from django.db import transaction

        try:
            with transaction.atomic():
                record(d, key, request_id="slow", prompt_tokens=1000)
                slow_inserted.set()
                release.wait(10)
        finally:
            connections.close_all()

    writer = threading.Thread(target=slow_writer)
    writer.start()
    slow_inserted.wait(10)
    record(d, key, request_id="fast")  # a higher id, committed first
    folding = threading.Thread(target=lambda: (rollup.fold(), connections.close_all()))
    folding.start()  # waits on the records table until the slow writer commits
    folding.join(0.5)
    release.set()
    writer.join()
    folding.join()
    rollup.fold()

    assert connection.vendor == "postgresql"
    assert _rollup_sums(UsageHour) == _records_sums()
    assert _records_sums()["requests"] == 3
