"""Admin for governance: the audit log is read-only; sharing rows are shown, changed via the console."""

from django.contrib import admin

from console.admin import RestrictedAdmin
from sharing.models import AccessPolicy, AuditEntry, DeploymentShare


@admin.register(AuditEntry)
class AuditEntryAdmin(RestrictedAdmin):
    list_display = [
        "created_at",
        "organization",
        "actor_repr",
        "action",
        "object_type",
        "object_repr",
    ]
    list_filter = ["action", "object_type", "organization"]
    search_fields = ["object_repr", "actor_repr", "object_id"]
    date_hierarchy = "created_at"

    # History is never edited: no add, change or delete, not even for superusers.
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class _ServiceOnlyAdmin(RestrictedAdmin):
    """Changes go through sharing.services (audit + gateway cache), so the admin only shows them."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(DeploymentShare)
class DeploymentShareAdmin(_ServiceOnlyAdmin):
    list_display = ["deployment", "mode", "updated_at"]
    list_filter = ["mode"]


@admin.register(AccessPolicy)
class AccessPolicyAdmin(_ServiceOnlyAdmin):
    list_display = ["deployment", "kind", "updated_at"]
    list_filter = ["kind"]
