"""Django admin for operators: rows they may see; changes that matter go through deployments.services
as the signed-in user, so the admin obeys console.permissions like every other entry point."""

from __future__ import annotations

from django.contrib import admin

from console.admin import RestrictedAdmin, service_action
from deployments import services
from deployments.models import (
    ComputePool,
    DeploymentEvent,
    Endpoint,
    ModelDeployment,
    Revision,
)


class RevisionInline(admin.TabularInline):
    model = Revision
    extra = 0
    can_delete = False
    fields = ["number", "reason", "created_by", "created_at"]
    readonly_fields = fields
    ordering = ["-number"]

    def has_add_permission(self, request, obj=None):
        return False


class EventInline(admin.TabularInline):
    model = DeploymentEvent
    extra = 0
    can_delete = False
    fields = ["type", "reason", "message", "source", "count", "last_seen_at"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(ComputePool)
class ComputePoolAdmin(RestrictedAdmin):
    list_display = [
        "name",
        "organization",
        "kind",
        "engine_label",
        "region",
        "reachable",
        "last_checked_at",
    ]
    list_filter = ["kind", "reachable"]
    search_fields = ["name", "organization__name"]
    exclude = ["kubeconfig"]  # encrypted; set through the console, never shown
    readonly_fields = ["last_check", "last_checked_at", "reachable"]
    change_action = "admin"  # registering and changing pools is an organization admin's act
    actions = ["test_connection"]

    test_connection = service_action(
        "Test the connection of the selected pools", "Connection tested",
        services.pool_test_connection, "pool",
    )  # fmt: skip


@admin.register(Endpoint)
class EndpointAdmin(RestrictedAdmin):
    list_display = ["name", "project", "path"]
    search_fields = ["name", "path"]


@admin.register(ModelDeployment)
class ModelDeploymentAdmin(RestrictedAdmin):
    list_display = ["name", "project", "model", "pool", "state", "updated_at"]
    list_filter = ["state", "pool"]
    search_fields = ["name", "project__name", "model__name"]
    readonly_fields = [
        "state",
        "state_reason",
        "state_changed_at",
        "current_revision",
        "serving_revision",
    ]
    inlines = [RevisionInline, EventInline]
    actions = ["deactivate", "activate", "delete_through_service"]

    deactivate = service_action(
        "Deactivate (scale to zero, release GPUs)", "Deactivated",
        services.deployment_deactivate, "deployment",
    )  # fmt: skip
    activate = service_action(
        "Activate (reserve GPUs, scale up)", "Activated", services.deployment_activate, "deployment"
    )
    delete_through_service = service_action(
        "Delete from the compute pool, then from ModelDeck", "Deletion started",
        services.deployment_delete, "deployment",
    )  # fmt: skip

    def get_actions(self, request):
        # Deleting rows directly would leave objects on the cluster and GPUs in the quota.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions


@admin.register(Revision)
class RevisionAdmin(RestrictedAdmin):
    list_display = ["deployment", "number", "reason", "created_by", "created_at"]

    def has_change_permission(self, request, obj=None):
        return False  # revisions are immutable


@admin.register(DeploymentEvent)
class DeploymentEventAdmin(RestrictedAdmin):
    list_display = ["deployment", "type", "reason", "message", "count", "last_seen_at"]
    list_filter = ["type"]
