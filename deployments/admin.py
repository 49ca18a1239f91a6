"""Django admin for operators: rows they may see; changes that matter go through deployments.services
as the signed-in user, so the admin obeys console.permissions like every other entry point."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied, ValidationError

from console import permissions
from console.admin import RecordAdmin, RestrictedAdmin, service_action
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


class ComputePoolAdminForm(forms.ModelForm):
    """The kubeconfig is write-only here as everywhere; the services check and save."""

    new_kubeconfig = forms.CharField(
        label="Kubeconfig", required=False, widget=forms.Textarea(attrs={"rows": 6}),
        help_text="Write-only: paste a kubeconfig to set or replace it (reduced to server, CA and inline "
        "credentials); leave empty to keep the stored one.",
    )  # fmt: skip

    SERVICE_FIELDS = (
        "name", "kind", "engine_label", "api_url", "region", "description", "private_addresses_allowed",
    )  # fmt: skip

    class Meta:
        model = ComputePool
        fields = [
            "organization", "name", "kind", "engine_label", "api_url", "region", "description",
            "private_addresses_allowed",
        ]  # fmt: skip

    def service_fields(self) -> dict:
        data = {k: self.cleaned_data.get(k) for k in self.SERVICE_FIELDS}
        data = {k: ("" if v is None else v) for k, v in data.items()}
        data["kubeconfig"] = self.cleaned_data.get("new_kubeconfig") or ""
        return data

    def _post_clean(self) -> None:
        # No model-level save validation here: the service rule below is the one rule.
        if self.errors:
            return
        fields = self.service_fields()
        existing = self.instance if self.instance.pk else None
        if existing is not None:
            fields = {k: v for k, v in fields.items() if k in self.changed_data or k == "kubeconfig"}
        try:
            services.pool_validate(
                user=self.request_user, organization=self.cleaned_data.get("organization") or existing.organization,
                pool=existing, **fields,
            )  # fmt: skip
        except ValidationError as exc:
            if hasattr(exc, "error_dict"):
                for field, errors in exc.error_dict.items():
                    target = "new_kubeconfig" if field == "kubeconfig" else field
                    self.add_error(target if target in self.fields else None, errors)
            else:
                self.add_error(None, exc)
        except PermissionDenied as exc:
            self.add_error(None, str(exc))


@admin.register(ComputePool)
class ComputePoolAdmin(RestrictedAdmin):
    form = ComputePoolAdminForm
    list_display = [
        "name",
        "organization",
        "kind",
        "engine_label",
        "managed_by",
        "region",
        "reachable",
        "last_checked_at",
    ]
    list_filter = ["kind", "managed_by", "reachable"]
    search_fields = ["name", "organization__name"]
    readonly_fields = ["managed_by", "last_check", "last_checked_at", "reachable"]
    actions = ["test_connection"]

    test_connection = service_action(
        "Test the connection of the selected pools", "Connection tested",
        services.pool_test_connection, "pool",
    )  # fmt: skip

    def has_change_permission(self, request, obj=None):
        # Pools are the platform operators' (console.permissions.may_manage_pool), not a role's.
        allowed = admin.ModelAdmin.has_change_permission(self, request, obj)
        return allowed and (obj is None or permissions.may_manage_pool(request.user, obj))

    def has_delete_permission(self, request, obj=None):
        return self.has_change_permission(request, obj)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        form.request_user = request.user
        return form

    def save_model(self, request, obj, form, change) -> None:
        fields = form.service_fields()
        if change:
            fields = {k: v for k, v in fields.items() if k in form.changed_data or k == "kubeconfig"}
            saved = services.pool_update(
                user=request.user, pool=ComputePool.objects.get(pk=obj.pk), **fields
            )
        else:
            saved = services.pool_create(
                user=request.user, organization=form.cleaned_data["organization"], **fields
            )
        obj.pk = saved.pk
        obj.refresh_from_db()

    def delete_model(self, request, obj) -> None:
        services.pool_delete(user=request.user, pool=obj)

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # bulk deletes would bypass the service
        return actions


@admin.register(Endpoint)
class EndpointAdmin(RestrictedAdmin):
    list_display = ["name", "project", "path"]
    search_fields = ["name", "path"]


@admin.register(ModelDeployment)
class ModelDeploymentAdmin(RestrictedAdmin):
    list_display = ["name", "project", "model", "pool", "state", "updated_at"]
    list_filter = ["state", "pool"]
    search_fields = ["name", "project__name", "model__name"]
    # Secrets are never shown, not even to operators: the engine's credential lets a caller past
    # the gateway, the external endpoint's is the user's own key (console: its last 4 only).
    exclude = ["engine_credential", "external_credential"]
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
class RevisionAdmin(RecordAdmin):
    list_display = ["deployment", "number", "reason", "created_by", "created_at"]


@admin.register(DeploymentEvent)
class DeploymentEventAdmin(RecordAdmin):
    list_display = ["deployment", "type", "reason", "message", "count", "last_seen_at"]
    list_filter = ["type"]
