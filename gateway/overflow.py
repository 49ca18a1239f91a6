"""External deployments on the gateway: the circuit breaker, the concurrency threshold and the
overflow to a managed deployment (the rules of deployments/external.py, applied per request).

State lives in Redis so every gateway process shares it (a process-local copy without Redis):
  gw:ext:<id>:cb        hash {fails, open_until (ms)}; open: requests skip the external URL
  gw:ext:<id>:probe     one request may try the external URL after the cooldown (half-open)
  gw:ext:<id>:inflight  requests on the external URL right now (the concurrency threshold)
The health check (gateway.tasks.check_external_endpoints, every mode) stores its verdict on the
deployment's row and, with Redis, closes or opens this breaker at once. Without Redis (the
embedded mode: Celery in other processes than the gateway) a change of verdict reloads the
gateway's routing tables (gateway.cache), and each process's breaker learns the verdict there
(`learn`), with no read per request.

What sends a request to the overflow: the breaker is open, the external endpoint is at its
concurrency threshold, or it answers 5xx / 429, times out or can't be reached. Streams follow
the first two only (once a stream's headers reach the client it can't change servers); their
first byte errors feed the breaker through the health check.
"""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import ssl
import time
from dataclasses import replace
from typing import Any

import aiohttp
import redis
from django.conf import settings

from deployments.external import base_url, external_url_refusal
from gateway.errors import GatewayError
from gateway.upstream import (
    UpstreamRedirect,
    is_passed_on,
    is_redirect,
    make_session,
    private_address_refusal,
)
from gateway.usage import usage_from_bytes

INFLIGHT_TTL_S = 600  # a crashed process's counts fade out
SERVED_EXTERNAL = "external"
SERVED_OVERFLOW = "overflow"

_local: dict[str, Any] = {}  # without Redis: this process only
# deployments.models.EndpointHealth's values (the gateway keeps to plain strings).
HEALTHY, UNHEALTHY = "healthy", "unhealthy"


def _k(deployment_id: int, part: str) -> str:
    return f"gw:ext:{deployment_id}:{part}"


def _now_ms() -> int:
    return int(time.time() * 1000)


