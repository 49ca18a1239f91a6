"""Deployments pages: compute pools, endpoints, the deployment form, list and detail with actions."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Q, QuerySet, Sum
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_POST

from catalog import maas
from catalog import selectors as catalog_selectors
from catalog.selectors import model_get
from console import permissions
from console.crypto import last4
from console.edit import EditView
from console.forms import field_validation_response
from console.http import current_organization as _organization
from console.http import redirect_after_post as _redirect
from console.ids import parse_id
from console.paging import ListFilter, Listing, list_query, paginate
from deployments import external, galleries, observe, renderers, selectors, services
from deployments import spec as spec_module
from deployments.forms import (
    SANDBOX_LABEL,
    DataSourceForm,
    DeploymentForm,
    EndpointForm,
    ExternalDeploymentForm,
    PoolForm,
    ResourceTemplateForm,
    ScaleForm,
    initial_from_spec,
)
from deployments.kube.kubeconfig import KubeconfigRefused, reduce_kubeconfig
from deployments.models import (
    POOL_EXPOSURE_FIELDS,
    ComputePool,
    DataSource,
    DeploymentKind,
    DeploymentState,
    ModelDeployment,
    PoolKind,
    ResourceTemplate,
    Revision,
)
from gateway import reports
from gateway.overflow import HEALTH_INTERVAL_S
from gateway.overflow import breaker_state as overflow_state
from gateway.reports import served_split
from projects.models import Environment, GpuReservation
from projects.selectors import projects_for_user

log = logging.getLogger(__name__)

# States the status poll may stop at: nothing will change them without a user acting.
FINAL_STATES = frozenset(
    {DeploymentState.RUNNING, DeploymentState.FAILED, DeploymentState.DEACTIVATED}
)
STOP_POLLING = 286  # htmx stops an `every` trigger on this status
TABS = ("overview", "replicas", "logs", "metrics", "deployment", "events", "manifests", "history")


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


def _error_text(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return " ".join(
            str(m) for errors in exc.error_dict.values() for e in errors for m in e.messages
        )
    return " ".join(exc.messages)


def _url_or_none(name: str, *args) -> str | None:
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return None


# ---------------------------------------------------------------------------------------------
# Compute pools
# ---------------------------------------------------------------------------------------------


def _pool_get(request: HttpRequest, pk: int) -> ComputePool:
    return selectors.pool_get(request.user, pk)


POOL_SORTS = {
    "name": "name", "kind": "kind", "engine": "engine_label", "region": "region",
    "deployments": "deployment_count",
}  # fmt: skip


@login_required
def pool_list(request: HttpRequest) -> HttpResponse:
    org = _organization(request)
    listing = paginate(
        request,
        selectors.pools_for_user(request.user, org).annotate(deployment_count=Count("deployments")),
        sorts=POOL_SORTS,
        default_sort="name",
        search=("name", "engine_label", "region", "description"),
        filters=[ListFilter("kind", "Connection", PoolKind.choices)],
    )
    for pool in listing.rows:
        pool.gpu_total = _pool_gpu_total(pool.last_check or {})
        pool.connection = _pool_connection(pool)
    return render(
        request,
        "deployments/pool_list.html",
        {
            "pools": listing.rows,
            "listing": listing,
            "can_change": permissions.may_register_pool(request.user, org),
            "sandbox_label": SANDBOX_LABEL,
        },
    )


def _pool_form_page(
    request: HttpRequest, form: PoolForm, pool: ComputePool | None = None
) -> HttpResponse:
    context = {
        "form": form,
        "pool": pool,
        "validate_url": request.path,
        "sandbox_label": SANDBOX_LABEL,
    }
    if request.htmx and request.method == "POST":
        return render(request, "deployments/htmx/pool_form.html", context)
    return render(request, "deployments/pool_form.html", context)


@login_required
def pool_create(request: HttpRequest) -> HttpResponse:
    org = _organization(request)
    if not permissions.may_register_pool(request.user, org):
        raise PermissionDenied(
            "Platform operators register compute pools; ask one to grant your organization a pool."
        )
    form = PoolForm(
        request.POST or None,
        request.FILES or None,
        organization=org,
        operator=permissions.is_pool_operator(request.user),
    )
    if request.method == "POST":
        partial = field_validation_response(request, form, request.path)
        if partial is not None:
            return partial
        if form.is_valid():
            try:
                pool = services.pool_create(
                    user=request.user,
                    organization=org,
                    kind=form.cleaned_data["kind"],
                    **form.service_kwargs(),
                )
            except ValidationError as exc:
                form.add_service_error(exc)
            else:
                messages.success(
                    request, f"Compute pool “{pool.name}” registered. Test its connection next."
                )
                return _redirect(request, reverse("deployments:pool_detail", args=[pool.pk]))
    return _pool_form_page(request, form)


@login_required
def pool_detail(request: HttpRequest, pk: int) -> HttpResponse:
    pool = _pool_get(request, pk)
    deployments = ModelDeployment.objects.filter(pool=pool).select_related("project", "model")
    tls_off = False
    if pool.kind == PoolKind.KUBECONFIG:
        try:
            tls_off = reduce_kubeconfig(pool.kubeconfig or "").insecure_skip_tls_verify
        except KubeconfigRefused:
            pass  # the connection test names the refused field
    return render(
        request,
        "deployments/pool_detail.html",
        {
            "tls_off": tls_off,
            "deployments": deployments,
            "can_change": permissions.may_manage_pool(request.user, pool),
            "can_test": permissions.may_manage_pool(request.user, pool),
            **_pool_cards(pool, pool.last_check or {}),
        },
    )


def _pool_gpu_total(check: dict[str, Any]) -> int | None:
    """GPUs the pool's last connection test counted: what the list and the pool's page show.
    None: not counted (never tested, or the last test failed), which is not 0 GPUs."""
    if not check.get("ok"):
        return None
    return sum(int(n.get("gpus") or 0) for n in check.get("nodes") or [])


def _pool_connection(pool: ComputePool) -> str:
    """The list's Status, from the same sources as the pool's page: the last connection test,
    else what the status sync last found. "untested": neither has looked at it yet."""
    check = pool.last_check or {}
    if check:
        # The sync's later failure outranks an old good test; its success adds nothing new.
        if check.get("ok") and pool.reachable is False:
            return "unreachable"
        return "connected" if check.get("ok") else "failed"
    if pool.reachable is None:
        return "untested"
    return "reachable" if pool.reachable else "unreachable"


def _pool_cards(pool: ComputePool, check: dict[str, Any]) -> dict[str, Any]:
    """What the Connection and GPUs cards show, from one connection check: the page and Test
    connection's answer (which swaps both cards) render the same, so they never disagree.

    ``pool.last_checked_at`` is not when it was tested: the status sync stamps it each time it
    reaches (or fails to reach) the pool; the test's own time is in the check."""
    nodes = (check.get("nodes") or []) if check.get("ok") else []
    return {
        "pool": pool,
        "check": check,
        "tested_at": parse_datetime(check.get("checked_at") or ""),
        "gpu_total": _pool_gpu_total(check),
        "gpu_products": sorted({n["gpu_product"] for n in nodes if n.get("gpu_product")}),
        "gpus_held": selectors.pool_gpus_held(pool),
        "sandbox_label": SANDBOX_LABEL,
        "advice": selectors.connection_advice(check.get("error", "")),
    }


