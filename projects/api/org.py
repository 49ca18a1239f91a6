"""REST endpoints of organization settings and usage: members, invitations, groups, project
members, integrations, usage records and aggregates. Every write calls the same service as the
console's pages (projects.services); every read the same scoped selector."""

from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.http import Http404, StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import renderers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from console import permissions
from console.ids import parse_id
from gateway import reports
from gateway.views import deployment_for_usage
from projects import selectors, services
from projects.api.serializers import (
    GroupSerializer,
    GroupWriteSerializer,
    IntegrationSerializer,
    InvitationAcceptSerializer,
    InvitationCreatedSerializer,
    InvitationCreateSerializer,
    InvitationSerializer,
    MemberAddSerializer,
    MemberRemovedSerializer,
    MemberRoleSerializer,
    MemberSerializer,
    ProjectMemberSerializer,
    UsageRecordSerializer,
    UserRefSerializer,
)
from projects.keys import api_keys_for_user
from projects.models import (
    IntegrationKind,
    Invitation,
    Membership,
    Organization,
    OrganizationGroup,
    Project,
)

ORG_PARAM = OpenApiParameter("organization", int, description="Default: the organization of your key (or session).")


def organization_of(request, value=None) -> Organization:
    """The organization a request means: `organization` (body or query) if the user is in it,
    else the key's/session's; one 404 for an unknown id and another tenant's."""
    if value is None:
        value = request.query_params.get("organization")
    orgs = selectors.organizations_for_user(request.user)
    if value in (None, ""):
        org = getattr(request, "organization", None) or orgs.order_by("pk").first()
    elif (pk := parse_id(value)) is not None:
        org = orgs.filter(pk=pk).first()
    else:
        org = None
    if org is None:
        raise Http404("No such organization, or you are not a member of it.")
    return org


def _pk(value) -> int:
    pk = parse_id(value)
    if pk is None:
        raise Http404("Not found.")
    return pk


class MemberViewSet(viewsets.GenericViewSet):
    """Members of an organization: any member lists them; admins add, change roles and remove
    (removal revokes the member's keys in the organization)."""

    serializer_class = MemberSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no user
            return Membership.objects.none()
        return selectors.members_for(self.request.user, organization_of(self.request)).order_by("user__username", "pk")

    @extend_schema(parameters=[ORG_PARAM])
    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(MemberSerializer(page, many=True).data)

    def retrieve(self, request, pk=None):
        return Response(MemberSerializer(selectors.membership_get(request.user, _pk(pk))).data)

    @extend_schema(request=MemberAddSerializer, responses={201: MemberSerializer})
    def create(self, request):
        org = organization_of(request, request.data.get("organization"))
        body = MemberAddSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        membership = services.member_add(
            user=request.user, organization=org, username=body.validated_data["username"], role=body.validated_data["role"]
        )
        return Response(MemberSerializer(membership).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=MemberRoleSerializer, responses=MemberSerializer)
    def partial_update(self, request, pk=None):
        membership = selectors.membership_get(request.user, _pk(pk))
        permissions.require(request.user, "admin", membership.organization, what="members")
        body = MemberRoleSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        membership = services.member_role_set(user=request.user, membership=membership, role=body.validated_data["role"])
        return Response(MemberSerializer(membership).data)

    @extend_schema(responses={200: MemberRemovedSerializer})
    def destroy(self, request, pk=None):
        membership = selectors.membership_get(request.user, _pk(pk))
        revoked = services.membership_remove(user=request.user, membership=membership)
        return Response({"keys_revoked": revoked})


