"""In-process caches of API keys and deployments for the gateway, invalidated by a Redis generation.

The hot path must not read PostgreSQL per request. Keys are cached for KEY_TTL seconds and
deployments for DEPLOYMENT_TTL (≤ 1 s, so a deactivation is seen within a second without any
hook in the deployment services). A shared generation counter in Redis is bumped by
`invalidate()` (key revoked, key created); the gateway sends the generation it cached under
to the rate-limit script, which answers "stale" when it moved, so a revocation takes effect
on the very next request in every gateway process at no extra round trip.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.conf import settings

GENERATION_KEY = "modeldeck:gateway:generation"
KEY_TTL = 30.0
NEGATIVE_KEY_TTL = 5.0  # unknown secrets: short, so a brand-new key works almost at once
DEPLOYMENT_TTL = 1.0

# Embedded mode (no Redis): the generation lives in this process only.
_local_generation = 0


def invalidate() -> None:
    """Make every gateway drop its cached keys on its next request (call after revoking a key)."""
    global _local_generation
    _local_generation += 1
    if not settings.REDIS_URL:
        return
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        client.incr(GENERATION_KEY)
    finally:
        client.close()


def local_generation() -> int:
    return _local_generation


@dataclass(frozen=True)
class KeyInfo:
    """What the gateway needs of an API key, detached from the ORM."""

    id: int
    prefix: str
    organization_id: int
    user_id: int
    expires_at: datetime | None
    revoked: bool
    deployment_ids: frozenset[int]  # empty: not restricted
    group_ids: frozenset[int] = frozenset()  # the user's auth groups, for "groups" access policies


@dataclass(frozen=True)
class DeploymentInfo:
    """What the gateway needs of a deployment: state, where to send requests, limits and prices.

    Filed per caller organization: `organization_id` is the caller's, `owner_organization_id`
    the deployment's own (they differ for deployments shared with the caller's organization).
    """

    id: int
    name: str
    organization_id: int
    served_model_name: str
    state: str
    upstream: str
    rate_limits: dict
    currency: str
    input_per_million: Decimal
    output_per_million: Decimal
    created: int = 0
    sandbox: bool = False  # the simulated engine: test headers (x-sandbox-*) pass through
    owner_organization_id: int = 0  # differs from organization_id when shared with the caller's
    policy: dict | None = None  # sharing.access.policy_snapshot entry (None: sharing not installed)
    upstream_host: str = ""  # Host header for an Ingress / HTTPRoute reached through an address
    upstream_credential: str = ""  # the engine's per-deployment key (renderers.exposure)
    endpoint_path: str = ""  # the Endpoint's path: `<path>/v1/...` answers for this deployment


@dataclass
class GatewayCache:
    """Per-process cache; one per gateway app instance."""

    generation: int | None = None
    keys: dict[str, tuple[KeyInfo | None, float]] = field(default_factory=dict)
    deployments: dict[int, tuple[dict[str, DeploymentInfo], float]] = field(default_factory=dict)
    # Keyless callers of public deployments, by model name (None: no such public deployment).
    public: dict[str, tuple[KeyInfo | str | None, float]] = field(default_factory=dict)
    local_generation: int = 0

    def reset(self, generation: int | None) -> None:
        self.keys.clear()
        self.deployments.clear()
        self.public.clear()
        self.generation = generation
        self.local_generation = _local_generation

    def get_key(self, digest: str) -> tuple[bool, KeyInfo | None]:
        self._check_local()
        hit = self.keys.get(digest)
        if hit is None or hit[1] < time.monotonic():
            return False, None
        return True, hit[0]

    def put_key(self, digest: str, info: KeyInfo | None) -> None:
        ttl = KEY_TTL if info is not None else NEGATIVE_KEY_TTL
        if len(self.keys) > 50_000:  # bound memory against floods of random secrets
            self.keys.clear()
        self.keys[digest] = (info, time.monotonic() + ttl)

    def get_deployments(self, organization_id: int) -> dict[str, DeploymentInfo] | None:
        hit = self.deployments.get(organization_id)
        if hit is None or hit[1] < time.monotonic():
            return None
        return hit[0]

    def put_deployments(self, organization_id: int, by_name: dict[str, DeploymentInfo]) -> None:
        self.deployments[organization_id] = (by_name, time.monotonic() + DEPLOYMENT_TTL)

    def get_public(self, model: str) -> tuple[bool, KeyInfo | str | None]:
        self._check_local()
        hit = self.public.get(model)
        if hit is None or hit[1] < time.monotonic():
            return False, None
        return True, hit[0]

    def put_public(self, model: str, caller: KeyInfo | str | None) -> None:
        if len(self.public) > 10_000:  # bound memory against floods of random model names
            self.public.clear()
        self.public[model] = (caller, time.monotonic() + DEPLOYMENT_TTL)

    def _check_local(self) -> None:
        # Same-process invalidation (embedded mode, tests) without waiting for Redis.
        if self.local_generation != _local_generation:
            self.keys.clear()
            self.deployments.clear()
            self.public.clear()
            self.local_generation = _local_generation