@login_required
def pool_edit(request: HttpRequest, pk: int) -> HttpResponse:
    pool = _pool_get(request, pk)
    if not permissions.may_manage_pool(request.user, pool):
        raise PermissionDenied("Platform operators manage this compute pool.")
    initial = {
        "name": pool.name,
        "kind": pool.kind,
        "engine_label": pool.engine_label,
        "api_url": pool.api_url,
        "region": pool.region,
        "description": pool.description,
        "private_addresses_allowed": pool.private_addresses_allowed,
        **{name: getattr(pool, name) for name in POOL_EXPOSURE_FIELDS},
    }
    form = PoolForm(
        request.POST or None,
        request.FILES or None,
        organization=pool.organization,
        instance=pool,
        initial=initial,
        operator=permissions.is_pool_operator(request.user),
    )
    if request.method == "POST":
        partial = field_validation_response(request, form, request.path)
        if partial is not None:
            return partial
        if form.is_valid():
            try:
                services.pool_update(user=request.user, pool=pool, **form.service_kwargs())
            except ValidationError as exc:
                form.add_service_error(exc)
            else:
                messages.success(request, f"Compute pool “{pool.name}” saved.")
                return _redirect(request, reverse("deployments:pool_detail", args=[pool.pk]))
    return _pool_form_page(request, form, pool)


@login_required
@require_POST
def pool_delete(request: HttpRequest, pk: int) -> HttpResponse:
    pool = _pool_get(request, pk)
    if not permissions.may_manage_pool(request.user, pool):
        raise PermissionDenied("Platform operators manage this compute pool.")
    try:
        services.pool_delete(user=request.user, pool=pool)
    except ValidationError as exc:
        messages.error(request, _error_text(exc))
        return redirect("deployments:pool_detail", pk=pool.pk)
    messages.success(request, f"Compute pool “{pool.name}” removed.")
    return redirect("deployments:pools")


@login_required
@require_POST
def pool_test(request: HttpRequest, pk: int) -> HttpResponse:
    pool = _pool_get(request, pk)
    if not permissions.may_manage_pool(request.user, pool):
        raise PermissionDenied("Platform operators test this compute pool.")
    try:
        result = services.pool_test_connection(user=request.user, pool=pool)
    except ValidationError as exc:
        result = {"ok": False, "error": _error_text(exc), "nodes": []}
    pool.refresh_from_db()
    if request.htmx:
        # The Connection card, and the GPUs card out of band: both from this test.
        return render(request, "deployments/htmx/pool_test.html", _pool_cards(pool, result or {}))
    if result.get("ok"):
        messages.success(
            request, f"Connected to {pool.name}: Kubernetes {result.get('version', '?')}."
        )
    else:
        messages.error(
            request, f"Could not connect to {pool.name}: {result.get('error', 'unknown error')}"
        )
    return redirect("deployments:pool_detail", pk=pool.pk)


# ---------------------------------------------------------------------------------------------
# Endpoints
# ---------------------------------------------------------------------------------------------


def _endpoints(request: HttpRequest, org):
    return selectors.endpoints_for_user(request.user, org).select_related("project")


class EndpointList(EditView):
    """The organization's endpoints and the form that adds one."""

    form_class = EndpointForm
    template_name = "deployments/endpoint_list.html"
    fragment_template = "deployments/htmx/endpoint_form.html"
    what = "endpoints"
    read_by_all = True

    def permission_target(self, request, obj):
        return _organization(request)

    def form_kwargs(self, request, obj):
        projects = projects_for_user(request.user, _organization(request))
        return {"projects": projects, "initial": {"project": request.GET.get("project")}}

    def save(self, request, obj, form):
        data = form.cleaned_data
        return services.endpoint_create(
            user=request.user, project=data["project"], name=data["name"].strip(), path=data["path"]
        )

    def success_message(self, endpoint):
        return f"Endpoint “{endpoint.name}” ({endpoint.path}) created."

    def success_url(self, request, endpoint):
        return reverse("deployments:endpoints")

    def context(self, request, obj, form):
        org = _organization(request)
        return {
            "endpoints": _endpoints(request, org).prefetch_related("deployments"),
            "can_change": permissions.can(request.user, "change", org),
            "gateway": settings.GATEWAY_BASE_URL.rstrip("/"),
        }


endpoint_list = EndpointList.as_view()


@login_required
@require_POST
def endpoint_delete(request: HttpRequest, pk: int) -> HttpResponse:
    endpoint = selectors.endpoints_for_user(request.user).filter(pk=pk).first()
    if endpoint is None:
        raise Http404("No such endpoint.")
    permissions.require(request.user, "change", endpoint)
    try:
        services.endpoint_delete(user=request.user, endpoint=endpoint)
    except ValidationError as exc:
        messages.error(request, _error_text(exc))
    else:
        messages.success(request, f"Endpoint “{endpoint.name}” deleted.")
    return redirect("deployments:endpoints")


# ---------------------------------------------------------------------------------------------
# Deployments: list
# ---------------------------------------------------------------------------------------------


DEPLOYMENT_SORTS = {
    "name": "name",
    "state": "state",
    "model": "model__name",
    "pool": "pool__name",
    "project": "project__name",
    "created": "created_at",
}
POLL_MAX_ROWS = 100  # a poll asks for one page's rows at most (the largest page size)
# The list polls this often (seconds) while a row on the page is in transition, else slowly: a
# change elsewhere (a deactivate, a failure, a deployment added) still shows within that time.
POLL_FAST_S, POLL_SLOW_S = 3, 15
POLL_OWN = ("ids",)  # the poll's own parameter; the rest of its URL is the page's (sort, filters, page)


def _poll_rows(request: HttpRequest) -> dict[int, str]:
    """A status poll's `ids`: `pk.version` for each row on the page, in the page's order (a bare
    pk, from a page rendered before versions existed, counts as changed)."""
    rows: dict[int, str] = {}
    for part in (request.GET.get("ids") or "").split(",")[:POLL_MAX_ROWS]:
        pk, _, version = part.strip().partition(".")
        if (row_id := parse_id(pk)) is not None:
            rows[row_id] = version
    return rows


def _poll(versions: dict[int, str], changing: bool, params: dict[str, str]) -> dict[str, Any]:
    """What the poll's element carries: the rows shown with their versions, then the page's own
    parameters (so it reads the page the user is on), and how often to ask."""
    ids = ",".join(f"{pk}.{version}" for pk, version in versions.items())
    return {
        "poll_url": f"{reverse('deployments:list')}?{urlencode({'ids': ids, **params}, safe=',')}",
        "poll_every": POLL_FAST_S if changing else POLL_SLOW_S,
    }


