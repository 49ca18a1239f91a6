"""Usage reads for the pages: records in scope, time series (requests, tokens, cost, p50/p95) and totals."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db import connection
from django.db.models import Aggregate, Count, DecimalField, F, FloatField, Q, QuerySet, Sum
from django.db.models.functions import Coalesce, TruncDay, TruncHour, TruncMinute
from django.utils import timezone

from gateway.models import UsageRecord
from projects.models import APIKey, APIKeyScope, Membership


@dataclass(frozen=True)
class Range:
    key: str
    label: str
    span: timedelta
    bucket: str  # minute | hour | day


RANGES = {
    r.key: r
    for r in (
        Range("1h", "Last hour", timedelta(hours=1), "minute"),
        Range("24h", "Last 24 hours", timedelta(hours=24), "hour"),
        Range("7d", "Last 7 days", timedelta(days=7), "hour"),
        Range("30d", "Last 30 days", timedelta(days=30), "day"),
    )
}
DEFAULT_RANGE = "24h"


def range_for(key: str | None) -> Range:
    return RANGES.get(key or "", RANGES[DEFAULT_RANGE])


class Percentile(Aggregate):
    """PostgreSQL's percentile_cont; the pages fall back to Python on other databases."""

    function = "percentile_cont"
    template = "%(function)s(%(percentile)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression, percentile: float, **extra):
        super().__init__(expression, percentile=percentile, **extra)


def _truncate(bucket: str):
    return {"minute": TruncMinute, "hour": TruncHour, "day": TruncDay}[bucket]("created_at")


def _python_percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * p
    low = int(k)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (k - low)


def in_range(
    records: QuerySet[UsageRecord], rng: Range, now: datetime | None = None
) -> QuerySet[UsageRecord]:
    return records.filter(created_at__gte=(now or timezone.now()) - rng.span)


def totals(records: QuerySet[UsageRecord]) -> dict:
    row = records.aggregate(
        requests=Count("id"),
        prompt=Sum("prompt_tokens"),
        completion=Sum("completion_tokens"),
        cost=Sum("cost"),
    )
    errors = records.filter(status_code__gte=400).count()
    return {
        "requests": row["requests"] or 0,
        "prompt_tokens": row["prompt"] or 0,
        "completion_tokens": row["completion"] or 0,
        "cost": row["cost"] or Decimal(0),
        "errors": errors,
        "currency": records.values_list("currency", flat=True).first() or "USD",
        **latency(records.filter(status_code__lt=400)),
    }


def latency(records: QuerySet[UsageRecord]) -> dict:
    if connection.vendor == "postgresql":
        row = records.aggregate(
            p50=Percentile("latency_ms", 0.5), p95=Percentile("latency_ms", 0.95)
        )
        return {"p50": row["p50"], "p95": row["p95"]}
    values = list(records.values_list("latency_ms", flat=True))
    return {"p50": _python_percentile(values, 0.5), "p95": _python_percentile(values, 0.95)}


def series(records: QuerySet[UsageRecord], rng: Range) -> dict:
    """Chart data: one point per bucket (empty buckets included, so the time axis is honest)."""
    trunc = _truncate(rng.bucket)
    rows = (
        records.annotate(bucket=trunc)
        .values("bucket")
        .annotate(
            requests=Count("id"),
            prompt=Sum("prompt_tokens"),
            completion=Sum("completion_tokens"),
            cost=Sum("cost"),
        )
        .order_by("bucket")
    )
    by_bucket = {r["bucket"]: r for r in rows}
    ok = records.filter(status_code__lt=400).annotate(bucket=trunc)
    if connection.vendor == "postgresql":
        lat = {
            r["bucket"]: r
            for r in ok.values("bucket").annotate(
                p50=Percentile("latency_ms", 0.5), p95=Percentile("latency_ms", 0.95)
            )
        }
    else:
        grouped: dict = {}
        for bucket, value in ok.values_list("bucket", "latency_ms"):
            grouped.setdefault(bucket, []).append(value)
        lat = {
            b: {"p50": _python_percentile(v, 0.5), "p95": _python_percentile(v, 0.95)}
            for b, v in grouped.items()
        }
    step = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}[
        rng.bucket
    ]
    now = timezone.now()
    start = now - rng.span
    start = start.replace(second=0, microsecond=0)
    if rng.bucket in ("hour", "day"):
        start = start.replace(minute=0)
    if rng.bucket == "day":
        start = start.replace(hour=0)
    labels, requests, prompt, completion, cost, p50, p95 = [], [], [], [], [], [], []
    point = start
    while point <= now:
        row = by_bucket.get(point, {})
        lrow = lat.get(point, {})
        labels.append(
            point.strftime("%m-%d %H:%M") if rng.bucket != "day" else point.strftime("%Y-%m-%d")
        )
        requests.append(row.get("requests", 0))
        prompt.append(row.get("prompt") or 0)
        completion.append(row.get("completion") or 0)
        cost.append(float(row.get("cost") or 0))
        p50.append(round(lrow["p50"], 2) if lrow.get("p50") is not None else None)
        p95.append(round(lrow["p95"], 2) if lrow.get("p95") is not None else None)
        point += step
    return {
        "labels": labels,
        "requests": requests,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cost": cost,
        "p50": p50,
        "p95": p95,
    }


