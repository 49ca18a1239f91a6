"""REST endpoints of the catalog: models (+ Hub search/detail/add), NGC images and tags, bundles, MaaS mappings."""

from __future__ import annotations

from dataclasses import asdict

from django.conf import settings
from django.core.exceptions import ValidationError
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from catalog import hub, maas, ngc, selectors, services
from catalog.api.serializers import (
    BundleSerializer,
    BundleWriteSerializer,
    CatalogModelSerializer,
    EstimateQuerySerializer,
    HubDetailQuerySerializer,
    HubSearchQuerySerializer,
    MappingReorderSerializer,
    MappingSerializer,
    MappingWriteSerializer,
    ModelCreateSerializer,
    ModelUpdateSerializer,
    NgcImagesQuerySerializer,
    NgcTagsQuerySerializer,
    ResolveQuerySerializer,
)
from console.api import IntegerIdMixin, filter_by_id, filter_by_organization
from console.ids import parse_id
from projects.models import Project
from projects.selectors import organizations_for_user, project_get

# Upstream failures are the Hub's or NGC's, not the request's: answer 502/504, not 400.
_UPSTREAM_STATUS = {
    "timeout": status.HTTP_504_GATEWAY_TIMEOUT,
    "unreachable": status.HTTP_502_BAD_GATEWAY,
    "server_error": status.HTTP_502_BAD_GATEWAY,
    "bad_response": status.HTTP_502_BAD_GATEWAY,
    "rate_limited": status.HTTP_503_SERVICE_UNAVAILABLE,
    "not_found": status.HTTP_404_NOT_FOUND,
    "revision_not_found": status.HTTP_404_NOT_FOUND,
    "gated": status.HTTP_403_FORBIDDEN,
    "forbidden": status.HTTP_403_FORBIDDEN,
    "unavailable_for_legal_reasons": 451,
}


def upstream_error(exc: hub.HubError | ngc.NgcError) -> Response:
    return Response(
        {"detail": exc.message, "code": exc.code},
        status=_UPSTREAM_STATUS.get(exc.code, status.HTTP_400_BAD_REQUEST),
    )


def _upstream_from_validation(exc: ValidationError) -> Response | None:
    """A service's ValidationError that carries a Hub/NGC failure code, as the upstream status."""
    if not hasattr(exc, "error_dict"):
        return None
    for field, errors in exc.error_dict.items():
        for error in errors:
            if error.code in (
                "timeout",
                "unreachable",
                "server_error",
                "bad_response",
                "rate_limited",
            ):
                return Response(
                    {
                        field: [str(m) for m in error.messages],
                        "detail": " ".join(error.messages),
                        "code": error.code,
                    },
                    status=_UPSTREAM_STATUS[error.code],
                )
    return None


def _organization(request, org_id=None):
    orgs = organizations_for_user(request.user)
    if org_id not in (None, "") and parse_id(org_id) is None:
        raise ValidationError({"organization": "Give the organization's id."})
    if org_id in (None, ""):
        org = getattr(request, "organization", None) or orgs.first()
    else:
        org = orgs.filter(pk=org_id).first()
    if org is None:
        raise Http404("No such organization.")
    return org


def _project(request, pk: int | None, organization=None) -> Project | None:
    if pk is None:
        return None
    project = project_get(request.user, pk)
    if organization is not None and project.organization_id != organization.pk:
        raise Http404("No such project.")
    return project


def _as_dict(data) -> dict:
    return data.dict() if hasattr(data, "dict") else dict(data)


def _plain(value):
    """A frozen dataclass from hub/ngc as JSON-ready data."""
    data = asdict(value)

    def fix(v):
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [fix(x) for x in v]
        if hasattr(v, "isoformat"):
            return v.isoformat()
        return v

    return fix(data)