class InvitationViewSet(viewsets.GenericViewSet):
    """Invitations by email (admins): the one-time link is in the create response only."""

    serializer_class = InvitationSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Invitation.objects.none()
        org = organization_of(self.request)
        permissions.require(self.request.user, "admin", org, what="invitations")
        return selectors.invitations_for(self.request.user, org).order_by("-created_at", "-pk")

    @extend_schema(parameters=[ORG_PARAM])
    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(InvitationSerializer(page, many=True).data)

    def retrieve(self, request, pk=None):
        return Response(InvitationSerializer(selectors.invitation_get(request.user, _pk(pk))).data)

    @extend_schema(request=InvitationCreateSerializer, responses={201: InvitationCreatedSerializer})
    def create(self, request):
        org = organization_of(request, request.data.get("organization"))
        body = InvitationCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        invitation, link = services.invitation_create(
            user=request.user, organization=org, email=body.validated_data["email"], role=body.validated_data["role"],
            base_url=request.build_absolute_uri("/"),
        )  # fmt: skip
        payload = InvitationSerializer(invitation).data
        payload["link"] = link
        response = Response(payload, status=status.HTTP_201_CREATED)
        response["Cache-Control"] = "no-store"
        return response

    @extend_schema(responses=InvitationSerializer)
    def destroy(self, request, pk=None):
        """Revoke: the link stops working (the row stays, for the audit trail)."""
        invitation = selectors.invitation_get(request.user, _pk(pk))
        return Response(InvitationSerializer(services.invitation_revoke(user=request.user, invitation=invitation)).data)

    @extend_schema(request=InvitationAcceptSerializer, responses=MemberSerializer)
    @action(detail=False, methods=["post"])
    def accept(self, request):
        """Join the invitation's organization as the calling user (the link's token in the body)."""
        body = InvitationAcceptSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            membership = services.invitation_accept(user=request.user, token=body.validated_data["token"])
        except ValidationError as exc:
            raise Http404(" ".join(exc.messages)) from None
        return Response(MemberSerializer(membership).data)


class GroupViewSet(viewsets.GenericViewSet):
    """An organization's groups (access policies of kind `groups` name them) and their members."""

    serializer_class = GroupSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return OrganizationGroup.objects.none()
        return selectors.groups_for(self.request.user, organization_of(self.request)).order_by("name", "pk")

    def get_object(self):
        return selectors.group_get(self.request.user, _pk(self.kwargs.get("pk")))

    @extend_schema(parameters=[ORG_PARAM])
    def list(self, request):
        page = self.paginate_queryset(self.get_queryset().prefetch_related("group__user_set"))
        return self.get_paginated_response(GroupSerializer(page, many=True).data)

    def retrieve(self, request, pk=None):
        return Response(GroupSerializer(self.get_object()).data)

    @extend_schema(request=GroupWriteSerializer, responses={201: GroupSerializer})
    def create(self, request):
        org = organization_of(request, request.data.get("organization"))
        body = GroupWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        group = services.group_create(
            user=request.user, organization=org, name=body.validated_data["name"],
            description=body.validated_data["description"],
        )  # fmt: skip
        return Response(GroupSerializer(group).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=GroupWriteSerializer, responses=GroupSerializer)
    def partial_update(self, request, pk=None):
        group = self.get_object()
        permissions.require(request.user, "admin", group.organization, what="groups")
        body = GroupWriteSerializer(data={"name": group.name, "description": group.description, **request.data})
        body.is_valid(raise_exception=True)
        group = services.group_update(
            user=request.user, group=group, name=body.validated_data["name"],
            description=body.validated_data["description"],
        )  # fmt: skip
        return Response(GroupSerializer(group).data)

    def destroy(self, request, pk=None):
        services.group_delete(user=request.user, group=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=UserRefSerializer, responses=GroupSerializer)
    @action(detail=True, methods=["post"], url_path="members", url_name="members")
    def member_add(self, request, pk=None):
        group = self.get_object()
        permissions.require(request.user, "admin", group.organization, what="groups")
        body = UserRefSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        member = selectors.member_user_get(request.user, group.organization, body.validated_data["user"])
        return Response(GroupSerializer(services.group_member_add(user=request.user, group=group, member=member)).data)

    @extend_schema(request=None, responses=GroupSerializer)
    @action(detail=True, methods=["delete"], url_path=r"members/(?P<user_id>[0-9]+)", url_name="member")
    def member_remove(self, request, pk=None, user_id=None):
        group = self.get_object()
        permissions.require(request.user, "admin", group.organization, what="groups")
        member = group.group.user_set.filter(pk=_pk(user_id)).first()
        if member is None:
            raise Http404("Not a member of this group.")
        return Response(GroupSerializer(services.group_member_remove(user=request.user, group=group, member=member)).data)