def breakdown(records: QuerySet[UsageRecord], by: str) -> list[dict]:
    """Totals per deployment or per API key, for the tables."""
    field = {"deployment": "deployment_name", "key": "api_key_prefix", "user": "user__username"}[by]
    rows = (
        records.values(field)
        .annotate(
            requests=Count("id"),
            prompt=Sum("prompt_tokens"),
            completion=Sum("completion_tokens"),
            cost=Sum("cost"),
        )
        .order_by("-requests")
    )
    return [
        {
            "name": r[field] or "—",
            "requests": r["requests"],
            "prompt_tokens": r["prompt"] or 0,
            "completion_tokens": r["completion"] or 0,
            "cost": r["cost"] or Decimal(0),
        }
        for r in rows
    ]


BREAKDOWN_SORTS = {
    "name": "name",
    "requests": "requests",
    "tokens_in": "tokens_in",
    "tokens_out": "tokens_out",
    "spend": "spend",
}


def breakdown_rows(records: QuerySet[UsageRecord], by: str) -> QuerySet:
    """Totals per deployment or per API key as a queryset (name, requests, tokens_in,
    tokens_out, spend) that the usage page sorts and pages in the database."""
    field = {"deployment": "deployment_name", "key": "api_key_prefix", "user": "user__username"}[by]
    return records.values(name=F(field)).annotate(
        requests=Count("id"),
        tokens_in=Coalesce(Sum("prompt_tokens"), 0),
        tokens_out=Coalesce(Sum("completion_tokens"), 0),
        spend=Coalesce(Sum("cost"), Decimal(0), output_field=DecimalField()),
    )


CSV_COLUMNS = [
    "created_at",
    "request_id",
    "deployment_name",
    "route",
    "status_code",
    "api_key_prefix",
    "user",
    "prompt_tokens",
    "completion_tokens",
    "latency_ms",
    "ttft_ms",
    "stream",
    "cost",
    "currency",
]


class _Line:
    """A file-like object csv.writer writes one row into; the row is handed back as text."""

    def write(self, value: str) -> str:
        return value


CSV_CHUNK = 2000


def csv_lines(records: QuerySet[UsageRecord]) -> Iterator[str]:
    """The CSV export one line at a time, read from the database in chunks of CSV_CHUNK rows:
    memory stays flat however many records the range holds (a StreamingHttpResponse sends it)."""
    writer = csv.writer(_Line())
    yield writer.writerow(CSV_COLUMNS)
    rows = (
        records.order_by("created_at", "pk")
        .values_list(
            "created_at", "request_id", "deployment_name", "route", "status_code",
            "api_key_prefix", "user__username", "prompt_tokens", "completion_tokens",
            "latency_ms", "ttft_ms", "stream", "cost", "currency",
        )
        .iterator(chunk_size=CSV_CHUNK)
    )  # fmt: skip
    for (created, request_id, name, route, status, prefix, username, prompt, completion,
         latency, ttft, stream, cost, currency) in rows:  # fmt: skip
        yield writer.writerow(
            [
                created.isoformat(), request_id, name, route, status, prefix, username or "",
                prompt, completion, f"{latency:.2f}", "" if ttft is None else f"{ttft:.2f}",
                stream, f"{cost:f}", currency,  # fixed-point: a zero cost is 0.00000000, not 0E-8
            ]
        )  # fmt: skip


