"""Governance pages: audit log, object history, deployment sharing, environments, GPU quotas."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import pluralize
from django.urls import NoReverseMatch, reverse
from django.utils.text import capfirst
from django.views.decorators.http import require_POST

from console import permissions
from console.edit import ActionView, EditView
from console.http import current_organization as _organization
from console.http import redirect_after_post as _redirect
from console.ids import parse_id
from console.paging import paginate
from projects import services as project_services
from projects.models import Organization
from projects.selectors import project_get, quota_limits
from projects.services import QUOTA_LIMIT_FIELDS
from sharing import selectors, services
from sharing.forms import (
    AccessForm,
    AuditFilterForm,
    EnvironmentForm,
    PromoteForm,
    QuotaForm,
    ShareForm,
)
from sharing.models import AccessKind, ShareMode

PAGE_SIZE = 50


def _link(url_name: str, *args) -> str:
    try:
        return reverse(url_name, args=args)
    except NoReverseMatch:  # the page belongs to a part of the product not built yet
        return ""


# ---------------------------------------------------------------- audit log


@login_required
def audit(request: HttpRequest) -> HttpResponse:
    """The organization's audit log: the filter form narrows it, the headers sort it and the pager
    pages it on the server (console.paging), all kept in the URL; htmx swaps #audit-results."""
    org = _organization(request)
    form = AuditFilterForm(request.GET or None)
    form.is_valid()  # a filter that can't be read is shown as an error; the others still apply
    filters = getattr(form, "cleaned_data", {})
    entries = selectors.audit_entries_for_user(
        request.user,
        org,
        **{k: v for k, v in filters.items() if v not in (None, "")},
    )
    # The form's fields (q included) narrow the queryset above; paginate only sorts and pages,
    # and its links carry the filters along as other parameters of the URL.
    listing = paginate(request, entries, sorts=selectors.AUDIT_SORTS,
                       default_sort=selectors.AUDIT_DEFAULT_SORT, per_page=PAGE_SIZE)  # fmt: skip
    selectors.audit_reference_names(listing.rows)
    object_types = (
        selectors.audit_entries_for_user(request.user, org)
        .order_by()
        .values_list("object_type", flat=True)
        .distinct()
    )
    context = {
        "form": form,
        "listing": listing,
        "entries": listing.rows,
        # The filter form sends the list's sort and page size along (a new filter starts at page 1).
        "carried": [(k, v) for k, v in listing.params.items() if k in {"sort", "per_page"}],
        "organization": org,
        "object_types": sorted(object_types),
    }
    if request.htmx and request.htmx.target == "audit-results":
        return render(request, "sharing/htmx/audit_results.html", context)
    return render(request, "sharing/audit.html", context)


def _check_object_visible(user, org: Organization, object_type: str, object_id: str) -> None:
    """The object must belong to the user's organization; unknown types must have entries there."""
    pk = parse_id(object_id)
    if pk is None:
        return
    if object_type == "deployment":
        deployment = selectors.deployment_get(user, pk)
        if deployment.project.organization_id != org.pk:
            raise Http404
    elif object_type == "project":
        if project_get(user, pk).organization_id != org.pk:
            raise Http404
    elif object_type == "environment":
        if selectors.environment_get(user, pk).project.organization_id != org.pk:
            raise Http404
    elif object_type == "organization":
        if pk != org.pk:
            raise Http404


@login_required
def object_history(request: HttpRequest, object_type: str, object_id: str) -> HttpResponse:
    """One object's changes; a fragment other pages embed with hx-get (a full page otherwise)."""
    org = _organization(request)
    entries = selectors.audit_entries_for_user(
        request.user, org, object_type=object_type, object_id=object_id
    )
    known = object_type in {"deployment", "project", "environment", "organization"}
    if known and parse_id(object_id) is not None:
        _check_object_visible(request.user, org, object_type, object_id)
    elif not entries.exists():
        raise Http404("No history for that object.")
    # Pages of 25, newest first (a deployment scaled every few minutes has hundreds of changes).
    listing = paginate(request, entries, sorts={"when": "created_at"}, default_sort="-when", per_page=25)
    selectors.audit_reference_names(listing.rows)
    context = {
        "listing": listing,
        "entries": listing.rows,
        "object_type": object_type,
        "object_id": object_id,
        "object_repr": listing.rows[0].object_repr if listing.rows else f"{object_type} {object_id}",
    }
    if request.htmx:
        return render(request, "sharing/htmx/object_history.html", context)
    return render(request, "sharing/object_history.html", context)


# ---------------------------------------------------------------- sharing


