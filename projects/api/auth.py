"""POST /api/v1/auth/token/: exchange a username and password for a REST-scope API key (`modeldeck login`).

Rate limited per client address and per username (fixed windows in the cache — Redis in
production, shared by every web process), so it can't be used to guess passwords. The key is an
ordinary REST key (projects.keys.api_key_create): hashed at rest, shown once, revocable, valid
only while its owner is an active member.
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth import authenticate
from django.core.cache import cache
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from console.api_schema import ERROR_RESPONSE
from console.ids import parse_id
from projects.keys import api_key_create
from projects.models import APIKeyScope, Membership

WINDOW_SECONDS = 300
MAX_PER_ADDRESS = 20  # attempts per window from one client address
MAX_PER_USERNAME = 10  # attempts per window against one username, from anywhere


class TokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=1000, trim_whitespace=False, style={"input_type": "password"})
    organization = serializers.CharField(
        required=False, max_length=100, help_text="Slug or id; default: your first organization.",
    )
    name = serializers.CharField(required=False, max_length=100, default="modeldeck CLI")
    expires_in_days = serializers.IntegerField(required=False, min_value=1, max_value=366, default=90)


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="A REST-scope key: `Authorization: Token …`. Shown once.")
    key_id = serializers.IntegerField()
    organization = serializers.IntegerField()
    organization_slug = serializers.CharField()
    username = serializers.CharField()
    expires_at = serializers.DateTimeField()


def _over(bucket: str, limit: int) -> bool:
    key = f"modeldeck:auth-token:{bucket}"
    cache.add(key, 0, timeout=WINDOW_SECONDS)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=WINDOW_SECONDS)
        count = 1
    return count > limit


class LoginThrottle(BaseThrottle):
    """Counts every attempt (good or bad) per address and per username."""

    def allow_request(self, request, view) -> bool:
        address = request.META.get("REMOTE_ADDR") or "unknown"
        username = str(request.data.get("username", ""))[:150].lower() if hasattr(request.data, "get") else ""
        blocked = _over(f"ip:{address}", MAX_PER_ADDRESS)
        if username:
            blocked = _over(f"user:{username}", MAX_PER_USERNAME) or blocked
        return not blocked

    def wait(self) -> float:
        return float(WINDOW_SECONDS)


class TokenExchangeView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [LoginThrottle]

    @extend_schema(
        request=TokenRequestSerializer,
        responses={201: TokenSerializer, 401: OpenApiResponse(ERROR_RESPONSE, "Wrong username or password.")},
        auth=[],
    )
    def post(self, request: Request) -> Response:
        body = TokenRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        user = authenticate(request._request, username=data["username"], password=data["password"])
        if user is None:
            return Response({"detail": "Wrong username or password."}, status=status.HTTP_401_UNAUTHORIZED)
        memberships = Membership.objects.filter(user=user).select_related("organization").order_by("pk")
        wanted = data.get("organization")
        if wanted:
            memberships = memberships.filter(
                **({"organization_id": parse_id(wanted) or -1} if wanted.isdigit() else {"organization__slug": wanted})
            )
        membership = memberships.first()
        if membership is None:
            return Response(
                {"organization": ["You are not a member of that organization." if wanted else "You belong to no organization."]},
                status=status.HTTP_400_BAD_REQUEST,
            )
        key, secret = api_key_create(
            user=user, organization=membership.organization, name=data["name"], scope=APIKeyScope.REST,
            expires_at=timezone.now() + timedelta(days=data["expires_in_days"]),
        )  # fmt: skip
        response = Response(
            {"token": secret, "key_id": key.pk, "organization": membership.organization_id,
             "organization_slug": membership.organization.slug, "username": user.get_username(),
             "expires_at": key.expires_at},
            status=status.HTTP_201_CREATED,
        )  # fmt: skip
        response["Cache-Control"] = "no-store"
        return response