def _deployment_listing_options(request: HttpRequest, org, *, poll: bool = False) -> dict[str, Any]:
    """The list's sorts, search and filters: the page and its poll read the same rows. The poll
    reads the projects (the filter's choices) only when the page is filtered by one."""
    projects = []
    if not poll or request.GET.get("project"):
        projects = [(str(p.pk), p.name) for p in projects_for_user(request.user, org).order_by("name")]
    return {
        "sorts": DEPLOYMENT_SORTS,
        "default_sort": "-created",
        "search": ("name", "model__name", "pool__name", "project__name"),
        "filters": [
            ListFilter("state", "State", DeploymentState.choices),
            ListFilter("project", "Project", projects, field="project_id"),
        ],
        "ignore": POLL_OWN,
    }


def _deployment_listing(request: HttpRequest, visible: QuerySet[ModelDeployment], org) -> dict[str, Any]:
    """One page of the list, as the page and a poll that saw its rows change draw it."""
    listing = paginate(request, selectors.with_gpus_held(visible), **_deployment_listing_options(request, org))
    deployments = listing.rows  # annotated with gpus_reserved (selectors.with_gpus_held)
    versions = {d.pk: selectors.deployment_version(d) for d in deployments}
    changing = any(d.in_transition() for d in deployments)
    return {"deployments": deployments, "listing": listing, **_poll(versions, changing, listing.params)}


def _deployment_status_poll(
    request: HttpRequest, visible: QuerySet[ModelDeployment], org
) -> HttpResponse:
    """The list's status poll, over the page the user is on (its sort, filters and page ride in
    the URL). It reads that page's rows again in one query: 204 when they are the same rows, each
    unchanged; the changed ones out of band when only rows changed (final states included: a
    Running deployment can be deactivated elsewhere, or fail later); the whole table body when the
    page now holds other rows (one added or deleted elsewhere, a row that sorts elsewhere now)."""
    asked = _poll_rows(request)
    lq = list_query(request, visible, **_deployment_listing_options(request, org, poll=True))
    current = selectors.deployment_page_versions(lq.qs, lq.start, lq.size)
    if [pk for pk, _, _ in current] != list(asked):
        if current and not asked:
            # The page showed no row (maybe not even a table): drawn whole, with its summary cards.
            response = HttpResponse()
            response["HX-Refresh"] = "true"
            return response
        response = render(request, "deployments/htmx/list_body.html", _deployment_listing(request, visible, org))
        response["HX-Trigger"] = "deployments-changed"
        return response
    versions = {pk: version for pk, version, _ in current}
    changing = {pk for pk, _, moving in current if moving}
    changed = [pk for pk, version in versions.items() if asked[pk] != version]
    if not changed:
        return HttpResponse(status=204)
    rows = list(selectors.with_gpus_held(visible.filter(pk__in=changed)))
    # The rendered row's own version, not the one read a moment earlier: the next poll compares
    # against what the page shows.
    for d in rows:
        versions[d.pk] = selectors.deployment_version(d)
        changing.discard(d.pk)
        if d.in_transition():
            changing.add(d.pk)
    vanished = set(changed) - {d.pk for d in rows}  # deleted between the two reads
    watched = {pk: version for pk, version in versions.items() if pk not in vanished}
    page_params = {**lq.params, **({"page": str(lq.page)} if lq.page > 1 else {})}
    response = render(
        request,
        "deployments/htmx/list_status.html",
        {"deployments": rows, "gone": sorted(vanished),
         **_poll(watched, bool(changing - vanished), page_params)},  # fmt: skip
    )
    # The summary cards count the whole organization: they are read again, in a request of
    # their own, only after a change, so the poll itself stays within the page's rows.
    response["HX-Trigger"] = "deployments-changed"
    return response


def _deployment_stats(qs, org) -> dict[str, int]:
    """The summary cards in two aggregate queries, whatever the number of deployments."""
    counts = qs.aggregate(
        total=Count("pk"),
        running=Count("pk", filter=Q(state=DeploymentState.RUNNING)),
        failed=Count("pk", filter=Q(state=DeploymentState.FAILED)),
        deactivated=Count("pk", filter=Q(state=DeploymentState.DEACTIVATED)),
        unreachable=Count("pk", filter=selectors.ENDPOINT_UNREACHABLE),
        projects=Count("project", distinct=True),
    )
    # Deployments' reservations in the organization's projects (the list shows one organization).
    counts["gpus"] = (
        GpuReservation.objects.filter(
            project__organization=org, holder__startswith="deployment:"
        ).aggregate(n=Sum("gpus"))["n"]
        or 0
    )
    return counts


@login_required
def deployment_list(request: HttpRequest) -> HttpResponse:
    org = _organization(request)
    visible = selectors.deployments_for_user(request.user, org)
    if request.htmx and request.GET.get("fragment") == "stats":
        return render(request, "deployments/htmx/list_stats.html", {"stats": _deployment_stats(visible, org)})
    if request.htmx:
        return _deployment_status_poll(request, visible, org)
    return render(
        request,
        "deployments/list.html",
        {
            **_deployment_listing(request, visible, org),
            "stats": _deployment_stats(visible, org),
            "can_change": permissions.can(request.user, "change", org),
        },
    )


# ---------------------------------------------------------------------------------------------
# Deployments: the form
# ---------------------------------------------------------------------------------------------


def _form_choices(request: HttpRequest, org) -> dict[str, Any]:
    projects = projects_for_user(request.user, org)
    return {
        "projects": projects,
        "models": catalog_selectors.models_for_user(request.user, org),
        "pools": selectors.pools_for_user(request.user, org),
        "bundles": catalog_selectors.bundles_for_user(request.user, org),
        "endpoints": _endpoints(request, org),
        "environments": Environment.objects.filter(project__in=projects).select_related("project"),
    }


def _form_value(form: DeploymentForm, name: str) -> Any:
    return (form.data if form.is_bound else form.initial).get(name)


def _quota_panel(form: DeploymentForm) -> dict[str, Any]:
    """The quota preview: the form's text read as numbers, the rule asked of the selector."""
    if form.instance is not None:
        project = form.instance.project
    else:
        pk = _int_or_none(_form_value(form, "project")) or 0
        project = form.fields["project"].queryset.filter(pk=pk).first()
    gpus = _int_or_none(_form_value(form, "gpus"))
    replicas = _int_or_none(_form_value(form, "replicas_max"))
    if project is None or gpus is None or replicas is None:
        return {}
    return selectors.deployment_quota_preview(
        project=project, gpus_per_replica=gpus, replicas_max=replicas, deployment=form.instance,
        cpu=str(_form_value(form, "cpu") or "").strip(), memory=str(_form_value(form, "memory") or "").strip(),
    )  # fmt: skip


