"""REST endpoints for compute pools, endpoints and model deployments; every write goes through deployments.services."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, PolymorphicProxySerializer, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from catalog.selectors import bundles_for_user, models_for_user
from console import permissions
from console.api import filter_by_id, filter_by_organization
from console.ids import parse_id
from deployments import external, galleries, observe, renderers, selectors, services
from deployments import spec as spec_module
from deployments.api.serializers import (
    BundleChangeSerializer,
    ComputePoolSerializer,
    ComputePoolUpdateSerializer,
    ComputePoolWriteSerializer,
    ConnectionCheckSerializer,
    DeploymentCreateSerializer,
    DeploymentSerializer,
    DeploymentUpdateSerializer,
    EndpointSerializer,
    EventSerializer,
    ExternalCreateSerializer,
    ExternalUpdateSerializer,
    ManifestsSerializer,
    NimTagSerializer,
    RevisionSerializer,
    RollbackSerializer,
    ScaleSerializer,
)
from deployments.models import DeploymentState, ModelDeployment
from projects.keys import playground_key_issue
from projects.models import Environment, Organization
from projects.selectors import organizations_for_user, projects_for_user


class ComputePoolViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = ComputePoolSerializer

    def get_queryset(self):
        return selectors.pools_for_user(self.request.user).order_by("organization__name", "name")

    def _organization(self, org_id):
        orgs = organizations_for_user(self.request.user)
        if org_id and permissions.is_pool_operator(self.request.user):
            orgs = Organization.objects.all()  # operators grant pools to any organization
        org = (
            orgs.filter(pk=org_id).first()
            if org_id
            else (getattr(self.request, "organization", None) or orgs.first())
        )
        if org is None:
            raise Http404("No such organization.")
        return org

    @extend_schema(request=ComputePoolWriteSerializer, responses={201: ComputePoolSerializer})
    def create(self, request):
        body = ComputePoolWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        org = self._organization(data.pop("organization", None))
        pool = services.pool_create(user=request.user, organization=org, **data)
        return Response(ComputePoolSerializer(pool).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=ComputePoolUpdateSerializer, responses=ComputePoolSerializer)
    def partial_update(self, request, pk=None):
        pool = self.get_object()
        body = ComputePoolUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        pool = services.pool_update(user=request.user, pool=pool, **body.validated_data)
        return Response(ComputePoolSerializer(pool).data)

    def destroy(self, request, pk=None):
        pool = self.get_object()
        services.pool_delete(user=request.user, pool=pool)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses=ConnectionCheckSerializer)
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        """Ask the pool's API server for its version, nodes and GPUs; a failure is an answer, not an error."""
        pool = self.get_object()
        result = services.pool_test_connection(user=request.user, pool=pool)
        return Response(result)