class ProjectSettingsMixin:
    """Project members and integrations, as actions of /api/v1/projects/{id}/ (mixed into ProjectViewSet)."""

    @extend_schema(methods=["GET"], responses=ProjectMemberSerializer(many=True))
    @extend_schema(methods=["POST"], request=ProjectMemberSerializer, responses=ProjectMemberSerializer)
    @action(detail=True, methods=["get", "post"], url_path="members", url_name="members", pagination_class=None)
    def members(self, request, pk=None):
        project: Project = self.get_object()
        if request.method == "GET":
            rows = project.memberships.select_related("user").order_by("user__username")
            return Response(ProjectMemberSerializer(rows, many=True).data)
        permissions.require(request.user, "admin", project.organization, what="project members")
        body = ProjectMemberSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        member = selectors.member_user_get(request.user, project.organization, body.validated_data["user_id"])
        row = services.project_member_set(user=request.user, project=project, member=member, role=body.validated_data["role"])
        return Response(ProjectMemberSerializer(row).data)

    @extend_schema(request=None, responses={204: None})
    @action(detail=True, methods=["delete"], url_path=r"members/(?P<user_id>[0-9]+)", url_name="member")
    def member_remove(self, request, pk=None, user_id=None):
        project: Project = self.get_object()
        permissions.require(request.user, "admin", project.organization, what="project members")
        row = project.memberships.filter(user_id=_pk(user_id)).select_related("user").first()
        if row is None:
            raise Http404("Not a member of this project.")
        services.project_member_remove(user=request.user, project_member=row)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(methods=["GET"], responses=IntegrationSerializer(many=True))
    @extend_schema(methods=["POST"], request=IntegrationSerializer, responses=IntegrationSerializer)
    @action(detail=True, methods=["get", "post"], url_path="integrations", url_name="integrations", pagination_class=None)
    def integrations(self, request, pk=None):
        """GET: the project's integrations (never a secret). POST {kind, secret}: set one (write-only)."""
        project: Project = self.get_object()
        if request.method == "GET":
            return Response(IntegrationSerializer(project.integrations.order_by("kind"), many=True).data)
        permissions.require(request.user, "change", project, what="integrations")
        body = IntegrationSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        integration = services.integration_set(
            user=request.user, project=project, kind=body.validated_data["kind"], secret=body.validated_data["secret"]
        )
        return Response(IntegrationSerializer(integration).data)

    def _integration(self, request, kind: str):
        project: Project = self.get_object()
        if kind not in IntegrationKind.values:
            raise Http404("No such integration kind.")
        integration = project.integrations.filter(kind=kind).first()
        if integration is None:
            raise Http404("That integration is not set.")
        return integration

    @extend_schema(request=None, responses={204: None})
    @action(detail=True, methods=["delete"], url_path=r"integrations/(?P<kind>[a-z0-9]+)", url_name="integration")
    def integration_delete(self, request, pk=None, kind=None):
        integration = self._integration(request, kind)
        services.integration_delete(user=request.user, integration=integration)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses=IntegrationSerializer)
    @action(detail=True, methods=["post"], url_path=r"integrations/(?P<kind>[a-z0-9]+)/check", url_name="integration-check")
    def integration_check(self, request, pk=None, kind=None):
        """Ask Hugging Face / NGC whether the stored credential works; the answer is saved."""
        integration = services.integration_check(user=request.user, integration=self._integration(request, kind))
        return Response(IntegrationSerializer(integration).data)


class CSVRenderer(renderers.BaseRenderer):
    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data if isinstance(data, bytes | str) else b""


USAGE_PARAMS = [
    OpenApiParameter("scope", str, enum=["keys", "organization", "deployment"],
                     description="`keys` (default): your keys' calls; `organization`: every call of the organization; "
                                 "`deployment`: every call to `deployment`."),
    OpenApiParameter("deployment", int, description="With scope=deployment."),
    OpenApiParameter("range", str, enum=list(reports.RANGES), description="Default 24h."),
    ORG_PARAM,
]  # fmt: skip


