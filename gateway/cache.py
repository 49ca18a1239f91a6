"""In-process caches of API keys and deployments for the gateway, invalidated by Redis generations.

The hot path must not read PostgreSQL per request. Keys are cached for KEY_TTL seconds; an
organization's routing table (its deployments and those shared with it: state, upstream,
access policy, limits, pricing) is kept until the shared generation moves, or at most
TABLE_TTL as a backstop, and reloaded one at a time per organization and process (single
flight) while the old table keeps answering (gateway.app `_deployments`). Two kinds of
generation counters live in Redis:

- the shared one, bumped by `invalidate()` on commit of a deployment (a state change, the
  serving revision switching, an edit), sharing or policy change: every gateway reloads its
  routing tables;
- one per user, bumped by `invalidate_user()` on commit of anything that decides whether that
  user's keys are valid (a key revoked, a membership removed or changed, the user deactivated,
  deleted or moved between groups): gateways drop only that user's keys.

Without Redis (the embedded mode) the generations live in each process, and the shared one is
also written to a file in the data directory, which the gateway reads at most once a second
(`embedded_generation`): the Celery worker runs in another process than the gateway, and what it
commits (an external endpoint's health verdict, a state the status sync saw) must reach it too.

A cached key carries the user generation read *before* its rows were read. The gateway sends
both generations to the rate-limit script, which answers "stale" when either moved, so a
revocation or a removed member takes effect on the very next request in every gateway process
at no extra round trip, and one user's change does not flush anyone else's keys.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from django.conf import settings

GENERATION_KEY = "modeldeck:gateway:generation"
USER_GENERATION_KEY = "modeldeck:gateway:user-generation:{user_id}"
# Far longer than KEY_TTL: a counter that expired and restarted could only meet a cached row
# filed under its old value if that row outlived the counter, and rows live KEY_TTL at most.
USER_GENERATION_EXPIRY = 86_400
# The admission script checks the owner's generation on every request, so a cached key is never
# used after a change to its validity; the TTL only bounds memory and missed invalidations.
KEY_TTL = 300.0
NEGATIVE_KEY_TTL = 5.0  # unknown secrets: short, so a brand-new key works almost at once
DEPLOYMENT_TTL = 1.0  # keyless (public) callers by model name
TABLE_TTL = 60.0  # backstop: a routing table is reloaded this often even if no invalidation came

# Every Redis client of the gateway (its asyncio pool, the lookups' and the usage consumer's sync
# clients) is made here, so all of them survive a Redis restart the same way: a command that
# meets a dropped connection is retried once on a fresh one, and a pooled connection idle for
# longer than settings.REDIS_CLIENT_OPTIONS' health_check_interval is PINGed before use (a stale
# one is replaced, not failed). Django's cache and Celery's broker get the same options.
RETRY_BACKOFF_S = 0.05


def redis_options() -> dict:
    return dict(settings.REDIS_CLIENT_OPTIONS)


def sync_redis(url: str | None = None, **options):
    """A redis.Redis that retries once on a dropped connection and health-checks idle ones."""
    import redis
    from redis.backoff import ConstantBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url or settings.REDIS_URL,
        retry=Retry(ConstantBackoff(RETRY_BACKOFF_S), 1),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        **redis_options(),
        **options,
    )


def _packing_connection_class():
    """redis.asyncio's Connection, packing commands with hiredis's C encoder when installed.

    redis-py's asyncio connection packs every argument in Python (its sync twin uses hiredis);
    on the gateway's two commands per request that was the largest single cost in the profile.
    """
    from redis.asyncio.connection import Connection

    try:
        from hiredis import pack_command
    except ImportError:  # hiredis is optional: the pure-Python packer
        return Connection

    class PackingConnection(Connection):
        def pack_command(self, *args):
            if isinstance(args[0], str) and " " in args[0]:
                args = (*args[0].split(), *args[1:])  # "SCRIPT LOAD": separate words
            try:
                return [pack_command(args)]
            except TypeError:  # an argument hiredis doesn't take (memoryview): the Python packer
                return super().pack_command(*args)

    return PackingConnection


def async_redis(url: str | None = None, **options):
    """The asyncio twin of sync_redis (the gateway's pool)."""
    import redis
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import ConstantBackoff

    if (url or settings.REDIS_URL).startswith("redis://"):
        options.setdefault("connection_class", _packing_connection_class())
    return aioredis.Redis.from_url(
        url or settings.REDIS_URL,
        retry=Retry(ConstantBackoff(RETRY_BACKOFF_S), 1),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        **redis_options(),
        **options,
    )


log = logging.getLogger(__name__)

# Embedded mode (no Redis): the generations live in this process, the shared one in a file too.
_local_generation = 0
_local_user_generations: dict[int, int] = {}
EMBEDDED_GENERATION_FILE = "gateway-generation"
EMBEDDED_GENERATION_POLL_S = 1.0
_embedded_read: list = [0.0, ""]  # when the file was read last (monotonic), what it said


def _embedded_generation_path() -> Path:
    return Path(settings.MODELDECK_DATA_DIR) / EMBEDDED_GENERATION_FILE


def _write_embedded_generation() -> None:
    """A new value (unique across processes), replaced whole: a reader never sees half of it."""
    path = _embedded_generation_path()
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(f"{time.time_ns()}.{os.getpid()}.{_local_generation}")
        os.replace(temporary, path)
    except OSError:
        # The process that committed still sees it (its local generation); others at TABLE_TTL.
        log.warning("cannot write the gateway generation file %s", path, exc_info=True)


def embedded_generation() -> str:
    """The shared generation without Redis: the file's content, read at most once per
    EMBEDDED_GENERATION_POLL_S ("" while no change was ever written)."""
    now = time.monotonic()
    if now - _embedded_read[0] >= EMBEDDED_GENERATION_POLL_S:
        try:
            value = _embedded_generation_path().read_text()
        except OSError:
            value = ""
        _embedded_read[:] = [now, value]
    return _embedded_read[1]


def user_generation_key(user_id: int) -> str:
    return USER_GENERATION_KEY.format(user_id=user_id)


_clients: dict[str, object] = {}


def _shared_client():
    """One sync client per URL for the invalidations (status sync bumps can come by thousands)."""
    url = settings.REDIS_URL
    client = _clients.get(url)
    if client is None:
        client = _clients[url] = sync_redis(url)
    return client


def invalidate() -> None:
    """Make every gateway drop its cached keys on its next request (call after revoking a key)."""
    global _local_generation
    _local_generation += 1
    if not settings.REDIS_URL:
        _write_embedded_generation()
        return
    _shared_client().incr(GENERATION_KEY)


def invalidate_user(user_id: int) -> None:
    """Make every gateway re-read this user's keys on their next use (call on commit)."""
    _local_user_generations[user_id] = _local_user_generations.get(user_id, 0) + 1
    if not settings.REDIS_URL:
        return
    name = user_generation_key(user_id)
    with _shared_client().pipeline(transaction=True) as pipe:
        pipe.incr(name)
        pipe.expire(name, USER_GENERATION_EXPIRY)
        pipe.execute()


def local_generation() -> int:
    return _local_generation


def local_user_generation(user_id: int) -> int:
    return _local_user_generations.get(user_id, 0)


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
    # Why the key can't be used although it is not revoked (owner inactive, no longer a member,
    # REST-only key); empty when it can. Checked live on every cache miss.
    refusal: str = ""
    # The owner's generations (see module doc) read before the rows were: Redis's ("" without
    # Redis) and this process's.
    user_generation: str = ""
    local_user_generation: int = 0
    # Monthly spend limits of the key's organization, user and the key itself
    # (gateway.ratelimit.budgets_for); enforced in the admission script.
    budgets: tuple = ()


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
    # The pool is an organization's own cluster (ComputePool.needs_public_address): the gateway
    # connects to its exposure host only at public addresses, checked when it connects.
    public_only: bool = False
    endpoint_path: str = ""  # the Endpoint's path: `<path>/v1/...` answers for this deployment
    # The revision the Service points at (0: none has ever been ready, see lookup._ever_ran). Requests go to it
    # whatever the state (Deploying, Updating, Unknown, a failed rollout): see gateway.app.deployment_refusal.
    serving_revision_id: int = 0
    # Autoscaled with min 0 (deployments/autoscale.py): how long a request waits for a replica
    # while the deployment scales up from zero (spec autoscaling.cold_start_hold_seconds); 0: never held.
    cold_start_hold_seconds: int = 0
    # The autoscaler acts on it (deployments.spec.autoscaled): only then does the gateway measure
    # its load (gateway/load.py) — a fixed-size deployment costs no measurement round trip.
    autoscaled: bool = False
    engine: str = ""  # torchserve answers /v1/deployments/<name>/predictions, the others /v1/...
    # An external deployment (deployments/external.py): `upstream` is its own URL; its options
    # (timeout, concurrency threshold, breaker) and its overflow deployment (gateway/overflow.py).
    external: bool = False
    external_options: dict | None = None
    overflow: DeploymentInfo | None = None
    # Its health check's last verdict ("healthy", "unhealthy", "unknown") and when it was made
    # (epoch seconds, 0: never): without Redis the gateway's breaker learns it (gateway/overflow.py).
    health: str = ""
    health_detail: str = ""
    health_checked_at: float = 0.0


@dataclass
class GatewayCache:
    """Per-process cache; one per gateway app instance."""

    generation: int | None = None
    # digest → (key, expiry, the owner's local generation when cached)
    keys: dict[str, tuple[KeyInfo | None, float, int]] = field(default_factory=dict)
    # organization → (deployments by served name, the generation they were loaded under, expiry)
    deployments: dict[int, tuple[dict[str, DeploymentInfo], str | None, float]] = field(
        default_factory=dict
    )
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
        info = hit[0]
        if info is not None and hit[2] != _local_user_generations.get(info.user_id, 0):
            return False, None  # changed in this process (embedded mode, tests)
        return True, info

    def put_key(self, digest: str, info: KeyInfo | None) -> None:
        ttl = KEY_TTL if info is not None else NEGATIVE_KEY_TTL
        if len(self.keys) > 50_000:  # bound memory against floods of random secrets
            self.keys.clear()
        local = info.local_user_generation if info is not None else 0
        self.keys[digest] = (info, time.monotonic() + ttl, local)

    def forget_user(self, user_id: int) -> None:
        """Drop one user's cached keys (their generation moved); everyone else's stay."""
        for digest in [d for d, hit in self.keys.items() if hit[0] is not None and hit[0].user_id == user_id]:
            del self.keys[digest]

    def get_deployments(
        self, organization_id: int
    ) -> tuple[dict[str, DeploymentInfo] | None, bool]:
        """(the table or None, whether it is current: same generation and not past TABLE_TTL)."""
        self._check_local()
        hit = self.deployments.get(organization_id)
        if hit is None:
            return None, False
        return hit[0], hit[1] == self.generation and hit[2] >= time.monotonic()

    def put_deployments(
        self, organization_id: int, by_name: dict[str, DeploymentInfo], generation: str | None
    ) -> None:
        self.deployments[organization_id] = (by_name, generation, time.monotonic() + TABLE_TTL)

    def moved(self, generation: str) -> None:
        """The shared generation moved: routing tables become stale (kept, to answer while they
        reload); keys stay (their validity follows the per-user generations)."""
        self.generation = generation
        self.public.clear()

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
