"""Organizations and projects in the Django admin. An organization's GPU quota is set here
through projects.services.organization_quota_set as the signed-in operator (checked and audited
as on the console); budgets and project quotas stay read-only here (their console pages)."""

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied, ValidationError

from console import permissions
from console.admin import RecordAdmin, RestrictedAdmin
from projects import services
from projects.models import (
    GPU_QUOTA_VALIDATORS,
    GpuReservation,
    Integration,
    Invitation,
    Membership,
    Organization,
    OrganizationGroup,
    Project,
    ProjectMember,
    Role,
)


class MembershipInlineFormSet(forms.BaseInlineFormSet):
    """A member's row keeps its user, and what is saved leaves the organization an admin (the
    rule member_role_set applies, asked here so a refusal is an error on the page, not a 500)."""

    def clean(self) -> None:
        super().clean()
        admins, demoted = 0, False
        for form in self.forms:
            data = getattr(form, "cleaned_data", None)
            if not data or (self.can_delete and self._should_delete_form(form)):
                continue
            if form.instance.pk and "user" in form.changed_data:
                raise ValidationError("A member's row keeps its user: add the other user and remove this one.")
            admins += data.get("role") == Role.ADMIN
            demoted |= bool(form.instance.pk) and "role" in form.changed_data and form.initial.get("role") == Role.ADMIN
        if demoted and not admins:
            raise ValidationError("This is the organization's last admin; make someone else admin first.")


class MembershipInline(admin.TabularInline):
    model = Membership
    formset = MembershipInlineFormSet
    extra = 0
    autocomplete_fields = ["user"]
    readonly_fields = ["monthly_budget"]  # budgets change on the Budgets page (audited, reach the gateway)


class OrganizationAdminForm(forms.ModelForm):
    gpu_quota = forms.IntegerField(
        label="GPU quota", validators=GPU_QUOTA_VALIDATORS,
        error_messages={"invalid": "Enter the GPU quota as a whole number, e.g. 8."},
        help_text="GPUs all projects of this organization may hold together; never below what they hold now.",
    )  # fmt: skip
    request_user = None  # set by OrganizationAdmin.get_form: the service asks as this user

    class Meta:
        model = Organization
        fields = ["name", "slug", "gpu_quota"]

    def _post_clean(self) -> None:
        super()._post_clean()
        if self.errors or not self.instance.pk or "gpu_quota" not in self.changed_data:
            return
        # The rules organization_quota_set applies (admins only, not below use), asked before
        # anything is saved, so a refusal is an error on the field, not a half-saved page.
        stored = Organization.objects.get(pk=self.instance.pk)
        try:
            services.organization_quota_check(
                user=self.request_user, organization=stored, gpu_quota=self.cleaned_data["gpu_quota"]
            )
        except ValidationError as exc:
            self.add_error("gpu_quota", exc.message_dict.get("gpu_quota", exc.messages) if hasattr(exc, "error_dict") else exc.messages)
        except PermissionDenied as exc:
            self.add_error("gpu_quota", str(exc))