class CatalogModelViewSet(IntegerIdMixin, viewsets.GenericViewSet):
    """Catalog models of your organizations. Create with source huggingface, ngc or custom."""

    serializer_class = CatalogModelSerializer

    def get_queryset(self):
        qs = selectors.models_for_user(self.request.user)
        params = self.request.query_params
        for name in ("source", "task"):
            if params.get(name):
                qs = qs.filter(**{name: params[name]})
        qs = filter_by_organization(qs, "organization", params.get("organization"))
        if params.get("q"):
            qs = qs.filter(name__icontains=params["q"])
        return qs.order_by("organization_id", "name")

    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(CatalogModelSerializer(page, many=True).data)

    def retrieve(self, request, pk=None):
        return Response(CatalogModelSerializer(selectors.model_get(request.user, pk)).data)

    @extend_schema(request=ModelCreateSerializer, responses={201: CatalogModelSerializer})
    def create(self, request):
        return self._create(request, _as_dict(request.data))

    def _create(self, request, data: dict):
        body = ModelCreateSerializer(data=data)
        body.is_valid(raise_exception=True)
        d = body.validated_data
        org = _organization(request, data.get("organization"))
        project = _project(request, d.get("project"), org)
        try:
            if d["source"] == "huggingface":
                model = services.model_add_from_hub(
                    user=request.user,
                    organization=org,
                    repo_id=d["repo_id"],
                    revision=d["revision"],
                    name=d["name"],
                    project=project,
                    description=d["description"],
                )
            elif d["source"] == "ngc":
                model = services.model_add_from_ngc(
                    user=request.user,
                    organization=org,
                    image=d["image"],
                    tag=d["tag"],
                    name=d["name"],
                    project=project,
                    description=d["description"],
                )
            else:
                model = services.model_add_custom(
                    user=request.user,
                    organization=org,
                    name=d["name"],
                    storage_uri=d["storage_uri"],
                    task=d["task"],
                    parameters=d["parameters"],
                    license=d["license"],
                    description=d["description"],
                )
        except ValidationError as exc:
            upstream = _upstream_from_validation(exc)
            if upstream is not None:
                return upstream
            raise
        return Response(CatalogModelSerializer(model).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=ModelUpdateSerializer, responses=CatalogModelSerializer)
    def partial_update(self, request, pk=None):
        model = selectors.model_get(request.user, pk)
        body = ModelUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        model = services.model_update(user=request.user, model=model, **body.validated_data)
        return Response(CatalogModelSerializer(model).data)

    def destroy(self, request, pk=None):
        services.model_delete(user=request.user, model=selectors.model_get(request.user, pk))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        request={"application/json": {"type": "object", "properties": {"list_output": {"type": "string"}}}},
        responses=CatalogModelSerializer,
    )
    @action(detail=True, methods=["post"], url_path="nim-profiles")
    def nim_profiles(self, request, pk=None):
        """Record a NIM's profiles from `list-model-profiles` output (the deploy form offers them)."""
        model = selectors.model_get(request.user, pk)
        text = request.data.get("list_output")
        # Not text: parsed as nothing, so the service refuses it (after its permission check).
        model = services.model_set_nim_profiles(
            user=request.user, model=model, list_output=text if isinstance(text, str) else ""
        )
        return Response(CatalogModelSerializer(model).data)

    @extend_schema(parameters=[EstimateQuerySerializer], responses={200: dict})
    @action(detail=True, methods=["get"])
    def estimate(self, request, pk=None):
        """GPU memory estimate for serving this model (context length, concurrency, GPU type)."""
        model = selectors.model_get(request.user, pk)
        q = EstimateQuerySerializer(data=request.query_params)
        q.is_valid(raise_exception=True)
        try:
            result = selectors.model_estimate(
                model,
                context_length=q.validated_data["context_length"],
                concurrency=q.validated_data["concurrency"],
                gpu_type=q.validated_data["gpu_type"] or None,
            )
        except ValueError as exc:
            return Response({"gpu_type": [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)
        if result is None:
            return Response(
                {
                    "estimate": None,
                    "detail": "This model lacks the facts an estimate needs (parameters and config.json).",
                }
            )
        data = _plain(result)
        data.update(
            weights_gb=result.weights_gb,
            kv_kib_per_token=result.kv_kib_per_token,
            kv_cache_gb=result.kv_cache_gb,
            total_gb=result.total_gb,
        )
        return Response({"estimate": data})

    @extend_schema(
        parameters=[OpenApiParameter("project", int, required=True)], responses={200: dict}
    )
    @action(detail=True, methods=["get"])
    def bundle(self, request, pk=None):
        """Which Profile Bundle a project's MaaS mappings choose for this model."""
        model = selectors.model_get(request.user, pk)
        project_pk = parse_id(request.query_params.get("project"))
        if project_pk is None:
            return Response(
                {"project": ["Give the project id."]}, status=status.HTTP_400_BAD_REQUEST
            )
        return Response(_resolution(request, _project(request, project_pk), model))

    @extend_schema(parameters=[HubSearchQuerySerializer], responses={200: dict})
    @action(detail=False, methods=["get"], url_path="hub-search")
    def hub_search(self, request):
        """Search the Hugging Face Hub (filters: task, library, author; sort by downloads, likes…)."""
        q = HubSearchQuerySerializer(data=request.query_params)
        q.is_valid(raise_exception=True)
        d = q.validated_data
        project = _project(request, d["project"])
        try:
            page = hub.search_models(
                endpoint=settings.HF_ENDPOINT,
                token=selectors.hf_token(project),
                query=d["q"],
                task=d["task"] or None,
                library=d["library"] or None,
                author=d["author"] or None,
                sort=d["sort"],
                limit=d["limit"],
                page=d["page"],
                timeout=float(settings.HUB_TIMEOUT_SECONDS),
            )
        except hub.HubError as exc:
            return upstream_error(exc)
        return Response(
            {
                "page": page.page,
                "page_size": page.page_size,
                "has_next": page.has_next,
                "results": _plain(page)["items"],
            }
        )

    @extend_schema(parameters=[HubDetailQuerySerializer], responses={200: dict})
    @action(detail=False, methods=["get"], url_path="hub-detail")
    def hub_detail(self, request):
        """A Hub model's facts: parameters, license, gated, tags, files and sizes, config.json facts."""
        q = HubDetailQuerySerializer(data=request.query_params)
        q.is_valid(raise_exception=True)
        d = q.validated_data
        project = _project(request, d["project"])
        try:
            detail = hub.model_detail(
                endpoint=settings.HF_ENDPOINT,
                token=selectors.hf_token(project),
                repo_id=d["repo_id"],
                revision=d["revision"] or None,
                timeout=float(settings.HUB_TIMEOUT_SECONDS),
            )
        except hub.HubError as exc:
            return upstream_error(exc)
        data = _plain(detail)
        data.update(size_bytes=detail.size_bytes, weights_bytes=detail.weights_bytes)
        return Response(data)

    @extend_schema(request=HubDetailQuerySerializer, responses={201: CatalogModelSerializer})
    @action(detail=False, methods=["post"], url_path="hub-add")
    def hub_add(self, request):
        """Add a Hub model to the catalog, its revision pinned to a commit sha."""
        return self._create(request, {**_as_dict(request.data), "source": "huggingface"})


def _resolution(request, project: Project, model) -> dict:
    if project.organization_id != model.organization_id:
        raise Http404("No such model in that project's organization.")
    r = maas.resolve(project, model)
    return {
        "bundle": BundleSerializer(r.bundle).data if r.bundle else None,
        "rule": MappingSerializer(r.rule).data if r.rule else None,
        "position": r.position,
        "message": r.message,
        "checks": [
            {"position": c.position, "rule": c.rule.pk, "matched": c.matched, "reason": c.reason}
            for c in r.checks
        ],
    }


class NgcViewSet(viewsets.ViewSet):
    """NVIDIA NGC: NIM images (public search) and an image's tags (with a project's NGC key)."""

    @extend_schema(parameters=[NgcImagesQuerySerializer], responses={200: dict})
    @action(detail=False, methods=["get"])
    def images(self, request):
        q = NgcImagesQuerySerializer(data=request.query_params)
        q.is_valid(raise_exception=True)
        try:
            page = ngc.list_nim_images(
                base_url=settings.NGC_API_URL,
                query=q.validated_data["q"],
                page=q.validated_data["page"],
                timeout=float(settings.HUB_TIMEOUT_SECONDS),
            )
        except ngc.NgcError as exc:
            return upstream_error(exc)
        data = _plain(page)
        for item, image in zip(data["items"], page.items, strict=True):
            item["image"] = image.image
        return Response(data)

    @extend_schema(parameters=[NgcTagsQuerySerializer], responses={200: dict})
    @action(detail=False, methods=["get"])
    def tags(self, request):
        q = NgcTagsQuerySerializer(data=request.query_params)
        q.is_valid(raise_exception=True)
        project = _project(request, q.validated_data["project"])
        key = selectors.ngc_key(project)
        if not key:
            return Response(
                {"project": ["Give a project that has an NGC API key."]},
                status=status.HTTP_400_BAD_REQUEST,
            )
        try:
            tags = ngc.image_tags(
                base_url=settings.NGC_API_URL,
                api_key=key,
                image=q.validated_data["image"],
                timeout=float(settings.HUB_TIMEOUT_SECONDS),
            )
        except ngc.NgcError as exc:
            return upstream_error(exc)
        data = _plain(tags)
        data["image"] = tags.image
        return Response(data)


class BundleViewSet(IntegerIdMixin, viewsets.GenericViewSet):
    """Profile Bundles: built-in ones and your organizations'. PATCH makes a new version."""

    serializer_class = BundleSerializer

    def get_queryset(self):
        latest = self.request.query_params.get("all_versions") not in ("1", "true")
        return selectors.bundles_for_user(
            self.request.user, latest_only=latest and self.action == "list"
        )

    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(BundleSerializer(page, many=True).data)

    def retrieve(self, request, pk=None):
        return Response(BundleSerializer(selectors.bundle_get(request.user, pk)).data)

    @extend_schema(request=BundleWriteSerializer, responses={201: BundleSerializer})
    def create(self, request):
        body = BundleWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        d = dict(body.validated_data)
        org = _organization(request, d.pop("organization", None))
        missing = [f for f in ("name", "engine", "image") if not d.get(f)]
        if missing:
            return Response(
                {f: ["This field is required."] for f in missing},
                status=status.HTTP_400_BAD_REQUEST,
            )
        bundle = services.bundle_create(user=request.user, organization=org, **d)
        return Response(BundleSerializer(bundle).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=BundleWriteSerializer, responses={201: BundleSerializer})
    def partial_update(self, request, pk=None):
        bundle = selectors.bundle_get(request.user, pk)
        body = BundleWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        d = dict(body.validated_data)
        d.pop("organization", None)
        if "name" in d and d.pop("name") != bundle.name:
            return Response(
                {"name": ["A bundle's name cannot change; create a new bundle."]},
                status=status.HTTP_400_BAD_REQUEST,
            )
        new = services.bundle_update(user=request.user, bundle=bundle, **d)
        return Response(BundleSerializer(new).data, status=status.HTTP_201_CREATED)

    def destroy(self, request, pk=None):
        services.bundle_delete(user=request.user, bundle=selectors.bundle_get(request.user, pk))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses=BundleSerializer(many=True))
    @action(detail=True, methods=["get"])
    def versions(self, request, pk=None):
        # Paginated like every list route, as the schema says.
        bundle = selectors.bundle_get(request.user, pk)
        page = self.paginate_queryset(bundle.versions())
        return self.get_paginated_response(BundleSerializer(page, many=True).data)


class MappingViewSet(IntegerIdMixin, viewsets.GenericViewSet):
    """MaaS mapping rules of your projects, in order; first match wins."""

    serializer_class = MappingSerializer

    def get_queryset(self):
        qs = selectors.mappings_for_user(self.request.user)
        return filter_by_id(qs, "project_id", self.request.query_params.get("project"))

    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(MappingSerializer(page, many=True).data)

    def retrieve(self, request, pk=None):
        return Response(MappingSerializer(selectors.mapping_get(request.user, pk)).data)

    def _bundle(self, request, pk):
        try:
            return selectors.bundle_get(request.user, pk)
        except Http404:
            raise ValidationError({"bundle": "No such bundle."}) from None

    @extend_schema(request=MappingWriteSerializer, responses={201: MappingSerializer})
    def create(self, request):
        body = MappingWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        d = dict(body.validated_data)
        missing = [f for f in ("project", "source", "bundle") if d.get(f) in (None, "")]
        if missing:
            return Response(
                {f: ["This field is required."] for f in missing},
                status=status.HTTP_400_BAD_REQUEST,
            )
        project = _project(request, d.pop("project"))
        d["bundle"] = self._bundle(request, d["bundle"])
        rule = services.mapping_create(user=request.user, project=project, **d)
        return Response(MappingSerializer(rule).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=MappingWriteSerializer, responses=MappingSerializer)
    def partial_update(self, request, pk=None):
        rule = selectors.mapping_get(request.user, pk)
        body = MappingWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        d = dict(body.validated_data)
        d.pop("project", None)
        if "bundle" in d:
            d["bundle"] = self._bundle(request, d["bundle"])
        rule = services.mapping_update(user=request.user, mapping=rule, **d)
        return Response(MappingSerializer(rule).data)

    def destroy(self, request, pk=None):
        services.mapping_delete(user=request.user, mapping=selectors.mapping_get(request.user, pk))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=MappingReorderSerializer, responses=MappingSerializer(many=True))
    # The answer is the project's whole new order, not a page of it.
    @action(detail=False, methods=["post"], pagination_class=None)
    def reorder(self, request):
        body = MappingReorderSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        project = _project(request, body.validated_data["project"])
        rules = services.mapping_reorder(
            user=request.user, project=project, order=body.validated_data["order"]
        )
        return Response(MappingSerializer(rules, many=True).data)

    @extend_schema(parameters=[ResolveQuerySerializer], responses={200: dict})
    @action(detail=False, methods=["get"])
    def resolve(self, request):
        """The bundle a project's rules choose for a model (first match wins), with each rule's verdict."""
        q = ResolveQuerySerializer(data=request.query_params)
        q.is_valid(raise_exception=True)
        project = _project(request, q.validated_data["project"])
        model = selectors.model_get(request.user, q.validated_data["model"])
        return Response(_resolution(request, project, model))
