"""Catalog pages: models, Hugging Face and NGC browsing, custom models, Profile Bundles, MaaS mappings."""

from __future__ import annotations

import logging
import os
from functools import cached_property

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.files.uploadhandler import FileUploadHandler, SkipFile
from django.db.models import Count
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET

from catalog import artifacts, hub, maas, ngc, selectors, services
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
from console import permissions
from console.edit import ActionView, EditView
from console.http import RefusedWithWayOn
from console.http import current_organization as _organization
from console.ids import parse_id
from console.paging import ListFilter, paginate
from deployments.models import ModelDeployment
from projects.models import IntegrationKind, Project
from projects.selectors import project_get, projects_for_user

log = logging.getLogger(__name__)

HUB_PAGE_SIZE = 20


def _projects(request: HttpRequest):
    return projects_for_user(request.user, _organization(request))


def _token_project(request: HttpRequest, kind: str) -> Project | None:
    """The project whose credential a Hub/NGC page uses: ?project=, else the first that has one."""
    projects = _projects(request)
    wanted = request.GET.get("project") or request.POST.get("project")
    if wanted:
        pk = parse_id(wanted)
        return projects.filter(pk=pk).first() if pk is not None else None
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
    for row in listing.rows:  # the suggested runtime and why, shown in the Runtime column
        row.runtime = maas.suggest_runtime(row)
    source, task, q = (request.GET.get(k, "").strip() for k in ("source", "task", "q"))
    context = {
        "models": listing.rows,
        "listing": listing,
        "facets": facets,
        "sources": ModelSource.choices,
        "filters": {"source": source, "task": task, "q": q},
        "can_change": permissions.can(request.user, "change", org),
        "tab": "models",
    }
    if request.htmx:
        return render(request, "catalog/htmx/model_rows.html", context)
    return render(request, "catalog/index.html", context)


