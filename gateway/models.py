"""What the gateway records: one row per request it answered."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from deployments.models import ModelDeployment
from projects.models import Organization


class UsageRecord(models.Model):
    """One gateway request: who called what, the tokens the engine reported, and the cost."""

    request_id = models.CharField(max_length=64, unique=True)  # makes a late or repeated flush harmless
    deployment = models.ForeignKey(
        ModelDeployment, null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_records"
    )
    deployment_name = models.CharField(max_length=100, blank=True)
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="usage_records",
        help_text="The caller's organization.",
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    api_key_id = models.BigIntegerField(null=True, blank=True)
    # The revision whose pods answered (the Service's): the deployment's Metrics tab per revision.
    # A plain id, like api_key_id: metering never waits on a foreign key, and revisions go with
    # their deployment anyway.
    revision_id = models.BigIntegerField(null=True, blank=True)
    # An external deployment's requests: "external" (its own URL answered) or "overflow" (its
    # overflow deployment did); empty for every other deployment.
    served_by = models.CharField(max_length=10, blank=True, default="")
    api_key_prefix = models.CharField(max_length=20, blank=True)
    route = models.CharField(max_length=50)  # chat.completions | completions | embeddings
    status_code = models.PositiveSmallIntegerField()
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    latency_ms = models.FloatField()
    ttft_ms = models.FloatField(null=True, blank=True)
    stream = models.BooleanField(default=False)
    cost = models.DecimalField(max_digits=18, decimal_places=8, default=0)
    currency = models.CharField(max_length=3, default="USD")
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        db_table = "deployments_usagerecord"  # moved from deployments; the table kept its name
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["organization", "created_at"]),
            models.Index(fields=["deployment", "created_at"]),
            models.Index(fields=["api_key_id", "created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.route} {self.status_code}"


# What the gateway's statuses mean on a usage row: the Usage page beside the number, the CSV's
# `error` column (the record keeps the status, not the error body's code).
STATUS_WORDS = {
    200: "answered", 400: "bad request", 401: "bad key", 403: "not allowed", 404: "no such model",
    409: "deactivated", 410: "deleted", 413: "too large", 429: "limit or budget", 499: "caller left",
    500: "gateway error", 502: "upstream error", 503: "not ready", 504: "upstream timeout",
}  # fmt: skip


def status_words(status: int | str | None) -> str:
    """409 → "deactivated"; "" for a status without words (or not a number)."""
    try:
        return STATUS_WORDS.get(int(status or ""), "")
    except (TypeError, ValueError):
        return ""


# Latency histogram of the key and deployment rollups: upper bounds in milliseconds of bins
# lat00..lat25; lat26 counts what is slower. Percentiles read from it are interpolated inside a
# bin (gateway/reports.py). The bins below 25 ms are for the fast calls (embeddings, rerankers,
# short completions): with one 0–25 ms bin, a 3 ms call read as a p95 of 24 ms.
LATENCY_BOUNDS_MS = (
    1, 2, 5, 10, 15, 20, 25, 50, 75, 100, 150, 200, 250, 300, 400, 500, 600, 750, 1000, 1500,
    2000, 3000, 5000, 10000, 30000, 60000,
)  # fmt: skip
LATENCY_BINS = tuple(f"lat{i:02d}" for i in range(len(LATENCY_BOUNDS_MS) + 1))
SUMS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cost")


class UsageSums(models.Model):
    """What a rollup row adds up over its records: requests, errors (status >= 400), tokens, cost."""

    hour = models.DateTimeField(help_text="Start of the hour (UTC) the records fall in.")
    currency = models.CharField(max_length=3, default="USD")
    requests = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cost = models.DecimalField(max_digits=24, decimal_places=8, default=0)

    SUMS: tuple[str, ...] = SUMS

    class Meta:
        abstract = True


class UsageLatencySums(UsageSums):
    """Sums and the latency histogram of the successful requests (status < 400)."""

    SUMS = (*SUMS, *LATENCY_BINS)

    class Meta:
        abstract = True


for _name in LATENCY_BINS:
    UsageLatencySums.add_to_class(_name, models.IntegerField(default=0))


class UsageHour(UsageSums):
    """Hourly usage per organization, project, deployment, key and user, folded from UsageRecords
    by gateway/rollup.py (ids 0 stand for none: a row outlives the deployment, key or user).
    Narrow on purpose: the usage pages' per-deployment table reads many of these rows."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    project_id = models.BigIntegerField(default=0)
    deployment_id = models.BigIntegerField(default=0)
    deployment_name = models.CharField(max_length=100, blank=True)
    api_key_id = models.BigIntegerField(default=0)
    api_key_prefix = models.CharField(max_length=20, blank=True)
    user_id = models.BigIntegerField(default=0)

    DIMENSIONS = ("hour", "organization_id", "project_id", "deployment_id", "deployment_name",
                  "api_key_id", "api_key_prefix", "user_id", "currency")  # fmt: skip

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["hour", "organization", "project_id", "deployment_id", "deployment_name",
                        "api_key_id", "api_key_prefix", "user_id", "currency"],
                name="usagehour_one_row_per_group",
            )  # fmt: skip
        ]
        indexes = [
            models.Index(fields=["organization", "hour"]),
            models.Index(fields=["deployment_id", "hour"]),
        ]


class UsageKeyHour(UsageLatencySums):
    """Hourly usage per organization and key, with latency: the same fold grouped coarser, so
    totals and charts of a key's or an organization's usage read a few rows per hour."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    api_key_id = models.BigIntegerField(default=0)
    api_key_prefix = models.CharField(max_length=20, blank=True)

    DIMENSIONS = ("hour", "organization_id", "api_key_id", "api_key_prefix", "currency")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["hour", "organization", "api_key_id", "api_key_prefix", "currency"],
                name="usagekeyhour_one_row_per_group",
            )
        ]
        indexes = [models.Index(fields=["organization", "hour"])]


class UsageDeploymentHour(UsageLatencySums):
    """Hourly usage per deployment from every caller, with latency: a deployment's usage page."""

    deployment_id = models.BigIntegerField()

    DIMENSIONS = ("hour", "deployment_id", "currency")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["deployment_id", "hour", "currency"], name="usagedeploymenthour_one_row_per_group"
            )
        ]


class UsageNameKeyHour(UsageSums):
    """Hourly usage per organization, deployment name and key: the "by deployment" table of a
    user's keys reads these narrow rows instead of UsageHour's."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    deployment_name = models.CharField(max_length=100, blank=True)
    api_key_id = models.BigIntegerField(default=0)

    DIMENSIONS = ("hour", "organization_id", "deployment_name", "api_key_id", "currency")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "hour", "deployment_name", "api_key_id", "currency"],
                name="usagenamekeyhour_one_row_per_group",
            )
        ]


class UsageNameHour(UsageSums):
    """Hourly usage per organization and deployment name: the organization's "by deployment"
    table (one row per deployment and hour, whatever the number of keys)."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    deployment_name = models.CharField(max_length=100, blank=True)

    DIMENSIONS = ("hour", "organization_id", "deployment_name", "currency")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "hour", "deployment_name", "currency"],
                name="usagenamehour_one_row_per_group",
            )
        ]


class UsageRollupCursor(models.Model):
    """How far the rollups are folded: every UsageRecord with id <= last_id is in them, none
    above it. One row; a fold claims the move from its last_id to the next (compare-and-set)."""

    name = models.CharField(max_length=20, primary_key=True)
    last_id = models.BigIntegerField(default=0)
    folded_at = models.DateTimeField(null=True, blank=True)
