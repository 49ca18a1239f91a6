"""Usage reads for the pages: totals, time series (requests, tokens, cost, p50/p95) and
breakdowns from the hourly rollups (gateway/rollup.py) plus the records not folded yet; the
request list and the CSV from the records themselves."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connection
from django.db.models import (
    Aggregate,
    Count,
    DecimalField,
    ExpressionWrapper,
    F,
    FloatField,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce, TruncDay, TruncHour, TruncMinute
from django.utils import timezone

from gateway.models import (
    LATENCY_BINS,
    LATENCY_BOUNDS_MS,
    UsageDeploymentHour,
    UsageHour,
    UsageKeyHour,
    UsageNameHour,
    UsageNameKeyHour,
    UsageRecord,
    UsageRollupCursor,
    status_words,
)
from gateway.rollup import CURSOR, record_sums
from projects.keys import playground_keys_q
from projects.models import APIKey, APIKeyScope, Membership, Organization


@dataclass(frozen=True)
class Range:
    key: str
    label: str
    span: timedelta
    bucket: str  # minute | hour | day

    def start(self, now: datetime) -> datetime:
        """The first bucket's start: the range begins on a bucket boundary (UTC), so the
        totals are exactly the sum of the chart's buckets and of the rollup's hours."""
        start = (now - self.span).astimezone(UTC).replace(second=0, microsecond=0)
        if self.bucket in ("hour", "day"):
            start = start.replace(minute=0)
        if self.bucket == "day":
            start = start.replace(hour=0)
        return start


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
STEPS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}


def range_for(key: str | None) -> Range:
    return RANGES.get(key or "", RANGES[DEFAULT_RANGE])


@dataclass(frozen=True)
class Scope:
    """Whose usage a page shows: an organization's (optionally only some of its keys), or one
    deployment's (every caller's)."""

    organization_id: int | None = None
    api_key_ids: tuple[int, ...] | None = None
    deployment_id: int | None = None

    def records(self) -> QuerySet[UsageRecord]:
        qs = UsageRecord.objects.all()
        if self.organization_id is not None:
            qs = qs.filter(organization_id=self.organization_id)
        if self.api_key_ids is not None:
            qs = qs.filter(api_key_id__in=self.api_key_ids)
        if self.deployment_id is not None:
            qs = qs.filter(deployment_id=self.deployment_id)
        return qs

    def fine(self) -> QuerySet[UsageHour]:
        qs = UsageHour.objects.all()
        if self.organization_id is not None:
            qs = qs.filter(organization_id=self.organization_id)
        if self.api_key_ids is not None:
            qs = qs.filter(api_key_id__in=self.api_key_ids)
        if self.deployment_id is not None:
            qs = qs.filter(deployment_id=self.deployment_id)
        return qs

    def per_deployment_name(self) -> QuerySet:
        """The smallest rollup that has deployment names for this scope."""
        if self.deployment_id is not None:
            return self.fine()
        qs = (
            UsageNameHour.objects.all()
            if self.api_key_ids is None
            else UsageNameKeyHour.objects.all()
        )
        if self.organization_id is not None:
            qs = qs.filter(organization_id=self.organization_id)
        if self.api_key_ids is not None:
            qs = qs.filter(api_key_id__in=self.api_key_ids)
        return qs

    def coarse(self) -> QuerySet:
        """The smallest rollup with latency that holds this scope: per deployment when one is
        asked for, else per key."""
        if self.deployment_id is not None:
            return UsageDeploymentHour.objects.filter(deployment_id=self.deployment_id)
        return self.per_key()

    def per_key(self) -> QuerySet:
        """The smallest rollup that has the keys: per key, or the fine one for a deployment."""
        if self.deployment_id is not None:
            return self.fine()
        qs = UsageKeyHour.objects.all()
        if self.organization_id is not None:
            qs = qs.filter(organization_id=self.organization_id)
        if self.api_key_ids is not None:
            qs = qs.filter(api_key_id__in=self.api_key_ids)
        return qs


def in_range(
    records: QuerySet[UsageRecord], rng: Range, now: datetime | None = None
) -> QuerySet[UsageRecord]:
    """The records of the range (from its first bucket's start, as the totals count them)."""
    return records.filter(created_at__gte=rng.start(now or timezone.now()))


def _folded_up_to() -> Subquery:
    # Read in the same statement as the rollup rows: one snapshot, so a fold committing
    # meanwhile can neither hide a record nor count it twice.
    return Coalesce(
        Subquery(UsageRollupCursor.objects.filter(name=CURSOR).values("last_id")[:1]), Value(0)
    )


def _tail(scope: Scope, rng: Range, now: datetime) -> QuerySet[UsageRecord]:
    """The records of the range not in the rollups yet (all of them for minute buckets)."""
    records = in_range(scope.records(), rng, now)
    if rng.bucket == "minute":
        return records
    return records.filter(pk__gt=_folded_up_to())


def _rollup_sums() -> dict[str, Any]:
    return {
        "n_requests": Sum("requests"),
        "n_errors": Sum("errors"),
        "n_prompt": Sum("prompt_tokens"),
        "n_completion": Sum("completion_tokens"),
        "n_cost": Sum("cost"),
        **{f"n_{b}": Sum(b) for b in LATENCY_BINS},
    }


def _percentile(bins: Sequence[int], p: float) -> float | None:
    """The p-quantile of a latency histogram, interpolated linearly inside its bin (the open
    last bin answers its lower bound)."""
    total = sum(bins)
    if not total:
        return None
    rank = p * total
    seen = 0
    lower = 0.0
    for count, upper in zip(bins, (*LATENCY_BOUNDS_MS, None), strict=True):
        if count and seen + count >= rank:
            if upper is None:
                return lower
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
        lower = float(upper) if upper is not None else lower
    return lower


def summary(scope: Scope, rng: Range, now: datetime) -> tuple[dict, dict]:
    """Totals and chart series of a scope over a range, in one query: rollup hours plus the
    records not folded yet. Sums are exact; latency p50/p95 come from the histogram."""
    columns = ["n_requests", "n_errors", "n_prompt", "n_completion", "n_cost",
               *(f"n_{b}" for b in LATENCY_BINS)]  # fmt: skip
    if rng.bucket == "minute":
        rows = list(
            _tail(scope, rng, now)
            .values(bucket=TruncMinute("created_at", tzinfo=UTC))
            .annotate(currency_max=Max("currency"), **record_sums())
            .order_by()
            .values_list("bucket", "currency_max", *columns)
        )
    else:
        rolled = (
            scope.coarse()
            .filter(hour__gte=rng.start(now))
            .values(bucket=F("hour"))
            .annotate(currency_max=Max("currency"), **_rollup_sums())
            .order_by()
            .values_list("bucket", "currency_max", *columns)
        )
        tail = (
            _tail(scope, rng, now)
            .values(bucket=TruncHour("created_at", tzinfo=UTC))
            .annotate(currency_max=Max("currency"), **record_sums())
            .order_by()
            .values_list("bucket", "currency_max", *columns)
        )
        rows = list(rolled.union(tail, all=True))
    step = STEPS[rng.bucket]
    by_bucket: dict[datetime, list] = {}
    currency = None
    for bucket, row_currency, *values in rows:
        # PostgreSQL sums bigints as numeric: back to int (cost stays a Decimal).
        sums = [Decimal(v or 0) if i == 4 else int(v or 0) for i, v in enumerate(values)]
        bucket = bucket.astimezone(UTC)
        if rng.bucket == "day":
            bucket = bucket.replace(hour=0)
        currency = currency or row_currency
        got = by_bucket.get(bucket)
        by_bucket[bucket] = sums if got is None else [a + b for a, b in zip(got, sums, strict=True)]
    zero = [0] * len(columns)
    all_sums = [sum(values) for values in zip(zero, *by_bucket.values(), strict=True)]
    start = rng.start(now)
    labels, requests, prompt, completion, cost, p50, p95 = [], [], [], [], [], [], []
    point = start
    while point <= now:
        sums = by_bucket.get(point, zero)
        labels.append(
            point.strftime("%m-%d %H:%M") if rng.bucket != "day" else point.strftime("%Y-%m-%d")
        )
        requests.append(sums[0])
        prompt.append(sums[2])
        completion.append(sums[3])
        cost.append(float(sums[4]))
        bins = sums[5:]
        lo, hi = _percentile(bins, 0.5), _percentile(bins, 0.95)
        p50.append(None if lo is None else round(lo, 2))
        p95.append(None if hi is None else round(hi, 2))
        point += step
    totals = {
        "requests": all_sums[0],
        "errors": all_sums[1],
        "prompt_tokens": all_sums[2],
        "completion_tokens": all_sums[3],
        "cost": Decimal(all_sums[4]),
        "currency": currency or "USD",
        "p50": _percentile(all_sums[5:], 0.5),
        "p95": _percentile(all_sums[5:], 0.95),
    }
    series = {"labels": labels, "requests": requests, "prompt_tokens": prompt,
              "completion_tokens": completion, "cost": cost, "p50": p50, "p95": p95}  # fmt: skip
    return totals, series


BREAKDOWN_SORTS = {
    "name": "name",
    "requests": "requests",
    "tokens_in": "tokens_in",
    "tokens_out": "tokens_out",
    "spend": "spend",
}
CENT_MILLIONTH = Decimal("1e-8")  # the records' cost precision (SQLite sums it as a float)
_BREAKDOWN_FIELDS = {"deployment": "deployment_name", "key": "api_key_prefix"}


def _sql(qs: QuerySet) -> tuple[str, tuple] | None:
    try:
        sql, params = qs.query.sql_with_params()
    except EmptyResultSet:  # e.g. a user with no keys: this part has no rows
        return None
    return sql, tuple(params)


def breakdown_fetch(scope: Scope, rng: Range, now: datetime, by: str):
    """Totals per deployment or per API key (name, requests, tokens_in, tokens_out, spend),
    sorted and paged in the database: a `fetch(order_by, offset, limit) -> (rows, total)` for
    console.paging.paginate. The rollup's groups and the tail's are added up in one statement."""
    field = _BREAKDOWN_FIELDS[by]
    names = ("name", "requests", "tokens_in", "tokens_out", "spend")
    sums = record_sums()
    tail = (
        _tail(scope, rng, now).values(name=F(field))
        .annotate(requests=sums["n_requests"], tokens_in=sums["n_prompt"],
                  tokens_out=sums["n_completion"], spend=sums["n_cost"])
        .order_by().values_list(*names)
    )  # fmt: skip
    parts = [_sql(tail)]
    if rng.bucket != "minute":
        rollup = scope.per_key() if by == "key" else scope.per_deployment_name()
        rolled = (
            rollup.filter(hour__gte=rng.start(now)).values(name=F(field))
            .annotate(requests=Sum("requests"), tokens_in=Sum("prompt_tokens"),
                      tokens_out=Sum("completion_tokens"), spend=Sum("cost"))
            .order_by().values_list(*names)
        )  # fmt: skip
        parts.insert(0, _sql(rolled))
    parts = [part for part in parts if part is not None]
    union = " UNION ALL ".join(f"SELECT * FROM ({sql}) part{i}" for i, (sql, _) in enumerate(parts))
    params = tuple(p for _, ps in parts for p in ps)

    def fetch(order_by: list[str], offset: int, limit: int) -> tuple[list[dict], int]:
        if not parts:
            return [], 0
        terms = []
        for term in order_by:
            column = term.lstrip("-")
            if column not in names:  # only our own column names reach the SQL
                raise ValueError(column)
            terms.append(f"{column} {'DESC' if term.startswith('-') else 'ASC'}")
        # ORDER BY names the outer SELECT's output columns (the sums), in PostgreSQL and SQLite;
        # COUNT(*) OVER () is the number of groups, so the pager needs no second query.
        sql = (f"SELECT name, SUM(requests) AS requests, SUM(tokens_in) AS tokens_in, "
               f"SUM(tokens_out) AS tokens_out, SUM(spend) AS spend, COUNT(*) OVER () "
               f"FROM ({union}) u GROUP BY name ORDER BY {', '.join(terms)} LIMIT %s OFFSET %s")  # fmt: skip
        with connection.cursor() as cur:
            cur.execute(sql, (*params, limit, offset))
            found = cur.fetchall()
        rows = [
            {"name": name, "requests": int(requests), "tokens_in": int(tokens_in or 0),
             "tokens_out": int(tokens_out or 0), "spend": Decimal(str(spend or 0)).quantize(CENT_MILLIONTH)}
            for name, requests, tokens_in, tokens_out, spend, _ in found
        ]  # fmt: skip
        return rows, (found[0][5] if found else 0)

    return fetch


def breakdown(scope: Scope, rng: Range, now: datetime, by: str, *, limit: int = 1000) -> list[dict]:
    """The largest `limit` rows of a breakdown, most requests first (for the REST API)."""
    rows, _ = breakdown_fetch(scope, rng, now, by)(["-requests", "name"], 0, limit)
    return rows


def key_name_match(organization_id: int):
    """For a usage list's search box: records of `organization_id`'s keys whose name contains the
    query (a subquery: no query of its own)."""

    def match(query: str) -> Q:
        named = APIKey.objects.filter(organization_id=organization_id, name__icontains=query).values("prefix")
        return Q(api_key_prefix__in=Subquery(named))

    return match


def key_names(organization_id: int, prefixes: set[str]) -> dict[str, str]:
    """The names of `organization_id`'s keys with these prefixes, for usage tables that group by
    prefix (the records keep the prefix so a deleted key's usage still reads). Other
    organizations' keys (callers of a shared deployment) keep their prefix only: their names are
    theirs. One query."""
    prefixes = {p for p in prefixes if p}
    if not prefixes:
        return {}
    return dict(
        APIKey.objects.filter(organization_id=organization_id, prefix__in=prefixes)
        .order_by("pk").values_list("prefix", "name")  # two keys sharing a prefix: the newer's name
    )


CSV_COLUMNS = [
    "created_at",
    "request_id",
    "deployment_name",
    "route",
    "status_code",
    "error",  # a refused or failed request's status in words (the Usage page's), empty when answered
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
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _text_cell(value: str | None) -> str:
    """A tenant-typed text cell (a username, a deployment name) that a spreadsheet would read as
    a formula ("=HYPERLINK(…)", "+1", "@SUM") is written with a leading apostrophe (OWASP's CSV
    injection rule): opened in Excel or LibreOffice it stays text."""
    value = value or ""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


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
                created.isoformat(), _text_cell(request_id), _text_cell(name), _text_cell(route), status,
                status_words(status) if status >= 400 else "", _text_cell(prefix), _text_cell(username),
                prompt, completion, f"{latency:.2f}", "" if ttft is None else f"{ttft:.2f}",
                stream, f"{cost:f}", currency,  # fixed-point: a zero cost is 0.00000000, not 0E-8
            ]
        )  # fmt: skip


