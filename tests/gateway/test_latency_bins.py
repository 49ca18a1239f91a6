"""The usage pages' latency histogram below 25 ms: fast calls (embeddings, short completions) read
their own p50/p95, and migration 0005 splits the old single 0–25 ms bin from the records."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from gateway import reports, rollup
from gateway.models import LATENCY_BINS, UsageDeploymentHour, UsageKeyHour, UsageRecord
from projects.keys import api_key_create
from tests.gateway.conftest import make_deployment
from tests.gateway.test_devhub_views import record

BEFORE, AFTER = ("gateway", "0004_usagerecord_served_by"), ("gateway", "0005_finer_fast_latency_bins")


def _bins(row) -> list[int]:
    return [getattr(row, b) for b in LATENCY_BINS]


@pytest.mark.django_db
def test_a_3_ms_call_reads_as_3_ms_not_as_the_middle_of_a_25_ms_bin(tenants):
    key, _ = api_key_create(user=tenants.member, organization=tenants.org, name="embed")
    deployment = make_deployment(tenants.project, "embed")
    for i in range(40):
        record(deployment, key, request_id=f"fast-{i}", latency_ms=3.0 + (i % 2) * 0.5)
    rollup.fold()

    totals, _ = reports.summary(
        reports.Scope(deployment_id=deployment.pk), reports.range_for("24h"), timezone.now()
    )

    # [2, 5) ms is the bin: the old histogram (one 0–25 ms bin) said p50 12.5, p95 23.75.
    assert 2 <= totals["p50"] <= 5 and 2 <= totals["p95"] <= 5


def _migrate(target) -> None:
    executor = MigrationExecutor(connection)
    executor.migrate([target])


@pytest.mark.django_db(transaction=True)
def test_migration_splits_the_old_fast_bin_from_the_records_and_keeps_the_slower_bins(tenants):
    """Rollups folded before 0005 had one 0–25 ms bin: after it, the rows the records still
    match are split exactly; a row whose key has gone since keeps them in 20–25 ms."""
    key, _ = api_key_create(user=tenants.member, organization=tenants.org, name="kept")
    gone, _ = api_key_create(user=tenants.member, organization=tenants.org, name="gone")
    deployment = make_deployment(tenants.project, "mig")
    hour = timezone.now().replace(minute=30, second=0, microsecond=0) - timedelta(hours=2)
    for i, ms in enumerate((0.5, 3.0, 3.5, 12.0, 22.0, 30.0, 120.0)):
        record(deployment, key, request_id=f"kept-{i}", latency_ms=ms, created_at=hour)
    record(deployment, key, request_id="kept-err", latency_ms=1.0, status_code=500, created_at=hour)
    for i in range(3):
        record(deployment, gone, request_id=f"gone-{i}", latency_ms=4.0, created_at=hour)
    rollup.fold()
    # The key's records lose their key id (as the fold saw them: ids of gone rows are 0).
    UsageRecord.objects.filter(api_key_prefix=gone.prefix).update(api_key_id=None)

    _migrate(BEFORE)
    # The rollups as the old fold wrote them: lat00 < 25, lat01 25–50, lat04 100–150 ms.
    old = {"lat00": 5, "lat01": 1, "lat04": 1}
    with connection.cursor() as cur:
        for table, where in (
            (UsageKeyHour._meta.db_table, f"api_key_id = {key.pk}"),
            (UsageDeploymentHour._meta.db_table, f"deployment_id = {deployment.pk}"),
        ):
            fast = 5 if "key" in table else 8  # the deployment's row has the gone key's 3 too
            sets = ", ".join(f"lat{i:02d} = {old.get(f'lat{i:02d}', 0)}" for i in range(1, 21))
            sets = f"lat00 = {fast}, {sets}"
            cur.execute(f"UPDATE {table} SET {sets} WHERE {where}")
        cur.execute(
            f"UPDATE {UsageKeyHour._meta.db_table} SET lat00 = 3, lat01 = 0, lat02 = 0 "
            f"WHERE api_key_id = {gone.pk}"
        )
    _migrate(AFTER)

    split = [0] * len(LATENCY_BINS)
    # [0,1) 0.5 · [2,5) 3.0 3.5 · [10,15) 12 · [20,25) 22 · [25,50) 30 · [100,150) 120
    for index, count in ((0, 1), (2, 2), (4, 1), (6, 1), (7, 1), (10, 1)):
        split[index] = count
    assert _bins(UsageKeyHour.objects.get(api_key_id=key.pk)) == split
    # Every caller's requests on the deployment: the gone key's three 4 ms calls are there too.
    split[2] += 3
    assert _bins(UsageDeploymentHour.objects.get(deployment_id=deployment.pk)) == split
    kept_gone = _bins(UsageKeyHour.objects.get(api_key_id=gone.pk))
    assert kept_gone[6] == 3 and sum(kept_gone) == 3
