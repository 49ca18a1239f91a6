"""Projects pages: list, create, detail, edit, delete, integrations."""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login as auth_login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from console import permissions
from console.edit import ActionView, EditView
from console.http import current_organization as _organization
from console.ids import parse_id
from console.middleware import SESSION_KEY as ORG_SESSION_KEY
from console.paging import ListFilter, paginate
from deployments.models import ModelDeployment
from deployments.selectors import gpu_holders
from gateway import reports
from projects import selectors, services
from projects.forms import (
    GroupForm,
    IntegrationForm,
    InvitationForm,
    InvitationSignupForm,
    MemberAddForm,
    ProjectForm,
)
from projects.models import IntegrationKind, Role
from projects.selectors import project_get, projects_for_user, with_gpu_use

log = logging.getLogger(__name__)


PROJECT_SORTS = {
    "name": "name", "members": "member_count", "gpus": "gpu_held", "created": "created_at",
}  # fmt: skip


@login_required
def project_list(request: HttpRequest) -> HttpResponse:
    org = _organization(request)
    listing = paginate(
        request,
        with_gpu_use(projects_for_user(request.user, org)).annotate(
            member_count=Count("memberships", distinct=True)
        ),
        sorts=PROJECT_SORTS,
        default_sort="name",
        search=("name", "slug", "description"),
    )
    return render(
        request,
        "projects/list.html",
        {"projects": listing.rows, "listing": listing, "can_change": permissions.can(request.user, "change", org)},
    )


class ProjectCreate(EditView):
    form_class = ProjectForm
    template_name, fragment_template = "projects/form.html", "projects/htmx/form.html"
    what = "projects"

    def permission_target(self, request, obj):
        return _organization(request)

    def form_kwargs(self, request, obj):
        return {"organization": _organization(request)}

    def save(self, request, obj, form):
        return services.project_create(
            user=request.user, organization=_organization(request), **form.cleaned_data
        )

    def success_message(self, project):
        return f"Project “{project.name}” created; its namespace is {project.namespace()}."


project_create = ProjectCreate.as_view()


@login_required
def project_detail(request: HttpRequest, pk: int) -> HttpResponse:
    project = project_get(request.user, pk)

    deployments = ModelDeployment.objects.filter(project=project).select_related("model", "pool")
    return render(
        request,
        "projects/detail.html",
        {
            "project": project,
            "members": project.memberships.select_related("user"),
            "deployments": deployments,
            "reservations": gpu_holders(project),
            "can_change": permissions.can(request.user, "change", project),
            "is_admin": permissions.can(request.user, "admin", project.organization),
            "candidates": selectors.members_for(request.user, project.organization)
            .exclude(user__project_memberships__project=project).order_by("user__username")[:500],
            "roles": Role.choices,
        },
    )


class ProjectEdit(EditView):
    form_class = ProjectForm
    template_name, fragment_template = "projects/form.html", "projects/htmx/form.html"

    def get_object(self, request, pk):
        return project_get(request.user, pk)

    def form_kwargs(self, request, project):
        initial = {field: getattr(project, field) for field in ("name", "slug", "description", "gpu_quota")}
        return {"organization": project.organization, "instance": project, "initial": initial}

    def save(self, request, project, form):
        data = form.cleaned_data
        return services.project_update(
            user=request.user, project=project, name=data["name"],
            description=data["description"], gpu_quota=data["gpu_quota"],
        )  # fmt: skip

    def success_message(self, project):
        return "Project saved."

    def context(self, request, project, form):
        return {"project": project}


project_edit = ProjectEdit.as_view()


class ProjectDelete(ActionView):
    def get_object(self, request, pk):
        return project_get(request.user, pk)

    def act(self, request, project):
        services.project_delete(user=request.user, project=project)

    def success_message(self, project, result):
        return f"Project “{project.name}” deleted."

    def success_url(self, request, project):
        return reverse("projects:list")

    def failure_url(self, request, project):
        return project.get_absolute_url()


project_delete = ProjectDelete.as_view()