def _estimate_panel(form: DeploymentForm) -> dict[str, Any]:
    pools = form.fields["pool"].queryset
    pool = pools.filter(pk=_int_or_none(_form_value(form, "pool")) or 0).first()
    estimate = selectors.deployment_estimate_preview(
        model=form._current_model(),
        context_length=_int_or_none(_form_value(form, "context_length")),
        gpu_type=(_form_value(form, "gpu_type") or "").strip(),
        gpus_per_replica=_int_or_none(_form_value(form, "gpus")),
        pools=[pool] if pool else pools,
    )
    return {**estimate, **_quota_panel(form)}


def _int_or_none(value) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def _bundle_panel(form: DeploymentForm, request: HttpRequest) -> dict[str, Any]:
    """Which Profile Bundle the deployment gets and why ("bundle X chosen by rule N")."""
    data = form.data if form.is_bound else form.initial
    bundle_raw = data.get("bundle")
    if form.instance is not None:
        return {
            "bundle_message": f"Bundle {form.instance.bundle} (fixed for this deployment).",
            "resolved_bundle": form.instance.bundle,
        }
    if bundle_raw:
        bundle = form.fields["bundle"].queryset.filter(pk=_int_or_none(bundle_raw) or 0).first()
        if bundle is not None:
            return {"bundle_message": f"Bundle {bundle} chosen by you.", "resolved_bundle": bundle}
    model = form._current_model()
    project = (
        form.fields["project"].queryset.filter(pk=_int_or_none(data.get("project")) or 0).first()
    )
    if project is None:
        project = form.fields["project"].queryset.first()
    if model is None or project is None:
        return {
            "bundle_message": "Choose a model: the project's MaaS mappings then pick the bundle."
        }
    return {**_bundle_resolved(project, model), "runtime": maas.suggest_runtime(model)}


def _bundle_resolved(project: Any, model: Any) -> dict[str, Any]:
    resolution = maas.resolve(project, model)
    bundle = getattr(resolution, "bundle", None)
    position = getattr(resolution, "position", None)
    if bundle is None:
        message = (
            getattr(resolution, "message", "")
            or f"No MaaS mapping of {project.name} matches {model.name}; choose a bundle."
        )
        return {"bundle_message": message, "bundle_missing": True}
    if position is not None:
        message = f"Bundle {bundle} chosen by rule {position} of {project.name}'s MaaS mappings."
    else:
        message = getattr(resolution, "message", "") or f"Bundle {bundle} chosen by default."
    return {"bundle_message": message, "resolved_bundle": bundle}


def _deployment_form_context(request: HttpRequest, form: DeploymentForm, **extra) -> dict[str, Any]:
    context = {
        "form": form,
        "no_pools": "pool" in form.fields and not form.fields["pool"].queryset.exists(),
        "no_models": "model" in form.fields and not form.fields["model"].queryset.exists(),
        "validate_url": request.get_full_path(),
        "gpu_products": selectors.gpu_products(form.fields["pool"].queryset)
        if "pool" in form.fields
        else [],
        "sandbox_label": SANDBOX_LABEL,
    }
    context.update(_estimate_panel(form))
    context.update(_bundle_panel(form, request))
    context.update(extra)
    if context.get("resolved_bundle") is not None and "image" in form.fields:
        form.fields["image"].widget.attrs["placeholder"] = context["resolved_bundle"].image
    return context


def _panel_response(request: HttpRequest, form: DeploymentForm, **extra) -> HttpResponse | None:
    panel = request.POST.get("_panel") if request.method == "POST" else None
    if not (request.htmx and panel in {"estimate", "bundle", "nim_profile"}):
        return None
    context = _deployment_form_context(request, form, **extra)
    return render(request, f"deployments/htmx/{panel}_panel.html", context)


def _render_form(request: HttpRequest, form: DeploymentForm, **extra) -> HttpResponse:
    context = _deployment_form_context(request, form, **extra)
    if request.htmx and request.method == "POST":
        return render(request, "deployments/htmx/deployment_form.html", context)
    return render(request, "deployments/form.html", context)


@login_required
def deployment_create(request: HttpRequest) -> HttpResponse:
    org = _organization(request)
    permissions.require(request.user, "change", org, what="deployments")
    choices = _form_choices(request, org)
    locked_model = None
    model_pk = _int_or_none(request.GET.get("model"))
    if request.GET.get("model"):

        locked_model = model_get(request.user, model_pk or 0)
    project = selectors.default_project_for(
        request.user, choices["projects"], _int_or_none(request.GET.get("project"))
    )
    initial: dict[str, Any] = {
        "project": project.pk if project is not None else None,
        "replicas_min": "1",
        "replicas_max": "1",
        "cpu": "4",
        "memory": "16Gi",
        "gpus": "1",
        "currency": "USD",
        "price_input": "0.00",
        "price_output": "0.00",
        "prompt_caching": True,
    }
    if locked_model is not None:
        initial["model"] = locked_model.pk
        initial["name"] = selectors.deployment_name_suggestion(locked_model.name)
    pools = choices["pools"]
    if pools.count() == 1:
        initial["pool"] = pools.first().pk
    form = DeploymentForm(
        request.POST or None,
        initial=initial,
        user=request.user,
        organization=org,
        locked_model=locked_model,
        **choices,
    )
    if request.method == "POST":
        panel = _panel_response(request, form)
        if panel is not None:
            return panel
        partial = field_validation_response(request, form, request.get_full_path())
        if partial is not None:
            return partial
        if form.is_valid():
            data = form.cleaned_data
            try:
                deployment = services.deployment_create(
                    user=request.user,
                    project=data["project"],
                    model=data["model"],
                    pool=data["pool"],
                    name=data["name"],
                    spec=form.spec(),
                    bundle=data.get("bundle"),
                    endpoint=data.get("endpoint"),
                    environment=data.get("environment"),
                    description=data.get("description", ""),
                )
            except ValidationError as exc:
                form.add_service_error(exc)
            else:
                messages.success(
                    request,
                    f"Deployment “{deployment.name}” created; it is being pushed to {deployment.pool.name}.",
                )
                return _redirect(request, deployment.get_absolute_url())
    return _render_form(request, form, locked_model=locked_model)


def _deployment_get(request: HttpRequest, pk: int) -> ModelDeployment:
    return selectors.deployment_get(request.user, pk)


