"""Catalog pages: models, Hugging Face and NGC browsing, custom models, Profile Bundles, MaaS mappings."""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.uploadhandler import FileUploadHandler, SkipFile
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_POST

from catalog import hub, maas, ngc, selectors, services
from catalog.forms import (
    BundleForm,
    CustomModelForm,
    EstimateForm,
    HubAddForm,
    HubSearchForm,
    MappingForm,
    ModelEditForm,
    NgcAddForm,
)
from catalog.models import ModelSource
from console.forms import field_validation_response
from console.http import current_organization as _organization
from console.http import redirect_after_post as _redirect
from console.paging import ListFilter, paginate
from projects.models import IntegrationKind, Project
from projects.selectors import can_change, project_get, projects_for_user

log = logging.getLogger(__name__)

HUB_PAGE_SIZE = 20


def _require_change(request: HttpRequest, organization) -> None:
    if not can_change(request.user, organization):
        raise PermissionDenied("Viewers cannot change the catalog.")


def _projects(request: HttpRequest):
    return projects_for_user(request.user, _organization(request))


def _token_project(request: HttpRequest, kind: str) -> Project | None:
    """The project whose credential a Hub/NGC page uses: ?project=, else the first that has one."""
    projects = _projects(request)
    wanted = request.GET.get("project") or request.POST.get("project")
    if wanted:
        return projects.filter(pk=wanted).first() if str(wanted).isdigit() else None
    return projects.filter(integrations__kind=kind).first()


def _deploy_url(model) -> str:
    try:
        return f"{reverse('deployments:create')}?model={model.pk}"
    except Exception:  # the deployments pages may not be installed yet
        return f"/deployments/new/?model={model.pk}"


# --- catalog list and model pages -------------------------------------------------------------


MODEL_SORTS = {
    "name": "name", "source": "source", "task": "task", "parameters": "parameters",
    "size": "size_bytes", "deployments": "deployment_count", "added": "created_at",
}  # fmt: skip


@login_required
def index(request: HttpRequest) -> HttpResponse:
    """The catalog, one page at a time; an htmx request (the filter form) answers the rows alone."""
    org = _organization(request)
    facets = selectors.catalog_facets(request.user, org)
    listing = paginate(
        request,
        selectors.models_for_user(request.user, org).annotate(deployment_count=Count("deployments")),
        sorts=MODEL_SORTS,
        default_sort="name",
        search=("name", "repo_id", "ngc_image", "description"),
        filters=[
            ListFilter("source", "Source", ModelSource.choices),
            ListFilter("task", "Task", [(t, t) for t in facets["tasks"]]),
        ],
    )
    source, task, q = (request.GET.get(k, "").strip() for k in ("source", "task", "q"))
    context = {
        "models": listing.rows,
        "listing": listing,
        "facets": facets,
        "sources": ModelSource.choices,
        "filters": {"source": source, "task": task, "q": q},
        "can_change": can_change(request.user, org),
        "tab": "models",
    }
    if request.htmx:
        return render(request, "catalog/htmx/model_rows.html", context)
    return render(request, "catalog/index.html", context)


def _estimate_context(model, data) -> dict:
    form = EstimateForm(data or None, initial={"concurrency": 1})
    estimate = error = None
    if form.is_valid() or not data:
        cleaned = form.cleaned_data if data else {}
        try:
            estimate = selectors.model_estimate(
                model,
                context_length=cleaned.get("context_length") or None,
                concurrency=cleaned.get("concurrency") or 1,
                gpu_type=cleaned.get("gpu_type") or None,
            )
        except ValueError as exc:
            error = str(exc)
    return {"estimate_form": form, "estimate": estimate, "estimate_error": error, "model": model}


@login_required
def model_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """The model page; an htmx request recalculates its GPU memory estimate alone."""
    model = selectors.model_get(request.user, pk)
    estimate = _estimate_context(
        model, request.GET if "concurrency" in request.GET or "gpu_type" in request.GET else None
    )
    if request.htmx:
        return render(request, "catalog/htmx/estimate.html", estimate)
    from deployments.models import ModelDeployment

    deployments = ModelDeployment.objects.filter(model=model).select_related("project", "pool")
    projects = _projects(request)
    resolutions = [(p, maas.resolve(p, model)) for p in projects[:5]]
    context = {
        **estimate,
        "model": model,
        "deployments": deployments,
        "resolutions": resolutions,
        "can_change": can_change(request.user, model.organization),
        "deploy_url": _deploy_url(model),
        "files": sorted(model.files or [], key=lambda f: -(f.get("size") or 0)),
        "config_rows": [
            (k.replace("_", " "), v)
            for k, v in (model.config or {}).items()
            if v not in (None, "", False)
        ],
        "tab": "models",
    }
    return render(request, "catalog/model_detail.html", context)