@require_GET
def artifact_download(request: HttpRequest, token: str) -> HttpResponse:
    """Stream an uploaded model artifact to a pod holding a signed, unexpired URL for it; any
    other token is a 404 that says nothing about which models exist."""
    model = artifacts.artifact_for_token(token)
    if model is None:
        raise Http404("No such artifact, or the link has expired.")
    response = FileResponse(model.artifact.open("rb"), as_attachment=True,
                            filename=os.path.basename(model.artifact.name))  # fmt: skip
    response["X-Checksum-Sha256"] = model.artifact_sha256
    response["Cache-Control"] = "no-store"
    return response


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

    deployments = ModelDeployment.objects.filter(model=model).select_related("project", "pool")
    projects = _projects(request)
    resolutions = [(p, maas.resolve(p, model)) for p in projects[:5]]
    context = {
        **estimate,
        "model": model,
        "deployments": deployments,
        "resolutions": resolutions,
        "runtime": maas.suggest_runtime(model),
        "can_change": permissions.can(request.user, "change", model),
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


class ModelEdit(EditView):
    form_class = ModelEditForm
    template_name = "catalog/form.html"
    what = "the catalog"

    def get_object(self, request, pk):
        return selectors.model_get(request.user, pk)

    def form_kwargs(self, request, model):
        return {"initial": {"name": model.name, "description": model.description}}

    def save(self, request, model, form):
        services.model_update(user=request.user, model=model, **form.cleaned_data)
        return model

    def success_message(self, model):
        return "Model saved."

    def context(self, request, model, form):
        return {"title": f"Edit {model.name}", "back": model.get_absolute_url(), "submit": "Save",
                "tab": "models"}  # fmt: skip


model_edit = ModelEdit.as_view()


class ModelDelete(ActionView):
    def get_object(self, request, pk):
        return selectors.model_get(request.user, pk)

    def act(self, request, model):
        services.model_delete(user=request.user, model=model)

    def success_message(self, model, result):
        return f"“{model.name}” removed from the catalog."

    def success_url(self, request, model):
        return reverse("catalog:index")

    def failure_url(self, request, model):
        return model.get_absolute_url()


class ModelRefreshTags(ActionView):
    def get_object(self, request, pk):
        return selectors.model_get(request.user, pk)

    def act(self, request, model):
        project = _token_project(request, IntegrationKind.NGC)
        services.model_refresh_ngc_tags(user=request.user, model=model, project=project)

    def success_message(self, model, result):
        return f"{len(model.ngc_tags)} tags read from NGC."


class ModelSetNimProfiles(ActionView):
    """Record a NIM's profiles from pasted `list-model-profiles` output."""

    def get_object(self, request, pk):
        return selectors.model_get(request.user, pk)

    def act(self, request, model):
        return services.model_set_nim_profiles(
            user=request.user, model=model, list_output=request.POST.get("list_output", "")
        )

    def success_message(self, model, result):
        return f"{len(model.nim_profiles)} NIM profiles recorded."


model_delete = ModelDelete.as_view()
model_refresh_tags = ModelRefreshTags.as_view()
model_set_nim_profiles = ModelSetNimProfiles.as_view()


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


class _ImportView(EditView):
    """Import pages: everyone reads them; adding to the catalog needs the change permission."""

    what = "the catalog"
    read_by_all = True

    def permission_target(self, request, obj):
        return _organization(request)


class HubModel(_ImportView):
    """A Hub model's facts before adding it, and the form that adds it pinned to a commit."""

    form_class = HubAddForm
    template_name = "catalog/hub_model.html"

    @cached_property
    def project(self):
        return _token_project(self.request, IntegrationKind.HUGGINGFACE)

    def form_kwargs(self, request, obj):
        initial = {
            "repo_id": self.kwargs["repo_id"],
            "name": self.kwargs["repo_id"],
            "project": self.project.pk if self.project else None,
            "revision": request.GET.get("revision", "").strip(),
        }
        return {"projects": _projects(request), "initial": initial}

    def save(self, request, obj, form):
        d = form.cleaned_data
        return services.model_add_from_hub(
            user=request.user, organization=_organization(request), repo_id=d["repo_id"],
            revision=d.get("revision") or "", name=d.get("name") or "", project=d.get("project"),
            description=d.get("description") or "",
        )  # fmt: skip

    def service_error(self, form, exc):
        super().service_error(form, exc)
        if hasattr(exc, "error_dict") and "repo_id" in exc.error_dict:
            form.add_error(None, " ".join(exc.error_dict["repo_id"][0].messages))  # a hidden field

    def success_message(self, model):
        return f"{model.repo_id} added to the catalog, pinned to {model.revision[:12]}."

    def context(self, request, obj, form):
        org, repo_id = _organization(request), self.kwargs["repo_id"]
        revision = request.GET.get("revision", "").strip()
        detail = error = None
        try:
            detail = hub.model_detail(
                endpoint=settings.HF_ENDPOINT,
                token=selectors.hf_token(self.project),
                repo_id=repo_id,
                revision=revision or None,
                timeout=float(settings.HUB_TIMEOUT_SECONDS),
            )
        except hub.HubError as exc:
            error = exc.message
        existing = selectors.models_for_user(request.user, org).filter(
            source=ModelSource.HUGGINGFACE, repo_id=repo_id
        )
        return {
            "repo_id": repo_id,
            "detail": detail,
            "error": error,
            "project": self.project,
            "existing": existing,
            "files": sorted(detail.files, key=lambda f: -(f.size or 0)) if detail else [],
            "can_change": permissions.can(request.user, "change", org),
            "tab": "hub",
        }


hub_model = HubModel.as_view()


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


class NgcImage(_ImportView):
    """An NGC image's tags and the form that adds one to the catalog."""

    form_class = NgcAddForm
    template_name = "catalog/ngc_image.html"

    @cached_property
    def project(self):
        return _token_project(self.request, IntegrationKind.NGC)

    @cached_property
    def tags(self):
        """(the image's tags or None, the error to show)."""
        key = selectors.ngc_key(self.project)
        if not key:
            return None, (
                "Choose a project with an NGC API key (set on the project's Integrations page) "
                "to read this image's tags."
            )
        try:
            return ngc.image_tags(
                base_url=settings.NGC_API_URL, api_key=key, image=self.kwargs["resource_id"],
                timeout=float(settings.HUB_TIMEOUT_SECONDS),
            ), None  # fmt: skip
        except ngc.NgcError as exc:
            return None, exc.message

    def form_kwargs(self, request, obj):
        tags = self.tags[0]
        initial = {
            "image": self.kwargs["resource_id"],
            "project": self.project.pk if self.project else None,
            "tag": tags.latest_tag if tags else None,
        }
        return {"projects": _projects(request), "tags": tags.tags if tags else (), "initial": initial}

    def save(self, request, obj, form):
        d = form.cleaned_data
        return services.model_add_from_ngc(
            user=request.user, organization=_organization(request), image=d["image"], tag=d["tag"],
            name=d.get("name") or "", project=d["project"],
        )  # fmt: skip

    def success_message(self, model):
        return f"{model.ngc_image}:{model.ngc_tag} added to the catalog."

    def context(self, request, obj, form):
        tags, error = self.tags
        return {
            "resource_id": self.kwargs["resource_id"],
            "tags": tags,
            "error": error,
            "project": self.project,
            "projects": _projects(request),
            "can_change": permissions.can(request.user, "change", _organization(request)),
            "tab": "ngc",
        }


ngc_image = NgcImage.as_view()


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


class _CustomCreate(EditView):
    form_class = CustomModelForm
    template_name = "catalog/form.html"
    what = "the catalog"

    def permission_target(self, request, obj):
        return _organization(request)

    def form_valid(self, request, form):
        if getattr(request, "artifact_too_large", False):
            form.is_valid()
            form.add_error(
                "artifact",
                f"The file is larger than the limit of {services.max_artifact_bytes():,} bytes.",
            )
            return False
        return form.is_valid()

    def save(self, request, obj, form):
        return services.model_add_custom(
            user=request.user, organization=_organization(request), **form.service_kwargs()
        )

    def success_message(self, model):
        return f"“{model.name}” added to the catalog."

    def context(self, request, obj, form):
        org = _organization(request)
        used, quota = services.upload_usage(org)
        form.fields["artifact"].help_text = (
            f"{form.fields['artifact'].help_text} Upload storage of {org.name}: "
            f"{filesizeformat(used)} of {filesizeformat(quota)} used."
        ).strip()
        return {
            "title": "Add a custom model",
            "multipart": True,
            "intro": "Point at weights in object storage or a PersistentVolumeClaim, or upload a file.",
            "back": reverse("catalog:index"),
            "submit": "Add to catalog",
            "tab": "custom",
        }


_custom_create = csrf_protect(_CustomCreate.as_view())


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
        {"bundles": bundles, "can_change": permissions.can(request.user, "change", org), "tab": "bundles"},
    )


