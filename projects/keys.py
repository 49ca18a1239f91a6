"""API keys for the gateway: create (secret shown once), revoke, and the selectors that scope them."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from datetime import datetime
from functools import lru_cache

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.http import Http404
from django.utils import timezone

from console import permissions
from gateway.cache import invalidate
from projects.models import APIKey, Organization
from projects.selectors import role_in
from sharing.audit import audit_record
from sharing.selectors import shared_deployments_for_org

SECRET_PREFIX = "mdk_"
# 30 random bytes are 40 url-safe characters: 240 bits, far beyond guessing.
SECRET_BYTES = 30
PREFIX_LENGTH = (
    12  # "mdk_" + 8 characters: enough to recognise a key in a list, useless to guess it
)


@lru_cache(maxsize=4)
def _hash_key(material: str) -> bytes:
    # A key of its own, derived from the server's secret, so key hashes can't be reused elsewhere.
    return hashlib.sha256(("modeldeck-api-keys:" + material).encode()).digest()


def hash_secret(secret: str) -> str:
    """HMAC-SHA256 of the secret under the server key, hex: what the database stores."""
    key = _hash_key(settings.MODELDECK_ENCRYPTION_KEY or settings.SECRET_KEY)
    return hmac.new(key, secret.encode(), hashlib.sha256).hexdigest()


def looks_like_secret(secret: str) -> bool:
    return secret.startswith(SECRET_PREFIX) and 20 <= len(secret) <= 100


def api_key_state(key: APIKey, now: datetime | None = None) -> str:
    """active | expired | revoked — derived, never stored."""
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= (now or timezone.now()):
        return "expired"
    return "active"


def _notify_gateway() -> None:
    # Gateways cache keys in-process; bumping the shared generation makes the next request re-read.
    invalidate()


def _audit(**kwargs) -> None:
    audit_record(**kwargs)


def api_key_create(
    *,
    user: AbstractBaseUser,
    organization: Organization,
    name: str,
    expires_at: datetime | None = None,
    deployments: Iterable = (),
) -> tuple[APIKey, str]:
    """Create a key; returns it with its secret, which is never stored and can't be shown again."""
    if role_in(user, organization) is None:
        raise PermissionDenied("You are not a member of this organization.")
    if not permissions.can(user, "change", organization):
        raise PermissionDenied(
            "Viewers cannot create API keys; ask an organization admin for the member role."
        )
    name = (name or "").strip()
    if not name:
        raise ValidationError(
            {"name": "Give the key a name, e.g. the application that will use it."}
        )
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": "The expiry must be in the future."})
    chosen = list(deployments)
    foreign = [d for d in chosen if d.project.organization_id != organization.pk]
    if foreign:

        shared = set(
            shared_deployments_for_org(organization)
            .filter(pk__in=[d.pk for d in foreign])
            .values_list("pk", flat=True)
        )
        if any(d.pk not in shared for d in foreign):
            raise ValidationError(
                {
                    "deployments": "A key can only be limited to deployments of its organization or shared with it."
                }
            )
    secret = SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)
    key = APIKey(
        organization=organization,
        user=user,
        name=name,
        prefix=secret[:PREFIX_LENGTH],
        key_hash=hash_secret(secret),
        expires_at=expires_at,
    )
    key.full_clean()
    with transaction.atomic():
        key.save()
        if chosen:
            key.deployments.set(chosen)
        _audit(actor=user, organization=organization, action="key_create", obj=key, before=None,
               after={"name": key.name, "prefix": key.prefix, "expires_at": key.expires_at,
                      "deployments": [d.pk for d in chosen]})
    return key, secret


def api_key_revoke(*, user: AbstractBaseUser, key: APIKey) -> APIKey:
    """Revoke at once: the gateway refuses the key from its next request on."""
    if key.user_id != user.pk and not permissions.can(user, "admin", key.organization):
        raise PermissionDenied("Only the key's owner or an organization admin can revoke it.")
    with transaction.atomic():
        updated = APIKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        # After commit: a gateway re-reading before the commit would cache the old row again.
        transaction.on_commit(_notify_gateway)
        if updated:
            _audit(actor=user, organization=key.organization, action="key_revoke", obj=key,
                   before={"revoked": False}, after={"revoked": True})
    key.refresh_from_db()
    if not updated:
        raise ValidationError("This key was already revoked.")
    return key


def api_keys_for_user(
    user: AbstractBaseUser, organization: Organization | None = None
) -> QuerySet[APIKey]:
    """The user's own keys (optionally in one organization)."""
    if not user.is_authenticated:
        return APIKey.objects.none()
    qs = APIKey.objects.filter(user=user, organization__memberships__user=user).prefetch_related(
        "deployments"
    )
    if organization is not None:
        qs = qs.filter(organization=organization)
    return qs.distinct()


def api_key_get(user: AbstractBaseUser, pk: int) -> APIKey:
    """A key the user owns, or any key of an organization the user administers; 404 otherwise."""
    key = APIKey.objects.filter(pk=pk).select_related("organization", "user").first()
    if key is None or not user.is_authenticated:
        raise Http404("No such API key.")
    if key.user_id == user.pk and role_in(user, key.organization) is not None:
        return key
    if permissions.can(user, "admin", key.organization):
        return key
    raise Http404("No such API key.")


def api_key_by_secret(secret: str) -> APIKey | None:
    """The key row for a presented secret, by its indexed hash; None when unknown."""
    if not looks_like_secret(secret):
        return None
    digest = hash_secret(secret)
    key = APIKey.objects.filter(key_hash=digest).select_related("organization").first()
    # The index already matched; compare_digest keeps the final check free of timing leaks.
    if key is None or not hmac.compare_digest(key.key_hash, digest):
        return None
    return key
