"""Usage records in the Django admin: read-only."""

from django.contrib import admin

from console.admin import RestrictedAdmin
from gateway.models import UsageRecord


@admin.register(UsageRecord)
class UsageRecordAdmin(RestrictedAdmin):
    list_display = [
        "created_at", "deployment_name", "organization", "route", "status_code", "prompt_tokens",
        "completion_tokens", "cost", "currency",
    ]  # fmt: skip
    list_filter = ["route", "status_code"]

    def has_change_permission(self, request, obj=None):
        return False
