"""API keys for the gateway and the REST API: create (secret shown once), revoke, authenticate,
and the selectors that scope them.

A key is valid only while it is not revoked or expired and its owner is an active user and a
member of the key's organization. The gateway caches keys per process; every change that
decides validity bumps the owner's generation on commit (`gateway_forget_user`), so the next
request re-reads them. Removing a member revokes their keys in that organization for good
(the reason is kept); deactivating a user only suspends them — they are refused while the
account is inactive and work again if it is reactivated.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import lru_cache

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import Http404
from django.utils import timezone

from console import permissions
from gateway.cache import invalidate_user
from projects.models import APIKey, APIKeyScope, Membership, Organization
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
    """active | expired | revoked | suspended (owner inactive or not a member) — derived, never stored.

    Reads `owner_is_member` when the selector annotated it (with_owner_state), else asks.
    """
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= (now or timezone.now()):
        return "expired"
    member = getattr(key, "owner_is_member", None)
    if member is None:
        member = Membership.objects.filter(user_id=key.user_id, organization_id=key.organization_id).exists()
    if not member or not key.user.is_active:
        return "suspended"
    return "active"


def with_owner_state(keys: QuerySet[APIKey]) -> QuerySet[APIKey]:
    """Annotate whether each key's owner is still a member (read by api_key_state): one query."""
    return keys.select_related("user", "organization", "revoked_by").annotate(
        owner_is_member=Exists(
            Membership.objects.filter(user_id=OuterRef("user_id"), organization_id=OuterRef("organization_id"))
        )
    )


def gateway_forget_user(user_id: int) -> None:
    """On commit, make every gateway re-read this user's keys (their validity may have changed)."""
    transaction.on_commit(lambda: invalidate_user(user_id))


def _audit(**kwargs) -> None:
    audit_record(**kwargs)


def api_key_create(
    *,
    user: AbstractBaseUser,
    organization: Organization,
    name: str,
    expires_at: datetime | None = None,
    deployments: Iterable = (),
    scope: str = APIKeyScope.GATEWAY,
    playground: bool = False,
) -> tuple[APIKey, str]:
    """Create a key; returns it with its secret, which is never stored and can't be shown again.
    `playground` marks the playground's own keys (playground_key_issue), which lists hide."""
    if role_in(user, organization) is None:
        raise PermissionDenied("You are not a member of this organization.")
    # A REST key can do no more than its owner's role allows (a viewer's only reads); a gateway
    # key spends the organization's money, so it needs the member role.
    if scope == APIKeyScope.GATEWAY and not permissions.can(user, "change", organization):
        raise PermissionDenied(
            "Viewers cannot create gateway keys; ask an organization admin for the member role."
        )
    name = (name or "").strip()
    if not name:
        raise ValidationError(
            {"name": "Give the key a name, e.g. the application that will use it."}
        )
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": "The expiry must be in the future."})
    if scope not in APIKeyScope.values:
        raise ValidationError({"scope": f"Choose one of: {', '.join(APIKeyScope.values)}."})
    chosen = list(deployments)
    if chosen and scope != APIKeyScope.GATEWAY:
        raise ValidationError({"deployments": "Only gateway keys can be limited to deployments."})
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
        scope=scope,
        playground=playground,
    )
    key.full_clean()
    with transaction.atomic():
        key.save()
        if chosen:
            key.deployments.set(chosen)
        _audit(actor=user, organization=organization, action="key_create", obj=key, before=None,
               after={"name": key.name, "prefix": key.prefix, "expires_at": key.expires_at,
                      "scope": key.scope, "deployments": [d.pk for d in chosen]})
    return key, secret


# The console's playground calls the gateway like any client, with a key of its own: minted on
# demand for the signed-in user, limited to one deployment, expiring within minutes, stored hashed
# like every key. The page holds the secret in memory only; a new one replaces the last.
PLAYGROUND_KEY_TTL = timedelta(minutes=15)
PLAYGROUND_KEY_NAME = "Playground · "


def playground_key_issue(
    *, user: AbstractBaseUser, organization: Organization, deployment
) -> tuple[APIKey, str]:
    """A short-lived gateway key of `organization` (the caller's) for `user` to try `deployment`
    (the organization's own or one shared with it) from the console.

    Keys, access policy, rate limits and usage apply as for any key (the gateway sees no
    difference). The user's earlier playground keys for the deployment are revoked, so at most
    one is live per user and deployment. The caller has already scoped the deployment to what
    the user may call (callable_deployments); api_key_create refuses viewers and foreign
    deployments all the same.
    """
    name = (PLAYGROUND_KEY_NAME + deployment.served_name())[:100]
    now = timezone.now()
    with transaction.atomic():
        earlier = list(
            APIKey.objects.select_for_update().filter(
                user=user, organization=organization, playground=True, revoked_at__isnull=True,
                expires_at__gt=now, deployments=deployment,
            )
        )  # fmt: skip
        for key in earlier:
            key.revoked_at, key.revoked_by = now, user
            key.revoked_reason = "Replaced by a newer playground key."
            key.save(update_fields=["revoked_at", "revoked_by", "revoked_reason"])
            _audit(actor=user, organization=organization, action="key_revoke", obj=key,
                   before={"revoked": False}, after={"revoked": True})
        if earlier:
            gateway_forget_user(user.pk)
        return api_key_create(
            user=user, organization=organization, name=name, expires_at=now + PLAYGROUND_KEY_TTL,
            deployments=[deployment], scope=APIKeyScope.GATEWAY, playground=True,
        )  # fmt: skip