@login_required
def project_integrations(request: HttpRequest, pk: int) -> HttpResponse:
    project = project_get(request.user, pk)
    editable = permissions.can(request.user, "change", project)
    if request.method == "POST":
        if not editable:
            raise PermissionDenied("Viewers cannot change integrations.")
        form = IntegrationForm(request.POST)
        if form.is_valid():
            try:
                services.integration_set(user=request.user, project=project, **form.cleaned_data)
            except ValidationError as exc:
                form.add_service_error(exc)
            else:
                messages.success(
                    request, f"{IntegrationKind(form.cleaned_data['kind']).label} saved."
                )
                return redirect("projects:integrations", pk=project.pk)
        messages.error(request, _integration_errors(form))
    else:
        form = None
    existing = {i.kind: i for i in project.integrations.all()}
    cards = [
        {
            "kind": k,
            "integration": existing.get(k.value),
            # The card that was posted keeps what was typed (never a secret) and its errors.
            "form": form if form is not None and form.data.get("kind") == k.value
            else IntegrationForm(initial={"kind": k.value}),
        }
        for k in IntegrationKind
    ]
    return render(
        request,
        "projects/integrations.html",
        {"project": project, "cards": cards, "can_change": editable},
    )


def _integration_errors(form: IntegrationForm) -> str:
    """The refusal in words, each error after the field it is about ("Secret access key: …")."""
    kind = form.data.get("kind")
    parts = []
    for name, errors in form.errors.items():
        if name == "secret" and kind in IntegrationKind.values:
            label = IntegrationKind(kind).label
        else:
            label = form.fields[name].label if name in form.fields else ""
        parts += [f"{label}: {e}" if label else f"{e}" for e in errors]
    return "; ".join(parts)


@login_required
@require_POST
def integration_check(request: HttpRequest, pk: int, kind: str) -> HttpResponse:
    """Ask the outside service whether the stored credential works, and say what it answered."""
    project = project_get(request.user, pk)
    if not permissions.can(request.user, "change", project):
        raise PermissionDenied("Viewers cannot run integration checks; the result is saved on the project.")
    integration = project.integrations.filter(kind=kind).first()
    if integration is None:
        raise Http404("That integration is not set.")
    integration = services.integration_check(user=request.user, integration=integration)
    ok, message = integration.check_ok, integration.check_message
    if request.htmx:
        return render(
            request,
            "projects/htmx/integration_status.html",
            {"integration": integration, "project": project},
        )
    (messages.success if ok else messages.error)(request, message)
    return redirect(reverse("projects:integrations", args=[project.pk]))


class IntegrationDelete(ActionView):
    def get_object(self, request, pk, kind):
        integration = project_get(request.user, pk).integrations.filter(kind=kind).first()
        if integration is None:
            raise Http404("That integration is not set.")
        return integration

    def act(self, request, integration):
        services.integration_delete(user=request.user, integration=integration)

    def success_message(self, integration, result):
        return f"{integration.get_kind_display()} removed."

    def success_url(self, request, integration):
        return reverse("projects:integrations", args=[integration.project_id])


integration_delete = IntegrationDelete.as_view()


# --- Organization settings: members, invitations, groups; project membership ---


def _service(request: HttpRequest, call, success: str) -> bool:
    """Run a service call; its ValidationError becomes an error message (PermissionDenied: 403)."""
    try:
        result = call()
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return False
    if success:
        messages.success(request, success.format(result=result))
    return True


MEMBER_SORTS = {"user": "user__username", "email": "user__email", "role": "role", "joined": "created_at"}


