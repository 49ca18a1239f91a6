"""The console shell: dashboard, organization switcher, settings, health, favicon and placeholder pages."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.views.decorators.http import require_GET, require_POST

from console import health, permissions
from console.ids import parse_id
from console.middleware import SESSION_KEY
from deployments.models import DeploymentState, ModelDeployment
from deployments.selectors import ENDPOINT_UNREACHABLE
from projects import services as project_services
from projects.models import IntegrationKind
from projects.selectors import (
    organizations_for_user,
    projects_for_user,
    with_gpu_use,
)
from sharing.forms import QuotaForm


@require_GET
def favicon(request: HttpRequest) -> HttpResponseRedirect:
    """Browsers ask for /favicon.ico on pages that don't link the icon (the admin, JSON)."""
    return HttpResponseRedirect(static("modeldeck/favicon.svg"))


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    result = health.report()
    shown = result if health.may_see_details(request) else health.public_view(result)
    return JsonResponse(shown, status=200 if result["status"] == "ok" else 503)


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    org = request.organization
    context: dict = {"organization": org}
    if org is not None:
        projects = list(with_gpu_use(projects_for_user(request.user, org)))
        context.update(
            projects=projects,
            org_used=org.gpu_used(),
            org_quota=org.gpu_quota,
        )

        deployments = ModelDeployment.objects.filter(project__organization=org)
        context["deployment_count"] = deployments.count()
        context["running_count"] = deployments.filter(state=DeploymentState.RUNNING).count()
        context["failed_count"] = deployments.filter(state=DeploymentState.FAILED).count()
        context["unreachable_count"] = deployments.filter(ENDPOINT_UNREACHABLE).count()
        context["model_count"] = org.models.count()
    return render(request, "console/dashboard.html", context)


@login_required
@require_POST
def org_switch(request: HttpRequest) -> HttpResponse:
    wanted = request.POST.get("organization", "")
    org = organizations_for_user(request.user).filter(pk=parse_id(wanted) or -1).first()
    if org is None:
        messages.error(request, "You are not a member of that organization.")
    else:
        request.session[SESSION_KEY] = org.pk
        messages.success(request, f"Switched to {org.name}.")
    return redirect("dashboard")


@login_required
def settings_page(request: HttpRequest) -> HttpResponse:
    org = request.organization
    if org is None:
        return render(request, "console/settings.html", {"organization": None})
    quota_error, status = "", 200
    if request.method == "POST":
        # The same form and service as the quotas page (sharing.views.quota_organization).
        form = QuotaForm(request.POST)
        try:
            if not form.is_valid():
                raise ValidationError([m for errors in form.errors.values() for m in errors])
            quota = form.cleaned_data["gpu_quota"]
            project_services.organization_quota_set(user=request.user, organization=org, gpu_quota=quota)
        except PermissionDenied as exc:
            messages.error(request, str(exc))
        except ValidationError as exc:
            # Refused: the page again with what was typed in the field and the reason under it.
            quota_error, status = " ".join(exc.messages), 400
        else:
            messages.success(request, f"The organization's GPU quota is now {quota}.")
            return redirect("settings")
    projects = projects_for_user(request.user, org).prefetch_related("integrations")
    rows = []
    for project in projects:
        by_kind = {i.kind: i for i in project.integrations.all()}
        rows.append({"project": project, "integrations": [(k, by_kind.get(k.value)) for k in IntegrationKind]})
    return render(
        request,
        "console/settings.html",
        {"organization": org, "rows": rows, "is_admin": permissions.can(request.user, "admin", org), "org_used": org.gpu_used(),
         "quota_error": quota_error},
        status=status,
    )  # fmt: skip


def coming_soon(title: str, summary: str, meanwhile: str):
    @login_required
    def view(request: HttpRequest) -> HttpResponse:
        return render(request, "console/coming_soon.html", {"title": title, "summary": summary, "meanwhile": meanwhile})

    return view
