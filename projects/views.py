"""Projects pages: list, create, detail, edit, delete, integrations."""

from __future__ import annotations

import logging

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from catalog import integrations as catalog_integrations
from console import permissions
from console.edit import ActionView, EditView
from console.http import current_organization as _organization
from console.paging import paginate
from deployments.models import ModelDeployment
from projects import services
from projects.forms import IntegrationForm, ProjectForm
from projects.models import IntegrationKind
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
            "reservations": project.gpu_reservations.all(),
            "can_change": permissions.can(request.user, "change", project),
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
        messages.error(request, "; ".join(f"{e}" for errs in form.errors.values() for e in errs))
    existing = {i.kind: i for i in project.integrations.all()}
    cards = [
        {
            "kind": k,
            "integration": existing.get(k.value),
            "form": IntegrationForm(initial={"kind": k.value}),
        }
        for k in IntegrationKind
    ]
    return render(
        request,
        "projects/integrations.html",
        {"project": project, "cards": cards, "can_change": editable},
    )


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

    ok, message = catalog_integrations.check(integration)
    services.integration_record_check(integration=integration, ok=ok, message=message)
    log.info("integration checked", extra={"project": project.pk, "kind": kind, "ok": ok})
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