def to_csv(records: QuerySet[UsageRecord]) -> str:
    return "".join(csv_lines(records))


class Percentile(Aggregate):
    """PostgreSQL's percentile_cont (revision_metrics reads records; the usage pages use the
    rollups' histograms). Other databases fall back to Python."""

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


def _month_records(organization) -> QuerySet[UsageRecord]:
    """The records a budget of the organization counts: this month's, in its budget currency."""
    return UsageRecord.objects.filter(
        organization=organization, currency=organization.budget_currency, created_at__gte=month_start()
    )


def _month_spend(organization, *, user_ids=(), key_ids=()) -> tuple[Decimal, dict, dict]:
    """This month's spend in the organization's budget currency: the organization's total, and by
    user and by API key. Three queries, however many users and keys (rollups + unfolded records:
    `_spent_this_month`)."""
    total = _organization_month_spend(organization)
    by_user = members_month_spend(organization, list(user_ids))
    by_key = dict(
        APIKey.objects.filter(organization=organization, pk__in=list(key_ids))
        .annotate(spent=_key_spent(organization)).values_list("pk", "spent")
    ) if key_ids else {}  # fmt: skip
    return total, by_user, by_key


def members_month_spend(organization, user_ids: list[int]) -> dict[int, Decimal]:
    """This month's spend of these members in the budget currency (one query)."""
    if not user_ids:
        return {}
    return dict(
        Membership.objects.filter(organization=organization, user_id__in=user_ids)
        .annotate(spent=_member_spent(organization)).values_list("user_id", "spent")
    )