def to_csv(records: QuerySet[UsageRecord]) -> str:
    return "".join(csv_lines(records))


def revision_metrics(records: QuerySet[UsageRecord], rng: Range, revisions: dict[int, int]) -> dict:
    """A deployment's Metrics tab: per revision and time bucket, from the gateway's own records —
    requests, errors (HTTP ≥ 400), latency p50/p95 and time to first token p50 of the answered
    ones, and output tokens per second of the bucket. `revisions` maps revision ids to numbers;
    records metered before revisions were recorded count as revision None ("—")."""
    trunc = _truncate(rng.bucket)
    step = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}[rng.bucket]
    ok = Q(status_code__lt=400)
    if connection.vendor == "postgresql":
        rows = list(
            records.annotate(bucket=trunc).values("bucket", "revision_id").annotate(
                requests=Count("id"), errors=Count("id", filter=Q(status_code__gte=400)),
                completion=Sum("completion_tokens"),
                p50=Percentile("latency_ms", 0.5, filter=ok), p95=Percentile("latency_ms", 0.95, filter=ok),
                ttft=Percentile("ttft_ms", 0.5, filter=ok & Q(ttft_ms__isnull=False)),
            )
        )  # fmt: skip
    else:
        grouped: dict = {}
        for bucket, rev, status, completion, lat, ttft in records.annotate(bucket=trunc).values_list(
            "bucket", "revision_id", "status_code", "completion_tokens", "latency_ms", "ttft_ms"
        ):
            g = grouped.setdefault((bucket, rev), {"requests": 0, "errors": 0, "completion": 0, "lat": [], "ttft": []})
            g["requests"] += 1
            g["completion"] += completion
            if status >= 400:
                g["errors"] += 1
            else:
                g["lat"].append(lat)
                if ttft is not None:
                    g["ttft"].append(ttft)
        rows = [
            {"bucket": b, "revision_id": rev, "requests": g["requests"], "errors": g["errors"],
             "completion": g["completion"], "p50": _python_percentile(g["lat"], 0.5),
             "p95": _python_percentile(g["lat"], 0.95), "ttft": _python_percentile(g["ttft"], 0.5)}
            for (b, rev), g in grouped.items()
        ]  # fmt: skip
    now = timezone.now()
    start = (now - rng.span).replace(second=0, microsecond=0)
    if rng.bucket in ("hour", "day"):
        start = start.replace(minute=0)
    if rng.bucket == "day":
        start = start.replace(hour=0)
    points = []
    point = start
    while point <= now:
        points.append(point)
        point += step
    index = {p: i for i, p in enumerate(points)}
    seconds = step.total_seconds()
    by_revision: dict = {}
    for row in rows:
        i = index.get(row["bucket"])
        if i is None:
            continue
        number = revisions.get(row["revision_id"])
        rev = by_revision.setdefault(number, {
            "revision": number, "requests": [0] * len(points), "errors": [0] * len(points),
            "p50": [None] * len(points), "p95": [None] * len(points), "ttft_p50": [None] * len(points),
            "tokens_per_second": [0.0] * len(points), "total_requests": 0, "total_errors": 0,
        })  # fmt: skip
        rev["requests"][i] += row["requests"]
        rev["errors"][i] += row["errors"]
        rev["total_requests"] += row["requests"]
        rev["total_errors"] += row["errors"]
        rev["tokens_per_second"][i] = round(rev["tokens_per_second"][i] + (row["completion"] or 0) / seconds, 3)
        for field, source in (("p50", "p50"), ("p95", "p95"), ("ttft_p50", "ttft")):
            if row[source] is not None:
                rev[field][i] = round(row[source], 2)
    ordered = sorted(by_revision.values(), key=lambda r: (r["revision"] is None, -(r["revision"] or 0)))
    return {
        "range": rng.key,
        "bucket": rng.bucket,
        "labels": [p.strftime("%m-%d %H:%M") if rng.bucket != "day" else p.strftime("%Y-%m-%d") for p in points],
        "starts": [p.isoformat() for p in points],
        "revisions": ordered,
    }