@login_required
def deployment_update(request: HttpRequest, pk: int) -> HttpResponse:
    deployment = _action(request, pk, "change")
    org = deployment.project.organization
    choices = _form_choices(request, org)
    initial = initial_from_spec(deployment.spec())
    initial.update(
        name=deployment.name,
        description=deployment.description,
        project=deployment.project_id,
        environment=deployment.environment_id,
        model=deployment.model_id,
        endpoint=deployment.endpoint_id,
        pool=deployment.pool_id,
        bundle=deployment.bundle_id,
    )
    form = DeploymentForm(
        request.POST or None,
        initial=initial,
        user=request.user,
        organization=org,
        instance=deployment,
        **choices,
    )
    if request.method == "POST":
        panel = _panel_response(request, form, deployment=deployment)
        if panel is not None:
            return panel
        partial = field_validation_response(request, form, request.get_full_path())
        if partial is not None:
            return partial
        if form.is_valid():
            try:
                revision = services.deployment_update(
                    user=request.user,
                    deployment=deployment,
                    spec=form.spec(),
                    reason=form.cleaned_data.get("reason") or "Updated from the console",
                    update_strategy=form.cleaned_data.get("update_strategy") or "blue_green",
                )
            except ValidationError as exc:
                form.add_service_error(exc)
            else:
                messages.success(
                    request,
                    f"Revision {revision.number} of “{deployment.name}” created; it serves once ready (blue-green).",
                )
                return _redirect(request, deployment.get_absolute_url())
    return _render_form(request, form, deployment=deployment)


# ---------------------------------------------------------------------------------------------
# Deployments: detail
# ---------------------------------------------------------------------------------------------


def _render_manifests(deployment: ModelDeployment, revision: Revision | None) -> tuple[str, str]:
    """The rendered YAML of a revision, or a sentence saying why it can't be shown."""
    if revision is None:
        return "", "This deployment has no revision yet."
    try:
        render_spec = spec_module.render_spec_for(deployment, revision)
        return renderers.render_yaml(render_spec), ""
    except (ValidationError, ValueError) as exc:
        message = _error_text(exc) if isinstance(exc, ValidationError) else str(exc)
        return "", f"This revision cannot be rendered: {message}"


def _status_version(request: HttpRequest, pk: int) -> str:
    """The version the status poll compares (selectors.deployment_version), "" for a deployment
    the user can't see. Read before the deployment itself: a change made in between is then
    seen by the next poll instead of being lost."""
    visible = selectors.deployments_for_user(request.user)
    return selectors.deployment_versions(visible, [pk]).get(pk, "")


def _detail_context(
    request: HttpRequest, deployment: ModelDeployment, version: str = ""
) -> dict[str, Any]:
    spec = deployment.spec() or {}
    held = deployment.gpus_held()
    return {
        "d": deployment,
        "version": version,
        "spec": spec,
        "gpus_held": held,
        # What Activate reserves (the service's own rule: autoscaled, it starts at its minimum).
        "activate_gpus": spec_module.gpu_hold(spec) if deployment.state == DeploymentState.DEACTIVATED else None,
        "served_name": deployment.served_name(),
        "gateway_url": settings.GATEWAY_BASE_URL.rstrip("/") + "/v1",
        "final": deployment.state in FINAL_STATES,
        "sandbox": deployment.pool is not None and deployment.pool.is_sandbox,
        "sandbox_label": SANDBOX_LABEL,
        # A ModelDeployment resource manages it: read-only here, the message says where to change it.
        "can_change": permissions.can(request.user, "change", deployment) and not deployment.managed_by_resource,
        "managed_message": deployment.managed_message(),
    }


@login_required
def deployment_detail(request: HttpRequest, pk: int) -> HttpResponse:
    fragment = request.GET.get("fragment")
    # The status poll (status card, page header) runs in final states too: a deployment that is
    # Running can be deactivated elsewhere or fail later. It answers 204 while nothing changed.
    polled = request.htmx and fragment == "status"
    version = _status_version(request, pk) if polled or not request.htmx else ""
    if polled and version and request.GET.get("v") == version:
        return HttpResponse(status=204)
    deployment = _deployment_get(request, pk)
    if deployment.is_external:
        return _external_detail(request, deployment, version)
    if request.htmx and fragment in {"status", "events"}:
        context = _detail_context(request, deployment, version)
        context["oob_parts"] = True
        if fragment == "events":
            limit = 5 if request.GET.get("limit") == "5" else 100
            context.update(events=deployment.events.all()[:limit], events_limit=limit)
        response = render(request, f"deployments/htmx/detail_{fragment}.html", context)
        if fragment == "status":
            response["HX-Trigger"] = "deployment-changed"  # the events table reads again once
        elif context["final"]:
            response.status_code = STOP_POLLING  # until the next deployment-changed
        return response
    if request.htmx and fragment == "scale":
        context = {"d": deployment, "scale": deployment.scale_status()}
        return render(request, "deployments/htmx/detail_scale.html", context)
    if request.htmx and fragment in {"replicas", "logs"}:
        return _observe_fragment(request, deployment, fragment)
    tab = request.GET.get("tab", "overview")
    if tab not in TABS:
        tab = "overview"
    context = _detail_context(request, deployment, version)
    # Numbers only for the pickers (a deployment scaled often has hundreds of revisions); the
    # Deployment tab's table reads one page of rows.
    revision_numbers = list(deployment.revisions.order_by("-number").values_list("number", flat=True))
    context.update(
        tab=tab,
        revision_numbers=revision_numbers,
        usage_url=_url_or_none("devhub:deployment_usage", deployment.pk),
        playground_url=_url_or_none("devhub:playground", deployment.pk)
        if deployment.spec().get("engine") not in {"tei"} else None,
        nim_tags=_nim_tags(deployment),
        **(_bundle_card_context(deployment, None, None) if context["can_change"] else {}),
        # After a refused scale (_scale_failed) the card shows what was asked, to correct it.
        scale_form=ScaleForm(
            initial={
                name: request.GET.get(name, (context["spec"].get("replicas") or {}).get(key, 1))
                for name, key in (("replicas_min", "min"), ("replicas_max", "max"))
            }
        ),
    )
    if tab == "overview":
        context.update(events=deployment.events.all()[:5], events_limit=5,
                       scale=deployment.scale_status(), autoscaling=selectors.scale_history(deployment))  # fmt: skip
    elif tab == "events":
        context["events"] = deployment.events.all()[:100]
    elif tab == "deployment":
        context.update(_revision_context(request, deployment, revision_numbers))
    elif tab == "history":
        context["revision_listing"] = _revision_listing(request, deployment, len(revision_numbers))
    if tab in ("deployment", "history") and context["can_change"]:
        # A blue-green rollback refused for its surge alone comes back here to be offered again
        # with the "recreate" strategy (deployment_rollback).
        offer = _int_or_none(request.GET.get("recreate"))
        if offer in revision_numbers and offer != deployment.current_revision.number:
            context["offer_recreate"] = offer
    elif tab == "logs":
        context.update(_log_choice(request))
    elif tab == "metrics":
        context.update(_metrics_context(request, deployment))
    elif tab == "manifests":
        wanted = _int_or_none(request.GET.get("revision"))
        revision = deployment.revisions.filter(number=wanted).first() or deployment.current_revision
        context["manifest_revision"] = revision
        context["manifests"], context["manifest_error"] = _render_manifests(deployment, revision)
    return render(request, "deployments/detail.html", context)