def _plain(value):
    """Money stays exact in JSON: Decimals as fixed-point strings ("0.00000000", never 0E-8 or a float)."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class UsageViewSet(viewsets.GenericViewSet):
    """Usage of the Developer Hub's pages: records (JSON pages or `?format=csv`) and aggregates."""

    serializer_class = UsageRecordSerializer
    renderer_classes = [renderers.JSONRenderer, renderers.BrowsableAPIRenderer, CSVRenderer]

    def whose(self, request) -> tuple[reports.Scope, reports.Range]:
        scope = request.query_params.get("scope", "keys")
        if scope == "deployment":
            # The Developer Hub's own selector for a deployment's usage page: same rule, same 404.
            deployment = deployment_for_usage(request.user, _pk(request.query_params.get("deployment", "")))
            whose = reports.Scope(deployment_id=deployment.pk)
        elif scope == "organization":
            whose = reports.Scope(organization_id=organization_of(request).pk)
        elif scope == "keys":
            org = organization_of(request)
            key_ids = tuple(api_keys_for_user(request.user, org).values_list("pk", flat=True))
            whose = reports.Scope(organization_id=org.pk, api_key_ids=key_ids)
        else:
            raise ValidationError({"scope": "Choose one of: keys, organization, deployment."})
        rng_key = request.query_params.get("range") or reports.DEFAULT_RANGE
        if rng_key not in reports.RANGES:
            raise ValidationError({"range": f"Choose one of: {', '.join(reports.RANGES)}."})
        return whose, reports.range_for(rng_key)

    def records(self, request):
        whose, rng = self.whose(request)
        return reports.in_range(whose.records(), rng), rng

    def get_queryset(self):
        """The caller's records in range (the browsable API's page asks for it too)."""
        return self.records(self.request)[0]

    @extend_schema(parameters=USAGE_PARAMS, responses=UsageRecordSerializer(many=True))
    def list(self, request):
        records, rng = self.records(request)
        if request.accepted_renderer.format == "csv":
            response = StreamingHttpResponse(reports.csv_lines(records), content_type="text/csv; charset=utf-8")
            response["Content-Disposition"] = f'attachment; filename="usage-{rng.key}.csv"'
            return response
        page = self.paginate_queryset(records.select_related("user").order_by("-created_at", "-pk"))
        names = reports.key_names(organization_of(request).pk, {r.api_key_prefix for r in page})
        for r in page:
            r.api_key_name = names.get(r.api_key_prefix, "")
        return self.get_paginated_response(UsageRecordSerializer(page, many=True).data)

    @extend_schema(parameters=USAGE_PARAMS, responses=dict)
    @action(detail=False, methods=["get"], renderer_classes=[renderers.JSONRenderer])
    def summary(self, request):
        """Totals, the time series and the per-deployment and per-key breakdowns of the usage page."""
        # The same reads as the console's usage page: the hourly rollups plus the unfolded tail.
        whose, rng = self.whose(request)
        now = timezone.now()
        totals, series = reports.summary(whose, rng, now)

        def rows(by: str) -> list[dict]:
            return [{"name": r["name"] or "—", "requests": r["requests"], "prompt_tokens": r["tokens_in"],
                     "completion_tokens": r["tokens_out"], "cost": r["spend"]}
                    for r in reports.breakdown(whose, rng, now, by)]  # fmt: skip

        by_key = rows("key")
        # A key row's name is its recorded prefix; api_key_name is the key's name where it is
        # one of your organization's keys (the console's usage tables show both).
        names = reports.key_names(organization_of(request).pk, {r["name"] for r in by_key})
        for row in by_key:
            row["api_key_name"] = names.get(row["name"], "")
        return Response(_plain({
            "range": rng.key,
            "totals": totals,
            "series": series,
            "by_deployment": rows("deployment"),
            "by_key": by_key,
        }))  # fmt: skip