@admin.register(Organization)
class OrganizationAdmin(RestrictedAdmin):
    form = OrganizationAdminForm
    list_display = ["name", "slug", "gpu_quota", "gpu_used", "created_at"]
    search_fields = ["name", "slug"]
    inlines = [MembershipInline]
    readonly_fields = ["monthly_budget", "budget_currency"]  # the Budgets page (audited, reaches the gateway)
    change_action = "admin"  # members and roles: organization admins only

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        form.request_user = request.user
        return form

    def save_model(self, request, obj, form, change):
        quota = form.cleaned_data.get("gpu_quota")
        if not change:  # made by the service, then the form's other fields saved onto it
            obj.pk = services.organization_create(name=obj.name, slug=obj.slug, gpu_quota=quota).pk
            obj._state.adding = False
            return super().save_model(request, obj, form, change)
        stored = Organization.objects.get(pk=obj.pk)
        obj.gpu_quota = stored.gpu_quota  # the quota is the service's to write, below
        super().save_model(request, obj, form, change)
        if quota != stored.gpu_quota:
            obj.gpu_quota = services.organization_quota_set(
                user=request.user, organization=stored, gpu_quota=quota
            ).gpu_quota

    def save_formset(self, request, form, formset, change):
        if formset.model is not Membership:
            return super().save_formset(request, form, formset, change)
        # A removed member's keys are revoked: through the service, not a bare delete.
        instances = formset.save(commit=False)
        for membership in formset.deleted_objects:
            services.membership_remove(user=None, membership=membership)
        role_changed = {obj.pk for obj, fields in formset.changed_objects if "role" in fields}
        # New admins first, so that an admin handing over in the same save is never the last one.
        for membership in sorted(instances, key=lambda m: m.role != Role.ADMIN):
            if membership.pk in role_changed:  # checked, audited, and the gateway told
                services.member_role_set(user=request.user, membership=membership, role=membership.role)
            elif membership.pk is None:  # checked and audited as the Members page's Add
                added = services.member_join(user=request.user, organization=membership.organization,
                                             member=membership.user, role=membership.role)  # fmt: skip
                membership.pk, membership.created_at = added.pk, added.created_at
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


class MembershipAdminForm(forms.ModelForm):
    request_user = None  # set by MembershipAdmin.get_form: the service asks as this user

    class Meta:
        model = Membership
        fields = ["user", "organization", "role"]

    def _post_clean(self) -> None:
        super()._post_clean()
        if not self.errors and not self.instance.pk:  # member_join's permission, said on the field
            organization = self.cleaned_data.get("organization")
            if organization is not None and not permissions.can(self.request_user, "admin", organization):
                self.add_error("organization", f"Only admins of {organization.name} can add its members.")
            return
        if self.errors or not self.instance.pk or "role" not in self.changed_data:
            return
        try:  # member_role_set's rules (not the last admin), before anything is saved
            services.member_role_check(
                user=self.request_user, membership=Membership.objects.get(pk=self.instance.pk),
                role=self.cleaned_data["role"],
            )  # fmt: skip
        except ValidationError as exc:
            self.add_error("role", exc.message_dict.get("role", exc.messages) if hasattr(exc, "error_dict") else exc.messages)
        except PermissionDenied as exc:
            self.add_error("role", str(exc))


@admin.register(Membership)
class MembershipAdmin(RestrictedAdmin):
    form = MembershipAdminForm
    change_action = "admin"
    list_display = ["user", "organization", "role", "monthly_budget", "created_at"]
    list_filter = ["organization", "role"]

    def get_readonly_fields(self, request, obj=None):
        # A membership stays its user's in its organization: another one is added, this removed.
        return ["user", "organization", "monthly_budget"] if obj else ["monthly_budget"]

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        form.request_user = request.user
        return form

    def save_model(self, request, obj, form, change):
        if not change:  # checked and audited as the Members page's Add
            added = services.member_join(user=request.user, organization=obj.organization, member=obj.user, role=obj.role)
            obj.pk, obj.created_at = added.pk, added.created_at
            return
        if "role" in form.changed_data:  # checked, audited, and the gateway told
            services.member_role_set(user=request.user, membership=obj, role=obj.role)

    # Deleting a membership removes the member: their keys in the organization are revoked.
    def delete_model(self, request, obj):
        services.membership_remove(user=None, membership=obj)

    def delete_queryset(self, request, queryset):
        for membership in queryset.select_related("organization", "user"):
            services.membership_remove(user=None, membership=membership)


@admin.register(GpuReservation)
class GpuReservationAdmin(RecordAdmin):
    """The quota ledger the deployment services keep: read here, never written by hand (a row
    added or deleted would make the projects' GPU use wrong)."""

    list_display = ["holder", "project", "gpus", "updated_at"]


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