def _log_choice(request: HttpRequest) -> dict[str, Any]:
    # The log form sends `follow` only when ticked (and `form`); a plain link follows unless follow=0.
    follow = request.GET.get("follow") == "1" if "form" in request.GET else request.GET.get("follow") != "0"
    return {
        "log_pod": (request.GET.get("pod") or "")[:253],
        "log_container": (request.GET.get("container") or "")[:63],
        "log_tail": (request.GET.get("tail") or str(observe.DEFAULT_TAIL_LINES))[:6],
        "log_previous": request.GET.get("previous") == "1",
        "log_follow": follow,
        "tail_choices": (50, 200, 1000, 5000),
    }


def _observe_fragment(request: HttpRequest, deployment: ModelDeployment, fragment: str) -> HttpResponse:
    """The Replicas table or the Logs panel, read live from the pool (loaded and refreshed by htmx)."""
    context: dict[str, Any] = {"d": deployment}
    if fragment == "replicas":
        replicas = observe.deployment_replicas(deployment)
        context.update(replicas=replicas, rows=[(p, replicas.role(p)) for p in replicas.pods])
        return render(request, "deployments/htmx/detail_replicas.html", context)
    choice = _log_choice(request)
    context.update(choice)
    options = {"pod": choice["log_pod"], "container": choice["log_container"],
               "tail": choice["log_tail"], "previous": choice["log_previous"]}  # fmt: skip
    try:
        try:
            context["log"] = observe.deployment_log(deployment, **options)
        except ValidationError as exc:
            if "container" not in getattr(exc, "error_dict", {}) or not options["pod"]:
                raise
            # Another pod was chosen in the form: its first container, not the last pod's.
            context["log"] = observe.deployment_log(deployment, **{**options, "container": ""})
    except ValidationError as exc:
        context["log_error"] = _error_text(exc)
    template = "deployments/htmx/detail_log_text.html" if request.GET.get("only") == "text" else "deployments/htmx/detail_logs.html"
    return render(request, template, context)


def _metrics_context(request: HttpRequest, deployment: ModelDeployment) -> dict[str, Any]:
    range_key = request.GET.get("range")
    if range_key not in reports.RANGES:
        range_key = "1h"
    metrics = observe.deployment_metrics(deployment, range_key)
    return {
        "metrics": metrics,
        "metric_range": range_key,
        "ranges": reports.RANGES.values(),
        "metric_totals": [
            {
                "revision": r["revision"],
                "requests": r["total_requests"],
                "errors": r["total_errors"],
            }
            for r in metrics["revisions"]
        ],
    }


def _revision_context(
    request: HttpRequest, deployment: ModelDeployment, numbers: list[int]
) -> dict[str, Any]:
    """The Deployment tab: the spec, a page of revisions (25, newest first) and a comparison."""
    context: dict[str, Any] = {
        "spec_yaml": _yaml(deployment.spec()),
        "revision_listing": _revision_listing(request, deployment, len(numbers)),
    }
    if len(numbers) >= 2:
        a = _int_or_none(request.GET.get("a")) or numbers[1]
        b = _int_or_none(request.GET.get("b")) or numbers[0]
        by_number = {r.number: r for r in deployment.revisions.filter(number__in={a, b})}
        if a in by_number and b in by_number:
            context.update(
                diff_a=a, diff_b=b, diff=selectors.revision_diff(by_number[a], by_number[b])
            )
        else:
            context["diff_error"] = "Choose two revisions of this deployment."
    return context


def _revision_listing(request: HttpRequest, deployment: ModelDeployment, total: int) -> Listing:
    """A page of revisions (25, newest first), on the Deployment and the History tab."""
    return paginate(
        request, deployment.revisions.select_related("created_by"), sorts={"number": "number"},
        default_sort="-number", per_page=25, prefix="rev_", total=total,
    )  # fmt: skip


def _yaml(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, sort_keys=True, default_flow_style=False)


def _nim_tags(deployment: ModelDeployment) -> list[str]:
    model = deployment.model
    tags = list(model.ngc_tags or [])
    if model.ngc_tag and model.ngc_tag not in tags:
        tags.insert(0, model.ngc_tag)
    return tags if (model.source == "ngc" or deployment.bundle.engine == "nim") else []


# ---------------------------------------------------------------------------------------------
# Deployments: actions (each a POST through a service, confirmed in the page)
# ---------------------------------------------------------------------------------------------


def _action(request: HttpRequest, pk: int, action: str):
    """The deployment, if this user may do ``action`` to it (console.permissions decides)."""
    deployment = _deployment_get(request, pk)
    allowed, reason = permissions.check(request.user, action, deployment)
    if not allowed:
        raise PermissionDenied(reason)
    return deployment


def _after_action(
    request: HttpRequest, deployment: ModelDeployment, message: str, tab: str = "overview"
) -> HttpResponse:
    messages.success(request, message)
    return _redirect(request, f"{deployment.get_absolute_url()}?tab={tab}")


def _action_failed(
    request: HttpRequest, deployment: ModelDeployment, exc: ValidationError, tab: str = "overview"
) -> HttpResponse:
    messages.error(request, _error_text(exc))
    return _redirect(request, f"{deployment.get_absolute_url()}?tab={tab}")


@login_required
@require_POST
def deployment_deactivate(request: HttpRequest, pk: int) -> HttpResponse:
    deployment = _action(request, pk, "deactivate")
    try:
        services.deployment_deactivate(user=request.user, deployment=deployment)
    except ValidationError as exc:
        return _action_failed(request, deployment, exc)
    return _after_action(
        request, deployment, f"“{deployment.name}” deactivated: its GPUs are released."
    )


@login_required
@require_POST
def deployment_retry(request: HttpRequest, pk: int) -> HttpResponse:
    deployment = _action(request, pk, "change")
    try:
        services.deployment_retry(user=request.user, deployment=deployment)
    except ValidationError as exc:
        return _action_failed(request, deployment, exc)
    return _after_action(request, deployment, f"“{deployment.name}”: its revision is being applied again.")


@login_required
@require_POST
def deployment_activate(request: HttpRequest, pk: int) -> HttpResponse:
    deployment = _action(request, pk, "deactivate")
    try:
        services.deployment_activate(user=request.user, deployment=deployment)
    except ValidationError as exc:
        return _action_failed(request, deployment, exc)
    return _after_action(
        request, deployment, f"“{deployment.name}” activated; it is being pushed again."
    )


@login_required
@require_POST
def deployment_delete(request: HttpRequest, pk: int) -> HttpResponse:
    deployment = _action(request, pk, "delete")
    try:
        services.deployment_delete(user=request.user, deployment=deployment)
    except ValidationError as exc:
        return _action_failed(request, deployment, exc)
    where = deployment.pool.name if deployment.pool is not None else "the gateway"
    messages.success(request, f"“{deployment.name}” is being deleted from {where}.")
    return _redirect(request, reverse("deployments:list"))