def budget_rows(organization, user, keys, members=()) -> list[BudgetRow]:
    """The budgets of `organization`, of `user` in it, of `members` (memberships), and of `keys`
    that have one, each with this month's spend from the usage records (three queries in all)."""
    currency = organization.budget_currency
    members = [m for m in members if m.monthly_budget is not None]
    keys = [k for k in keys if k.monthly_budget is not None]
    total, by_user, by_key = _month_spend(
        organization, user_ids=[m.user_id for m in members], key_ids=[k.pk for k in keys]
    )
    rows = []
    if organization.monthly_budget is not None:
        rows.append(BudgetRow(f"Organization {organization.name}", organization.monthly_budget, total, currency))
    for membership in members:
        who = "You" if membership.user_id == user.pk else f"Member {membership.user.get_username()}"
        rows.append(BudgetRow(who, membership.monthly_budget, by_user.get(membership.user_id, Decimal(0)), currency))
    for key in keys:
        rows.append(BudgetRow(f"Key {key.name} ({key.prefix}…)", key.monthly_budget, by_key.get(key.pk, Decimal(0)), currency))
    return rows


def budget_applies_first(own: Decimal | None, *ceilings: tuple[str, Decimal | None]) -> dict | None:
    """The budget above this one that is lower than it, so stops its requests first (the lowest;
    the nearer on a tie): {"level": "member" | "organization", "monthly_budget": …}, or None.
    A key's own budget stays as set when its owner's is lowered below it: raising the owner's
    again brings it back into play, and the pages say which one applies."""
    if own is None:
        return None
    first = None
    for level, amount in ceilings:
        if amount is not None and amount < own and (first is None or amount < first["monthly_budget"]):
            first = {"level": level, "monthly_budget": amount}
    return first


