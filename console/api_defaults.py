"""The REST API's pagination and OPTIONS answer (a module of its own: DRF reads them while it imports)."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404
from drf_spectacular.utils import PolymorphicProxySerializer
from rest_framework import exceptions, pagination, serializers
from rest_framework.metadata import SimpleMetadata
from rest_framework.request import clone_request


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    """DRF's, with a ceiling on `limit`: a larger one is read as the ceiling. Unbounded, any
    limit was handed to the database: past 2^63 SQLite refused it (a 500) and PostgreSQL
    called it out of range (a 400 for a valid request), and below that one request could ask
    for every row at once."""

    max_limit = 1000


def _request_serializer(view, method: str):
    """The body `method` reads, as the handler declares it to the schema (@extend_schema(request=…)):
    None for no body, `...` when the handler declares nothing."""
    handler = getattr(view, (getattr(view, "action_map", None) or {}).get(method.lower(), method.lower()), None)
    schema_class = getattr(handler, "kwargs", {}).get("schema")
    if schema_class is None:
        return ...
    schema = schema_class()
    schema.view, schema.method = view, method
    declared = schema.get_request_serializer()
    if isinstance(declared, PolymorphicProxySerializer):
        # One body of several shapes (a managed or an external deployment): the first is the usual one.
        choices = declared.serializers
        declared = next(iter(choices.values() if isinstance(choices, dict) else choices))
    if isinstance(declared, type) and issubclass(declared, serializers.BaseSerializer):
        context = view.get_serializer_context() if hasattr(view, "get_serializer_context") else {"view": view}
        declared = declared(context={**context, "request": view.request})
    if isinstance(declared, serializers.ListSerializer):
        declared = declared.child
    return declared if declared is None or isinstance(declared, serializers.BaseSerializer) else ...


class RequestBodyMetadata(SimpleMetadata):
    """OPTIONS describes POST and PUT by the body they read: the request serializer the handler
    declares to the schema. DRF's asks the view for its serializer_class — on most routes the
    object the request answers with, every field read-only — and says nothing for views
    without get_serializer (apply, promotions, sharing)."""

    def determine_metadata(self, request, view):
        metadata = super().determine_metadata(request, view)
        if not hasattr(view, "get_serializer"):
            actions = self.determine_actions(request, view)
            if actions:
                metadata["actions"] = actions
        return metadata

    def determine_actions(self, request, view):
        actions = {}
        for method in {"PUT", "POST"} & set(view.allowed_methods):
            view.request = clone_request(request, method)
            try:
                view.check_permissions(view.request)
                if method == "PUT" and hasattr(view, "get_object"):
                    view.get_object()
                body = _request_serializer(view, method)
                if body is ... and hasattr(view, "get_serializer"):
                    body = view.get_serializer()
            except (exceptions.APIException, PermissionDenied, Http404):
                continue
            finally:
                view.request = request
            if isinstance(body, serializers.BaseSerializer):
                actions[method] = self.get_serializer_info(body)
        return actions
