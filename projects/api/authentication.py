"""REST authentication by ModelDeck API keys of the REST scope (hashed at rest, like gateway keys).

`Authorization: Token mdk_…` (DRF's usual scheme) and `Authorization: Bearer mdk_…` both work.
The key acts as its owner, with the owner's permissions, and only while the owner is an active
member of the key's organization; the key's organization becomes the request's default one.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from projects.keys import api_key_authenticate_rest

SCHEMES = ("token", "bearer")


class APIKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].decode("latin-1").lower() not in SCHEMES:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Send the key as `Authorization: Token mdk_…`.")
        try:
            secret = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid API key.") from None
        try:
            key = api_key_authenticate_rest(secret)
        except ValidationError as exc:
            raise exceptions.AuthenticationFailed(" ".join(exc.messages)) from None
        # Views that default to "the current organization" use the key's (no session here).
        request._request.organization = key.organization
        return key.user, key

    def authenticate_header(self, request) -> str:
        # A 401 (not 403) for missing or bad credentials, with the scheme to use.
        return 'Token realm="api"'


class APIKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "projects.api.authentication.APIKeyAuthentication"
    name = "apiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "A ModelDeck API key of the REST API scope: `Token mdk_…` or `Bearer mdk_…`.",
        }