class EndpointViewSet(
    mixins.CreateModelMixin, mixins.DestroyModelMixin, viewsets.ReadOnlyModelViewSet
):
    serializer_class = EndpointSerializer

    def get_queryset(self):
        qs = selectors.endpoints_for_user(self.request.user).order_by("project_id", "name")
        return filter_by_id(qs, "project_id", self.request.query_params.get("project"))

    def get_serializer_context(self):
        return {
            **super().get_serializer_context(),
            "projects": projects_for_user(self.request.user),
        }

    @extend_schema(
        parameters=[OpenApiParameter("project", int, description="Only this project's endpoints.")]
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    def create(self, request, *args, **kwargs):
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        endpoint = services.endpoint_create(
            user=request.user, project=data["project"], name=data["name"], path=data["path"]
        )
        return Response(EndpointSerializer(endpoint).data, status=status.HTTP_201_CREATED)

    def destroy(self, request, *args, **kwargs):
        endpoint = self.get_object()
        services.endpoint_delete(user=request.user, endpoint=endpoint)
        return Response(status=status.HTTP_204_NO_CONTENT)


class DeploymentViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = DeploymentSerializer

    def get_queryset(self):
        qs = selectors.with_gpus_held(
            selectors.deployments_for_user(self.request.user).select_related("created_by")
        ).order_by("-created_at", "-pk")
        params = self.request.query_params
        qs = filter_by_id(qs, "project_id", params.get("project"))
        qs = filter_by_organization(qs, "project__organization", params.get("organization"))
        if params.get("state"):
            if params["state"] not in DeploymentState.values:
                # A typo matched nothing and answered an empty list, as if nothing were running.
                raise ValidationError(
                    {"state": f"Unknown state “{params['state'][:40]}”; one of: {', '.join(DeploymentState.values)}."}
                )
            qs = qs.filter(state=params["state"])
        return qs

    def paginate_queryset(self, queryset):
        # The page's keys from a narrow sorted query, then those rows with every join: sorting
        # thousands of wide rows (two revision specs each) was most of the list's time.
        keys = super().paginate_queryset(queryset.values_list("pk", flat=True))
        if keys is None:
            return None
        found = {d.pk: d for d in queryset.filter(pk__in=keys).order_by()}
        return [found[k] for k in keys if k in found]

    @extend_schema(
        parameters=[
            OpenApiParameter("project", int, description="Only this project's deployments."),
            OpenApiParameter("organization", str, description="Only this organization's deployments (its id or slug)."),
            OpenApiParameter(
                "state", str, description="Only deployments in this state, e.g. running."
            ),
        ]
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    def _querysets(self) -> dict:
        user = self.request.user
        projects = projects_for_user(user)
        return {
            "project": projects,
            "model": models_for_user(user),
            "pool": selectors.pools_for_user(user),
            "bundle": bundles_for_user(user),
            "endpoint": selectors.endpoints_for_user(user),
            "environment": Environment.objects.filter(project__in=projects),
        }

    def _read(self, deployment: ModelDeployment, code: int = status.HTTP_200_OK) -> Response:
        fresh = selectors.deployment_get(self.request.user, deployment.pk)
        return Response(DeploymentSerializer(fresh).data, status=code)

    @extend_schema(
        request=PolymorphicProxySerializer(
            component_name="NewDeployment", resource_type_field_name=None,
            serializers=[DeploymentCreateSerializer, ExternalCreateSerializer],
        ),
        responses={201: DeploymentSerializer},
        description='A managed deployment (DeploymentCreate), or with "kind": "external" an external '
                    "endpoint (ExternalCreate: its URL, key, overflow, options, rate limits and pricing).",
    )  # fmt: skip
    def create(self, request):
        if isinstance(request.data, dict) and request.data.get("kind") == "external":
            return self._create_external(request)
        body = DeploymentCreateSerializer(data=request.data, querysets=self._querysets())
        body.is_valid(raise_exception=True)
        data = body.validated_data
        spec = galleries.resolve_template(data["project"], data.get("spec") or {}, data.get("resource_template"))
        spec = galleries.resolve_data_sources(data["project"], spec)
        deployment = services.deployment_create(
            user=request.user, project=data["project"], model=data["model"], pool=data["pool"], name=data["name"],
            spec=spec, bundle=data.get("bundle"), endpoint=data.get("endpoint"),
            environment=data.get("environment"), description=data.get("description", ""),
        )  # fmt: skip
        return self._read(deployment, status.HTTP_201_CREATED)

    @extend_schema(
        request=DeploymentUpdateSerializer,
        responses=DeploymentSerializer,
        description="Replace the spec: fields left out return to their defaults. A new revision, rolled out blue-green.",
    )
    def update(self, request, pk=None):
        deployment = self.get_object()
        permissions.require(request.user, "change", deployment)  # a reader learns nothing from the body's errors
        body = DeploymentUpdateSerializer(data=request.data, models=self._querysets()["model"])
        body.is_valid(raise_exception=True)
        services.deployment_update(
            user=request.user,
            deployment=deployment,
            spec=body.validated_data["spec"],
            replace=True,
            reason=body.validated_data["reason"] or "Replaced through the API",
            update_strategy=body.validated_data["update_strategy"],
            model=body.validated_data.get("model"),
        )
        return self._read(deployment)

    def _create_external(self, request) -> Response:
        body = ExternalCreateSerializer(data=request.data, querysets=self._querysets())
        body.is_valid(raise_exception=True)
        data = body.validated_data
        deployment = external.external_deployment_create(
            user=request.user, project=data["project"], model=data["model"], name=data["name"],
            url=data["external_url"], credential=data["api_key"], overflow=data["overflow"] or None,
            served_model_name=data["served_model_name"], options=data["options"],
            endpoint=data.get("endpoint"), description=data["description"],
            rate_limits=data["rate_limits"], pricing=data["pricing"],
        )  # fmt: skip
        return self._read(deployment, status.HTTP_201_CREATED)

    @extend_schema(
        request=PolymorphicProxySerializer(
            component_name="DeploymentChange", resource_type_field_name=None,
            serializers=[DeploymentUpdateSerializer, ExternalUpdateSerializer],
        ),
        responses=DeploymentSerializer,
        description="Change some spec fields; the others keep their values. An external deployment "
                    "takes external_url, api_key, overflow, served_model_name, options, description, "
                    "rate_limits, pricing.",
    )  # fmt: skip
    def partial_update(self, request, pk=None):
        deployment = self.get_object()
        # Allowed first: a reader learns nothing from the body's errors.
        if deployment.is_external:
            permissions.require(request.user, "change", deployment.project, what="deployments")
            body = ExternalUpdateSerializer(data=request.data)
            body.is_valid(raise_exception=True)
            external.external_deployment_update(user=request.user, deployment=deployment, **body.service_fields())
            return self._read(deployment)
        permissions.require(request.user, "change", deployment)
        body = DeploymentUpdateSerializer(data=request.data, models=self._querysets()["model"])
        body.is_valid(raise_exception=True)
        services.deployment_update(
            user=request.user,
            deployment=deployment,
            spec=body.validated_data["spec"],
            reason=body.validated_data["reason"] or "Updated through the API",
            update_strategy=body.validated_data["update_strategy"],
            model=body.validated_data.get("model"),
        )
        return self._read(deployment)

    @extend_schema(responses={202: None}, description="Marked for deletion (202): its objects leave the pool, then the row, in the background.")
    def destroy(self, request, pk=None):
        deployment = self.get_object()
        services.deployment_delete(user=request.user, deployment=deployment)
        return Response(status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses=DeploymentSerializer)
    @action(detail=True, methods=["post"])
    def deactivate(self, request, pk=None):
        deployment = self.get_object()
        services.deployment_deactivate(user=request.user, deployment=deployment)
        return self._read(deployment)

    @extend_schema(request=None, responses=DeploymentSerializer)
    @action(detail=True, methods=["post"])
    def activate(self, request, pk=None):
        deployment = self.get_object()
        services.deployment_activate(user=request.user, deployment=deployment)
        return self._read(deployment)

    @extend_schema(request=None, responses=DeploymentSerializer)
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        """A failed deployment's current revision, applied again as it is (after its cause was
        fixed outside the spec: the pool, capacity, the image). 400 unless it is failed."""
        deployment = self.get_object()
        services.deployment_retry(user=request.user, deployment=deployment)
        return self._read(deployment)

    @extend_schema(request=RollbackSerializer, responses=DeploymentSerializer)
    @action(detail=True, methods=["post"])
    def rollback(self, request, pk=None):
        deployment = self.get_object()
        body = RollbackSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            services.deployment_rollback(
                user=request.user,
                deployment=deployment,
                revision_number=body.validated_data["revision"],
                update_strategy=body.validated_data["update_strategy"],
            )
        except ValidationError as exc:
            if hasattr(exc, "error_dict") and "revision_number" in exc.error_dict:
                raise ValidationError({"revision": exc.error_dict["revision_number"]}) from None
            raise
        return self._read(deployment)

    @extend_schema(request=ScaleSerializer, responses=DeploymentSerializer)
    @action(detail=True, methods=["post"])
    def scale(self, request, pk=None):
        deployment = self.get_object()
        body = ScaleSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        lo, hi = body.validated_data["min"], body.validated_data["max"]
        services.deployment_update(
            user=request.user,
            deployment=deployment,
            spec={"replicas": {"min": lo, "max": hi}},
            reason=f"Scaled to {lo}–{hi} replicas",
        )
        return self._read(deployment)

    @extend_schema(request=BundleChangeSerializer, responses={200: dict})
    @action(detail=True, methods=["post"])
    def bundle(self, request, pk=None):
        """Change the Profile Bundle version and/or its variables (blue-green); with dry_run,
        only the changes it would make."""
        deployment = self.get_object()
        body = BundleChangeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        if data["dry_run"]:
            permissions.require(request.user, "change", deployment)
            plan = services.deployment_bundle_plan(deployment=deployment, version=data.get("version"),
                                                   variables=data["variables"])  # fmt: skip
            return Response({"bundle": str(plan["bundle"]), "changes": plan["changes"],
                             "rollout": plan["rollout"], "spec": plan["spec"]})  # fmt: skip
        services.deployment_bundle_change(user=request.user, deployment=deployment, version=data.get("version"),
                                          variables=data["variables"], reason=data["reason"])  # fmt: skip
        return self._read(deployment)

    @extend_schema(request=NimTagSerializer, responses=DeploymentSerializer)
    @action(detail=True, methods=["post"], url_path="nim-tag")
    def nim_tag(self, request, pk=None):
        deployment = self.get_object()
        body = NimTagSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        services.deployment_set_nim_tag(
            user=request.user, deployment=deployment, tag=body.validated_data["tag"]
        )
        return self._read(deployment)

    @extend_schema(responses=RevisionSerializer(many=True))
    @action(detail=True, methods=["get"])
    def revisions(self, request, pk=None):
        deployment = self.get_object()
        page = self.paginate_queryset(selectors.revisions_of(deployment))
        return self.get_paginated_response(RevisionSerializer(page, many=True).data)

    @extend_schema(responses=EventSerializer(many=True))
    @action(detail=True, methods=["get"])
    def events(self, request, pk=None):
        deployment = self.get_object()
        page = self.paginate_queryset(deployment.events.all())
        return self.get_paginated_response(EventSerializer(page, many=True).data)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "revision", int, description="Revision number (default: the current one)."
            )
        ],
        responses=ManifestsSerializer,
    )
    @action(detail=True, methods=["get"])
    def manifests(self, request, pk=None):
        """The Kubernetes objects a revision renders to, as multi-document YAML."""

        deployment = self.get_object()
        if deployment.is_external:
            raise ValidationError({"kind": "An external deployment has no Kubernetes objects."})
        wanted = request.query_params.get("revision", "")
        if wanted:
            if parse_id(wanted) is None:
                raise ValidationError({"revision": "Give a revision number."})
            revision = deployment.revisions.filter(number=int(wanted)).first()
            if revision is None:
                raise ValidationError({"revision": f"This deployment has no revision {wanted}."})
        else:
            revision = deployment.current_revision
        if revision is None:
            raise ValidationError({"revision": "This deployment has no revision yet."})
        try:
            text = renderers.render_yaml(spec_module.render_spec_for(deployment, revision))
        except ValueError as exc:
            raise ValidationError({"spec": f"This revision cannot be rendered: {exc}"}) from None
        return Response({"revision": revision.number, "yaml": text})

    # ---- what it is doing: replicas, logs, metrics (the deployment page's tabs) -------------
    @staticmethod
    def _unreadable(deployment: ModelDeployment) -> int:
        # An external deployment has no pods here, for good: a conflict with what it is (409),
        # not an outage to retry (503, which Django also logs as a server error).
        return status.HTTP_409_CONFLICT if deployment.is_external else status.HTTP_503_SERVICE_UNAVAILABLE

    @extend_schema(responses={200: dict, 409: dict, 503: dict})
    @action(detail=True, methods=["get"])
    def replicas(self, request, pk=None):
        """The deployment's pods on its pool (serving, rolling out, superseded): node, GPUs,
        restarts, readiness, age. 503 with the reason when the pool can't be read; 409 for an
        external deployment, which runs no pods here."""
        deployment = self.get_object()
        replicas = observe.deployment_replicas(deployment)
        payload = observe.replicas_payload(replicas)
        if replicas.error:
            return Response({"detail": replicas.error, **payload}, status=self._unreadable(deployment))
        return Response(payload)

    @extend_schema(
        parameters=[
            OpenApiParameter("pod", str, description="Pod name (default: the newest ready pod)."),
            OpenApiParameter("container", str, description="Container (default: the pod's first)."),
            OpenApiParameter("tail", int, description=f"Lines from the end, 1–5000 (default {observe.DEFAULT_TAIL_LINES})."),
            OpenApiParameter("previous", bool, description="The container's previous run (after a restart)."),
        ],
        responses={200: dict, 409: dict, 503: dict},
    )
    @action(detail=True, methods=["get"])
    def logs(self, request, pk=None):
        """The tail of one container's log, from the pool's Kubernetes API; poll it to follow.
        503 with the reason when the pool can't be read; 409 for an external deployment, for a
        deactivated one whose pods are gone (`deployment_state` says which) and for one its
        autoscaling scaled to zero while idle (`scaled_to_zero`: the next request starts a pod)."""
        deployment = self.get_object()
        params = request.query_params
        view = observe.deployment_log(
            deployment, pod=params.get("pod", "")[:253], container=params.get("container", "")[:63],
            tail=params.get("tail"), previous=params.get("previous", "").lower() in {"1", "true", "yes"},
        )  # fmt: skip
        payload = {
            "pod": view.pod.name if view.pod else None,
            "container": view.container or None,
            "tail": view.tail,
            "previous": view.previous,
            "pods": [{"name": p.name, "revision": p.revision, "containers": [c.name for c in p.containers]}
                     for p in view.pods],  # fmt: skip
            "lines": view.text.splitlines(),
            "deployment_state": deployment.state,
        }
        if view.error:
            code = status.HTTP_409_CONFLICT if view.deactivated or view.idle else self._unreadable(deployment)
            return Response({"detail": view.error, "scaled_to_zero": view.idle, **payload}, status=code)
        return Response(payload)

    @extend_schema(
        parameters=[OpenApiParameter("range", str, description="1h (default), 24h, 7d or 30d.")],
        responses=dict,
    )
    @action(detail=True, methods=["get"])
    def metrics(self, request, pk=None):
        """The gateway's measurements of this deployment per revision and time bucket: requests,
        errors, latency p50/p95 (ms), time to first token p50 (ms), output tokens per second."""
        deployment = self.get_object()
        return Response(observe.deployment_metrics(deployment, request.query_params.get("range") or "1h"))

    @extend_schema(request=None, responses={201: dict})
    @action(detail=True, methods=["post"], url_path="playground-key")
    def playground_key(self, request, pk=None):
        """What the console's playground gets: a gateway key for you, limited to this deployment,
        valid for 15 minutes; it revokes your previous playground key for it. Shown once."""
        deployment = self.get_object()
        key, secret = playground_key_issue(
            user=request.user, organization=deployment.project.organization, deployment=deployment
        )
        response = Response(
            {"api_key": secret, "prefix": key.prefix, "expires_at": key.expires_at,
             "model": deployment.served_name(), "deployment": deployment.pk},
            status=status.HTTP_201_CREATED,
        )  # fmt: skip
        response["Cache-Control"] = "no-store"
        return response