@login_required
def org_members(request: HttpRequest) -> HttpResponse:
    org = _organization(request)
    is_admin = permissions.can(request.user, "admin", org)
    invite_link = None
    member_form, invite_form = MemberAddForm(), InvitationForm()
    if request.method == "POST":
        if not is_admin:
            raise PermissionDenied("Only organization admins can manage members.")
        if request.POST.get("form") == "invite":
            invite_form = InvitationForm(request.POST)
            if invite_form.is_valid():
                try:
                    invitation, invite_link = services.invitation_create(
                        user=request.user, organization=org, base_url=request.build_absolute_uri("/"),
                        **invite_form.cleaned_data,
                    )
                except ValidationError as exc:
                    invite_form.add_service_error(exc)
                else:
                    messages.success(request, f"Invitation for {invitation.email} created and mailed. "
                                              "Copy the link below now: it is not shown again.")
                    invite_form = InvitationForm()
        else:
            member_form = MemberAddForm(request.POST)
            if member_form.is_valid():
                try:
                    membership = services.member_add(user=request.user, organization=org, **member_form.cleaned_data)
                except ValidationError as exc:
                    member_form.add_service_error(exc)
                else:
                    messages.success(request, f"{membership.user.get_username()} added as {membership.get_role_display().lower()}.")
                    return redirect("org:members")
    listing = paginate(
        request, selectors.members_for(request.user, org), sorts=MEMBER_SORTS, default_sort="user",
        search=("user__username", "user__email", "user__first_name", "user__last_name"),
        filters=[ListFilter("role", "Role", Role.choices)],
    )
    invitations = paginate(
        request, selectors.invitations_for(request.user, org).filter(accepted_at__isnull=True, revoked_at__isnull=True),
        sorts={"email": "email", "expires": "expires_at"}, default_sort="expires", search=("email",),
        prefix="inv_", per_page=10,
    ) if is_admin else None  # fmt: skip
    # Spent this month by the members shown: their budget fields ask before a budget that small.
    spent = reports.members_month_spend(org, [m.user_id for m in listing.rows]) if is_admin else {}
    return render(request, "projects/org/members.html", {
        "organization": org, "listing": listing, "members": listing.rows, "is_admin": is_admin, "spent": spent,
        "member_form": member_form, "invite_form": invite_form, "invite_link": invite_link,
        "mail_configured": bool(settings.EMAIL_HOST),
        "invitations": invitations, "roles": Role.choices,
    })  # fmt: skip


@login_required
@require_POST
def org_member_role(request: HttpRequest, pk: int) -> HttpResponse:
    membership = selectors.membership_get(request.user, pk)
    _service(request, lambda: services.member_role_set(
        user=request.user, membership=membership, role=request.POST.get("role", "")),
        f"{membership.user.get_username()} is now {{result.role}}.")  # fmt: skip
    return redirect("org:members")


@login_required
@require_POST
def org_member_remove(request: HttpRequest, pk: int) -> HttpResponse:
    membership = selectors.membership_get(request.user, pk)
    name = membership.user.get_username()
    _service(request, lambda: services.membership_remove(user=request.user, membership=membership),
             f"{name} removed from {membership.organization.name}; {{result}} of their API keys revoked.")
    return redirect("org:members")


@login_required
@require_POST
def org_invitation_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    invitation = selectors.invitation_get(request.user, pk)
    _service(request, lambda: services.invitation_revoke(user=request.user, invitation=invitation),
             f"Invitation of {invitation.email} revoked; its link no longer works.")
    return redirect("org:members")


def invitation_accept(request: HttpRequest, token: str) -> HttpResponse:
    """The one-time link: join as the signed-in user, or create an account for the invited address."""
    try:
        invitation = services.invitation_by_token(token)
    except ValidationError as exc:
        return render(request, "projects/org/invitation.html", {"error": " ".join(exc.messages)}, status=404)
    signup = InvitationSignupForm()
    if request.method == "POST":
        if request.user.is_authenticated:
            try:
                membership = services.invitation_accept(user=request.user, token=token)
            except ValidationError as exc:
                return render(request, "projects/org/invitation.html", {"error": " ".join(exc.messages)}, status=404)
        else:
            signup = InvitationSignupForm(request.POST)
            membership = None
            if signup.is_valid():
                try:
                    membership = services.invitation_signup(token=token, **signup.cleaned_data)
                except ValidationError as exc:
                    signup.add_service_error(exc)
            if membership is None:
                return render(request, "projects/org/invitation.html", {"invitation": invitation, "form": signup})
            auth_login(request, membership.user, backend="django.contrib.auth.backends.ModelBackend")
        request.session[ORG_SESSION_KEY] = membership.organization_id
        messages.success(request, f"Welcome to {membership.organization.name}.")
        return redirect("dashboard")
    return render(request, "projects/org/invitation.html", {"invitation": invitation, "form": signup})


GROUP_SORTS = {"name": "name", "members": "member_count", "created": "created_at"}


class GroupCreate(EditView):
    """The organization's groups, and for its admins the form that adds one."""

    form_class = GroupForm
    template_name = "projects/org/groups.html"
    action = "admin"
    what = "groups"
    read_by_all = True

    def permission_target(self, request, obj):
        return _organization(request)

    def save(self, request, obj, form):
        return services.group_create(user=request.user, organization=_organization(request), **form.cleaned_data)

    def success_message(self, group):
        return f"Group “{group.name}” created. Add its members below."

    def context(self, request, obj, form):
        org = _organization(request)
        listing = paginate(request, selectors.groups_for(request.user, org), sorts=GROUP_SORTS, default_sort="name",
                           search=("name", "description"))
        return {"organization": org, "listing": listing, "groups": listing.rows,
                "is_admin": permissions.can(request.user, "admin", org)}  # fmt: skip


