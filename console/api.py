"""REST API plumbing shared by every app: error shape, base permissions, the API root."""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, permissions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

log = logging.getLogger(__name__)


def exception_handler(exc, context):
    """Turn service-layer Django errors into DRF's: a bad value is a 400 on its field, never a 500."""
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "error_dict"):
            detail = {field: [str(m) for e in errors for m in e.messages] for field, errors in exc.error_dict.items()}
            if "__all__" in detail:
                detail["non_field_errors"] = detail.pop("__all__")
        else:
            detail = {"non_field_errors": exc.messages}
        exc = exceptions.ValidationError(detail)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or None)
    response = drf_exception_handler(exc, context)
    if response is None:
        view = context.get("view")
        log.exception("unhandled API error", extra={"view": type(view).__name__ if view else None})
    return response


class OrganizationMember(permissions.IsAuthenticated):
    """Authenticated; the object checks are done by the selectors (others get 404)."""


def service_error_response(exc: DjangoValidationError) -> Response:
    return exception_handler(exc, {})