@login_required
def bundle_detail(request: HttpRequest, pk: int) -> HttpResponse:
    bundle = selectors.bundle_get(request.user, pk)
    org = _organization(request)
    editable = permissions.can(request.user, "change", org) and not bundle.is_builtin
    return render(
        request,
        "catalog/bundle_detail.html",
        {
            "bundle": bundle,
            "versions": bundle.versions(),
            "can_change": editable,
            "can_duplicate": permissions.can(request.user, "change", org),
            "tab": "bundles",
        },
    )


class _BundleEdit(EditView):
    form_class = BundleForm
    template_name = "catalog/form.html"
    what = "the catalog"

    def context(self, request, bundle, form):
        if bundle is None:
            title, intro = "New Profile Bundle", "A reusable recipe: engine, image, default arguments, variables and labels."
        else:
            version = bundle.latest().version
            title = f"New version of {bundle.name}"
            intro = f"Saving creates version {version + 1}; version {version} and older stay as they are."
        return {"title": title, "intro": intro, "back": reverse("catalog:bundles"), "submit": "Save",
                "tab": "bundles"}  # fmt: skip


class BundleCreate(_BundleEdit):
    def permission_target(self, request, obj):
        return _organization(request)

    def form_kwargs(self, request, obj):
        initial = {"engine": "vllm", "default_args": [], "variables": [], "labels": {}}
        source = request.GET.get("from", "")
        if (source_pk := parse_id(source)) is not None:
            # "Duplicate": start from a bundle the user can see, e.g. a built-in one.
            base = selectors.bundle_get(request.user, source_pk)
            initial = {
                f: getattr(base, f)
                for f in ("engine", "image", "default_args", "variables", "description")
            }
            initial["name"] = f"{base.name}-{_organization(request).slug}"
            initial["labels"] = {k: v for k, v in base.labels.items() if k != "modeldeck.io/builtin"}
        return {"initial": initial}

    def save(self, request, obj, form):
        return services.bundle_create(
            user=request.user, organization=_organization(request), **form.cleaned_data
        )

    def success_message(self, bundle):
        return f"Bundle {bundle} created."