# The Budgets page's tables sort by these (console.paging); `spent` is this month's spend.
BUDGET_MEMBER_SORTS = {"name": "user__username", "budget": "monthly_budget", "spent": "spent"}
BUDGET_KEY_SORTS = {
    "name": ("name", "user__username"), "owner": ("user__username", "name"), "budget": "monthly_budget", "spent": "spent",
}  # fmt: skip
BUDGET_MEMBER_SEARCH = ("user__username", "user__email", "user__first_name", "user__last_name")
BUDGET_KEY_SEARCH = ("name", "prefix", "user__username")


_MONEY = DecimalField(max_digits=24, decimal_places=8)


def _month_sum(rows: QuerySet) -> Coalesce:
    """Σ cost of `rows` as a scalar subquery (0 when none)."""
    total = rows.order_by().values("organization_id").annotate(s=Sum("cost")).values("s")
    return Coalesce(Subquery(total, output_field=_MONEY), Value(Decimal(0)), output_field=_MONEY)


def _spent_this_month(organization, *, rollups: dict[str, Any], records: dict[str, Any]) -> ExpressionWrapper:
    """This month's spend as _month_spend counts it, read as the usage pages read: the hourly
    key rollups of the month (a few rows per key and hour) plus the records not folded into them
    yet, in the same statement (gateway/rollup.py). Summing the month's records themselves took
    0.1-0.2 s per row at 100,000 records, and sorting by it summed every row's."""
    rolled = UsageKeyHour.objects.filter(
        organization=organization, currency=organization.budget_currency, hour__gte=month_start(), **rollups
    )
    tail = _month_records(organization).filter(pk__gt=_folded_up_to(), **records)
    return ExpressionWrapper(_month_sum(rolled) + _month_sum(tail), output_field=_MONEY)