def api_key_revoke(*, user: AbstractBaseUser, key: APIKey, reason: str = "") -> APIKey:
    """Revoke at once: the gateway refuses the key from its next request on."""
    if key.user_id != user.pk and not permissions.can(user, "admin", key.organization):
        raise PermissionDenied("Only the key's owner or an organization admin can revoke it.")
    reason = (reason or "").strip()[:200] or (
        "Revoked by its owner." if key.user_id == user.pk else f"Revoked by organization admin {user.get_username()}."
    )
    with transaction.atomic():
        updated = APIKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now(), revoked_by=user, revoked_reason=reason
        )
        # After commit: a gateway re-reading before the commit would cache the old row again.
        gateway_forget_user(key.user_id)
        if updated:
            _audit(actor=user, organization=key.organization, action="key_revoke", obj=key,
                   before={"revoked": False}, after={"revoked": True})
    key.refresh_from_db()
    if not updated:
        raise ValidationError("This key was already revoked.")
    return key


def api_keys_revoke_for_member(
    *, actor: AbstractBaseUser | None, organization: Organization, member: AbstractBaseUser, reason: str
) -> int:
    """Revoke every live key `member` holds in `organization` (they left it); returns how many.

    Called inside the caller's transaction (membership_remove), so both commit together.
    """
    with transaction.atomic():
        keys = list(
            APIKey.objects.select_for_update().filter(
                organization=organization, user=member, revoked_at__isnull=True
            )
        )
        now = timezone.now()
        for key in keys:
            key.revoked_at = now
            key.revoked_by = actor if actor is not None and actor.is_authenticated else None
            key.revoked_reason = reason[:200]
            key.save(update_fields=["revoked_at", "revoked_by", "revoked_reason"])
            _audit(actor=actor, organization=organization, action="key_revoke", obj=key,
                   before={"revoked": False}, after={"revoked": True})
        gateway_forget_user(member.pk)
    return len(keys)


# Which keys a key list shows: the keys people made (`hide`, what lists show by default), those
# and the playground's (`include`), or the playground's only (`only`).
PLAYGROUND_CHOICES = ("hide", "include", "only")


def playground_keys_q() -> Q:
    """The keys playground_key_issue mints (marked when made). A key made by hand is never one,
    whatever its name or life."""
    return Q(playground=True)


def _playground(qs: QuerySet[APIKey], playground: str) -> QuerySet[APIKey]:
    if playground == "include":
        return qs
    if playground == "hide":
        return qs.exclude(playground_keys_q())
    if playground == "only":
        return qs.filter(playground_keys_q())
    raise ValidationError({"playground": f"Choose one of: {', '.join(PLAYGROUND_CHOICES)}."})


def api_keys_for_user(
    user: AbstractBaseUser, organization: Organization | None = None, *, playground: str = "include"
) -> QuerySet[APIKey]:
    """The user's own keys (optionally in one organization); `playground`: hide, include or only
    the short-lived keys the console's playground made (PLAYGROUND_CHOICES)."""
    if not user.is_authenticated:
        return APIKey.objects.none()
    qs = APIKey.objects.filter(user=user, organization__memberships__user=user).prefetch_related(
        "deployments"
    )
    if organization is not None:
        qs = qs.filter(organization=organization)
    return with_owner_state(_playground(qs, playground).distinct())


def api_keys_for_organization(
    user: AbstractBaseUser, organization: Organization, *, playground: str = "include"
) -> QuerySet[APIKey]:
    """Every key of the organization, for its admins; 404 to outsiders, PermissionDenied to members.
    `playground` as for api_keys_for_user."""
    if role_in(user, organization) is None:
        raise Http404("No such organization.")
    if not permissions.can(user, "admin", organization):
        raise PermissionDenied("Only organization admins can see every key of the organization.")
    qs = _playground(APIKey.objects.filter(organization=organization), playground)
    return with_owner_state(qs).prefetch_related("deployments")


def api_key_get(user: AbstractBaseUser, pk: int) -> APIKey:
    """A key the user owns, or any key of an organization the user administers; 404 otherwise."""
    key = with_owner_state(APIKey.objects.filter(pk=pk)).first()
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


REST_KEY_TOUCH_SECONDS = 60


def api_key_authenticate_rest(secret: str) -> APIKey:
    """The REST-scoped key for a presented secret, checked live; ValidationError says why not.

    REST calls are not the gateway's hot path: every request reads the key and its owner's
    membership (one query), and last_used_at moves at most once a minute.
    """
    key = api_key_by_secret(secret)
    if key is None:
        raise ValidationError("Invalid API key.")
    key = with_owner_state(APIKey.objects.filter(pk=key.pk)).first()
    state = api_key_state(key) if key is not None else "revoked"
    if state != "active":
        raise ValidationError(f"This API key is {state}.")
    if key.scope != APIKeyScope.REST:
        raise ValidationError("This is a gateway key; the REST API takes keys of the REST API scope.")
    now = timezone.now()
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > REST_KEY_TOUCH_SECONDS:
        APIKey.objects.filter(pk=key.pk).exclude(last_used_at__gte=now).update(last_used_at=now)
    return key