@login_required
def model_edit(request: HttpRequest, pk: int) -> HttpResponse:
    model = selectors.model_get(request.user, pk)
    _require_change(request, model.organization)
    form = ModelEditForm(
        request.POST or None, initial={"name": model.name, "description": model.description}
    )
    if request.method == "POST":
        partial = field_validation_response(request, form, request.path)
        if partial is not None:
            return partial
        if form.is_valid():
            try:
                services.model_update(user=request.user, model=model, **form.cleaned_data)
            except ValidationError as exc:
                form.add_service_error(exc)
            else:
                messages.success(request, "Model saved.")
                return _redirect(request, model.get_absolute_url())
    return render(
        request,
        "catalog/form.html",
        {
            "form": form,
            "validate_url": request.path,
            "title": f"Edit {model.name}",
            "back": model.get_absolute_url(),
            "submit": "Save",
            "tab": "models",
        },
    )


@login_required
@require_POST
def model_delete(request: HttpRequest, pk: int) -> HttpResponse:
    model = selectors.model_get(request.user, pk)
    try:
        services.model_delete(user=request.user, model=model)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect(model.get_absolute_url())
    messages.success(request, f"“{model.name}” removed from the catalog.")
    return redirect("catalog:index")


@login_required
@require_POST
def model_refresh_tags(request: HttpRequest, pk: int) -> HttpResponse:
    model = selectors.model_get(request.user, pk)
    try:
        services.model_refresh_ngc_tags(
            user=request.user, model=model, project=_token_project(request, IntegrationKind.NGC)
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"{len(model.ngc_tags)} tags read from NGC.")
    return redirect(model.get_absolute_url())


# --- Hugging Face Hub --------------------------------------------------------------------------


@login_required
def hub_search(request: HttpRequest) -> HttpResponse:
    """Search the Hub as the user types (the form re-asks this view with htmx); paged."""
    org = _organization(request)
    projects = _projects(request)
    data = request.GET.copy()
    if "project" not in data:
        default = _token_project(request, IntegrationKind.HUGGINGFACE)
        data["project"] = str(default.pk) if default else ""
    form = HubSearchForm(data, projects=projects)
    results = error = None
    if form.is_valid():
        d = form.cleaned_data
        try:
            results = hub.search_models(
                endpoint=settings.HF_ENDPOINT,
                token=selectors.hf_token(d.get("project")),
                query=d.get("q") or "",
                task=d.get("task") or None,
                library=d.get("library") or None,
                author=(d.get("author") or "").strip() or None,
                sort=d.get("sort") or "downloads",
                limit=int(getattr(settings, "MODELDECK_HUB_PAGE_SIZE", HUB_PAGE_SIZE)),
                page=d.get("page") or 1,
                timeout=float(settings.HUB_TIMEOUT_SECONDS),
            )
        except hub.HubError as exc:
            error = exc.message
    else:
        error = "; ".join(
            f"{form.fields[f].label or f}: {' '.join(e)}" for f, e in form.errors.items()
        )
    existing = set(
        selectors.models_for_user(request.user, org)
        .filter(source=ModelSource.HUGGINGFACE)
        .values_list("repo_id", flat=True)
    )
    params = data.copy()
    params.pop("page", None)
    context = {
        "form": form,
        "results": results,
        "error": error,
        "existing": existing,
        "query_string": params.urlencode(),
        "project_pk": data.get("project", ""),
        "tab": "hub",
    }
    if request.htmx:
        return render(request, "catalog/htmx/hub_results.html", context)
    return render(request, "catalog/hub_search.html", context)