class Breaker:
    """One external deployment's breaker and in-flight count, over an async Redis client (or not)."""

    def __init__(self, redis, deployment_id: int, options: dict) -> None:
        self.redis, self.id = redis, deployment_id
        self.threshold = int(options.get("failure_threshold") or 3)
        self.cooldown_ms = int(options.get("cooldown_s") or 30) * 1000
        self.max_concurrency = int(options.get("max_concurrency") or 0)
        self.dirty = False  # failures recorded: a success must close the breaker

    async def allow(self) -> bool:
        now = _now_ms()
        if self.redis is None:
            fails, open_until = _local.get(_k(self.id, "cb"), (0, 0))
        else:
            fails, open_until = await self.redis.hmget(_k(self.id, "cb"), "fails", "open_until")
            fails, open_until = int(fails or 0), int(open_until or 0)
        self.dirty = bool(fails)
        if not open_until:
            return True
        if now < open_until:
            return False
        # Half-open: one request per cooldown tries the external endpoint again.
        if self.redis is None:
            if _local.get(_k(self.id, "probe"), 0) > now:
                return False
            _local[_k(self.id, "probe")] = now + self.cooldown_ms
            return True
        return bool(await self.redis.set(_k(self.id, "probe"), 1, nx=True, px=self.cooldown_ms))

    async def success(self) -> None:
        if not self.dirty:
            return
        if self.redis is None:
            _local.pop(_k(self.id, "cb"), None)
        else:
            await self.redis.delete(_k(self.id, "cb"), _k(self.id, "probe"))

    async def failure(self) -> None:
        key = _k(self.id, "cb")
        if self.redis is None:
            fails, _ = _local.get(key, (0, 0))
            fails += 1
            _local[key] = (fails, _now_ms() + self.cooldown_ms if fails >= self.threshold else 0)
            return
        fails = await self.redis.hincrby(key, "fails", 1)
        if fails >= self.threshold:
            await self.redis.hset(key, "open_until", _now_ms() + self.cooldown_ms)
        await self.redis.expire(key, max(3600, self.cooldown_ms // 1000 * 4))

    def learn(self, health: str, checked_at: float) -> None:
        """Without Redis: the health check's verdict as the routing table carries it (gateway.lookup),
        applied once per check seen, as `record_health` applies each one to the shared breaker:
        unhealthy opens the breaker at once, healthy closes an open one."""
        if self.redis is not None or not checked_at:
            return
        seen = _k(self.id, "verdict")
        if _local.get(seen) == checked_at:
            return
        _local[seen] = checked_at
        key = _k(self.id, "cb")
        if health == UNHEALTHY:
            _local[key] = (self.threshold, _now_ms() + self.cooldown_ms)
            _local.pop(_k(self.id, "probe"), None)
        elif health == HEALTHY and _local.get(key, (0, 0))[1]:
            _local.pop(key, None)
            _local.pop(_k(self.id, "probe"), None)

    async def enter(self) -> bool:
        """Count one request on the external URL; False (not counted) past the threshold."""
        if not self.max_concurrency:
            return True
        key = _k(self.id, "inflight")
        if self.redis is None:
            if _local.get(key, 0) >= self.max_concurrency:
                return False
            _local[key] = _local.get(key, 0) + 1
            return True
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, INFLIGHT_TTL_S)
            count, _ = await pipe.execute()
        if count > self.max_concurrency:
            await self.redis.decr(key)
            return False
        return True

    async def leave(self) -> None:
        if not self.max_concurrency:
            return
        key = _k(self.id, "inflight")
        if self.redis is None:
            _local[key] = max(0, _local.get(key, 1) - 1)
        else:
            await self.redis.decr(key)


def _overflow_request(overflow, raw: bytes, scope: dict, request_id: str) -> tuple[bytes, dict]:
    """The body with the overflow deployment's served name, and its engine's headers."""
    body = json.loads(raw)
    body["model"] = overflow.served_model_name
    headers = {"content-type": "application/json", "x-request-id": request_id}
    if overflow.upstream_credential:
        headers["authorization"] = f"Bearer {overflow.upstream_credential}"
    if overflow.upstream_host:
        headers["host"] = overflow.upstream_host
    if overflow.sandbox:
        headers.update(
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in scope["headers"]
            if k.startswith(b"x-sandbox-")
        )
    return json.dumps(body).encode(), headers


def _path(route: str) -> str:
    return "chat/completions" if route == "chat.completions" else route


async def serve(gw, scope, receive, send, call, raw: bytes, headers: dict, extra: list) -> None:
    """Answer one admitted request of an external deployment (gateway.app._inference calls this
    instead of its own proxy): the external URL, or the overflow deployment when it can't."""
    deployment = call.deployment
    options = deployment.external_options or {}
    overflow = deployment.overflow
    breaker = Breaker(gw._redis, deployment.id, options)
    url = f"{deployment.upstream}/v1/{_path(call.route)}"
    tried = False
    if await breaker.allow() and await breaker.enter():
        tried = True
        try:
            if call.stream:
                # Streams are not retried elsewhere once started (see the module's doc).
                call.served_by = SERVED_EXTERNAL
                await gw._proxy_stream(scope, receive, send, call, url, raw, headers, extra)
                return
            outcome = await _try_external(gw, send, call, url, raw, headers, extra, options, overflow)
        finally:
            await breaker.leave()
        if outcome == "served":
            await breaker.success()
            return
        await breaker.failure()
        if outcome == "answered":
            return
    if overflow is None:
        # Nothing to overflow to: the breaker's or the threshold's refusal, in the gateway's words.
        if tried:
            raise GatewayError(
                502, f"The external endpoint of `{deployment.served_model_name}` failed.", "server_error",
                code="upstream_unreachable",
            )
        why = "circuit open or at its concurrency limit"
        if deployment.health == UNHEALTHY and deployment.health_detail:
            why = f"its health check: {deployment.health_detail}"
        raise GatewayError(
            503, f"The external endpoint of `{deployment.served_model_name}` is unavailable ({why}) "
            "and no overflow deployment is set.", "server_error",
            code="external_unavailable", headers=[(b"retry-after", b"5")],
        )  # fmt: skip
    body, o_headers = _overflow_request(overflow, raw, scope, call.request_id)
    o_url = f"{overflow.upstream}/v1/{_path(call.route)}"
    call.served_by = SERVED_OVERFLOW
    woken = await _admit_overflow(gw, call, overflow)
    # The record stays the external deployment's; the TLS name is the overflow's, and so is the
    # rule for its address (an organization's own cluster: public addresses only).
    call.deployment = replace(deployment, upstream_host=overflow.upstream_host, public_only=overflow.public_only)
    try:
        if call.stream:
            await gw._proxy_stream(scope, receive, send, call, o_url, body, o_headers, extra)
        else:
            await gw._proxy(send, call, o_url, body, o_headers, extra)
    finally:
        if woken is not None and woken.admitted:
            try:
                await gw._load_finish(overflow.id, call.request_id, (time.perf_counter() - call.started) * 1000, 0)
            except Exception:  # noqa: BLE001 - the load count is best effort, the answer is out
                pass


async def _admit_overflow(gw, call, overflow):
    """The overflow deployment may sit at zero replicas: count the request in its load too, so
    the autoscaler scales it up and the request waits for it (gateway.app's `_admit`, up to the
    overflow's cold_start_hold_seconds). Refused there (still starting), the caller gets that
    503 and the external deployment's own count is taken back."""
    admit = getattr(gw, "_admit", None)
    if admit is None:
        return None
    woken = replace(call, deployment=overflow, admitted=False)
    try:
        await admit(woken)
    except GatewayError:
        if call.admitted:
            await gw._load_finish(call.deployment.id, call.request_id, 0.0, 0)
        raise
    return woken


async def _try_external(gw, send, call, url, raw, headers, extra, options, overflow) -> str:
    """served (2xx–4xx but 429, sent), answered (a failure sent as is: no overflow), failed."""
    timeout = aiohttp.ClientTimeout(total=float(options.get("timeout_s") or 30))
    try:
        async with gw.external_session.post(url, data=raw, headers=headers, timeout=timeout, allow_redirects=False) as response:
            content = await response.read()
            status = response.status
            content_type = response.headers.get("content-type", "application/json")
    except (TimeoutError, aiohttp.ClientError) as exc:
        if overflow is not None:
            return "failed"
        await Breaker(gw._redis, call.deployment.id, options).failure()
        error = gw._upstream_error(exc, call.deployment)
        call.served_by = SERVED_EXTERNAL
        await gw._record(call, error.status, actual=0)
        raise error from None
    failed = status >= 500 or status == 429
    if failed and overflow is not None:
        return "failed"
    prompt, completion = usage_from_bytes(content) if status == 200 else (0, 0)
    call.served_by = SERVED_EXTERNAL
    await gw._record(call, status, prompt=prompt, completion=completion, actual=prompt + completion)
    await gw._send(send, status, content, content_type=content_type.encode(), headers=extra)
    return "answered" if failed else "served"


# ---- the health check (gateway.tasks.check_external_endpoints, sync, in Celery) ----------------
HEALTH_TIMEOUT_S = 5.0
HEALTH_INTERVAL_S = 15  # console/settings.py's beat schedule "gateway-check-external"


def probe(url: str, credential: str) -> tuple[bool, str]:
    """GET <base>/models with the endpoint's key: (healthy, what was seen, in our words)."""
    refusal = external_url_refusal(url)
    if refusal:
        return False, refusal
    headers = {"authorization": f"Bearer {credential}"} if credential else {}
    try:
        status = _run_apart(_status_of(base_url(url) + "/models", headers))
    except TimeoutError:
        return False, f"no answer within {HEALTH_TIMEOUT_S:g} s"
    except aiohttp.ClientError as exc:
        return False, unreachable_words(exc)
    if status >= 500 or status == 429:
        return False, f"answered HTTP {status}"
    if is_redirect(status):
        # Not followed (here or by the gateway): requests to it would all fail with a 502.
        return False, (f"answered with a redirect (HTTP {status}) to another address; ModelDeck does not "
                       "follow upstream redirects, point the endpoint at its final URL")
    if not is_passed_on(status):  # 101 Switching Protocols, a status beyond 599: every call a 502
        return False, f"answered HTTP {status}, which is not an answer ModelDeck passes on"
    return True, f"answered HTTP {status}"


def _run_apart(coroutine):
    """asyncio.run, on a thread of its own when this one already runs an event loop (a caller
    inside async code, e.g. a task run eagerly from the console's ASGI thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _status_of(url: str, headers: dict[str, str]) -> int:
    """The status of a GET, within HEALTH_TIMEOUT_S in all (a per-read time-out would let an
    endpoint trickling its headers a byte at a time hold a sync probe, and one of the health
    check's few threads, for ever). The body is never read. Through the gateway's own kind of
    session for external endpoints: public addresses only, checked when connecting (DNS
    rebinding), and no redirect followed."""
    async with asyncio.timeout(HEALTH_TIMEOUT_S):
        async with make_session(read_timeout=HEALTH_TIMEOUT_S, public_only=True) as session:
            try:
                async with session.get(url, headers=headers, allow_redirects=False) as response:
                    return response.status
            except UpstreamRedirect as exc:
                return exc.status


def unreachable_words(exc: aiohttp.ClientError) -> str:
    """Why a probe got no answer, as a person says it ("connection refused"), not a class name."""
    refused = private_address_refusal(exc)
    if refused is not None:
        return str(refused)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the connection closed without an answer"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "the host name does not resolve"
        if isinstance(cause, ssl.SSLCertVerificationError):
            return "its TLS certificate is not trusted"
        if isinstance(cause, ssl.SSLError):
            return "the TLS handshake failed"
        if isinstance(cause, OSError) and cause.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return "no route to the host"
        cause = getattr(cause, "os_error", None) or cause.__cause__ or cause.__context__
    text = str(exc).lower()
    for words in ("connection refused", "name or service not known", "certificate verify failed"):
        if words in text:  # in case only the message was kept
            return {"name or service not known": "the host name does not resolve",
                    "certificate verify failed": "its TLS certificate is not trusted"}.get(words, words)  # fmt: skip
    return f"unreachable ({type(exc).__name__})"


def record_health(client, deployment_id: int, options: dict, healthy: bool) -> None:
    """The health check's verdict on the shared breaker (a sync Redis client): healthy closes
    it; unhealthy opens it at once (a failed check is not a passing blip)."""
    key = _k(deployment_id, "cb")
    if healthy:
        if client.hget(key, "open_until"):
            client.delete(key, _k(deployment_id, "probe"))
        return
    cooldown_ms = int(options.get("cooldown_s") or 30) * 1000
    threshold = int(options.get("failure_threshold") or 3)
    pipe = client.pipeline(transaction=False)
    pipe.hset(key, mapping={"fails": threshold, "open_until": _now_ms() + cooldown_ms})
    pipe.expire(key, max(3600, cooldown_ms // 1000 * 4))
    pipe.execute()


def breaker_state(deployment_id: int, verdict: tuple[str, float, dict] | None = None) -> dict[str, Any]:
    """What the deployment page shows: closed / open (until when) / half-open, failures, in flight.
    Without Redis the page is drawn by the gateway's own process: its breaker learns the health
    check's `verdict` (health, checked at, options) first, as the next routing table load would."""
    if not settings.REDIS_URL:
        if verdict is not None:
            health, checked_at, options = verdict
            Breaker(None, deployment_id, options).learn(health, checked_at)
        fails, open_until = _local.get(_k(deployment_id, "cb"), (0, 0))
        inflight = _local.get(_k(deployment_id, "inflight"), 0)
    else:
        client = redis.Redis.from_url(settings.REDIS_URL)
        try:
            fails, open_until = client.hmget(_k(deployment_id, "cb"), "fails", "open_until")
            inflight = client.get(_k(deployment_id, "inflight"))
        finally:
            client.close()
    fails, open_until, inflight = int(fails or 0), int(open_until or 0), int(inflight or 0)
    now = _now_ms()
    state = "closed" if not open_until else ("open" if now < open_until else "half-open")
    return {"state": state, "failures": fails, "retry_in_s": max(0, (open_until - now) // 1000) if open_until else 0,
            "in_flight": max(0, inflight)}  # fmt: skip


def learn(deployments) -> None:
    """Without Redis: each external deployment's breaker in this process takes the health check's
    verdict from a freshly loaded routing table (gateway.app `_reload_deployments`)."""
    for info in deployments:
        if info.external:
            Breaker(None, info.id, info.external_options or {}).learn(info.health, info.health_checked_at)
