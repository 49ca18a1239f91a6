"""REST API plumbing shared by every app: error shape, base permissions, the API root."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError
from django.db.models import QuerySet
from django.http import Http404, JsonResponse
from django.shortcuts import render
from django.views.defaults import bad_request, page_not_found, permission_denied, server_error
from rest_framework import exceptions, permissions
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from console.ids import is_digits, parse_id

log = logging.getLogger(__name__)


def exception_handler(exc, context):
    """Turn service-layer Django errors into DRF's: a bad value is a 400 on its field, never a 500."""
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "error_dict"):
            detail = {
                field: [str(m) for e in errors for m in e.messages]
                for field, errors in exc.error_dict.items()
            }
            if "__all__" in detail:
                detail["non_field_errors"] = detail.pop("__all__")
        else:
            detail = {"non_field_errors": exc.messages}
        exc = exceptions.ValidationError(detail)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or None)
    elif isinstance(exc, exceptions.MethodNotAllowed) and _patch_instead_of_put(context):
        exc = exceptions.MethodNotAllowed("PUT", detail=PUT_NOT_OFFERED)
    elif isinstance(exc, DataError):
        # The database refused a value no validator caught (out of range, NUL byte): the
        # request's fault, so a 400; the driver's text is not shown (it can quote other rows).
        log.warning("API value refused by the database: %s", exc)
        exc = exceptions.ValidationError(
            {"non_field_errors": ["A value is out of range or malformed."]}
        )
    response = drf_exception_handler(exc, context)
    request = context.get("request")
    renderer = getattr(request, "accepted_renderer", None)
    if response is not None and renderer is not None and renderer.format not in ("json", "api"):
        # An error is JSON in its schema's shape even where the answer would have been another
        # format (GET /usage/?format=csv): the CSV renderer made it an empty body.
        request.accepted_renderer, request.accepted_media_type = JSONRenderer(), "application/json"
    if response is None:
        view = context.get("view")
        log.exception("unhandled API error", extra={"view": type(view).__name__ if view else None})
    return response


PUT_NOT_OFFERED = (
    "PUT (replace the whole object) is not offered here; send the fields to change with PATCH."
)


def _patch_instead_of_put(context: dict) -> bool:
    """A PUT to a route that offers PATCH: its 405 says to use PATCH."""
    request, view = context.get("request"), context.get("view")
    return (
        request is not None
        and request.method == "PUT"
        and "patch" in (getattr(view, "action_map", None) or {})
    )


class OrganizationMember(permissions.IsAuthenticated):
    """Authenticated; the object checks are done by the selectors (others get 404)."""


def service_error_response(exc: DjangoValidationError) -> Response:
    return exception_handler(exc, {})


# PostgreSQL's bigint: a longer id can name no row, and some drivers refuse it outright.


class IntegerIdMixin:
    """Object ids in URLs are integers: anything else is a 404 in the API's shape, before a query.

    For viewsets that look objects up through selectors (`pk` straight into a filter) rather
    than GenericAPIView.get_object, which would turn the ValueError into a 404 itself.
    """

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        value = kwargs.get(
            getattr(self, "lookup_url_kwarg", None) or getattr(self, "lookup_field", "pk")
        )
        if value is not None and parse_id(value) is None:
            raise exceptions.NotFound("No such object: ids are whole numbers.")


def filter_by_id(qs: QuerySet, field: str, value: object) -> QuerySet:
    """A list filter by an id from a query parameter (?project=3): a whole number filters, one past
    any id matches nothing (SQLite can't even bind it: an OverflowError, a 500), anything else is
    not this filter and is ignored."""
    text = str(value or "")
    if not is_digits(text):
        return qs
    pk = parse_id(text)
    return qs.filter(**{field: pk}) if pk is not None else qs.none()


def filter_by_organization(qs: QuerySet, field: str, value: object) -> QuerySet:
    """?organization=3 or ?organization=acme (its slug): one organization's rows among those the
    user sees. A superuser's lists span every organization; the CLI narrows them to the one it
    signed in to, so a name is looked up there (another organization's of the same name aside)."""
    text = str(value or "").strip()
    if not text or is_digits(text):
        return filter_by_id(qs, f"{field}_id", text)
    return qs.filter(**{f"{field}__slug": text[:100]})


class RejectNulBytesMiddleware:
    """A NUL byte in a query parameter is a 400, not a database error deep in a filter.

    PostgreSQL text cannot hold NUL; serializers and form fields refuse it in bodies
    (ProhibitNullCharacters), but list filters and the console's searches read query
    parameters directly.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if any(
            "\x00" in key or "\x00" in value
            for key, values in request.GET.lists()
            for value in values
        ):
            if not request.path.startswith("/api/"):
                return api_bad_request(request)  # the console's "Bad request" page
            return JsonResponse(
                {"detail": "Query parameters must not contain NUL characters."}, status=400
            )
        return self.get_response(request)


def api_not_found(request, exception=None):
    """404 for unknown URLs: JSON in the API's shape under /api/, templates/404.html elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return page_not_found(request, exception)


def api_server_error(request):
    """500: JSON in the API's shape under /api/, templates/500.html (no context) elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Server error."}, status=500)
    return server_error(request)


def api_bad_request(request, exception=None):
    """400 (a malformed request Django refused): JSON under /api/, templates/400.html elsewhere."""
    if request.path.startswith("/api/"):
        if isinstance(exception, RequestDataTooBig):
            # Said as such: "Bad request." left `apply -f` of a large manifest with nothing to change.
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            return JsonResponse(
                {"detail": f"The request body is larger than the server takes ({limit:,} bytes)."},
                status=413,
            )
        return JsonResponse({"detail": "Bad request."}, status=400)
    return bad_request(request, exception)


def api_permission_denied(request, exception=None):
    """403 from a page view: JSON under /api/ (DRF answers its own), templates/403.html elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": str(exception or "") or "Not allowed."}, status=403)
    way_on = getattr(exception, "way_on", None)
    if way_on:  # django's permission_denied passes only the reason's text to the template
        return render(request, "403.html", {"exception": str(exception), "way_on": way_on}, status=403)
    return permission_denied(request, exception)