@login_required
def deployment_sharing(request: HttpRequest, deployment_pk: int) -> HttpResponse:
    deployment = selectors.deployment_get(request.user, deployment_pk)
    owner = deployment.project.organization
    share = selectors.share_for(deployment)
    policy = selectors.access_policy_for(deployment)
    allowed, reason = permissions.check(request.user, "share", deployment)
    shared_org_ids = [owner.pk, *share.organization_ids]
    share_form = ShareForm(
        initial={"mode": share.mode, "organizations": share.organization_ids}, owner=owner
    )
    access_form = AccessForm(
        initial={"kind": policy.kind, "groups": policy.group_ids, "users": policy.user_ids},
        # Never list every user of every tenant: with "all organizations" only the owner's show.
        organization_ids=shared_org_ids if share.mode == ShareMode.SPECIFIC else [owner.pk],
        user_ids=policy.user_ids,
    )
    if request.method == "POST":
        if not allowed:
            raise PermissionDenied(reason)
        which = request.POST.get("form")
        if which == "share":
            share_form = ShareForm(request.POST, owner=owner)
            if share_form.is_valid():
                try:
                    services.deployment_share_set(
                        user=request.user,
                        deployment=deployment,
                        mode=share_form.cleaned_data["mode"],
                        organizations=share_form.cleaned_data["organizations"],
                    )
                except ValidationError as exc:
                    share_form.add_service_error(exc)
                else:
                    messages.success(request, "Sharing saved.")
                    return _redirect(
                        request, reverse("sharing:deployment_sharing", args=[deployment.pk])
                    )
        elif which == "access":
            access_form = AccessForm(
                request.POST,
                organization_ids=list(Organization.objects.values_list("pk", flat=True)),
            )
            if access_form.is_valid():
                data = access_form.cleaned_data
                try:
                    services.access_policy_set(
                        user=request.user,
                        deployment=deployment,
                        kind=data["kind"],
                        groups=data["groups"],
                        users=data["users"],
                    )
                except ValidationError as exc:
                    access_form.add_service_error(exc)
                else:
                    messages.success(request, "Access policy saved.")
                    return _redirect(
                        request, reverse("sharing:deployment_sharing", args=[deployment.pk])
                    )
        else:
            return HttpResponse("Say which form: share or access.", status=400)
    context = {
        "deployment": deployment,
        "share": share,
        "policy": policy,
        "share_form": share_form,
        "access_form": access_form,
        "can_share": allowed,
        "reason": reason,
        "is_public": policy.kind == AccessKind.PUBLIC,
        "deployment_url": _link("deployments:detail", deployment.pk),
        "history_url": reverse("sharing:object_history", args=["deployment", deployment.pk]),
    }
    return render(request, "sharing/deployment_sharing.html", context)


# ---------------------------------------------------------------- promotion


@login_required
def deployment_promote(request: HttpRequest, deployment_pk: int) -> HttpResponse:
    """Pick a revision and a target environment; the plan (or every broken rule) shows before promoting."""
    deployment = selectors.deployment_get(request.user, deployment_pk)
    allowed, reason = permissions.check(request.user, "change", deployment)
    data = (
        request.POST
        if request.method == "POST"
        else (request.GET if "revision" in request.GET else None)
    )
    form = PromoteForm(
        data,
        deployment=deployment,
        initial={
            "revision": deployment.current_revision.number if deployment.current_revision else None
        },
    )
    plan = None
    if request.method == "POST" and not allowed:
        raise PermissionDenied(reason)
    if data is not None and form.is_valid():
        args = {
            "user": request.user,
            "deployment": deployment,
            "revision_number": form.cleaned_data["revision"],
            "target_environment": form.cleaned_data["target_environment"],
        }
        try:
            if request.method == "POST" and request.POST.get("confirm") == "1":
                result = services.promote(**args)
                target = result if hasattr(result, "project_id") else result.deployment
                messages.success(
                    request,
                    f"Revision {args['revision_number']} promoted to "
                    f"{args['target_environment'].name} as “{target.name}”.",
                )
                return _redirect(
                    request,
                    _link("deployments:detail", target.pk)
                    or reverse("sharing:deployment_promote", args=[deployment.pk]),
                )
            plan = services.promotion_plan(**args)
        except ValidationError as exc:
            form.add_service_error(exc)
        except PermissionDenied as exc:
            form.add_error(None, str(exc))
    context = {
        "deployment": deployment,
        "form": form,
        "plan": plan,
        "can_promote": allowed,
        "reason": reason,
        "deployment_url": _link("deployments:detail", deployment.pk),
        "environments_url": reverse("sharing:environments", args=[deployment.project_id]),
    }
    if request.htmx:
        return render(request, "sharing/htmx/promote_form.html", context)
    return render(request, "sharing/deployment_promote.html", context)


