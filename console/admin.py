"""Django admin plumbing: every admin page and action asks console.permissions, as the console does."""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError

from console import permissions
from console.models import WorkerHeartbeat


class RestrictedAdmin(admin.ModelAdmin):
    """Operators see and change only what console.permissions lets them (superusers: everything).

    Django's model permissions still gate the admin as a whole; this narrows them to rows."""

    change_action = "change"  # "admin" where the console lets only organization admins edit

    def get_queryset(self, request):
        return permissions.restrict(super().get_queryset(request), request.user, "view")

    def get_list_filter(self, request):
        # A related filter would list every organization's rows; offer only those in view.
        return [
            (name, admin.RelatedOnlyFieldListFilter)
            if isinstance(name, str) and name in self._relations() else name
            for name in super().get_list_filter(request)
        ]

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if field is not None and hasattr(field, "queryset"):
            try:
                field.queryset = permissions.restrict(field.queryset, request.user, "view")
            except TypeError:
                pass  # not organization-scoped (users, groups): Django's own permissions apply
        return field

    def _relations(self) -> set[str]:
        return {f.name for f in self.model._meta.get_fields() if f.is_relation and f.many_to_one}

    def has_change_permission(self, request, obj=None):
        allowed = super().has_change_permission(request, obj)
        return allowed and (obj is None or permissions.can(request.user, self.change_action, obj))

    def has_delete_permission(self, request, obj=None):
        allowed = super().has_delete_permission(request, obj)
        action = "delete" if self.change_action == "change" else self.change_action
        return allowed and (obj is None or permissions.can(request.user, action, obj))


class RecordAdmin(RestrictedAdmin):
    """Records the product writes (revisions, events, usage): operators read them, never add,
    edit or delete one (deleting a deployment's serving revision or a usage record would break
    rollback and billing)."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def service_action(description: str, verb: str, service, keyword: str):
    """An admin action that calls ``service(user=<signed-in user>, <keyword>=row)`` for each row."""

    @admin.action(description=description)
    def action(modeladmin, request, queryset) -> None:
        run_action(modeladmin, request, queryset, verb, lambda obj, user: service(user=user, **{keyword: obj}))

    return action


def run_action(modeladmin, request, queryset, verb: str, call) -> None:
    """Apply a service to each selected row as the signed-in user; say what happened to each."""
    done, failed = 0, []
    for obj in queryset:
        try:
            call(obj, request.user)
        except (ValidationError, PermissionDenied) as exc:
            text = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
            failed.append(f"{obj}: {text}")
        else:
            done += 1
    if done:
        modeladmin.message_user(request, f"{verb}: {done} done.", messages.SUCCESS)
    for line in failed:
        modeladmin.message_user(request, line, messages.ERROR)


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ["name", "last_seen_at"]