def _key_spent(organization) -> ExpressionWrapper:
    """For an APIKey queryset: the key's spend this month."""
    return _spent_this_month(organization, rollups={"api_key_id": OuterRef("pk")}, records={"api_key_id": OuterRef("pk")})


def _member_spent(organization) -> ExpressionWrapper:
    """For a Membership queryset: the member's spend this month, that of their keys in the
    organization (every gateway call has a key; keys are revoked, never deleted): the key rollups
    have no user of their own."""
    own_keys = {"api_key_id__in": APIKey.objects.filter(organization=organization, user_id=OuterRef(OuterRef("user_id"))).values("pk")}
    # The records not folded yet by the same keys: a record counts alike before and after its fold.
    return _spent_this_month(organization, rollups=own_keys, records=own_keys)


def _organization_month_spend(organization) -> Decimal:
    spent = _spent_this_month(organization, rollups={}, records={})
    return Organization.objects.filter(pk=organization.pk).annotate(spent=spent).values_list("spent", flat=True).get()


def budget_members(user, organization, *, admin: bool) -> QuerySet[Membership]:
    """The memberships whose budgets `user` sees in `organization` (every one for admins, else
    their own), each with `spent` this month; unordered, for the page's list or the overview."""
    members = Membership.objects.filter(organization=organization).select_related("user")
    if not admin:
        members = members.filter(user=user)
    return members.annotate(spent=_member_spent(organization))