@login_required
def hub_model(request: HttpRequest, repo_id: str) -> HttpResponse:
    """A Hub model's facts before adding it, and the form that adds it pinned to a commit."""
    org = _organization(request)
    projects = _projects(request)
    project = _token_project(request, IntegrationKind.HUGGINGFACE)
    revision = request.GET.get("revision", "").strip()
    detail = error = None
    initial = {
        "repo_id": repo_id,
        "name": repo_id,
        "project": project.pk if project else None,
        "revision": revision,
    }
    form = HubAddForm(request.POST or None, projects=projects, initial=initial)
    if request.method == "POST":
        _require_change(request, org)
        if form.is_valid():
            d = form.cleaned_data
            try:
                model = services.model_add_from_hub(
                    user=request.user,
                    organization=org,
                    repo_id=d["repo_id"],
                    revision=d.get("revision") or "",
                    name=d.get("name") or "",
                    project=d.get("project"),
                    description=d.get("description") or "",
                )
            except ValidationError as exc:
                form.add_service_error(exc)
                if hasattr(exc, "error_dict") and "repo_id" in exc.error_dict:
                    form.add_error(None, " ".join(exc.error_dict["repo_id"][0].messages))
            else:
                messages.success(
                    request,
                    f"{model.repo_id} added to the catalog, pinned to {model.revision[:12]}.",
                )
                return _redirect(request, model.get_absolute_url())
    try:
        detail = hub.model_detail(
            endpoint=settings.HF_ENDPOINT,
            token=selectors.hf_token(project),
            repo_id=repo_id,
            revision=revision or None,
            timeout=float(settings.HUB_TIMEOUT_SECONDS),
        )
    except hub.HubError as exc:
        error = exc.message
    existing = selectors.models_for_user(request.user, org).filter(
        source=ModelSource.HUGGINGFACE, repo_id=repo_id
    )
    context = {
        "repo_id": repo_id,
        "detail": detail,
        "error": error,
        "form": form,
        "project": project,
        "existing": existing,
        "files": sorted(detail.files, key=lambda f: -(f.size or 0)) if detail else [],
        "can_change": can_change(request.user, org),
        "tab": "hub",
    }
    return render(request, "catalog/hub_model.html", context, status=200)


# --- NVIDIA NGC ---------------------------------------------------------------------------------


@login_required
def ngc_images(request: HttpRequest) -> HttpResponse:
    _organization(request)
    q = request.GET.get("q", "").strip()
    try:
        page = max(1, min(int(request.GET.get("page", "1")), 100))
    except ValueError:
        page = 1
    results = error = None
    try:
        results = ngc.list_nim_images(
            base_url=settings.NGC_API_URL,
            query=q,
            page=page,
            page_size=25,
            timeout=float(settings.HUB_TIMEOUT_SECONDS),
        )
    except ngc.NgcError as exc:
        error = exc.message
    context = {"results": results, "error": error, "q": q, "tab": "ngc"}
    if request.htmx:
        return render(request, "catalog/htmx/ngc_results.html", context)
    return render(request, "catalog/ngc_images.html", context)


@login_required
def ngc_image(request: HttpRequest, resource_id: str) -> HttpResponse:
    org = _organization(request)
    projects = _projects(request)
    project = _token_project(request, IntegrationKind.NGC)
    tags = error = None
    key = selectors.ngc_key(project)
    if key:
        try:
            tags = ngc.image_tags(
                base_url=settings.NGC_API_URL,
                api_key=key,
                image=resource_id,
                timeout=float(settings.HUB_TIMEOUT_SECONDS),
            )
        except ngc.NgcError as exc:
            error = exc.message
    else:
        error = "Choose a project with an NGC API key (set on the project's Integrations page) to read this image's tags."
    tag_names = tags.tags if tags else ()
    form = NgcAddForm(
        request.POST or None,
        projects=projects,
        tags=tag_names,
        initial={
            "image": resource_id,
            "project": project.pk if project else None,
            "tag": tags.latest_tag if tags else None,
        },
    )
    if request.method == "POST":
        _require_change(request, org)
        if form.is_valid():
            d = form.cleaned_data
            try:
                model = services.model_add_from_ngc(
                    user=request.user,
                    organization=org,
                    image=d["image"],
                    tag=d["tag"],
                    name=d.get("name") or "",
                    project=d["project"],
                )
            except ValidationError as exc:
                form.add_service_error(exc)
            else:
                messages.success(
                    request, f"{model.ngc_image}:{model.ngc_tag} added to the catalog."
                )
                return _redirect(request, model.get_absolute_url())
    context = {
        "resource_id": resource_id,
        "tags": tags,
        "error": error,
        "form": form,
        "project": project,
        "projects": projects,
        "can_change": can_change(request.user, org),
        "tab": "ngc",
    }
    return render(request, "catalog/ngc_image.html", context)


# --- custom models -----------------------------------------------------------------------------


class ArtifactLimitHandler(FileUploadHandler):
    """Stops reading an upload as soon as it passes the size limit, instead of spooling it whole."""

    def __init__(self, request=None, limit: int = 0):
        super().__init__(request)
        self.limit = limit
        self.seen = 0

    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        self.seen = 0

    def receive_data_chunk(self, raw_data, start):
        self.seen += len(raw_data)
        if self.seen > self.limit:
            self.request.artifact_too_large = True
            raise SkipFile()
        return raw_data

    def file_complete(self, file_size):
        return None


