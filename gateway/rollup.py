"""The usage rollups: UsageRecords folded, by id, into hourly sums — UsageHour per organization,
project, deployment, key and user, and coarser ones that the usage pages read (UsageKeyHour and
UsageDeploymentHour with latency histograms, UsageNameKeyHour and UsageNameHour).

A fold reads only the UsageRecord table, so it does not care how records are written (the
Redis list flush, a stream consumer, a test). It is exact and runs safely in two workers at once:

- a *watermark*: the highest id below which every record is committed. Ids are handed out when
  a row is inserted, not when it commits, so a slow writer's id 105 may become visible after
  106 was folded. On PostgreSQL the fold briefly takes `LOCK TABLE … IN SHARE MODE`, which waits
  for the inserting transactions in flight (and holds new ones back for the moment it takes to
  read max(id)); every id up to that max is then committed for good. When the table stays
  busy past WATERMARK_LOCK_TIMEOUT the fold gives up and the next one tries again.
- a *claim*: the cursor row moves from its last_id to the next batch's end by compare-and-set,
  in the transaction that adds the batch's sums. A second fold waits on the row lock, finds
  last_id moved, and stops; a fold that fails rolls its claim back with its sums.

Readers (gateway/reports.py) add the records above the cursor (the tail not folded yet) to the
rollups, in the same statement as the cursor is read, so a page never counts a record twice.
"""

from __future__ import annotations

import logging
from datetime import UTC
from decimal import Decimal
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import OperationalError, connection, transaction
from django.db.models import Count, DecimalField, F, Max, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, TruncHour
from django.utils import timezone

from gateway.models import (
    LATENCY_BINS,
    LATENCY_BOUNDS_MS,
    SUMS,
    UsageDeploymentHour,
    UsageHour,
    UsageKeyHour,
    UsageNameHour,
    UsageNameKeyHour,
    UsageRecord,
    UsageRollupCursor,
)

log = logging.getLogger(__name__)

CURSOR = "usage"
FOLD_BATCH = 20_000  # record ids per transaction
# Below PostgreSQL's deadlock_timeout (1 s by default) on purpose: a lock request that waits
# that long on autovacuum cancels it, and a fold every few seconds would then starve the records
# table's vacuum. Giving up first, the fold just tries again next time (the pages read the tail).
WATERMARK_LOCK_TIMEOUT = "500ms"


def latency_bins(ok: Q) -> dict[str, Count]:
    """Count(...) per histogram bin, over the records matching `ok` (the successful ones)."""
    out = {}
    lower = None
    for name, upper in zip(LATENCY_BINS, (*LATENCY_BOUNDS_MS, None), strict=True):
        condition = ok
        if lower is not None:
            condition &= Q(latency_ms__gte=lower)
        if upper is not None:
            condition &= Q(latency_ms__lt=upper)
        out[name] = Count("pk", filter=condition)
        lower = upper
    return out


def record_sums(*, latency: bool = True) -> dict[str, Any]:
    """A group of UsageRecords as a rollup row's sums (annotation names differ from the
    record's own fields, which Django would refuse), in the order of the rollup's SUMS."""
    sums = {
        "n_requests": Count("pk"),
        "n_errors": Count("pk", filter=Q(status_code__gte=400)),
        "n_prompt": Coalesce(Sum("prompt_tokens"), 0),
        "n_completion": Coalesce(Sum("completion_tokens"), 0),
        "n_cost": Coalesce(Sum("cost"), Value(Decimal(0)), output_field=DecimalField()),
    }
    if latency:
        sums.update({f"n_{b}": c for b, c in latency_bins(Q(status_code__lt=400)).items()})
    return sums