def budget_keys(user, organization, *, admin: bool) -> QuerySet[APIKey]:
    """The live gateway keys whose budgets `user` sees (every one for admins, else their own), each
    with `spent` this month and `owner_budget` (the owner's membership budget); unordered."""
    # The playground's 15-minute keys spend within their owner's budget; one of their own is moot.
    keys = APIKey.objects.filter(
        organization=organization, scope=APIKeyScope.GATEWAY, revoked_at__isnull=True
    ).exclude(playground_keys_q()).select_related("user")
    if not admin:
        keys = keys.filter(user=user)
    owner = Membership.objects.filter(organization=organization, user_id=OuterRef("user_id"))
    return keys.annotate(
        spent=_key_spent(organization),
        owner_budget=Subquery(owner.values("monthly_budget")[:1]),
    )


def _budget_row(organization, limit, spent) -> dict:
    b = BudgetRow("", limit, spent, organization.budget_currency) if limit is not None else None
    return {"monthly_budget": limit, "spent": spent, "percent": b.percent if b else None,
            "budget_state": b.level if b else "none"}  # fmt: skip


def budget_organization_row(organization) -> dict:
    """The organization's own budget with this month's spend (one query)."""
    total = _organization_month_spend(organization)
    return {"id": organization.pk, "name": organization.name, "budget_currency": organization.budget_currency,
            **_budget_row(organization, organization.monthly_budget, total)}  # fmt: skip


def budget_member_rows(organization, members) -> list[dict]:
    """Rows of memberships from `budget_members` (no query): spend, percent and what applies first."""
    org_budget = ("organization", organization.monthly_budget)
    return [
        {"id": m.pk, "user": m.user_id, "username": m.user.get_username(), "email": m.user.email, "role": m.role,
         **_budget_row(organization, m.monthly_budget, m.spent),
         "applies_first": budget_applies_first(m.monthly_budget, org_budget)}
        for m in members
    ]  # fmt: skip


