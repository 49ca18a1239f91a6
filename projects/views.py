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

from console.forms import field_validation_response
from console.http import current_organization as _organization
from console.http import redirect_after_post as _redirect
from console.paging import paginate
from projects import services
from projects.forms import IntegrationForm, ProjectForm
from projects.models import IntegrationKind
from projects.selectors import can_change, project_get, projects_for_user, with_gpu_use

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
        {"projects": listing.rows, "listing": listing, "can_change": can_change(request.user, org)},
    )


def _form_page(request: HttpRequest, form: ProjectForm, *, project=None) -> HttpResponse:
    validate_url = request.path
    context = {"form": form, "project": project, "validate_url": validate_url}
    if request.htmx and request.method == "POST":
        return render(request, "projects/htmx/form.html", context)
    return render(request, "projects/form.html", context)


@login_required
def project_create(request: HttpRequest) -> HttpResponse:
    org = _organization(request)
    if not can_change(request.user, org):
        raise PermissionDenied("Viewers cannot create projects.")
    form = ProjectForm(request.POST or None, organization=org)
    if request.method == "POST":
        partial = field_validation_response(request, form, request.path)
        if partial is not None:
            return partial
        if form.is_valid():
            try:
                project = services.project_create(
                    user=request.user, organization=org, **form.cleaned_data
                )
            except ValidationError as exc:
                form.add_service_error(exc)
            else:
                messages.success(
                    request,
                    f"Project “{project.name}” created; its namespace is {project.namespace()}.",
                )
                return _redirect(request, project.get_absolute_url())
    return _form_page(request, form)


@login_required
def project_detail(request: HttpRequest, pk: int) -> HttpResponse:
    project = project_get(request.user, pk)
    from deployments.models import ModelDeployment

    deployments = ModelDeployment.objects.filter(project=project).select_related("model", "pool")
    return render(
        request,
        "projects/detail.html",
        {
            "project": project,
            "members": project.memberships.select_related("user"),
            "deployments": deployments,
            "reservations": project.gpu_reservations.all(),
            "can_change": can_change(request.user, project.organization),
        },
    )


@login_required
def project_edit(request: HttpRequest, pk: int) -> HttpResponse:
    project = project_get(request.user, pk)
    if not can_change(request.user, project.organization):
        raise PermissionDenied("Viewers cannot change projects.")
    initial = {
        "name": project.name,
        "slug": project.slug,
        "description": project.description,
        "gpu_quota": project.gpu_quota,
    }
    form = ProjectForm(
        request.POST or None, organization=project.organization, instance=project, initial=initial
    )
    if request.method == "POST":
        partial = field_validation_response(request, form, request.path)
        if partial is not None:
            return partial
        if form.is_valid():
            data = form.cleaned_data
            try:
                services.project_update(
                    user=request.user,
                    project=project,
                    name=data["name"],
                    description=data["description"],
                    gpu_quota=data["gpu_quota"],
                )
            except ValidationError as exc:
                form.add_service_error(exc)
            else:
                messages.success(request, "Project saved.")
                return _redirect(request, project.get_absolute_url())
    return _form_page(request, form, project=project)


@login_required
@require_POST
def project_delete(request: HttpRequest, pk: int) -> HttpResponse:
    project = project_get(request.user, pk)
    try:
        services.project_delete(user=request.user, project=project)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect(project.get_absolute_url())
    messages.success(request, f"Project “{project.name}” deleted.")
    return redirect("projects:list")


@login_required
def project_integrations(request: HttpRequest, pk: int) -> HttpResponse:
    project = project_get(request.user, pk)
    editable = can_change(request.user, project.organization)
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
    if not can_change(request.user, project.organization):
        raise PermissionDenied("Viewers cannot run integration checks; the result is saved on the project.")
    integration = project.integrations.filter(kind=kind).first()
    if integration is None:
        raise Http404("That integration is not set.")
    from catalog import integrations as catalog_integrations

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


@login_required
@require_POST
def integration_delete(request: HttpRequest, pk: int, kind: str) -> HttpResponse:
    project = project_get(request.user, pk)
    integration = project.integrations.filter(kind=kind).first()
    if integration is None:
        raise Http404("That integration is not set.")
    services.integration_delete(user=request.user, integration=integration)
    messages.success(request, f"{integration.get_kind_display()} removed.")
    return redirect("projects:integrations", pk=project.pk)