class BundleEdit(_BundleEdit):
    def get_object(self, request, pk):
        bundle = selectors.bundle_get(request.user, pk).latest()
        if bundle.is_builtin:
            if permissions.can(request.user, "change", _organization(request)):
                duplicate = reverse("catalog:bundle_create") + f"?from={bundle.pk}"
                raise RefusedWithWayOn(services.BUILTIN_BUNDLE_READ_ONLY, label="Duplicate", url=duplicate)
            raise PermissionDenied(services.BUILTIN_BUNDLE_READ_ONLY)
        return bundle

    def form_kwargs(self, request, bundle):
        fields = ("name", "engine", "image", "default_args", "variables", "labels", "description")
        return {"initial": {f: getattr(bundle, f) for f in fields}, "editing": True}

    def save(self, request, bundle, form):
        data = {k: v for k, v in form.cleaned_data.items() if k != "name"}
        return services.bundle_update(user=request.user, bundle=bundle, **data)

    def success_message(self, new):
        return f"Saved as {new}."


bundle_create = BundleCreate.as_view()
bundle_edit = BundleEdit.as_view()


class BundleDelete(ActionView):
    def get_object(self, request, pk):
        return selectors.bundle_get(request.user, pk)

    def act(self, request, bundle):
        services.bundle_delete(user=request.user, bundle=bundle)

    def success_message(self, bundle, result):
        return f"Bundle {bundle.name} deleted."

    def success_url(self, request, bundle):
        return reverse("catalog:bundles")

    def failure_url(self, request, bundle):
        return bundle.get_absolute_url()


bundle_delete = BundleDelete.as_view()


# --- MaaS mappings -------------------------------------------------------------------------------


@login_required
def mappings_index(request: HttpRequest) -> HttpResponse:
    project = _projects(request).first()
    if project is None:
        messages.info(request, "Create a project first: MaaS mappings belong to a project.")
        return redirect("projects:list")
    return redirect("catalog:mappings", project_pk=project.pk)


class Mappings(EditView):
    """A project's rules in order, the form that appends one, and "try a model" against them."""

    form_class = MappingForm
    template_name = "catalog/mappings.html"
    what = "MaaS mappings"
    read_by_all = True

    def get_object(self, request, project_pk):
        return project_get(request.user, project_pk)

    def form_kwargs(self, request, project):
        return {"bundles": selectors.bundles_for_user(request.user, project.organization, latest_only=True)}

    def save(self, request, project, form):
        return services.mapping_create(user=request.user, project=project, **form.service_kwargs())

    def success_message(self, rule):
        return f"Rule {rule.position} added."

    def success_url(self, request, rule):
        return reverse("catalog:mappings", args=[rule.project_id])

    def context(self, request, project, form):
        org = project.organization
        return {
            "project": project,
            "projects": projects_for_user(request.user, org),
            "rules": selectors.mappings_for_user(request.user, project),
            "models": selectors.models_for_user(request.user, org),
            "can_change": permissions.can(request.user, "change", project),
            "tab": "mappings",
        }


mappings = Mappings.as_view()


@login_required
def mapping_resolve(request: HttpRequest, project_pk: int) -> HttpResponse:
    """Which rule (and bundle) a model gets in this project; an htmx fragment on the mappings page."""
    project = project_get(request.user, project_pk)
    model_pk = request.GET.get("model", "")
    resolution = None
    model = None
    if (model_id := parse_id(model_pk)) is not None:
        model = selectors.model_get(request.user, model_id)
        if model.organization_id != project.organization_id:
            raise Http404("No such model.")
        resolution = maas.resolve(project, model)
    context = {"project": project, "model": model, "resolution": resolution}
    if request.htmx:
        return render(request, "catalog/htmx/resolution.html", context)
    return render(request, "catalog/resolution_page.html", context)


class _MappingAction(ActionView):
    def get_object(self, request, pk):
        return selectors.mapping_get(request.user, pk)

    def success_url(self, request, rule):
        return reverse("catalog:mappings", args=[rule.project_id])


class MappingMove(_MappingAction):
    def act(self, request, rule):
        services.mapping_move(user=request.user, mapping=rule, direction=request.POST.get("direction", ""))

    def success_message(self, rule, result):
        return ""  # the list shows the new order


class MappingDelete(_MappingAction):
    def act(self, request, rule):
        services.mapping_delete(user=request.user, mapping=rule)

    def success_message(self, rule, result):
        return "Rule deleted."


mapping_move = MappingMove.as_view()
mapping_delete = MappingDelete.as_view()