def budget_key_rows(organization, keys) -> list[dict]:
    """Rows of keys from `budget_keys` (no query): spend, percent and the lower budget above the
    key's own that applies first (its owner's or the organization's)."""
    org_budget = ("organization", organization.monthly_budget)
    return [
        {"id": k.pk, "name": k.name, "prefix": k.prefix, "owner": k.user.get_username(), "owner_id": k.user_id,
         **_budget_row(organization, k.monthly_budget, k.spent),
         "applies_first": budget_applies_first(k.monthly_budget, ("member", k.owner_budget), org_budget)}
        for k in keys
    ]  # fmt: skip


def budgets_overview(user, organization, *, admin: bool) -> dict:
    """Every budget `user` may see in `organization` with this month's spend (GET /api/v1/budgets/,
    whole lists; the Budgets page pages the same querysets): the organization's; every member's
    and every live gateway key's for admins, else their own membership and keys; on a member's or
    key's row, the lower budget above it that applies first (budget_applies_first). Three
    queries, whatever the size."""
    members = budget_members(user, organization, admin=admin).order_by("user__username", "pk")
    keys = budget_keys(user, organization, admin=admin).order_by("user__username", "name", "pk")
    return {
        "organization": budget_organization_row(organization),
        "members": budget_member_rows(organization, members),
        "keys": budget_key_rows(organization, keys),
    }


def budgets_applying_first(user, organization, *, admin: bool, level: str, target: object = None) -> list[str]:
    """After the organization's budget (level "organization") or a member's (level "member",
    `target` their user id) is set: the members' and keys' own budgets it now applies first to,
    as "member <name>" / "key <name>", in the overview's order. Only rows whose own budget is
    above the new one are read (two queries), and budget_applies_first decides."""
    if level == "organization":
        ceiling = organization.monthly_budget
        members = budget_members(user, organization, admin=admin)
        keys = budget_keys(user, organization, admin=admin)
    elif level == "member":
        ceiling = Membership.objects.filter(organization=organization, user_id=target).values_list(
            "monthly_budget", flat=True
        ).first()
        members = Membership.objects.none()
        keys = budget_keys(user, organization, admin=admin).filter(user_id=target)
    else:
        return []
    if ceiling is None:
        return []
    org_budget = ("organization", organization.monthly_budget)
    held = [
        f"member {username}"
        for username, own in members.filter(monthly_budget__gt=ceiling)
        .order_by("user__username", "pk").values_list("user__username", "monthly_budget")
        if (budget_applies_first(own, org_budget) or {}).get("level") == level
    ]
    held += [
        f"key {name}"
        for name, own, owner_budget in keys.filter(monthly_budget__gt=ceiling)
        .order_by("user__username", "name", "pk").values_list("name", "monthly_budget", "owner_budget")
        if (budget_applies_first(own, ("member", owner_budget), org_budget) or {}).get("level") == level
    ]
    return held


def served_split(deployment_id: int, *, days: int = 30) -> list[dict]:
    """An external deployment's requests by who answered them (UsageRecord.served_by): its own
    URL or its overflow deployment, with errors, tokens and p50 latency (last `days` days)."""
    since = timezone.now() - timedelta(days=days)
    rows = (
        UsageRecord.objects.filter(deployment_id=deployment_id, created_at__gte=since)
        .values("served_by")
        .annotate(
            requests=Count("id"),
            errors=Count("id", filter=Q(status_code__gte=400)),
            tokens=Coalesce(Sum(F("prompt_tokens") + F("completion_tokens")), 0),
        )
        .order_by("served_by")
    )
    total = sum(r["requests"] for r in rows) or 1
    labels = {"external": "External endpoint", "overflow": "Overflow deployment"}

    def label(row: dict) -> str:
        if row["served_by"]:
            return labels.get(row["served_by"], row["served_by"])
        # Nobody served them: the gateway refused them (a limit, a budget, an open breaker), or
        # they are older than the served_by column.
        return "Refused by the gateway" if row["errors"] == row["requests"] else "Not recorded"

    return [{**r, "label": label(r), "share": round(100 * r["requests"] / total, 1)} for r in rows]