def _surge_refused(exc: ValidationError) -> bool:
    """Whether the quota refused only a blue-green update's surge (QuotaExceeded code "surge"),
    however the service nested it."""
    errors = [e for errs in exc.error_dict.values() for e in errs] if hasattr(exc, "error_dict") else exc.error_list
    return any(getattr(e, "code", None) == "surge" for e in errors)


@login_required
@require_POST
def deployment_rollback(request: HttpRequest, pk: int) -> HttpResponse:
    deployment = _action(request, pk, "change")
    # Back to the tab the rollback was asked from: the Deployment tab's or the History tab's table.
    tab = "history" if request.POST.get("tab") == "history" else "deployment"
    number = _int_or_none(request.POST.get("revision"))
    if number is None or not deployment.revisions.filter(number=number).exists():
        messages.error(request, "Choose a revision of this deployment to roll back to.")
        return _redirect(request, f"{deployment.get_absolute_url()}?tab={tab}")
    strategy = "recreate" if request.POST.get("strategy") == "recreate" else "blue_green"
    try:
        revision = services.deployment_rollback(
            user=request.user, deployment=deployment, revision_number=number, update_strategy=strategy
        )
    except ValidationError as exc:
        if strategy == "blue_green" and _surge_refused(exc):
            # Only the blue-green surge does not fit: the revision table offers the same rollback
            # by recreating, which the refusal names (the console had no way to choose it).
            messages.error(request, _error_text(exc))
            return _redirect(request, f"{deployment.get_absolute_url()}?tab={tab}&recreate={number}")
        return _action_failed(request, deployment, exc, tab)
    return _after_action(
        request, deployment, f"Rolled back to revision {number} as revision {revision.number}.", tab
    )


@login_required
@require_POST
def deployment_scale(request: HttpRequest, pk: int) -> HttpResponse:
    deployment = _action(request, pk, "change")
    form = ScaleForm(request.POST)
    if not form.is_valid():
        words = [f"{form.fields[n].label}: {e}" for n, errs in form.errors.items() for e in errs]
        return _scale_failed(request, deployment, form, " ".join(words))
    lo, hi = form.cleaned_data["replicas_min"], form.cleaned_data["replicas_max"]
    spec = {**deployment.spec(), "replicas": {"min": lo, "max": hi}}
    try:
        services.deployment_update(
            user=request.user,
            deployment=deployment,
            spec=spec,
            reason=f"Scaled to {lo}–{hi} replicas",
        )
    except ValidationError as exc:
        return _scale_failed(request, deployment, form, _error_text(exc))
    return _after_action(request, deployment, f"“{deployment.name}” scaled to {lo}–{hi} replicas.")


def _scale_failed(request: HttpRequest, deployment: ModelDeployment, form: ScaleForm, message: str) -> HttpResponse:
    """Back to the page with the refusal, the Scale card showing what was asked (not the old values)."""
    messages.error(request, message)
    asked = {name: (form.data.get(name) or "")[:20] for name in ("replicas_min", "replicas_max")}
    return _redirect(request, f"{deployment.get_absolute_url()}?{urlencode({'tab': 'overview', **asked})}")


def _bundle_request(request: HttpRequest, deployment: ModelDeployment) -> tuple[int | None, dict[str, str]]:
    """The bundle version and variable values the bundle card sends (var_<name> fields)."""
    data = request.POST if request.method == "POST" else request.GET
    version = _int_or_none(data.get("version"))
    variables = {k[4:]: v.strip() for k, v in data.items() if k.startswith("var_") and v.strip()}
    return version, variables


@login_required
def deployment_bundle(request: HttpRequest, pk: int) -> HttpResponse:
    """The deployment page's bundle card: GET previews the change (the versions, the chosen
    version's variables, and a diff of what changes); POST rolls it out (blue-green)."""
    deployment = _action(request, pk, "change")
    version, variables = _bundle_request(request, deployment)
    if request.method == "POST":
        try:
            revision = services.deployment_bundle_change(
                user=request.user, deployment=deployment, version=version, variables=variables,
                reason=(request.POST.get("reason") or "").strip(),
            )  # fmt: skip
        except ValidationError as exc:
            return _action_failed(request, deployment, exc)
        return _after_action(request, deployment, f"Revision {revision.number}: {revision.reason}.")
    return render(request, "deployments/htmx/bundle_card.html",
                  _bundle_card_context(deployment, version, variables, asked=True))  # fmt: skip


def _bundle_card_context(
    deployment: ModelDeployment, version: int | None, variables: dict[str, str] | None, *, asked: bool = False
) -> dict[str, Any]:
    current = deployment.spec()
    values = dict(current.get("bundle_vars") or {}) if variables is None else variables
    context: dict[str, Any] = {"d": deployment, "bundle_versions": list(deployment.bundle.versions())}
    try:
        plan = services.deployment_bundle_plan(deployment=deployment, version=version, variables=values)
        context.update(plan=plan, chosen=plan["bundle"])
    except ValidationError as exc:
        context.update(plan_error=_error_text(exc), chosen=deployment.bundle)
    context["bundle_vars"] = [
        {"name": v.get("name"), "default": v.get("default"), "description": v.get("description", ""),
         "value": values.get(v.get("name"), "")}
        for v in context["chosen"].variables or [] if isinstance(v, dict) and v.get("name")
    ]  # fmt: skip
    context["asked"] = asked
    return context


@login_required
@require_POST
def deployment_nim_tag(request: HttpRequest, pk: int) -> HttpResponse:
    deployment = _action(request, pk, "change")
    tag = (request.POST.get("tag") or "").strip()
    if tag not in _nim_tags(deployment):
        messages.error(request, f"“{tag}” is not a known tag of {deployment.model.name}.")
        return _redirect(request, deployment.get_absolute_url())
    try:
        revision = services.deployment_set_nim_tag(
            user=request.user, deployment=deployment, tag=tag
        )
    except ValidationError as exc:
        return _action_failed(request, deployment, exc)
    return _after_action(request, deployment, f"NIM tag set to {tag} (revision {revision.number}).")


# ---------------------------------------------------------------------------------------------
# External deployments: an OpenAI-compatible URL with overflow (deployments/external.py)
# ---------------------------------------------------------------------------------------------


def _external_form_kwargs(request: HttpRequest, org, instance: ModelDeployment | None) -> dict[str, Any]:
    overflows = selectors.deployments_for_user(request.user).filter(
        project__organization=org, kind=DeploymentKind.MANAGED
    )
    return {
        "projects": projects_for_user(request.user, org),
        "models": catalog_selectors.models_for_user(request.user, org),
        "overflows": overflows.order_by("name"),
        "instance": instance,
    }


