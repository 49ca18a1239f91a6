"""The inference gateway: a raw ASGI app speaking the OpenAI API in front of the deployments.

Per request: API key (in-process cache) → deployment by model name (in-process cache, ≤ 1 s)
→ access → rate limits and cache generation (one Redis round trip, Lua) → proxy through one
shared keep-alive pool (gateway/h1.py, streams chunk by chunk; external endpoints through
aiohttp) → usage event and token settlement (one more round trip, answered before the client
gets the response's end) → Prometheus metrics. Both scripts go over gateway/resp.py's one
connection per process, the commands of one event-loop turn in one write. PostgreSQL is only
read on a cache miss (and for a budget's month-to-date spend when Redis has lost its counter),
and never written here.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from urllib.parse import quote

import aiohttp
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, connection
from redis.exceptions import RedisError

from console.money import money_text
from gateway import h1, load, memstore, metrics, overflow, resp
from gateway.cache import (
    GENERATION_KEY,
    RETRY_BACKOFF_S,
    DeploymentInfo,
    GatewayCache,
    KeyInfo,
    async_redis,
    embedded_generation,
    redis_options,
    user_generation_key,
)
from gateway.errors import GatewayError, error_body
from gateway.lookup import (
    AMBIGUOUS,
    load_deployments,
    load_endpoint_paths,
    load_key,
    load_month_spend,
    load_public_caller,
)
from gateway.ratelimit import (
    BUDGET_HELD,
    BUDGET_TOO_COSTLY,
    BUDGET_UNITS,
    Decision,
    LocalRateLimiter,
    RedisRateLimiter,
    budget_key,
    hold_units,
    levels_for,
    reservation,
    spend_keys,
)
from gateway.reports import month_start
from gateway.tasks import write_events
from gateway.upstream import (
    UpstreamRedirect,
    is_passed_on,
    is_redirect,
    make_pool,
    make_session,
    private_address_refusal,
)
from gateway.usage import (
    USAGE_STREAM_KEY,
    UsageEvent,
    cost_of,
    usage_from_body,
    usage_from_bytes,
)
from gateway.validation import check_body, parse_body
from projects.keys import hash_secret, looks_like_secret
from sharing.access import evaluate

log = logging.getLogger(__name__)

ROUTES = {
    "/v1/chat/completions": "chat.completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}
MAX_BODY_BYTES = 16 * 1024 * 1024
RUNNING = "running"
ENDPOINT_PATHS_TTL = 5.0
# How long a request waits for its organization's routing table to reload after a change before
# it is answered from the previous table (a small table reloads well within it).
STALE_WAIT = 0.25


TORCHSERVE_PREFIX = "/v1/deployments/"
ALLOW_POST = (b"allow", b"POST")  # a 405 says what the endpoint takes (RFC 9110)


class _RequestIds:
    """Unique request ids without a system call each (uuid4 reads os.urandom: ~20 µs here): a
    random 64-bit prefix per process, drawn again in a forked child, and a counter."""

    def __init__(self) -> None:
        self.renew()
        os.register_at_fork(after_in_child=self.renew)

    def renew(self) -> None:
        self.prefix = "req_" + os.urandom(8).hex()
        self.counter = itertools.count()

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter):016x}"


new_request_id = _RequestIds()


def split_endpoint_path(path: str) -> tuple[str, str]:
    """`/chat/v1/chat/completions` -> ("/chat", "/v1/chat/completions"); ("", path) without one."""
    if path.startswith("/v1/"):
        return "", path
    at = path.find("/v1/")
    if at <= 0:
        return "", path
    return path[:at], path[at:]


class DeploymentRefused(GatewayError):
    """deployment_refusal's answer, with the deployment it is about (the usage event names it)."""

    def __init__(self, *args, deployment: DeploymentInfo, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.deployment = deployment


def deployment_refusal(deployment: DeploymentInfo, model: str) -> DeploymentRefused | None:
    """Why a deployment can't answer now, or None: the serving revision answers.

    Blue-green (DESIGN flow 5): whatever revision is ready and behind the Service keeps
    answering while the deployment is Deploying, Updating, Unknown (pool API down, engine up)
    or Failed after a rollout. Only a deactivated, a deleting, or a never-ready deployment
    refuses, each with its own code."""
    state = deployment.state
    if state == "deactivated":
        return DeploymentRefused(
            409, f"The deployment serving `{model}` is deactivated; ask its owner to activate it.",
            "invalid_request_error", param="model", code="deployment_deactivated", deployment=deployment,
        )  # fmt: skip
    if state == "deleting":
        return DeploymentRefused(
            410, f"The deployment serving `{model}` is being deleted; it no longer answers.",
            "invalid_request_error", param="model", code="deployment_deleted", deployment=deployment,
        )  # fmt: skip
    # Pending: nothing applied yet, or activated again after scaling to zero (no pods run).
    if not deployment.serving_revision_id or state == "pending":
        return DeploymentRefused(
            503, f"The deployment serving `{model}` has no ready revision yet (state: {state}); "
            "retry once it is Running.",
            "server_error", param="model", code="deployment_not_ready",
            headers=[(b"retry-after", b"5")], deployment=deployment,
        )  # fmt: skip
    return None


def _header(scope: dict, name: bytes) -> str:
    for key, value in scope.get("headers") or ():
        if key == name:
            return value.decode("latin-1")
    return ""


# ---- CORS: browser apps calling with a key (MODELDECK_GATEWAY_CORS_ORIGINS) --------------------
CORS_METHODS = b"GET, HEAD, POST, OPTIONS"
CORS_MAX_AGE = b"600"


def cors_origin(origin: str) -> str:
    """What Access-Control-Allow-Origin says to a request from `origin` ("" : no CORS headers)."""
    allowed = settings.MODELDECK_GATEWAY_CORS_ORIGINS
    if "*" in allowed:
        return "*"
    return origin if origin in allowed else ""


def _cors_headers(allowed: str) -> list[tuple[bytes, bytes]]:
    headers = [(b"access-control-allow-origin", allowed.encode("latin-1")), (b"access-control-expose-headers", b"*")]
    return headers if allowed == "*" else [*headers, (b"vary", b"origin")]


def _with_cors(send, allowed: str):
    """`send` with the CORS headers added to the response's start (every answer, errors too, so a
    browser app can read why it was refused)."""
    extra = _cors_headers(allowed)

    async def cors_send(message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *extra]}
        await send(message)

    return cors_send


async def _read_body(receive) -> bytes:
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionAbortedError
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise GatewayError(
                413, "The request body is larger than 16 MiB.", "invalid_request_error"
            )
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _ratelimit_headers(decision: Decision) -> list[tuple[bytes, bytes]]:
    headers = []
    if decision.limit_requests >= 0:
        headers += [
            (b"x-ratelimit-limit-requests", str(decision.limit_requests).encode()),
            (b"x-ratelimit-remaining-requests", str(max(0, decision.remaining_requests)).encode()),
            (
                b"x-ratelimit-reset-requests",
                f"{max(0, decision.reset_requests_ms) / 1000:.3f}s".encode(),
            ),
        ]
    if decision.limit_tokens >= 0:
        headers += [
            (b"x-ratelimit-limit-tokens", str(decision.limit_tokens).encode()),
            (b"x-ratelimit-remaining-tokens", str(max(0, decision.remaining_tokens)).encode()),
            (
                b"x-ratelimit-reset-tokens",
                f"{max(0, decision.reset_tokens_ms) / 1000:.3f}s".encode(),
            ),
        ]
    return headers