# ---------------------------------------------------------------------------------------------
# Monthly budgets: month-to-date spend against each budget that applies (the usage pages)
# ---------------------------------------------------------------------------------------------

BUDGET_WARN_PERCENT = 80


@dataclass(frozen=True)
class BudgetRow:
    label: str
    limit: Decimal
    spent: Decimal
    currency: str

    @property
    def percent(self) -> int:
        if self.limit <= 0:
            return 100
        return int(min(Decimal(999), self.spent * 100 / self.limit))

    @property
    def level(self) -> str:
        """ok | warn (≥ 80 %) | bad (used up: the gateway refuses)."""
        if self.spent >= self.limit:
            return "bad"
        return "warn" if self.percent >= BUDGET_WARN_PERCENT else "ok"


def month_start(now: datetime | None = None) -> datetime:
    """The budget month's first instant (UTC), as the gateway counts it (gateway.app._month)."""
    now = (now or timezone.now()).astimezone(UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def budget_rows(organization, user, keys, members=()) -> list[BudgetRow]:
    """The budgets of `organization`, of `user` in it, of `members` (memberships), and of `keys`
    that have one, each with this month's spend from the usage records."""
    currency = organization.budget_currency
    month = UsageRecord.objects.filter(
        organization=organization, currency=currency, created_at__gte=month_start()
    )

    def spent(**filters) -> Decimal:
        return month.filter(**filters).aggregate(s=Coalesce(Sum("cost"), Decimal(0)))["s"]

    rows = []
    if organization.monthly_budget is not None:
        rows.append(BudgetRow(f"Organization {organization.name}", organization.monthly_budget, spent(), currency))
    for membership in members:
        if membership.monthly_budget is not None:
            who = "You" if membership.user_id == user.pk else f"Member {membership.user.get_username()}"
            rows.append(BudgetRow(who, membership.monthly_budget, spent(user_id=membership.user_id), currency))
    for key in keys:
        if key.monthly_budget is not None:
            rows.append(BudgetRow(f"Key {key.name} ({key.prefix}…)", key.monthly_budget, spent(api_key_id=key.pk), currency))
    return rows


def budgets_overview(user, organization, *, admin: bool) -> dict:
    """Every budget `user` may see in `organization` with this month's spend (the Budgets page and
    GET /api/v1/budgets/): the organization's; every member's and every live gateway key's for
    admins, else their own membership and keys. Three queries for the spend, whatever the size."""
    currency = organization.budget_currency
    month = UsageRecord.objects.filter(organization=organization, currency=currency, created_at__gte=month_start())
    total = month.aggregate(s=Coalesce(Sum("cost"), Decimal(0)))["s"]
    members = Membership.objects.filter(organization=organization).select_related("user").order_by("user__username")
    keys = APIKey.objects.filter(organization=organization, scope=APIKeyScope.GATEWAY, revoked_at__isnull=True)
    if not admin:
        members = members.filter(user=user)
        keys = keys.filter(user=user)
    keys = keys.select_related("user").order_by("user__username", "name", "pk")
    by_user = dict(month.filter(user_id__isnull=False).values_list("user_id").annotate(s=Sum("cost")))
    by_key = dict(month.filter(api_key_id__isnull=False).values_list("api_key_id").annotate(s=Sum("cost")))

    def row(limit, spent) -> dict:
        b = BudgetRow("", limit, spent, currency) if limit is not None else None
        return {"monthly_budget": limit, "spent": spent, "percent": b.percent if b else None,
                "budget_state": b.level if b else "none"}  # fmt: skip

    return {
        "organization": {"id": organization.pk, "name": organization.name, "budget_currency": currency,
                         **row(organization.monthly_budget, total)},
        "members": [
            {"id": m.pk, "user": m.user_id, "username": m.user.get_username(), "role": m.role,
             **row(m.monthly_budget, by_user.get(m.user_id, Decimal(0)))}
            for m in members
        ],
        "keys": [
            {"id": k.pk, "name": k.name, "prefix": k.prefix, "owner": k.user.get_username(), "owner_id": k.user_id,
             **row(k.monthly_budget, by_key.get(k.pk, Decimal(0)))}
            for k in keys
        ],
    }  # fmt: skip
