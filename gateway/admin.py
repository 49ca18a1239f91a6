"""Usage records in the Django admin: read-only."""

from django.contrib import admin

from console.admin import RecordAdmin
from gateway.models import UsageRecord


@admin.register(UsageRecord)
class UsageRecordAdmin(RecordAdmin):
    list_display = [
        "created_at", "deployment_name", "organization", "route", "status_code", "prompt_tokens",
        "completion_tokens", "cost", "currency",
    ]  # fmt: skip
    list_filter = ["route", "status_code"]