# ---------------------------------------------------------------- environments


@login_required
def environments(request: HttpRequest, project_pk: int) -> HttpResponse:
    project = project_get(request.user, project_pk)
    envs = selectors.environments_for_user(request.user, project).order_by("name")
    rows = [{"environment": e, "deployments": e.deployments.count()} for e in envs]
    return render(
        request,
        "sharing/environments.html",
        {
            "project": project,
            "rows": rows,
            "can_change": permissions.can(request.user, "change", project),
        },
    )


class _EnvironmentEdit(EditView):
    form_class = EnvironmentForm
    template_name = "sharing/environment_form.html"
    fragment_template = "sharing/htmx/environment_form.html"
    what = "environments"

    def success_url(self, request, environment):
        return reverse("sharing:environments", args=[environment.project_id])

    def success_message(self, environment):
        return f"Environment “{environment.name}” {self.done}."


class EnvironmentCreate(_EnvironmentEdit):
    done = "created"

    @cached_property
    def project(self):
        return project_get(self.request.user, self.kwargs["project_pk"])

    def permission_target(self, request, obj):
        return self.project

    def form_kwargs(self, request, obj):
        return {"project": self.project}

    def save(self, request, obj, form):
        return services.environment_create(user=request.user, project=self.project, **form.cleaned_data)

    def context(self, request, obj, form):
        return {"project": self.project, "environment": None}


class EnvironmentEdit(_EnvironmentEdit):
    done = "saved"

    def get_object(self, request, pk):
        return selectors.environment_get(request.user, pk)

    def permission_target(self, request, environment):
        return environment.project

    def form_kwargs(self, request, environment):
        return {"project": environment.project, "instance": environment,
                "initial": EnvironmentForm.initial_for(environment)}  # fmt: skip

    def save(self, request, environment, form):
        data = {key: value for key, value in form.cleaned_data.items() if key != "slug"}
        services.environment_update(user=request.user, environment=environment, **data)
        environment.refresh_from_db()
        return environment

    def context(self, request, environment, form):
        return {"project": environment.project, "environment": environment}


environment_create = EnvironmentCreate.as_view()
environment_edit = EnvironmentEdit.as_view()


class EnvironmentDelete(ActionView):
    def get_object(self, request, pk):
        return selectors.environment_get(request.user, pk)

    def act(self, request, environment):
        services.environment_delete(user=request.user, environment=environment)

    def success_message(self, environment, result):
        return f"Environment “{environment.name}” deleted."

    def success_url(self, request, environment):
        return reverse("sharing:environments", args=[environment.project_id])


environment_delete = EnvironmentDelete.as_view()


# ---------------------------------------------------------------- quotas


def _quotas_page(
    request: HttpRequest, *, errors: dict[str, str] | None = None, typed: dict[str, Any] | None = None,
    status: int = 200,
) -> HttpResponse:
    """The quotas page. A refused form (400) is shown as typed, with the reason under it:
    ``errors`` and ``typed`` are keyed by the form that was refused ("organization",
    "project-<pk>", "limits-organization", "limits-<pk>")."""
    errors, typed = errors or {}, typed or {}
    org = _organization(request)
    overview = selectors.quota_overview(request.user, org)
    for row in overview["rows"]:
        row["error_key"] = f"project-{row['project'].pk}"
        row["error"] = errors.get(row["error_key"], "")
        row["typed"] = typed.get(row["error_key"], {}).get("gpu_quota", "")
        for holder in row["holders"]:
            holder["url"] = (
                _link("deployments:detail", holder["deployment_id"])
                if holder["deployment_id"]
                else ""
            )
    # The organization and a project may share a name ("demo"): each row says which it is.
    limit_rows = [{"key": "limits-organization", "kind": "Organization", "name": org.name, "limits": quota_limits(org),
                   "url": reverse("sharing:quota_limits_organization")}]  # fmt: skip
    limit_rows += [
        {"key": f"limits-{row['project'].pk}", "kind": "Project", "name": row["project"].name,
         "limits": quota_limits(row["project"]), "url": reverse("sharing:quota_limits_project", args=[row["project"].pk])}
        for row in overview["rows"]
    ]  # fmt: skip
    for row in limit_rows:
        row["error"] = errors.get(row["key"], "")
        refused = typed.get(row["key"])
        for limit in row["limits"]:
            # What the input shows: the stored quota, or what was typed when the form was refused.
            limit["shown"] = refused.get(limit["name"], "") if refused is not None else limit["quota"]
            limit["invalid"] = refused is not None and limit["name"] in refused.get("refused_fields", ())
    return render(
        request,
        "sharing/quotas.html",
        {
            "organization": org,
            **overview,
            "is_admin": permissions.can(request.user, "admin", org),
            "org_error": errors.get("organization", ""),
            "org_typed": typed.get("organization", {}).get("gpu_quota", ""),
            "limit_rows": limit_rows,
        },
        status=status,
    )