@login_required
@csrf_exempt  # CSRF is checked below, after the size-limiting upload handler is installed
def custom_create(request: HttpRequest) -> HttpResponse:
    request.upload_handlers.insert(0, ArtifactLimitHandler(request, services.max_artifact_bytes()))
    return _custom_create(request)


@csrf_protect
def _custom_create(request: HttpRequest) -> HttpResponse:
    org = _organization(request)
    _require_change(request, org)
    form = CustomModelForm(request.POST or None, request.FILES or None)
    if request.method == "POST":
        partial = field_validation_response(request, form, request.path)
        if partial is not None:
            return partial
        if getattr(request, "artifact_too_large", False):
            form.is_valid()
            form.add_error(
                "artifact",
                f"The file is larger than the limit of {services.max_artifact_bytes():,} bytes.",
            )
        elif form.is_valid():
            try:
                model = services.model_add_custom(
                    user=request.user, organization=org, **form.service_kwargs()
                )
            except ValidationError as exc:
                form.add_service_error(exc)
            else:
                messages.success(request, f"“{model.name}” added to the catalog.")
                return _redirect(request, model.get_absolute_url())
    return render(
        request,
        "catalog/form.html",
        {
            "form": form,
            "validate_url": request.path,
            "title": "Add a custom model",
            "multipart": True,
            "intro": "Point at weights in object storage or a PersistentVolumeClaim, or upload a file.",
            "back": reverse("catalog:index"),
            "submit": "Add to catalog",
            "tab": "custom",
        },
    )


# --- Profile Bundles -----------------------------------------------------------------------------


@login_required
def bundle_list(request: HttpRequest) -> HttpResponse:
    org = _organization(request)
    bundles = selectors.bundles_for_user(request.user, org, latest_only=True).annotate(
        rule_count=Count("mappings")
    )
    return render(
        request,
        "catalog/bundle_list.html",
        {"bundles": bundles, "can_change": can_change(request.user, org), "tab": "bundles"},
    )


@login_required
def bundle_detail(request: HttpRequest, pk: int) -> HttpResponse:
    bundle = selectors.bundle_get(request.user, pk)
    org = _organization(request)
    editable = can_change(request.user, org) and not bundle.is_builtin
    return render(
        request,
        "catalog/bundle_detail.html",
        {
            "bundle": bundle,
            "versions": bundle.versions(),
            "can_change": editable,
            "can_duplicate": can_change(request.user, org),
            "tab": "bundles",
        },
    )


def _bundle_form_page(request, form, *, bundle=None) -> HttpResponse:
    title = f"New version of {bundle.name}" if bundle else "New Profile Bundle"
    intro = (
        f"Saving creates version {bundle.latest().version + 1}; version {bundle.latest().version} and older stay as they are."
        if bundle
        else "A reusable recipe: engine, image, default arguments, variables and labels."
    )
    return render(
        request,
        "catalog/form.html",
        {
            "form": form,
            "validate_url": request.path,
            "title": title,
            "intro": intro,
            "back": reverse("catalog:bundles"),
            "submit": "Save",
            "tab": "bundles",
        },
    )


@login_required
def bundle_create(request: HttpRequest) -> HttpResponse:
    org = _organization(request)
    _require_change(request, org)
    initial = {"engine": "vllm", "default_args": [], "variables": [], "labels": {}}
    source = request.GET.get("from", "")
    if source.isdigit():
        # "Duplicate": start from a bundle the user can see, e.g. a built-in one.
        base = selectors.bundle_get(request.user, int(source))
        initial = {
            f: getattr(base, f)
            for f in ("engine", "image", "default_args", "variables", "description")
        }
        initial["name"] = f"{base.name}-{org.slug}"
        initial["labels"] = {k: v for k, v in base.labels.items() if k != "modeldeck.io/builtin"}
    form = BundleForm(request.POST or None, initial=initial)
    if request.method == "POST":
        partial = field_validation_response(request, form, request.path)
        if partial is not None:
            return partial
        if form.is_valid():
            try:
                bundle = services.bundle_create(
                    user=request.user, organization=org, **form.cleaned_data
                )
            except ValidationError as exc:
                form.add_service_error(exc)
            else:
                messages.success(request, f"Bundle {bundle} created.")
                return _redirect(request, bundle.get_absolute_url())
    return _bundle_form_page(request, form)