org_groups = GroupCreate.as_view()


class GroupEdit(EditView):
    """A group's page: its members for everyone in the organization; its admins rename it and
    add or remove members."""

    form_class = GroupForm
    template_name = "projects/org/group_detail.html"
    action = "admin"
    what = "groups"
    read_by_all = True

    def get_object(self, request, pk):
        return selectors.group_get(request.user, pk)

    def permission_target(self, request, group):
        return group.organization

    def form_kwargs(self, request, group):
        return {"initial": {"name": group.name, "description": group.description}}

    def save(self, request, group, form):
        return services.group_update(user=request.user, group=group, **form.cleaned_data)

    def success_message(self, group):
        return "Group saved."

    def context(self, request, group, form):
        listing = paginate(
            request, group.group.user_set.all(), sorts={"user": "username", "email": "email"}, default_sort="user",
            search=("username", "email"),
        )
        candidates = selectors.members_for(request.user, group.organization).exclude(
            user__groups=group.group
        ).order_by("user__username")[:500]
        return {"group": group, "listing": listing, "users": listing.rows, "candidates": candidates,
                "is_admin": permissions.can(request.user, "admin", group.organization)}  # fmt: skip


org_group_detail = GroupEdit.as_view()


class GroupDelete(ActionView):
    def get_object(self, request, pk):
        return selectors.group_get(request.user, pk)

    def act(self, request, group):
        services.group_delete(user=request.user, group=group)

    def success_message(self, group, result):
        return f"Group “{group.name}” deleted."

    def success_url(self, request, group):
        return reverse("org:groups")

    def failure_url(self, request, group):
        return group.get_absolute_url()


org_group_delete = GroupDelete.as_view()


def _member_from_post(request: HttpRequest, organization) -> object:
    raw = request.POST.get("user", "")
    pk = parse_id(raw)
    if pk is None:  # past 64 bits: no user, and SQLite can't bind it
        raise Http404("No such member.")
    return selectors.member_user_get(request.user, organization, pk)


@login_required
@require_POST
def org_group_member_add(request: HttpRequest, pk: int) -> HttpResponse:
    group = selectors.group_get(request.user, pk)
    permissions.require(request.user, "admin", group.organization, what="groups")
    member = _member_from_post(request, group.organization)
    _service(request, lambda: services.group_member_add(user=request.user, group=group, member=member),
             f"{member.get_username()} added to {group.name}.")
    return redirect(group.get_absolute_url())


@login_required
@require_POST
def org_group_member_remove(request: HttpRequest, pk: int, user_pk: int) -> HttpResponse:
    group = selectors.group_get(request.user, pk)
    permissions.require(request.user, "admin", group.organization, what="groups")
    member = group.group.user_set.filter(pk=user_pk).first()
    if member is None:
        raise Http404("Not a member of this group.")
    _service(request, lambda: services.group_member_remove(user=request.user, group=group, member=member),
             f"{member.get_username()} removed from {group.name}.")
    return redirect(group.get_absolute_url())


@login_required
@require_POST
def project_member_add(request: HttpRequest, pk: int) -> HttpResponse:
    project = project_get(request.user, pk)
    permissions.require(request.user, "admin", project.organization, what="project members")
    member = _member_from_post(request, project.organization)
    _service(request, lambda: services.project_member_set(
        user=request.user, project=project, member=member, role=request.POST.get("role", Role.MEMBER)),
        f"{member.get_username()} is now a {{result.role}} of {project.name}.")  # fmt: skip
    return redirect(project.get_absolute_url())


@login_required
@require_POST
def project_member_remove(request: HttpRequest, pk: int, user_pk: int) -> HttpResponse:
    project = project_get(request.user, pk)
    permissions.require(request.user, "admin", project.organization, what="project members")
    row = project.memberships.filter(user_id=user_pk).select_related("user").first()
    if row is None:
        raise Http404("Not a member of this project.")
    _service(request, lambda: services.project_member_remove(user=request.user, project_member=row),
             f"{row.user.get_username()} removed from {project.name}.")
    return redirect(project.get_absolute_url())
