from django.contrib import admin

from deployments.models import ComputePool, DeploymentEvent, Endpoint, ModelDeployment, Revision, UsageRecord


@admin.register(ComputePool)
class ComputePoolAdmin(admin.ModelAdmin):
    list_display = ["name", "organization", "kind", "engine_label", "reachable", "last_checked_at"]
    exclude = ["kubeconfig"]  # encrypted; set through the console


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "path"]


@admin.register(ModelDeployment)
class ModelDeploymentAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "model", "pool", "state", "updated_at"]
    list_filter = ["state", "pool"]
    readonly_fields = ["state", "state_reason", "current_revision", "serving_revision"]


@admin.register(Revision)
class RevisionAdmin(admin.ModelAdmin):
    list_display = ["deployment", "number", "reason", "created_by", "created_at"]

    def has_change_permission(self, request, obj=None):
        return False  # revisions are immutable


@admin.register(DeploymentEvent)
class DeploymentEventAdmin(admin.ModelAdmin):
    list_display = ["deployment", "type", "reason", "message", "count", "last_seen_at"]
    list_filter = ["type"]


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = ["created_at", "deployment_name", "organization", "route", "status_code", "prompt_tokens", "completion_tokens", "cost", "currency"]
    list_filter = ["route", "status_code"]

    def has_change_permission(self, request, obj=None):
        return False
