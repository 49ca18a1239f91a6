"""Django admin for operators: rows they may see; changes that matter go through deployments.services
as the signed-in user, so the admin obeys console.permissions like every other entry point."""

from __future__ import annotations

from django.contrib import admin

from console.admin import RestrictedAdmin, run_action
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

    @admin.action(description="Test the connection of the selected pools")
    def test_connection(self, request, queryset):
        run_action(
            self,
            request,
            queryset,
            "Connection tested",
            lambda p, user: services.pool_test_connection(user=user, pool=p),
        )


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

    @admin.action(description="Deactivate (scale to zero, release GPUs)")
    def deactivate(self, request, queryset):
        run_action(
            self,
            request,
            queryset,
            "Deactivated",
            lambda d, user: services.deployment_deactivate(user=user, deployment=d),
        )

    @admin.action(description="Activate (reserve GPUs, scale up)")
    def activate(self, request, queryset):
        run_action(
            self,
            request,
            queryset,
            "Activated",
            lambda d, user: services.deployment_activate(user=user, deployment=d),
        )

    @admin.action(description="Delete from the compute pool, then from ModelDeck")
    def delete_through_service(self, request, queryset):
        run_action(
            self,
            request,
            queryset,
            "Deletion started",
            lambda d, user: services.deployment_delete(user=user, deployment=d),
        )

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
