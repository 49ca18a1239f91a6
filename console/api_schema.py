"""The OpenAPI schema's error answers, declared once for every operation (drf-spectacular AutoSchema).

Views declare what they answer when all goes well; what goes wrong is the same everywhere and
comes from one place (console/api.py's exception handler, DRF's authentication, permission and
throttling), so it is declared here from what the view is: authenticated or not, a detail route
or not, reading a body or query parameters or not, throttled or not. A view that declares one of
these codes itself keeps its own.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent
from rest_framework.permissions import AllowAny

WRITES = {"POST", "PUT", "PATCH", "DELETE"}
# The pagination's own parameters never refuse a value (a bad limit or offset is read as the default).
PAGING_PARAMETERS = {"limit", "offset"}

ERROR_SCHEMA = {
    "type": "object",
    "description": "A refusal that is about the request as a whole.",
    "properties": {
        "detail": {"type": "string", "description": "What went wrong, in words to show."},
        "code": {
            "type": "string",
            "description": "Only when Hugging Face or NGC refused: their kind of failure (`gated`, `not_found`, …).",
        },
    },
    "required": ["detail"],
}

# A field's messages; a field holding a list or an object (labels, variables, order) names its
# failing items by index or key, each with its own messages.
FIELD_ERRORS_SCHEMA = {
    "oneOf": [
        {"type": "array", "items": {"type": "string"}},
        {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/FieldErrors"}},
    ],
}

VALIDATION_ERROR_SCHEMA = {
    "type": "object",
    "description": (
        "Each refused field with its messages (`non_field_errors`: the body as a whole), "
        "or `detail` alone when the body could not be read (not JSON, not an object, nested "
        "too deeply, a key named twice)."
    ),
    "properties": {
        "detail": {"type": "string"},
        "code": {"type": "string", "description": "With `detail`, when Hugging Face or NGC refused."},
        "non_field_errors": {"type": "array", "items": {"type": "string"}},
    },
    "additionalProperties": {"$ref": "#/components/schemas/FieldErrors"},
}

COMPONENTS = {
    "Error": ERROR_SCHEMA,
    "FieldErrors": FIELD_ERRORS_SCHEMA,
    "ValidationError": VALIDATION_ERROR_SCHEMA,
}

DESCRIPTIONS = {
    "400": "Refused: what is wrong, field by field.",
    "401": "No credentials, or an API key that is wrong, expired, revoked or not of the REST API scope.",
    "403": "Signed in, but not allowed this here; `detail` says why (on a write with a session: also a missing CSRF token).",
    "404": "No such object, or one of another organization (answered the same way).",
    "429": "Too many attempts: wait as long as `Retry-After` says.",
}

RETRY_AFTER = {
    "Retry-After": {
        "schema": {"type": "integer"},
        "description": "Seconds until the next attempt is counted.",
    }
}


# For a view that answers an error of its own making (the password exchange's 401):
# `extend_schema(responses={401: ERROR_RESPONSE})`, in the same shape as every other.
ERROR_RESPONSE = {"$ref": "#/components/schemas/Error"}


class ModelDeckAutoSchema(AutoSchema):
    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        for name, schema in COMPONENTS.items():  # also for a view's own `ERROR_RESPONSE`
            registry.register_on_missing(
                ResolvedComponent(name=name, type=ResolvedComponent.SCHEMA, schema=schema, object=name)
            )
        responses = operation["responses"]
        for code in self.error_codes(operation):
            if code not in responses:
                responses[code] = self._error_response(code)
        return operation

    def error_codes(self, operation: dict[str, Any]) -> list[str]:
        """The error statuses this operation can answer, from what its view is."""
        codes = []
        parameters = operation.get("parameters", [])
        queries = {p["name"] for p in parameters if p["in"] == "query"} - PAGING_PARAMETERS
        # A body or a query can be refused field by field; so can any write, body or not, when
        # the service refuses the object's state ("2 deployments run in it; move them first").
        if "requestBody" in operation or queries or self.method in WRITES:
            codes.append("400")
        if not all(isinstance(p, AllowAny) for p in self.view.get_permissions()):
            codes += ["401", "403"]
        if any(p["in"] == "path" for p in parameters):
            codes.append("404")
        if self.view.get_throttles():
            codes.append("429")
        return codes

    def _error_response(self, code: str) -> dict[str, Any]:
        name = "ValidationError" if code == "400" else "Error"
        response = {
            "description": DESCRIPTIONS[code],
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
        }
        if code == "429":
            response["headers"] = RETRY_AFTER
        return response
