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