@login_required
def bundle_edit(request: HttpRequest, pk: int) -> HttpResponse:
    bundle = selectors.bundle_get(request.user, pk).latest()
    if bundle.is_builtin:
        raise PermissionDenied(
            "Built-in bundles can't be changed; create one in your organization."
        )
    _require_change(request, bundle.organization)
    initial = {
        f: getattr(bundle, f)
        for f in ("name", "engine", "image", "default_args", "variables", "labels", "description")
    }
    form = BundleForm(request.POST or None, initial=initial, editing=True)
    if request.method == "POST":
        partial = field_validation_response(request, form, request.path)
        if partial is not None:
            return partial
        if form.is_valid():
            data = {k: v for k, v in form.cleaned_data.items() if k != "name"}
            try:
                new = services.bundle_update(user=request.user, bundle=bundle, **data)
            except ValidationError as exc:
                form.add_service_error(exc)
            else:
                messages.success(request, f"Saved as {new}.")
                return _redirect(request, new.get_absolute_url())
    return _bundle_form_page(request, form, bundle=bundle)


@login_required
@require_POST
def bundle_delete(request: HttpRequest, pk: int) -> HttpResponse:
    bundle = selectors.bundle_get(request.user, pk)
    try:
        services.bundle_delete(user=request.user, bundle=bundle)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect(bundle.get_absolute_url())
    messages.success(request, f"Bundle {bundle.name} deleted.")
    return redirect("catalog:bundles")


# --- MaaS mappings -------------------------------------------------------------------------------


@login_required
def mappings_index(request: HttpRequest) -> HttpResponse:
    project = _projects(request).first()
    if project is None:
        messages.info(request, "Create a project first: MaaS mappings belong to a project.")
        return redirect("projects:list")
    return redirect("catalog:mappings", project_pk=project.pk)


@login_required
def mappings(request: HttpRequest, project_pk: int) -> HttpResponse:
    """A project's rules in order, the form that appends one, and "try a model" against them."""
    project = project_get(request.user, project_pk)
    org = project.organization
    editable = can_change(request.user, org)
    bundles = selectors.bundles_for_user(request.user, org, latest_only=True)
    form = MappingForm(request.POST or None, bundles=bundles)
    if request.method == "POST":
        if not editable:
            raise PermissionDenied("Viewers cannot change MaaS mappings.")
        partial = field_validation_response(request, form, request.path)
        if partial is not None:
            return partial
        if form.is_valid():
            try:
                rule = services.mapping_create(
                    user=request.user, project=project, **form.service_kwargs()
                )
            except ValidationError as exc:
                form.add_service_error(exc)
            else:
                messages.success(request, f"Rule {rule.position} added.")
                return _redirect(request, reverse("catalog:mappings", args=[project.pk]))
    models = selectors.models_for_user(request.user, org)
    context = {
        "project": project,
        "projects": projects_for_user(request.user, org),
        "rules": selectors.mappings_for_user(request.user, project),
        "form": form,
        "validate_url": request.path,
        "models": models,
        "can_change": editable,
        "tab": "mappings",
    }
    return render(request, "catalog/mappings.html", context)


@login_required
def mapping_resolve(request: HttpRequest, project_pk: int) -> HttpResponse:
    """Which rule (and bundle) a model gets in this project; an htmx fragment on the mappings page."""
    project = project_get(request.user, project_pk)
    model_pk = request.GET.get("model", "")
    resolution = None
    model = None
    if model_pk.isdigit():
        model = selectors.model_get(request.user, int(model_pk))
        if model.organization_id != project.organization_id:
            raise Http404("No such model.")
        resolution = maas.resolve(project, model)
    context = {"project": project, "model": model, "resolution": resolution}
    if request.htmx:
        return render(request, "catalog/htmx/resolution.html", context)
    return render(request, "catalog/resolution_page.html", context)


@login_required
@require_POST
def mapping_move(request: HttpRequest, pk: int) -> HttpResponse:
    rule = selectors.mapping_get(request.user, pk)
    try:
        services.mapping_move(
            user=request.user, mapping=rule, direction=request.POST.get("direction", "")
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("catalog:mappings", project_pk=rule.project_id)


@login_required
@require_POST
def mapping_delete(request: HttpRequest, pk: int) -> HttpResponse:
    rule = selectors.mapping_get(request.user, pk)
    services.mapping_delete(user=request.user, mapping=rule)
    messages.success(request, "Rule deleted.")
    return redirect("catalog:mappings", project_pk=rule.project_id)