class Gateway:
    """One per process (each instance owns its caches, HTTP pool and Redis client)."""

    def __init__(self, *, read_timeout: float | None = None) -> None:
        self.read_timeout = read_timeout
        self.cache = GatewayCache()
        self._session: aiohttp.ClientSession | None = None
        self._external_session: aiohttp.ClientSession | None = None
        self._pool: h1.UpstreamPool | None = None
        self._redis = None
        self._limiter: RedisRateLimiter | LocalRateLimiter | None = None
        self._load_key = sync_to_async(load_key, thread_sensitive=False)
        self._load_deployments = sync_to_async(load_deployments, thread_sensitive=False)
        self._load_public_caller = sync_to_async(load_public_caller, thread_sensitive=False)
        self._load_endpoint_paths = sync_to_async(load_endpoint_paths, thread_sensitive=False)
        self._load_month_spend = sync_to_async(load_month_spend, thread_sensitive=False)
        self._seeding: dict[tuple, asyncio.Future] = {}  # budget counters being seeded (single flight)
        self._endpoint_paths: tuple[frozenset[str], float] = (frozenset(), 0.0)
        self._endpoint_paths_lock = asyncio.Lock()
        self._reloads: dict[int, asyncio.Future] = {}
        self._key_loads: dict[str, asyncio.Future] = {}
        self._embedded_usage = None
        self.holds = load.ColdStartHolds(bound=settings.MODELDECK_GATEWAY_HOLD_QUEUE)
        self.measure_load = True  # bench/autoscale.py compares the added latency on vs. off
        self._wake = sync_to_async(load.wake, thread_sensitive=False)
        self._embedded_store = memstore.AsyncView(memstore.STORE)  # the holds' "Redis" without one

    # ---- plumbing -------------------------------------------------------------------------
    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = make_session(
                **({"read_timeout": self.read_timeout} if self.read_timeout else {})
            )
        return self._session

    @property
    def external_session(self) -> aiohttp.ClientSession:
        """External endpoints' URLs (a tenant typed them): connects to public addresses only,
        whatever the name resolves to at connect time (gateway/upstream.py PublicOnlyResolver)."""
        if self._external_session is None:
            self._external_session = make_session(
                public_only=True, **({"read_timeout": self.read_timeout} if self.read_timeout else {})
            )
        return self._external_session

    @property
    def pool(self) -> h1.UpstreamPool:
        """Connections to the engines (gateway/h1.py), streamed or not; external endpoints and
        TorchServe go through `session`."""
        if self._pool is None:
            self._pool = make_pool(
                **({"read_timeout": self.read_timeout} if self.read_timeout else {})
            )
        return self._pool

    @property
    def limiter(self) -> RedisRateLimiter | LocalRateLimiter:
        if self._limiter is None:
            if settings.REDIS_URL:
                self._redis = async_redis(max_connections=500)
                # The scripts of every request go through one lean connection (gateway/resp.py).
                options = redis_options()
                fast = resp.connect_for(settings.REDIS_URL, connect_timeout=options["socket_connect_timeout"],
                                        reply_timeout=options["socket_timeout"], retry_backoff=RETRY_BACKOFF_S)  # fmt: skip
                self._limiter = RedisRateLimiter(self._redis, fast=fast)
            else:
                self._limiter = LocalRateLimiter()
        return self._limiter

    async def is_endpoint_path(self, prefix: str) -> bool:
        """Whether `prefix` is some Endpoint's path (cached for a few seconds)."""
        paths, expires = self._endpoint_paths
        if expires < time.monotonic():
            # Single flight: requests arriving during a reload wait for it instead of each
            # starting their own query.
            async with self._endpoint_paths_lock:
                paths, expires = self._endpoint_paths
                if expires < time.monotonic():
                    paths = await self._load_endpoint_paths()
                    self._endpoint_paths = (paths, time.monotonic() + ENDPOINT_PATHS_TTL)
        return prefix in paths

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._external_session is not None:
            await self._external_session.close()
            self._external_session = None
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None
        if self._redis is not None:
            if isinstance(self._limiter, RedisRateLimiter):
                await self._limiter.aclose()
            await self._redis.aclose()
            self._redis = None
            self._limiter = None

    async def lifespan(self, scope, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if isinstance(self.limiter, RedisRateLimiter):
                    try:
                        await self.limiter.load_scripts()  # SCRIPT LOAD; NOSCRIPT reloads later
                    except RedisError:
                        log.warning("gateway could not preload its Redis scripts", exc_info=True)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(scope, receive, send)
            return
        # `<endpoint path>/v1/...` answers like `/v1/...`, for that endpoint's deployments only.
        endpoint_path, path = split_endpoint_path(scope["path"])
        method = scope["method"]
        if path == "/metrics":
            await self._metrics(scope, send)
            return
        origin = _header(scope, b"origin")  # a browser's request: server-side clients send none
        if origin:
            allowed = cors_origin(origin)
            if method == "OPTIONS" and _header(scope, b"access-control-request-method"):
                await self._preflight(scope, send, allowed)
                return
            if allowed:
                send = _with_cors(send, allowed)
        request_id = new_request_id()
        try:
            if path == "/v1/models":
                if method not in ("GET", "HEAD"):  # HEAD: the ASGI server leaves out the body
                    raise GatewayError(405, f"{path} only accepts GET.", "invalid_request_error",
                                       headers=[(b"allow", b"GET, HEAD")])  # fmt: skip
                await self._models(scope, send, request_id, endpoint_path)
            elif path.startswith(TORCHSERVE_PREFIX):
                await self._torchserve(scope, receive, send, path, request_id, endpoint_path)
            elif path in ROUTES:
                if method != "POST":
                    raise GatewayError(405, f"{path} only accepts POST.", "invalid_request_error",
                                       headers=[ALLOW_POST])  # fmt: skip
                await self._inference(scope, receive, send, ROUTES[path], request_id, endpoint_path)
            else:
                raise GatewayError(
                    404,
                    f"Unknown endpoint {method} {path}.",
                    "invalid_request_error",
                    code="unknown_url",
                )
        except GatewayError as exc:
            await self._send(
                send,
                exc.status,
                error_body(exc),
                headers=exc.headers + [(b"x-request-id", request_id.encode())],
            )
        except ConnectionAbortedError:
            return
        except DatabaseError:
            # The database is down or its pool is exhausted: a key or route could not be read.
            # The caller's request was fine; say so and when to retry rather than a bare 500.
            log.warning("gateway could not read the database", exc_info=True, extra={"request_id": request_id})
            error = GatewayError(503, "The gateway can't reach its database right now; retry shortly.",
                                 "server_error", code="database_unavailable")  # fmt: skip
            try:
                await self._send(send, 503, error_body(error),
                                 headers=[(b"retry-after", b"2"), (b"x-request-id", request_id.encode())])  # fmt: skip
            except Exception:  # noqa: BLE001 - the response had already started
                pass
        except Exception:
            log.exception("gateway request failed", extra={"request_id": request_id})
            error = GatewayError(
                500,
                "The gateway failed to handle this request.",
                "server_error",
                code="internal_error",
            )
            try:
                await self._send(
                    send, 500, error_body(error), headers=[(b"x-request-id", request_id.encode())]
                )
            except Exception:  # noqa: BLE001 - the response had already started
                pass

    async def _preflight(self, scope, send, allowed: str) -> None:
        """A browser asks before a cross-origin POST with a key: 204 with what may be sent, or
        without CORS headers (the browser then refuses) for an origin not allowed."""
        headers = []
        if allowed:
            asked = _header(scope, b"access-control-request-headers") or "authorization, content-type"
            headers = [*_cors_headers(allowed), (b"access-control-allow-methods", CORS_METHODS),
                       (b"access-control-allow-headers", asked[:1000].encode("latin-1")),
                       (b"access-control-max-age", CORS_MAX_AGE)]  # fmt: skip
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def _metrics(self, scope, send) -> None:
        token = settings.METRICS_TOKEN
        if not token:
            await self._send(send, 404, b'{"detail": "Not found."}')
        elif not metrics.authorized(_header(scope, b"authorization"), token):
            await self._send(
                send,
                401,
                b'{"detail": "Send the metrics token as `Authorization: Bearer <token>`."}',
                headers=[(b"www-authenticate", b'Bearer realm="metrics"')],
            )
        else:
            body, content_type = metrics.render()
            await self._send(send, 200, body, content_type=content_type.encode())

    @staticmethod
    async def _send(
        send, status: int, body: bytes, *, content_type: bytes = b"application/json", headers=()
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", str(len(body)).encode()),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    # ---- who is calling what --------------------------------------------------------------
    async def _key(self, scope) -> KeyInfo:
        auth = _header(scope, b"authorization")
        scheme, _, secret = auth.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise GatewayError(
                401,
                "You didn't provide an API key. Send it as `Authorization: Bearer mdk_…`.",
                "invalid_request_error",
                code="invalid_api_key",
            )
        info = None
        if looks_like_secret(secret):
            digest = hash_secret(secret)
            hit, info = self.cache.get_key(digest)
            if hit and info is not None and info.refusal and await self._user_generation_moved(info):
                hit = False  # a suspension can end (user reactivated): don't refuse from cache
            if not hit:
                info = await self._key_once(digest)
        shown = secret[:8] + "…" if len(secret) > 8 else "…"
        if info is None:
            raise GatewayError(
                401,
                f"Incorrect API key provided: {shown}.",
                "invalid_request_error",
                code="invalid_api_key",
            )
        if info.revoked:
            raise GatewayError(
                401,
                f"The API key {info.prefix}… has been revoked.",
                "invalid_request_error",
                code="invalid_api_key",
            )
        if info.expires_at is not None and info.expires_at <= datetime.now(UTC):
            raise GatewayError(
                401,
                f"The API key {info.prefix}… has expired.",
                "invalid_request_error",
                code="invalid_api_key",
            )
        if info.refusal:
            raise GatewayError(
                401,
                f"The API key {info.prefix}… can't be used: {info.refusal}.",
                "invalid_request_error",
                code="invalid_api_key",
            )
        return info

    async def _key_once(self, digest: str) -> KeyInfo | None:
        """Load a key's row once however many requests need it at the same time (single flight)."""
        load = self._key_loads.get(digest)
        if load is None:

            async def run() -> KeyInfo | None:
                try:
                    info = await self._load_key(digest)
                    self.cache.put_key(digest, info)
                    return info
                finally:
                    self._key_loads.pop(digest, None)

            load = self._key_loads[digest] = asyncio.ensure_future(run())
        return await asyncio.shield(load)

    async def _user_generation_moved(self, key: KeyInfo) -> bool:
        """Whether the key's owner changed since it was cached (one GET; off the success path)."""
        if not key.id or not isinstance(self.limiter, RedisRateLimiter):
            return False
        try:
            value = await self._redis.get(user_generation_key(key.user_id))
        except RedisError:
            log.exception("gateway cannot read a user generation")
            raise GatewayError(
                503,
                "The gateway cannot reach Redis; retry shortly.",
                "server_error",
                code="redis_unavailable",
            ) from None
        return (value.decode() if value else "0") != key.user_generation

    async def _fresh_deployment(
        self, scope, key: KeyInfo, model: str, endpoint_path: str = ""
    ) -> tuple[KeyInfo, DeploymentInfo]:
        """_deployment, but a refusal is only given to a key that is still current: a member
        removed a moment ago gets 401, not a 404/403/409 that tells about the deployment."""
        try:
            return key, await self._deployment(key, model, endpoint_path)
        except GatewayError:
            if not await self._user_generation_moved(key):
                raise
        self.cache.forget_user(key.user_id)
        key = await self._key(scope)
        return key, await self._deployment(key, model, endpoint_path)

    async def _public_caller(self, model: str) -> KeyInfo:
        """A request without a key may only call a deployment whose access policy is public."""
        hit, caller = self.cache.get_public(model)
        if not hit:
            caller = await self._load_public_caller(model)
            self.cache.put_public(model, caller)
        if caller == AMBIGUOUS:
            raise GatewayError(
                401,
                f"Several public deployments are named `{model}`; send an API key to say which.",
                "invalid_request_error",
                code="invalid_api_key",
            )
        if caller is None:
            # The same answer as for any keyless request: nothing says whether the name exists.
            raise GatewayError(
                401,
                "You didn't provide an API key. Send it as `Authorization: Bearer mdk_…`.",
                "invalid_request_error",
                code="invalid_api_key",
            )
        return caller

    async def _deployments(self, organization_id: int) -> dict[str, DeploymentInfo]:
        """The organization's routing table: no I/O while it is current. When the generation
        moved, one reload per organization runs (single flight); requests wait for it at most
        STALE_WAIT and are then answered from the old table until the new one is in."""
        table, current = self.cache.get_deployments(organization_id)
        if current:
            return table
        reload = self._reloads.get(organization_id)
        if reload is None:
            reload = asyncio.ensure_future(self._reload_deployments(organization_id))
            self._reloads[organization_id] = reload
        if table is None:
            return await asyncio.shield(reload)
        try:
            return await asyncio.wait_for(asyncio.shield(reload), STALE_WAIT)
        except TimeoutError:
            return table
        except Exception:  # noqa: BLE001 - the database is unreachable: keep serving what we know
            log.exception("gateway cannot reload the routing table of organization %s", organization_id)
            return table

    async def _reload_deployments(self, organization_id: int) -> dict[str, DeploymentInfo]:
        # The generation is read before the rows: rows are at least as new as what they're filed under.
        generation = self.cache.generation
        try:
            table = await self._load_deployments(organization_id)
            if not isinstance(self.limiter, RedisRateLimiter):
                # Without Redis, this process's breakers learn the health check's verdicts here.
                overflow.learn(table.values())
            self.cache.put_deployments(organization_id, table, generation)
            return table
        finally:
            self._reloads.pop(organization_id, None)

    async def _deployment(self, key: KeyInfo, model: str, endpoint_path: str = "") -> DeploymentInfo:
        deployment = (await self._deployments(key.organization_id)).get(model)
        if deployment is not None and endpoint_path and deployment.endpoint_path != endpoint_path:
            deployment = None  # not on this endpoint: the same answer as an unknown name
        # Same answer whether the name is unknown or another organization's: nothing leaks.
        if deployment is None:
            raise GatewayError(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                "invalid_request_error",
                param="model",
                code="model_not_found",
            )
        if key.deployment_ids and deployment.id not in key.deployment_ids:
            raise GatewayError(
                403,
                f"This API key is limited to other deployments; it may not call `{model}`.",
                "permission_error",
                param="model",
                code="model_not_allowed",
            )
        allowed, reason = _may_call(key, deployment)
        if not allowed:
            raise GatewayError(
                403, reason, "permission_error", param="model", code="model_not_allowed"
            )
        refused = deployment_refusal(deployment, model)
        if refused is not None:
            raise refused
        return deployment

    async def _generation(self) -> str:
        limiter = self.limiter
        if isinstance(limiter, RedisRateLimiter):
            try:
                value = await self._redis.get(GENERATION_KEY)
            except RedisError:
                log.exception("gateway cannot read the cache generation")
                raise GatewayError(
                    503,
                    "The gateway cannot reach Redis; retry shortly.",
                    "server_error",
                    code="redis_unavailable",
                ) from None
            return value.decode() if value else "0"
        return embedded_generation()

    async def _models(self, scope, send, request_id: str, endpoint_path: str = "") -> None:
        generation = await self._generation()
        if generation != self.cache.generation:
            self.cache.moved(generation)
        key = await self._key(scope)
        if await self._user_generation_moved(key):
            self.cache.forget_user(key.user_id)
            key = await self._key(scope)
        deployments = await self._deployments(key.organization_id)
        data = [
            {
                "id": d.served_model_name,
                "object": "model",
                "created": d.created,
                "owned_by": "modeldeck",
            }
            for d in sorted(deployments.values(), key=lambda d: d.served_model_name)
            if deployment_refusal(d, d.served_model_name) is None
            and (not endpoint_path or d.endpoint_path == endpoint_path)
            and (not key.deployment_ids or d.id in key.deployment_ids)
            and _may_call(key, d)[0]
        ]
        body = json.dumps({"object": "list", "data": data}).encode()
        await self._send(send, 200, body, headers=[(b"x-request-id", request_id.encode())])

    # ---- inference ------------------------------------------------------------------------
    async def _ensure_generation(self) -> None:
        # Read the generation before anything is cached, so every cached row is at least as
        # new as the generation it is filed under (a revoke in between is then never missed).
        if self.cache.generation is None:
            self.cache.reset(await self._generation())
        elif not isinstance(self.limiter, RedisRateLimiter):
            # Without Redis the admission can't see the shared generation move: look here (a
            # file read at most once a second, gateway.cache.embedded_generation).
            generation = embedded_generation()
            if generation != self.cache.generation:
                self.cache.moved(generation)

    async def _admission(
        self, scope, key: KeyInfo | None, keyless: bool, model: str, route: str, request_id: str,
        started: float, stream: bool, endpoint_path: str, *, reserve,
    ) -> tuple[Call, list, int | None]:
        """Who may call `model`, and within which limits: the key (or a public deployment), the
        deployment's access policy, rate limits and budgets (`reserve(levels, deployment, budgets)`
        gives the token reservation, the max_tokens cap and what the request may cost, held on
        its budgets until it finishes); a refusal raises, a 429 is metered."""
        if keyless:
            key = await self._public_caller(model)

        # The shared generation is checked once: after one reload (or STALE_WAIT of it) the table
        # in hand answers, however often other changes land meanwhile (a busy sync, rollouts).
        reloaded = False
        seeded = False
        for attempt in (1, 2, 3, 4):
            try:
                if keyless:
                    deployment = await self._deployment(key, model, endpoint_path)
                else:
                    key, deployment = await self._fresh_deployment(scope, key, model, endpoint_path)
            except DeploymentRefused as refused:
                # Deactivated, being deleted, not ready: metered like a 429 (the Usage page shows
                # the refusals), on the same usage stream; nothing was reserved, nothing to settle.
                call = Call(key, refused.deployment, route, request_id, started, stream, [], 0)
                await self._record(call, refused.status, settle=False, refused=True)
                raise
            levels = levels_for(
                deployment.rate_limits,
                organization_id=key.organization_id,
                user_id=key.user_id,
                api_key_id=key.id,
            )
            budgets = tuple(b for b in key.budgets if b.currency == deployment.currency)
            # Reserved now, settled to the engine's count when the request finishes (_record).
            estimate, cap, hold = reserve(levels, deployment, budgets)
            month = _month()
            try:
                decision = await self.limiter.check(
                    generation_key=GENERATION_KEY,
                    expected_generation="" if reloaded else (self.cache.generation or ""),
                    deployment_id=deployment.id,
                    levels=levels,
                    request_id=request_id,
                    estimate=estimate,
                    # The caller's own generation too (public callers have no user).
                    user_generation_key=user_generation_key(key.user_id) if key.id else "",
                    expected_user_generation=key.user_generation,
                    budgets=budgets,
                    month=month,
                    seed=not seeded,
                    hold=hold,
                )
            except RedisError:
                # Fail closed: without the limiter neither limits nor revocations can be enforced.
                log.exception("gateway rate limiter unavailable")
                raise GatewayError(
                    503,
                    "The gateway's rate limiter is unavailable; retry shortly.",
                    "server_error",
                    code="rate_limiter_unavailable",
                    headers=[(b"retry-after", b"1")],
                ) from None
            if decision.unseeded:
                # Redis lacks a budget's counter (it restarted, or the budget is new this month):
                # the month's spend so far comes from the usage records, then this request asks again.
                await self._seed_budgets(budgets, month)
                seeded = True
                continue
            if decision.stale_user:
                # The caller's key, membership or account changed: re-read only their keys.
                self.cache.forget_user(key.user_id)
                if attempt < 4:
                    key = await self._key(scope)
                continue
            if not decision.stale:
                break
            # Deployments or policies changed somewhere: the routing tables reload (once per
            # organization), and this request looks again.
            self.cache.moved(decision.generation)
            reloaded = True
            if attempt < 4:
                key = await self._public_caller(model) if keyless else await self._key(scope)
        else:  # pragma: no cover - the caller's own generation moved twice within one request
            raise GatewayError(
                503, "The gateway is reloading its configuration; retry.", "server_error"
            )

        rl_headers = _ratelimit_headers(decision)
        call = Call(key, deployment, route, request_id, started, stream, levels, estimate)
        if decision.kind == "budget":
            await self._record(call, 429, settle=False)
            raise budget_exceeded(decision, model, hold)
        if hold and decision.allowed:
            call.held = tuple(budget_key(month, b.currency, b.level, b.ident) for b in budgets)
        if not decision.allowed:
            _child(metrics.RATE_LIMITED, deployment.name, decision.level, decision.kind).inc()
            retry_s = (
                60 if decision.retry_after_ms < 0 else max(1, -(-decision.retry_after_ms // 1000))
            )
            who = {"organization": "organization", "user": "user", "api_key": "API key"}[
                decision.level
            ]
            unit = "requests" if decision.kind == "requests" else "tokens"
            if decision.retry_after_ms < 0:
                message = f"This request needs about {estimate} tokens, more than the {who} limit of {decision.limit_tokens} tokens per minute on `{model}` (its prompt plus the completion it may produce); shorten the prompt or lower max_tokens."
            else:
                message = f"Rate limit reached for `{model}`: the {who} limit on {unit} per minute is used up. Retry after {retry_s} s."
            await self._record(call, 429, settle=False)
            raise GatewayError(
                429,
                message,
                "rate_limit_error",
                code=f"rate_limit_{decision.level}_{unit}",
                headers=[
                    (b"retry-after", str(retry_s).encode()),
                    # A request over the token limit on its own never passes: clients don't retry it.
                    *([(b"x-should-retry", b"false")] if decision.retry_after_ms < 0 else []),
                    *rl_headers,
                ],
            )
        return call, rl_headers, cap

    async def _seed_budgets(self, budgets: tuple, month: str) -> None:
        """Check the month's spend counters of `budgets` against the usage records: one read per
        process at a time for the same counters (every request that finds them missing waits for
        it). Unreadable records fail the request closed (503): a budget is not enforced from zero."""
        ident = (month, budgets)
        flight = self._seeding.get(ident)
        if flight is None:

            async def seed() -> None:
                spent = await self._load_month_spend(budgets, month)
                await self.limiter.seed_budgets(month, budgets, spent)

            flight = self._seeding[ident] = asyncio.ensure_future(seed())
            # Retrieved here too, so a failure nobody waits for any more is not reported as lost.
            flight.add_done_callback(lambda f: (self._seeding.pop(ident, None), f.cancelled() or f.exception()))
        try:
            await asyncio.shield(flight)
        except (DatabaseError, RedisError):
            log.exception("gateway budget counters could not be seeded")
            raise GatewayError(
                503,
                "The gateway cannot read this month's spend to check a budget; retry shortly.",
                "server_error",
                code="budget_unavailable",
                headers=[(b"retry-after", b"1")],
            ) from None

    async def _inference(
        self, scope, receive, send, route: str, request_id: str, endpoint_path: str = ""
    ) -> None:
        started = time.perf_counter()
        await self._ensure_generation()
        keyless = not _header(scope, b"authorization")
        key = None if keyless else await self._key(scope)
        raw = await _read_body(receive)
        # Parsed and checked before anything is counted: a bad body costs no rate-limit tokens.
        body = parse_body(raw)
        check_body(body, route)
        model = body["model"]
        stream = bool(body.get("stream")) and route != "embeddings"
        call, rl_headers, cap = await self._admission(
            scope, key, keyless, model, route, request_id, started, stream, endpoint_path,
            reserve=lambda levels, deployment, budgets: _reserve(body, route, levels, deployment, budgets),
        )
        deployment = call.deployment
        if deployment.engine == "torchserve":
            await self._record(call, 400, actual=0)
            raise GatewayError(400, f"`{model}` is a TorchServe model: POST to "
                               f"{TORCHSERVE_PREFIX}{model}/predictions (or /explanations).",
                               "invalid_request_error", param="model", code="not_openai_compatible")  # fmt: skip

        await self._admit(call)  # load for the autoscaler; held here while scaling from zero
        if cap is not None:
            body["max_tokens"] = cap  # the reservation's completion part is then a bound
        if stream and route in ("chat.completions", "completions"):
            # The engine reports usage at the end of a stream only when asked.
            options = (
                body.get("stream_options") if isinstance(body.get("stream_options"), dict) else {}
            )
            body["stream_options"] = {**options, "include_usage": True}
        if cap is not None or stream:
            raw = json.dumps(body).encode()
        url = f"{deployment.upstream}/v1/{'chat/completions' if route == 'chat.completions' else route}"
        headers = {"content-type": "application/json", "x-request-id": request_id}
        if deployment.upstream_credential:
            # The engine's own key (never the caller's): it refuses anyone who bypasses the gateway.
            headers["authorization"] = f"Bearer {deployment.upstream_credential}"
        if deployment.upstream_host:
            headers["host"] = deployment.upstream_host  # the Ingress / HTTPRoute routes on it
        if deployment.sandbox:
            headers.update(
                (k.decode("latin-1"), v.decode("latin-1"))
                for k, v in scope["headers"]
                if k.startswith(b"x-sandbox-")
            )
        extra = [(b"x-request-id", request_id.encode()), *rl_headers]
        if deployment.external:  # its own URL or its overflow deployment (gateway/overflow.py)
            await overflow.serve(self, scope, receive, send, call, raw, headers, extra)
        elif stream:
            await self._proxy_stream(scope, receive, send, call, url, raw, headers, extra)
        else:
            await self._proxy(send, call, url, raw, headers, extra)

    # ---- TorchServe: /v1/deployments/<served name>/predictions | /explanations -----------------
    async def _torchserve(self, scope, receive, send, path: str, request_id: str, endpoint_path: str) -> None:
        """A TorchServe deployment's inference API behind the same key, access policy, limits
        and usage as the OpenAI routes. The body (an image, JSON, text) goes through untouched;
        usage records the call (no tokens: TorchServe's handlers report none)."""
        name, _, action = path[len(TORCHSERVE_PREFIX) :].rpartition("/")
        if action not in ("predictions", "explanations") or not name or "/" in name:
            raise GatewayError(404, f"Unknown endpoint {scope['method']} {path}; use "
                               f"{TORCHSERVE_PREFIX}<model>/predictions or /explanations.",
                               "invalid_request_error", code="unknown_url")  # fmt: skip
        if scope["method"] != "POST":
            raise GatewayError(405, f"{path} only accepts POST.", "invalid_request_error", headers=[ALLOW_POST])
        started = time.perf_counter()
        await self._ensure_generation()
        keyless = not _header(scope, b"authorization")
        key = None if keyless else await self._key(scope)
        raw = await _read_body(receive)
        call, rl_headers, _ = await self._admission(
            scope, key, keyless, name, action, request_id, started, False, endpoint_path,
            reserve=lambda levels, deployment, budgets: (0, None, 0),
        )
        deployment = call.deployment
        if deployment.engine != "torchserve":
            await self._record(call, 400, actual=0)
            raise GatewayError(
                400, f"`{name}` is not served by TorchServe; call it at /v1/chat/completions, "
                "/v1/completions or /v1/embeddings.", "invalid_request_error", code="not_torchserve",
            )  # fmt: skip
        await self._admit(call)  # load for the autoscaler; held while scaling from zero
        headers = {"content-type": _header(scope, b"content-type") or "application/octet-stream",
                   "x-request-id": request_id}  # fmt: skip
        if deployment.upstream_credential:
            headers["authorization"] = f"Bearer {deployment.upstream_credential}"
        if deployment.upstream_host:
            headers["host"] = deployment.upstream_host
        if deployment.sandbox:
            headers.update((k.decode("latin-1"), v.decode("latin-1"))
                           for k, v in scope["headers"] if k.startswith(b"x-sandbox-"))  # fmt: skip
        url = f"{deployment.upstream}/{action}/{quote(deployment.served_model_name, safe='')}"
        try:
            # An organization's own cluster: the session that connects to public addresses only.
            session = self.external_session if deployment.public_only else self.session
            async with session.post(url, data=raw, headers=headers, allow_redirects=False,
                                    **_tls_name(url, deployment)) as response:  # fmt: skip
                content, status = await response.read(), response.status
                content_type = response.headers.get("content-type", "application/json")
        except (TimeoutError, aiohttp.ClientError) as exc:
            error = self._upstream_error(exc, deployment)
            await self._record(call, error.status, actual=0)
            raise error from None
        await self._record(call, status, actual=0)
        await self._send(send, status, content, content_type=content_type.encode(),
                         headers=[(b"x-request-id", request_id.encode()), *rl_headers])  # fmt: skip

    async def _admit(self, call: Call) -> None:
        """Count the request in its deployment's load (one round trip); at zero replicas, hold it
        until a replica is ready (the first held request asks for a scale-up), up to the spec's
        cold_start_hold_seconds, in a bounded queue; past either, 503 "model is starting"."""
        deployment = call.deployment
        if not self.measure_load or not deployment.autoscaled:
            return  # a fixed replica count: nothing reads its load
        try:
            commands = load.admit_commands(deployment.id, call.request_id, time.time())
            scale = load.parse_scale((await self._load_store().execute(commands))[-1])
            call.admitted = True
        except RedisError:
            log.warning("gateway load not measured", exc_info=True)
            return
        if not scale.at_zero or not deployment.cold_start_hold_seconds:
            return
        try:
            ready = await self.holds.hold(
                self._redis if isinstance(self.limiter, RedisRateLimiter) else self._embedded_store,
                deployment.id, timeout=deployment.cold_start_hold_seconds, wake=self._wake,
            )
            why = "its start is taking longer than the deployment holds requests"
        except load.QueueFull:
            ready, why = False, "too many requests are already waiting for it"
        if ready:
            return
        await self._record(call, 503, actual=0)
        raise GatewayError(
            503, f"The model `{deployment.served_model_name}` is starting (scaled to zero) and "
            f"{why}; retry shortly.", "server_error", param="model", code="model_starting",
            headers=[(b"retry-after", b"10")],
        )  # fmt: skip

    async def _load_finish(self, deployment_id: int, request_id: str, latency_ms: float, completion: int) -> None:
        """Take a finished request out of its deployment's load (the autoscaler's counters)."""
        commands = load.finish_commands(deployment_id, request_id, time.time(), latency_ms, completion)
        await self._load_store().execute(commands)

    def _load_store(self) -> RedisRateLimiter | memstore.AsyncView:
        """Where the autoscaler's load is written: Redis, or without it (the embedded mode) this
        process's memory, where its autoscaler reads (gateway/memstore.py)."""
        limiter = self.limiter
        return limiter if isinstance(limiter, RedisRateLimiter) else self._embedded_store

    def _upstream_error(self, exc: Exception, deployment: DeploymentInfo) -> GatewayError:
        if isinstance(exc, UpstreamRedirect):
            return refused_status_error(exc.status, deployment)
        if isinstance(exc, h1.PrivateAddress):
            return GatewayError(
                502, f"The deployment `{deployment.served_model_name}` was not called: its cluster's exposure "
                f"address {exc.host} resolved only to {', '.join(exc.addresses[:3])}; ModelDeck only calls public "
                "addresses for an organization's own cluster (a platform operator can allow private addresses "
                "for the pool).", "server_error", code="upstream_private_address",
            )  # fmt: skip
        refused = private_address_refusal(exc)
        if refused is not None:
            return GatewayError(
                502, f"The external endpoint of `{deployment.served_model_name}` was not called: {refused}.",
                "server_error", code="upstream_private_address",
            )  # fmt: skip
        if isinstance(exc, asyncio.TimeoutError):
            return GatewayError(
                504,
                f"The deployment `{deployment.served_model_name}` did not answer in time.",
                "server_error",
                code="upstream_timeout",
            )
        return GatewayError(
            502,
            f"The deployment `{deployment.served_model_name}` could not be reached ({type(exc).__name__}).",
            "server_error",
            code="upstream_unreachable",
        )

    async def _proxy(self, send, call: Call, url, raw, headers, extra) -> None:
        try:
            response = await self.pool.post(
                url, raw, headers, public_only=call.deployment.public_only, **_tls_name(url, call.deployment)
            )
        except (TimeoutError, h1.UpstreamError) as exc:
            error = self._upstream_error(exc, call.deployment)
            await self._record(call, error.status, actual=0)
            raise error from None
        content, status = response.content, response.status
        if not is_passed_on(status):  # a 3xx, 1xx or > 599 (gateway/upstream.py, UpstreamRedirect)
            await self._record(call, 502, actual=0)
            raise refused_status_error(status, call.deployment)
        content_type = response.content_type or b"application/json"
        prompt, completion = usage_from_bytes(content) if status == 200 else (0, 0)
        # Metered before the client sees the answer: a crash right after can't lose the record,
        # and a client that asks for its usage next already finds it buffered.
        await self._record(
            call, status, prompt=prompt, completion=completion, actual=prompt + completion
        )
        await self._send(send, status, content, content_type=content_type, headers=extra)

    async def _proxy_stream(
        self, scope, receive, send, call: Call, url, raw, headers, extra
    ) -> None:
        try:
            to_overflow = call.served_by == overflow.SERVED_OVERFLOW
            if call.deployment.external and not (to_overflow and call.deployment.public_only):
                # An external endpoint or its overflow (gateway/overflow.py) keeps aiohttp; only
                # the overflow (a managed engine) may be at a cluster-internal address. An
                # overflow on an organization's own cluster goes through the engines' pool, which
                # calls it at public addresses only (below).
                session = self.session if to_overflow else self.external_session
                response = _SessionStream(
                    await session.post(
                        url, data=raw, headers=headers, allow_redirects=False,
                        **_tls_name(url, call.deployment),
                    )
                )
            else:
                response = await self.pool.stream(
                    url, raw, headers, public_only=call.deployment.public_only,
                    **_tls_name(url, call.deployment),
                )
        except (TimeoutError, aiohttp.ClientError, h1.UpstreamError) as exc:
            error = self._upstream_error(exc, call.deployment)
            await self._record(call, error.status, actual=0)
            raise error from None
        status = response.status
        if not is_passed_on(status):  # the engine's own 3xx/1xx (the session raises on an external's)
            response.close()
            await self._record(call, 502, actual=0)
            raise refused_status_error(status, call.deployment)
        usage = [0, 0]
        ttft: list[float | None] = [None]
        recorded = [False]

        async def record(outcome: int) -> None:
            recorded[0] = True
            tokens = usage[0] + usage[1] if outcome == 200 else call.estimate
            await self._record(
                call, outcome, prompt=usage[0], completion=usage[1], ttft=ttft[0], actual=tokens
            )

        async def pump() -> None:
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", response.content_type or b"text/event-stream"),
                        (b"cache-control", b"no-cache"),
                        (b"x-accel-buffering", b"no"),
                        *extra,
                    ],
                }
            )
            pending = b""
            async for chunk in response.iter_chunks():
                if ttft[0] is None:
                    ttft[0] = (time.perf_counter() - call.started) * 1000
                # Watch for the usage chunk without holding the bytes back from the client.
                pending += chunk
                if b"\n\n" in pending:
                    *events, pending = pending.split(b"\n\n")
                    for event in events:
                        if b'"usage"' in event and _USAGE_OBJECT.search(event):
                            _scan_usage(event, usage)
                if status == 200 and not recorded[0] and b"data: [DONE]" in chunk:
                    # Meter before the client sees the end of the stream (same reason as _proxy).
                    await record(200)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if pending and b'"usage"' in pending and _USAGE_OBJECT.search(pending):
                _scan_usage(pending, usage)
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def watch_disconnect() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return

        pump_task = asyncio.ensure_future(pump())
        watch_task = asyncio.ensure_future(watch_disconnect())
        outcome = status
        failure: GatewayError | None = None
        try:
            done, _ = await asyncio.wait(
                {pump_task, watch_task}, return_when=asyncio.FIRST_COMPLETED
            )
            if pump_task not in done:
                # The client went away: cancelling the pump closes the upstream stream, which
                # makes the engine stop generating.
                pump_task.cancel()
                outcome = 499
            else:
                exc = pump_task.exception()
                if isinstance(exc, aiohttp.ClientError | h1.UpstreamError | asyncio.TimeoutError):
                    failure = self._upstream_error(exc, call.deployment)
                    outcome = failure.status
                elif exc is not None:
                    outcome = 499  # send() failed: the client is gone
        finally:
            watch_task.cancel()
            for task in (pump_task, watch_task):
                try:
                    await task
                except BaseException:  # noqa: B036 - cancelled or failed tasks are accounted above
                    pass
            # Closing (not releasing) an unfinished response drops the connection: the engine stops.
            if outcome == 200:
                response.release()
            else:
                response.close()
        if not recorded[0]:
            await record(outcome)
        if failure is not None and outcome != 499:
            # Headers may already be out; all that can be done is to end the body.
            try:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except Exception:  # noqa: BLE001
                pass

    # ---- usage ----------------------------------------------------------------------------
    async def _record(
        self,
        call: Call,
        status: int,
        *,
        prompt: int = 0,
        completion: int = 0,
        ttft: float | None = None,
        actual: int | None = None,
        settle: bool = True,
        refused: bool = False,
    ) -> None:
        """Meter one request: a usage event and the settled token reservation, one round trip.
        A request `refused` before it was admitted (and a 429) has no latency worth a histogram."""
        key, deployment, route, request_id, levels = (
            call.key, call.deployment, call.route, call.request_id, call.levels
        )  # fmt: skip
        latency_ms = (time.perf_counter() - call.started) * 1000
        cost = cost_of(
            prompt_tokens=prompt,
            completion_tokens=completion,
            input_per_million=deployment.input_per_million,
            output_per_million=deployment.output_per_million,
        )
        event = UsageEvent(
            request_id=request_id,
            deployment_id=deployment.id,
            deployment_name=deployment.name,
            organization_id=key.organization_id,
            user_id=key.user_id or None,  # keyless public callers have neither
            api_key_id=key.id or None,
            api_key_prefix=key.prefix if key.id else "",
            revision_id=deployment.serving_revision_id or None,
            served_by=call.served_by,
            route=route,
            status_code=status,
            prompt_tokens=prompt,
            completion_tokens=completion,
            latency_ms=round(latency_ms, 3),
            ttft_ms=round(ttft, 3) if ttft is not None else None,
            stream=call.stream,
            cost=str(cost),
            currency=deployment.currency,
            created_at=datetime.now(UTC).isoformat(),
        )
        _child(metrics.REQUESTS, deployment.name, route, str(status)).inc()
        if status != 429 and not refused:
            _child(metrics.LATENCY, deployment.name, route).observe(latency_ms / 1000)
        if prompt or completion:
            _child(metrics.TOKENS, deployment.name, "prompt").inc(prompt)
            _child(metrics.TOKENS, deployment.name, "completion").inc(completion)
        if ttft is not None:
            _child(metrics.TTFT, deployment.name).observe(ttft / 1000)
        limiter = self.limiter
        try:
            if isinstance(limiter, RedisRateLimiter):
                # Token settlement and the usage event: one command; the autoscaler's load
                # counters go out beside it (same moment, not one more wait).
                finishing = [limiter.finish(
                    stream_key=USAGE_STREAM_KEY,
                    event=event.dumps(),
                    deployment_id=deployment.id,
                    levels=levels if settle else [],
                    request_id=request_id,
                    actual=actual if settle else None,
                    cost=cost,
                    spend=spend_keys(
                        _month(), deployment.currency, organization_id=key.organization_id,
                        user_id=key.user_id, api_key_id=key.id,
                    ) if cost else [],
                    held=call.held,
                )]  # fmt: skip
                if call.admitted:
                    finishing.append(self._load_finish(deployment.id, request_id, latency_ms, completion))
                await asyncio.gather(*finishing)
            else:
                if settle and levels and actual is not None:
                    await limiter.settle(
                        deployment_id=deployment.id,
                        levels=levels,
                        request_id=request_id,
                        actual=actual,
                    )
                if call.held:
                    limiter.release(request_id=request_id, held=call.held)
                if cost:  # budgets: the in-process counters the finish script keeps in Redis
                    limiter.count_spend(request_id=request_id, cost=cost, spend=spend_keys(
                        _month(), deployment.currency, organization_id=key.organization_id,
                        user_id=key.user_id, api_key_id=key.id,
                    ))  # fmt: skip
                if call.admitted:
                    await self._load_finish(deployment.id, request_id, latency_ms, completion)
                await sync_to_async(_write_now, thread_sensitive=False)(event)
        except Exception:  # noqa: BLE001 - metering must never break the response already sent
            log.exception("gateway usage could not be recorded", extra={"request_id": request_id})


@dataclass(slots=True)
class Call:
    """One admitted request: who calls what, and the token reservation to settle after it."""

    key: KeyInfo
    deployment: DeploymentInfo
    route: str
    request_id: str
    started: float
    stream: bool
    levels: list
    estimate: int
    held: tuple = ()  # the budget counters holding what this request may cost (until _record)
    admitted: bool = False  # counted in flight (gateway/load.py): the finish must uncount it
    served_by: str = ""  # external deployments: "external" or "overflow" (gateway/overflow.py)


def _may_call(key: KeyInfo, deployment: DeploymentInfo) -> tuple[bool, str]:
    """The deployment's sharing and access policy (sharing.access), evaluated without I/O."""
    if deployment.policy is None:
        # No policy row loaded: only the owner organization's keys reach it (the lookup's rule).
        return deployment.owner_organization_id in (
            0,
            key.organization_id,
        ), "This deployment is not shared with your organization."

    return evaluate(
        deployment.policy,
        owner_org_id=deployment.owner_organization_id,
        caller_org_id=key.organization_id,
        caller_user_id=key.user_id,
        caller_group_ids=key.group_ids,
    )


_month_cache: list = ["", 0.0, 0.0]  # the value, and the epoch seconds [from, until) it stands for


def _month(now: float | None = None) -> str:
    """The budget month (UTC), e.g. 2026-11: formatted once a month (a request asks twice),
    and exactly at its first instant, so spend never lands on the month before."""
    now = time.time() if now is None else now
    if not _month_cache[1] <= now < _month_cache[2]:  # a new month, or the clock was set back
        start = month_start(datetime.fromtimestamp(now, UTC))
        end = month_start(start + timedelta(days=32))
        _month_cache[:] = [start.strftime("%Y-%m"), start.timestamp(), end.timestamp()]
    return _month_cache[0]


def refused_status_error(status: int, deployment: DeploymentInfo) -> GatewayError:
    """502 for an upstream status the gateway never passes on (is_passed_on), in words. For a 3xx:
    the gateway follows no redirect, and says neither where it pointed nor what was there (the
    target could be an address the tenant may not reach)."""
    if not is_redirect(status):
        return GatewayError(
            502, f"The upstream of `{deployment.served_model_name}` answered with HTTP status {status}, "
            "which ModelDeck does not pass on (only 2xx, 4xx and 5xx answers are).", "server_error",
            code="upstream_bad_status",
        )  # fmt: skip
    fix = " Point the endpoint at its final URL." if deployment.external else ""
    return GatewayError(
        502, f"The upstream of `{deployment.served_model_name}` answered with a redirect ({status}) "
        f"to another address; ModelDeck does not follow upstream redirects.{fix}", "server_error",
        code="upstream_redirect",
    )  # fmt: skip


def budget_exceeded(decision: Decision, model: str, hold: int) -> GatewayError:
    """429 with OpenAI's `insufficient_quota` type: a monthly budget is spent, has less left than
    this request may cost (`hold`, 1e-8 units), or what it has left is held by requests running."""
    budget = decision.budget
    who = {"organization": "organization's", "user": "user's", "api_key": "API key's"}[budget.level]
    limit = f"{money_text(budget.limit)} {budget.currency}"
    left = f"{money_text(decision.budget_left.quantize(Decimal('0.0001'), ROUND_FLOOR))} {budget.currency}"
    # The official clients retry a 429 unless told not to: only the held case can pass later.
    headers = [(b"x-should-retry", b"false")]
    if decision.retry_after_ms == BUDGET_TOO_COSTLY:
        may_cost = (Decimal(hold) / BUDGET_UNITS).quantize(Decimal("0.0001"), ROUND_CEILING)
        message = (
            f"This request to `{model}` may cost up to {money_text(may_cost)} {budget.currency} (its prompt and "
            f"the completion it may write), more than the {left} left of the {who} monthly budget of "
            f"{limit}; lower max_tokens or shorten the prompt."
        )
    elif decision.retry_after_ms == BUDGET_HELD:
        message = (
            f"Requests to `{model}` still running hold the rest of the {who} monthly budget of {limit} "
            f"({left} left before they are charged); retry when they finish."
        )
        headers = [(b"retry-after", b"1"), (b"x-should-retry", b"true")]
    else:
        message = (
            f"The {who} monthly budget of {limit} is used up; requests to `{model}` resume when the budget "
            f"is raised or next month begins."
        )
    return GatewayError(
        429, message, "insufficient_quota", code=f"budget_{budget.level}_exceeded", headers=headers
    )


def _reserve(body: dict, route: str, levels: list, deployment: DeploymentInfo, budgets: tuple) -> tuple:
    """(tokens to reserve, max_tokens cap or None, what the request may cost in 1e-8 units): a
    caller with a budget on a priced deployment holds its estimated cost until it finishes."""
    priced = deployment.input_per_million or deployment.output_per_million
    budgeted = bool(budgets and priced)
    estimate, cap = reservation(body, route, levels, budgeted=budgeted)
    if not budgeted:
        return estimate, cap, 0
    return estimate, cap, hold_units(body, estimate, deployment.input_per_million, deployment.output_per_million)


_children: dict[tuple, object] = {}


def _child(metric, *labels: str):
    """metric.labels(*labels), looked up once: labels() takes a lock and builds keys every call."""
    key = (id(metric), labels)
    child = _children.get(key)
    if child is None:
        if len(_children) > 100_000:  # bounded, like the label sets themselves should be
            _children.clear()
        child = _children[key] = metric.labels(*labels)
    return child


def _tls_name(url: str, deployment: DeploymentInfo) -> dict:
    """Through an address (no DNS for the host), TLS must still name and verify the host."""
    if deployment.upstream_host and url.startswith("https://"):
        return {"server_hostname": deployment.upstream_host}
    return {}


# Engines asked for usage in a stream send `"usage": null` in every chunk and the counts in the
# last: only an event with a usage object is decoded (not every token's chunk).
_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')


def _scan_usage(event: bytes, usage: list[int]) -> None:
    for line in event.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            continue
        try:
            prompt, completion = usage_from_body(json.loads(payload))
        except ValueError:
            continue
        if prompt or completion:
            usage[0], usage[1] = prompt, completion


def _write_now(event: UsageEvent) -> None:
    """Embedded mode (no Redis): write the record at once; flush_usage's code path, batch of one."""
    try:
        write_events([event.dumps()])
    finally:
        connection.close()  # back to the pool: this executor thread would hold it (gateway.lookup's rule)


def mount(django_app, **options):
    """One ASGI app: /v1/… and /metrics go to a new Gateway, everything else to Django."""
    gateway = Gateway(**options)

    async def application(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await gateway.lifespan(scope, receive, send)
            return
        if scope["type"] == "http":
            path = scope["path"]
            if path.startswith("/v1/") or path == "/metrics":
                await gateway(scope, receive, send)
                return
            prefix, _ = split_endpoint_path(path)
            if prefix and await gateway.is_endpoint_path(prefix):
                await gateway(scope, receive, send)
                return
        await django_app(scope, receive, send)

    application.gateway = gateway  # type: ignore[attr-defined]
    return application


class _SessionStream:
    """An aiohttp response as _proxy_stream reads an h1.UpstreamStream (external endpoints)."""

    __slots__ = ("status", "content_type", "_response")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        content_type = response.headers.get("content-type")
        self.content_type = content_type.encode() if content_type is not None else None

    def iter_chunks(self):
        return self._response.content.iter_any()

    def release(self) -> None:
        self._response.release()

    def close(self) -> None:
        self._response.close()