# Each rollup's group, as expressions over a UsageRecord (ids of gone rows are 0, as stored).
_GROUPS = {
    UsageHour: {
        "g_hour": TruncHour("created_at", tzinfo=UTC),
        "g_org": F("organization_id"),
        "g_project": Coalesce(F("deployment__project_id"), 0),
        "g_deployment": Coalesce(F("deployment_id"), 0),
        "g_name": F("deployment_name"),
        "g_key": Coalesce(F("api_key_id"), 0),
        "g_prefix": F("api_key_prefix"),
        "g_user": Coalesce(F("user_id"), 0),
        "g_currency": F("currency"),
    },
    UsageKeyHour: {
        "g_hour": TruncHour("created_at", tzinfo=UTC),
        "g_org": F("organization_id"),
        "g_key": Coalesce(F("api_key_id"), 0),
        "g_prefix": F("api_key_prefix"),
        "g_currency": F("currency"),
    },
    UsageNameKeyHour: {
        "g_hour": TruncHour("created_at", tzinfo=UTC),
        "g_org": F("organization_id"),
        "g_name": F("deployment_name"),
        "g_key": Coalesce(F("api_key_id"), 0),
        "g_currency": F("currency"),
    },
    UsageNameHour: {
        "g_hour": TruncHour("created_at", tzinfo=UTC),
        "g_org": F("organization_id"),
        "g_name": F("deployment_name"),
        "g_currency": F("currency"),
    },
    UsageDeploymentHour: {
        "g_hour": TruncHour("created_at", tzinfo=UTC),
        "g_deployment": F("deployment_id"),
        "g_currency": F("currency"),
    },
}


def _add_into(model: type, records: QuerySet[UsageRecord]) -> None:
    """One statement: the records grouped as the rollup groups them, INSERTed, or added to the
    rows already there (ON CONFLICT on the group's unique constraint)."""
    groups = _GROUPS[model]
    sums = record_sums(latency=len(model.SUMS) > len(SUMS))
    if model is UsageDeploymentHour:
        records = records.filter(deployment__isnull=False)
    grouped = records.values(**groups).annotate(**sums).order_by()
    # The SELECT lists the annotations in the order they were made: the group, then the sums.
    assert list(grouped.query.annotation_select) == [*groups, *sums]
    try:
        select, params = grouped.query.sql_with_params()
    except EmptyResultSet:
        return
    q = connection.ops.quote_name
    table = q(model._meta.db_table)
    dims = [q(model._meta.get_field(d).column) for d in model.DIMENSIONS]
    columns = [q(model._meta.get_field(c).column) for c in model.SUMS]
    add = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in columns)
    # "WHERE true": SQLite would otherwise read ON CONFLICT as part of the SELECT's join.
    sql = (f"INSERT INTO {table} ({', '.join([*dims, *columns])}) SELECT * FROM ({select}) g "
           f"WHERE true ON CONFLICT ({', '.join(dims)}) DO UPDATE SET {add}")  # fmt: skip
    with connection.cursor() as cur:
        cur.execute(sql, params)


def watermark() -> int | None:
    """The highest record id below which every record is committed; None when the records
    table stayed busy past WATERMARK_LOCK_TIMEOUT (the next fold tries again)."""
    try:
        with transaction.atomic():
            if connection.vendor == "postgresql":
                table = connection.ops.quote_name(UsageRecord._meta.db_table)
                with connection.cursor() as cur:
                    cur.execute(f"SET LOCAL lock_timeout = '{WATERMARK_LOCK_TIMEOUT}'")
                    cur.execute(f"LOCK TABLE {table} IN SHARE MODE")
            # SQLite has one writer at a time: whatever it shows is committed.
            return UsageRecord.objects.aggregate(m=Max("pk"))["m"] or 0
    except OperationalError as err:
        log.warning("usage rollup: records table busy, folding later (%s)", err)
        return None


def cursor_position() -> int:
    row = UsageRollupCursor.objects.filter(name=CURSOR).values_list("last_id", flat=True).first()
    return row or 0


def fold(*, batch: int = FOLD_BATCH, max_batches: int = 50) -> int:
    """Fold the records committed since the last fold into the rollups; returns how many.

    Idempotent and race-safe: each batch claims its id range on the cursor row (compare-and-set)
    in the same transaction that adds its sums, so a record is added exactly once whichever
    worker gets there first."""
    UsageRollupCursor.objects.get_or_create(name=CURSOR)
    high = watermark()
    if high is None:
        return 0
    folded = 0
    for _ in range(max_batches):
        start = cursor_position()
        if start >= high:
            break
        end = min(high, start + batch)
        with transaction.atomic():
            claimed = UsageRollupCursor.objects.filter(name=CURSOR, last_id=start).update(
                last_id=end, folded_at=timezone.now()
            )
            if not claimed:
                break  # another fold moved the cursor; it goes on from there
            batch_records = UsageRecord.objects.filter(pk__gt=start, pk__lte=end)
            for model in _GROUPS:
                _add_into(model, batch_records)
            folded += batch_records.count()
    return folded
