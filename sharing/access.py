"""Who may call a deployment through the gateway: a pure check over a small, cached snapshot.

How the gateway uses it (one call per request, no query on the hot path)::

    from sharing import access

    allowed, reason = access.may_call(
        deployment_id=deployment.id,
        owner_org_id=deployment.owner_organization_id,   # the deployment's organization
        caller_org_id=key.organization_id if key else None,  # None: no API key sent
        caller_user_id=key.user_id if key else None,
        caller_group_ids=key.group_ids,                  # ids of auth.Group the key's user is in
        generation=self.cache.generation,                # the counter it already read, if any
    )
    if not allowed:
        raise GatewayError(403, reason, "permission_error", param="model", code="model_not_allowed")

``may_call`` looks the deployment up in ``access.policy_cache``, an in-process cache filled by
``policy_snapshot`` (one query for any number of deployments) and emptied whenever the
generation counter moves — the gateway's own ``gateway.cache.GENERATION_KEY`` in
Redis (the local counter when embedded). Every sharing/access write calls ``bump_generation``
on commit, which is ``gateway.cache.invalidate()``, so one bump drops both the
gateway's caches and this one. Entries also expire after ``MAX_AGE_SECONDS`` as a backstop.
A public deployment needs no API key at all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from django.conf import settings

from deployments.models import ModelDeployment
from gateway.cache import invalidate, local_generation

# The gateway's own counter (gateway/cache.py): one bump drops both caches.
GENERATION_KEY = "modeldeck:gateway:generation"
MAX_AGE_SECONDS = 30.0
# How long one read of the generation counter is trusted (bounds Redis round trips per process).
GENERATION_CHECK_SECONDS = 1.0

NOT_FOUND = "No such deployment."
NEEDS_KEY = "This deployment needs an API key: send “Authorization: Bearer <key>”."
NOT_SHARED = "This deployment is not shared with your organization."
NOT_IN_GROUPS = "Only members of some groups may call this deployment; ask its owners for access."
NOT_IN_USERS = "Only some users may call this deployment; ask its owners for access."

DEFAULT_ENTRY = {
    "share_mode": "none",
    "share_org_ids": frozenset(),
    "kind": "authenticated",
    "group_ids": frozenset(),
    "user_ids": frozenset(),
}


def policy_snapshot(deployment_ids: Iterable[int]) -> dict[int, dict]:
    """Sharing and access policy of each deployment, in one query (LEFT JOINs, id lists inline)."""
    ids = [int(i) for i in deployment_ids]
    if not ids:
        return {}
    rows = ModelDeployment.objects.filter(pk__in=ids).values_list(
        "pk",
        "project__organization_id",
        "share__mode",
        "share__organization_ids",
        "access_policy__kind",
        "access_policy__group_ids",
        "access_policy__user_ids",
    )
    snapshot: dict[int, dict] = {}
    for pk, org_id, mode, org_ids, kind, group_ids, user_ids in rows:
        snapshot[pk] = {
            "owner_org_id": org_id,
            "share_mode": mode or DEFAULT_ENTRY["share_mode"],
            "share_org_ids": frozenset(org_ids or ()),
            "kind": kind or DEFAULT_ENTRY["kind"],
            "group_ids": frozenset(group_ids or ()),
            "user_ids": frozenset(user_ids or ()),
        }
    return snapshot


def evaluate(
    entry: dict | None,
    *,
    owner_org_id: int | None,
    caller_org_id: int | None,
    caller_user_id: int | None,
    caller_group_ids: Iterable[int] = (),
) -> tuple[bool, str]:
    """The pure decision over one snapshot entry."""
    if entry is None:
        return False, NOT_FOUND
    kind = entry["kind"]
    if kind == "public":
        return True, "public"
    if caller_org_id is None or caller_user_id is None:
        return False, NEEDS_KEY
    owner = owner_org_id if owner_org_id is not None else entry.get("owner_org_id")
    if caller_org_id != owner:
        mode = entry["share_mode"]
        if mode == "none" or (mode == "specific" and caller_org_id not in entry["share_org_ids"]):
            return False, NOT_SHARED
    if kind == "groups":
        if entry["group_ids"].isdisjoint(caller_group_ids):
            return False, NOT_IN_GROUPS
    elif kind == "users":
        if caller_user_id not in entry["user_ids"]:
            return False, NOT_IN_USERS
    return True, "shared" if caller_org_id != owner else "own organization"


class PolicyCache:
    """Per-process cache of snapshot entries, dropped when the Redis generation moves."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[int, tuple[float, dict | None]] = {}
        self._generation: Any = None
        self._generation_read_at = 0.0

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._generation = None
            self._generation_read_at = 0.0

    def _check_generation(self, now: float, generation: Any = None) -> None:
        if generation is None:
            if now - self._generation_read_at < GENERATION_CHECK_SECONDS:
                return
            generation = current_generation()
        self._generation_read_at = now
        if generation != self._generation:
            self._entries.clear()
            self._generation = generation

    def get_many(
        self, deployment_ids: Iterable[int], *, generation: Any = None
    ) -> dict[int, dict | None]:
        """Entries for the ids; missing or stale ones are loaded with one query."""
        now = time.monotonic()
        ids = [int(i) for i in deployment_ids]
        with self._lock:
            self._check_generation(now, generation)
            found = {
                i: e[1] for i in ids if (e := self._entries.get(i)) and now - e[0] < MAX_AGE_SECONDS
            }
        missing = [i for i in ids if i not in found]
        if missing:
            loaded = policy_snapshot(missing)
            with self._lock:
                for i in missing:
                    found[i] = loaded.get(i)
                    self._entries[i] = (now, found[i])
        return found

    def get(self, deployment_id: int, *, generation: Any = None) -> dict | None:
        return self.get_many([deployment_id], generation=generation)[int(deployment_id)]


policy_cache = PolicyCache()


def may_call(
    *,
    deployment_id: int,
    owner_org_id: int | None,
    caller_org_id: int | None,
    caller_user_id: int | None,
    caller_group_ids: Iterable[int] = (),
    snapshot: dict | None = None,
    generation: Any = None,
) -> tuple[bool, str]:
    """Whether this caller may call the deployment, and why not.

    ``snapshot``: a dict from ``policy_snapshot`` (else the process cache is used);
    ``generation``: the counter value the gateway already read this request (saves a Redis read).
    """
    if snapshot is not None:
        entry = snapshot.get(int(deployment_id))
    else:
        entry = policy_cache.get(deployment_id, generation=generation)
    return evaluate(
        entry,
        owner_org_id=owner_org_id,
        caller_org_id=caller_org_id,
        caller_user_id=caller_user_id,
        caller_group_ids=caller_group_ids,
    )


def _redis():
    import redis

    return redis.Redis.from_url(settings.REDIS_URL)


def current_generation() -> Any:
    if settings.REDIS_URL:
        try:
            client = _redis()
            try:
                value = client.get(GENERATION_KEY)
            finally:
                client.close()
            return value.decode() if isinstance(value, bytes) else (value or "0")
        except Exception:  # Redis down: fall back to the age limit rather than failing calls
            return None
    return local_generation()


def bump_generation() -> None:
    """Tell every gateway process that sharing or access changed (call on commit)."""
    invalidate()
    # This process need not wait for its next generation check.
    policy_cache.clear()
