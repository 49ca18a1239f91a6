"""`apply -f` over REST: POST /api/v1/apply/ (and /api/v1/apply/delete/) with the manifests.

The same functions as `manage.py apply` / `manage.py delete` (deployments.apply: one transaction
per document, dependency order, the services' permission checks as the calling user), so the
remote CLI and the server command print the same lines. `dry_run` changes nothing and returns
the diff.
"""

from __future__ import annotations

import json

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from deployments.apply import (
    Context,
    ManifestError,
    apply_documents,
    delete_documents,
    load_documents,
)
from projects.selectors import organizations_for_user

MAX_MANIFEST_CHARS = 1_000_000


class ApplySerializer(serializers.Serializer):
    manifest = serializers.CharField(
        required=False, allow_blank=True, max_length=MAX_MANIFEST_CHARS, trim_whitespace=False,
        help_text="The YAML (or JSON) text of one or more documents, as in `apply -f FILE`.",
    )
    documents = serializers.ListField(
        child=serializers.DictField(), required=False, max_length=1000,
        help_text="Or the documents already parsed (JSON objects).",
    )
    dry_run = serializers.BooleanField(default=False, help_text="Change nothing; return what would change.")
    organization = serializers.IntegerField(
        required=False, min_value=1, help_text="Default: the organization of your key (or session).",
    )

    def validate(self, data):
        if ("manifest" in data) == ("documents" in data):
            raise serializers.ValidationError({"manifest": "Send either `manifest` (text) or `documents` (a list)."})
        return data


class ApplyResultSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField()
    errors = serializers.IntegerField(help_text="Documents that could not be applied.")
    lines = serializers.ListField(child=serializers.CharField(), help_text="What `manage.py apply` prints.")


class _ApplyBase(APIView):
    run = staticmethod(apply_documents)

    def post(self, request: Request) -> Response:
        body = ApplySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        orgs = organizations_for_user(request.user)
        if data.get("organization") is not None:
            organization = orgs.filter(pk=data["organization"]).first()
        else:
            organization = getattr(request, "organization", None) or orgs.order_by("pk").first()
        if organization is None:
            raise Http404("No such organization, or you are not a member of it.")
        try:
            text = data["manifest"] if "manifest" in data else "\n---\n".join(json.dumps(d) for d in data["documents"])
            docs = load_documents(text)
        except ManifestError as exc:
            return Response({"manifest": [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)
        lines: list[str] = []
        ctx = Context(user=request.user, organization=organization, dry_run=data["dry_run"])
        errors = type(self).run(ctx, docs, dry_run=data["dry_run"], write=lines.append)
        payload = {"dry_run": data["dry_run"], "errors": errors, "lines": lines}
        # Some documents may have been applied: the body says which; 422 says not all were.
        return Response(payload, status=status.HTTP_422_UNPROCESSABLE_ENTITY if errors else status.HTTP_200_OK)


class ApplyView(_ApplyBase):
    """Create or update what the manifests describe (`modeldeck apply -f`)."""

    @extend_schema(request=ApplySerializer, responses={200: ApplyResultSerializer, 422: ApplyResultSerializer})
    def post(self, request: Request) -> Response:
        return super().post(request)


class ApplyDeleteView(_ApplyBase):
    """Delete what the manifests name (`modeldeck delete -f`); missing objects are reported."""

    run = staticmethod(delete_documents)

    @extend_schema(request=ApplySerializer, responses={200: ApplyResultSerializer, 422: ApplyResultSerializer})
    def post(self, request: Request) -> Response:
        return super().post(request)
