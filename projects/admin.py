"""Organizations and projects in the Django admin; GPU quotas change only through the services
(the console's quota page), so the admin shows them read-only."""

from django.contrib import admin

from console.admin import RestrictedAdmin
from projects import services
from projects.models import (
    GpuReservation,
    Integration,
    Invitation,
    Membership,
    Organization,
    OrganizationGroup,
    Project,
    ProjectMember,
)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]
    readonly_fields = ["monthly_budget"]  # budgets change on the Budgets page (audited, reach the gateway)


@admin.register(Organization)
class OrganizationAdmin(RestrictedAdmin):
    list_display = ["name", "slug", "gpu_quota", "gpu_used", "created_at"]
    search_fields = ["name", "slug"]
    inlines = [MembershipInline]
    readonly_fields = ["gpu_quota", "monthly_budget", "budget_currency"]  # through their services (audited)
    change_action = "admin"  # members and roles: organization admins only

    def save_formset(self, request, form, formset, change):
        if formset.model is not Membership:
            return super().save_formset(request, form, formset, change)
        # A removed member's keys are revoked: through the service, not a bare delete.
        instances = formset.save(commit=False)
        for membership in formset.deleted_objects:
            services.membership_remove(user=None, membership=membership)
        for membership in instances:
            membership.save()
        formset.save_m2m()

    @admin.display(description="GPUs used")
    def gpu_used(self, obj: Organization) -> int:
        return obj.gpu_used()


class ProjectMemberInline(admin.TabularInline):
    model = ProjectMember
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Project)
class ProjectAdmin(RestrictedAdmin):
    list_display = ["name", "organization", "slug", "kube_namespace", "gpu_quota", "created_at"]
    list_filter = ["organization"]
    search_fields = ["name", "slug", "kube_namespace"]
    inlines = [ProjectMemberInline]

    def get_readonly_fields(self, request, obj=None):
        return ["slug", "kube_namespace", "gpu_quota"] if obj else ["kube_namespace"]

    def save_model(self, request, obj, form, change):
        if not change:  # the same choice as projects.services.project_create, made once
            obj.kube_namespace = services.project_namespace_choose(organization=obj.organization, slug=obj.slug)
        super().save_model(request, obj, form, change)


@admin.register(Membership)
class MembershipAdmin(RestrictedAdmin):
    change_action = "admin"
    list_display = ["user", "organization", "role", "monthly_budget", "created_at"]
    list_filter = ["organization", "role"]
    readonly_fields = ["monthly_budget"]

    # Deleting a membership removes the member: their keys in the organization are revoked.
    def delete_model(self, request, obj):
        services.membership_remove(user=None, membership=obj)

    def delete_queryset(self, request, queryset):
        for membership in queryset.select_related("organization", "user"):
            services.membership_remove(user=None, membership=membership)


@admin.register(GpuReservation)
class GpuReservationAdmin(RestrictedAdmin):
    list_display = ["holder", "project", "gpus", "updated_at"]
    readonly_fields = ["holder", "project", "gpus"]


@admin.register(Integration)
class IntegrationAdmin(RestrictedAdmin):
    # The secret itself is never shown, not even to operators.
    list_display = ["project", "kind", "secret_last4", "check_ok", "checked_at", "updated_at"]
    exclude = ["secret"]
    readonly_fields = ["project", "kind", "secret_last4", "check_ok", "check_message", "checked_at", "updated_by"]

    def has_add_permission(self, request):
        return False


@admin.register(OrganizationGroup)
class OrganizationGroupAdmin(RestrictedAdmin):
    # Changed in Settings → Groups (projects.services: audited, organization members only).
    list_display = ["name", "organization", "description", "created_at"]
    list_filter = ["organization"]
    readonly_fields = ["organization", "group", "name", "description"]

    def has_add_permission(self, request):
        return False


@admin.register(Invitation)
class InvitationAdmin(RestrictedAdmin):
    # Only the token's hash is stored; invitations are made and revoked in Settings → Members.
    list_display = ["email", "organization", "role", "created_by", "expires_at", "accepted_at", "revoked_at"]
    list_filter = ["organization", "role"]
    exclude = ["token_hash"]
    readonly_fields = ["organization", "email", "role", "created_by", "expires_at", "accepted_at", "accepted_by", "revoked_at"]

    def has_add_permission(self, request):
        return False