@login_required
def quotas(request: HttpRequest) -> HttpResponse:
    return _quotas_page(request)


def _limits_from(request: HttpRequest) -> dict[str, int | None]:
    """The quota form's text as the service's input: empty means no limit; anything else not a
    whole number is passed on as -1, for the service to refuse in its own words."""
    out: dict[str, Any] = {}
    for name in QUOTA_LIMIT_FIELDS:
        text = (request.POST.get(name) or "").strip()
        # ASCII digits only: "²".isdigit() is true but int() refuses it.
        out[name] = None if not text else int(text) if text.isascii() and text.isdigit() else -1
    return out


@login_required
@require_POST
def quota_limits_set(request: HttpRequest, project_pk: int | None = None) -> HttpResponse:
    """Quotas beyond GPUs of the organization or one project (projects.services.quota_limits_set)."""
    org = _organization(request)
    owner = project_get(request.user, project_pk) if project_pk is not None else org
    key = f"limits-{project_pk}" if project_pk is not None else "limits-organization"
    try:
        project_services.quota_limits_set(user=request.user, owner=owner, **_limits_from(request))
    except ValidationError as exc:
        fields = exc.message_dict if hasattr(exc, "error_dict") else {}
        labels = {limit["name"]: limit["label"] for limit in quota_limits(owner)}
        words = [f"{capfirst(labels.get(name, name))}: {' '.join(ms)}" for name, ms in fields.items()] or exc.messages
        typed = {name: request.POST.get(name, "") for name in QUOTA_LIMIT_FIELDS}
        typed["refused_fields"] = tuple(fields)
        who = f"Project “{owner.name}”" if project_pk is not None else f"Organization “{owner.name}”"
        return _quotas_page(request, errors={key: f"{who}: " + " ".join(words)}, typed={key: typed}, status=400)
    messages.success(request, f"Quotas of {owner.name} saved.")
    return redirect("sharing:quotas")


def _gpu_quota_set(request: HttpRequest, set_quota: Callable[[int], Any]) -> int:
    """Parse the GPU quota form and hand it to the service; the GPUs now allowed. A refusal (the
    form's or the service's) raises ValidationError, which the caller shows under the field."""
    form = QuotaForm(request.POST)
    if not form.is_valid():
        raise ValidationError(" ".join(m for ms in form.errors.values() for m in ms))
    set_quota(form.cleaned_data["gpu_quota"])
    return form.cleaned_data["gpu_quota"]


def _quota_refused(request: HttpRequest, key: str, who: str, exc: ValidationError) -> HttpResponse:
    """The page again, 400, the typed value kept in its field and the reason under it."""
    return _quotas_page(
        request, errors={key: f"{who}: " + " ".join(exc.messages)},
        typed={key: {"gpu_quota": request.POST.get("gpu_quota", "")}}, status=400,
    )  # fmt: skip


@login_required
@require_POST
def quota_project(request: HttpRequest, project_pk: int) -> HttpResponse:
    project = project_get(request.user, project_pk)
    if not permissions.can(request.user, "admin", project):
        raise PermissionDenied("Only organization admins can change GPU quotas.")
    key = f"project-{project.pk}"
    try:
        gpus = _gpu_quota_set(request, lambda quota: services.project_quota_set(
            user=request.user, project=project, gpu_quota=quota))  # fmt: skip
    except ValidationError as exc:
        return _quota_refused(request, key, f"Project “{project.name}”", exc)
    org_quota = project.organization.gpu_quota
    beyond = (f" The organization's quota of {org_quota} GPU{pluralize(org_quota)} still caps all its projects together."
              if gpus > org_quota else "")  # fmt: skip
    messages.success(request, f"Project “{project.name}” may now hold {gpus} GPU{pluralize(gpus)}.{beyond}")
    return redirect("sharing:quotas")


@login_required
@require_POST
def quota_organization(request: HttpRequest) -> HttpResponse:
    org = _organization(request)
    if not permissions.can(request.user, "admin", org):
        raise PermissionDenied("Only organization admins can change the organization's GPU quota.")
    try:
        gpus = _gpu_quota_set(request, lambda quota: project_services.organization_quota_set(
            user=request.user, organization=org, gpu_quota=quota))  # fmt: skip
    except ValidationError as exc:
        return _quota_refused(request, "organization", "Organization quota", exc)
    messages.success(request, f"{org.name} may now hold {gpus} GPU{pluralize(gpus)}.")
    return redirect("sharing:quotas")