class ExternalCreate(EditView):
    form_class = ExternalDeploymentForm
    template_name = "deployments/external_form.html"
    fragment_template = "deployments/htmx/external_form.html"

    what = "deployments"

    def permission_target(self, request, obj):
        return _organization(request)  # the service asks again on the chosen project

    def form_kwargs(self, request, obj) -> dict[str, Any]:
        return _external_form_kwargs(request, _organization(request), None)

    def save(self, request, obj, form) -> ModelDeployment:
        data = form.cleaned_data
        try:
            return external.external_deployment_create(
                user=request.user, project=data["project"], model=data["model"], name=data["name"],
                url=data["external_url"], credential=data["api_key"], overflow=data["overflow"],
                served_model_name=data["served_model_name"], options=form.options(),
                description=data["description"], rate_limits=form.rate_limits(), pricing=form.pricing(),
            )  # fmt: skip
        except PermissionDenied as exc:
            raise ValidationError({"project": str(exc) or "You may not deploy into this project."}) from None

    def success_message(self, saved) -> str:
        return f"External deployment “{saved.name}” created; the gateway sends its requests to {saved.external_url}."


class ExternalEdit(EditView):
    form_class = ExternalDeploymentForm
    template_name = "deployments/external_form.html"
    fragment_template = "deployments/htmx/external_form.html"

    def get_object(self, request, **kwargs) -> ModelDeployment:
        deployment = selectors.deployment_get(request.user, kwargs["pk"])
        if not deployment.is_external:
            raise Http404("Not an external deployment.")
        return deployment

    def form_kwargs(self, request, obj) -> dict[str, Any]:
        return _external_form_kwargs(request, obj.project.organization, obj)

    def save(self, request, obj, form) -> ModelDeployment:
        data = form.cleaned_data
        return external.external_deployment_update(
            user=request.user, deployment=obj, url=data["external_url"], credential=data["api_key"],
            overflow=data["overflow"], served_model_name=data["served_model_name"], options=form.options(),
            description=data["description"], rate_limits=form.rate_limits(), pricing=form.pricing(),
        )  # fmt: skip

    def success_message(self, saved) -> str:
        return f"“{saved.name}” updated."

    def context(self, request, obj, form) -> dict[str, Any]:
        return {"d": obj}


external_create = ExternalCreate.as_view()
external_edit = ExternalEdit.as_view()


def _external_detail(request: HttpRequest, deployment: ModelDeployment, version: str = "") -> HttpResponse:
    """An external deployment's page: where it points, its health and breaker, and who served its
    requests. Its status poll (fragment=status) gets the status card, the header's badges and the
    actions once the deployment or its last health check changed (204 before: deployment_detail)."""
    context = _detail_context(request, deployment, version)
    options = deployment.spec().get("external") or {}
    checked_at = deployment.health_checked_at.timestamp() if deployment.health_checked_at else 0.0
    context.update(
        options=options,
        breaker=overflow_state(deployment.pk, (deployment.health, checked_at, options)),
        shared_breaker=bool(settings.REDIS_URL),
        health_interval_s=HEALTH_INTERVAL_S,
        usage_url=_url_or_none("devhub:deployment_usage", deployment.pk),
    )
    if request.htmx and request.GET.get("fragment") == "status":
        context["oob_parts"] = True
        return render(request, "deployments/htmx/external_status.html", context)
    context.update(
        limit_scopes=tuple(spec_module.RATE_LIMIT_SCOPE_LABELS.items()),
        key_last4=last4(deployment.external_credential or ""),
        split=served_split(deployment.pk),
        events=deployment.events.all()[:10],
    )
    return render(request, "deployments/external_detail.html", context)


# ---------------------------------------------------------------------------------------------
# Galleries: resource templates and data sources (deployments/galleries.py)
# ---------------------------------------------------------------------------------------------

GALLERIES = {
    "templates": {
        "title": "Resource templates", "form": ResourceTemplateForm, "model": ResourceTemplate,
        "rows": galleries.templates_for_user, "create": galleries.template_create,
        "intro": "Compute presets: CPU, memory, GPU type and count, shared memory. Chosen in the deploy form or "
                 "apply -f (spec.resource_template), a template is copied into the deployment: changing it later "
                 "changes no running deployment until that one is updated.",
        "fields": (("cpu", "CPU"), ("memory", "Memory"), ("gpus", "GPUs"), ("gpu_type", "GPU type"),
                   ("shm_size", "Shared memory")),
    },
    "data-sources": {
        "title": "Data sources", "form": DataSourceForm, "model": DataSource,
        "rows": galleries.data_sources_for_user, "create": galleries.data_source_create,
        "intro": "Reusable storage: a PersistentVolumeClaim, an S3 bucket with its credentials, a Hugging Face "
                 "or NGC cache.",
        "fields": (("kind", "Kind"), ("claim_name", "Claim"), ("uri", "Bucket"), ("mount_path", "Mount path")),
    },
}  # fmt: skip


class GalleryList(EditView):
    """One gallery (templates or data sources): a paginated table and the form that adds one."""

    template_name = "deployments/gallery_list.html"
    read_by_all = True

    def dispatch(self, request, *args, **kwargs):
        self.gallery = GALLERIES.get(kwargs.get("gallery", ""))
        if self.gallery is None:
            raise Http404("No such gallery.")
        self.form_class = self.gallery["form"]
        return super().dispatch(request, *args, **kwargs)

    what = "gallery entries"

    def permission_target(self, request, obj):
        # Reading: any member; writing: a writer of the organization here, and the service asks
        # again (organization-wide entries: admins; a project's: its writers).
        return _organization(request)

    def form_kwargs(self, request, obj):
        return {"projects": projects_for_user(request.user, _organization(request))}

    def save(self, request, obj, form):
        data = dict(form.cleaned_data)
        project = data.pop("project")
        try:
            return self.gallery["create"](user=request.user, organization=_organization(request), project=project, **data)
        except PermissionDenied as exc:
            raise ValidationError({"project": str(exc)}) from None

    def success_message(self, saved):
        return f"“{saved.name}” added to {self.gallery['title'].lower()}."

    def success_url(self, request, saved):
        return request.path

    def context(self, request, obj, form):
        org = _organization(request)
        listing = paginate(
            request, self.gallery["rows"](request.user, org),
            sorts={"name": "name", "scope": ("project__name", "name"), "updated": "updated_at"},
            default_sort="name", search=("name", "description", "project__name"),
        )  # fmt: skip
        return {"gallery": self.gallery, "listing": listing, "rows": listing.rows,
                "can_change": permissions.can(request.user, "change", org)}  # fmt: skip


gallery_list = GalleryList.as_view()


@login_required
@require_POST
def gallery_delete(request: HttpRequest, gallery: str, pk: int) -> HttpResponse:
    entry = GALLERIES.get(gallery)
    if entry is None:
        raise Http404("No such gallery.")
    obj = galleries.gallery_get(entry["model"], request.user, pk)
    galleries.gallery_delete(user=request.user, obj=obj)  # a refusal is a 403 with its reason
    messages.success(request, f"“{obj.name}” deleted; deployments made with it keep what they copied.")
    return redirect("deployments:gallery", gallery=gallery)
