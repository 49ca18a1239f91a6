"""Per-deployment load, measured by the gateway in Redis for the autoscaler, and requests held at zero.

Every gateway process writes the same keys, so the autoscaler (deployments/autoscale.py) sees
the sum. Per request, two fixed-size command groups, each one round trip (no Lua: plain commands that
`admit_commands` / `finish_commands` return, sent with RedisRateLimiter.execute):

- at admit: the request joins the deployment's in-flight set (ZADD, scored by its start), the
  current 1-second bucket counts it (HINCRBY), the "last request" time is set, and the
  autoscaler's published scale (desired, ready) is read back — the gateway needs it to know
  whether the deployment is at zero;
- at finish: it leaves the in-flight set, and the bucket adds its output tokens, its busy time
  and one count in a latency histogram bin (for the p95).

Buckets live `BUCKET_TTL_SECONDS`; an in-flight entry older than `IN_FLIGHT_MAX_AGE_SECONDS`
(a gateway that died mid-request) stops counting and is swept by the autoscaler's read.
No database on this path.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from console.queue import enqueue

log = logging.getLogger(__name__)

BUCKET_SECONDS = 1
BUCKET_TTL_SECONDS = 180
IN_FLIGHT_MAX_AGE_SECONDS = 900
# Upper bounds (ms) of the latency histogram bins; the last bin is everything above.
LATENCY_BINS_MS = (10, 25, 50, 100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200, 102400)
# How long a published scale stays valid: if the autoscaler stops, the gateway stops holding.
SCALE_TTL_SECONDS = 60
WAKE_TTL_SECONDS = 5


def in_flight_key(deployment_id: int) -> str:
    return f"md:load:{deployment_id}:inflight"


def bucket_key(deployment_id: int, bucket: int) -> str:
    return f"md:load:{deployment_id}:b:{bucket}"


def last_key(deployment_id: int) -> str:
    return f"md:load:{deployment_id}:last"


def scale_key(deployment_id: int) -> str:
    """The autoscaler's published scale: a hash {desired, ready} (absent: not autoscaled)."""
    return f"md:scale:{deployment_id}"


def wake_key(deployment_id: int) -> str:
    return f"md:wake:{deployment_id}"


def latency_bin(latency_ms: float) -> int:
    return bisect.bisect_left(LATENCY_BINS_MS, latency_ms)


# ---- the gateway's side: two small command groups per request ------------------------------


def admit_commands(deployment_id: int, request_id: str, now: float) -> list[tuple]:
    """The admit commands (4 writes, 1 read: the last reply is the scale)."""
    bucket = bucket_key(deployment_id, int(now // BUCKET_SECONDS))
    return [
        ("ZADD", in_flight_key(deployment_id), now, request_id),
        ("HINCRBY", bucket, "r", 1),
        ("EXPIRE", bucket, BUCKET_TTL_SECONDS),
        ("SET", last_key(deployment_id), f"{now:.3f}", "EX", IN_FLIGHT_MAX_AGE_SECONDS * 8),
        ("HMGET", scale_key(deployment_id), "desired", "ready"),
    ]


def finish_commands(
    deployment_id: int, request_id: str, now: float, latency_ms: float, output_tokens: int
) -> list[tuple]:
    """The finish commands (5 writes)."""
    bucket = bucket_key(deployment_id, int(now // BUCKET_SECONDS))
    return [
        ("ZREM", in_flight_key(deployment_id), request_id),
        ("HINCRBY", bucket, "t", int(output_tokens)),
        ("HINCRBY", bucket, "b", int(latency_ms)),  # busy milliseconds: average concurrency
        ("HINCRBY", bucket, f"l{latency_bin(latency_ms)}", 1),
        ("EXPIRE", bucket, BUCKET_TTL_SECONDS),
    ]


@dataclass(frozen=True)
class PublishedScale:
    """What the autoscaler last published for a deployment (None fields: not autoscaled)."""

    desired: int | None
    ready: int | None

    @property
    def at_zero(self) -> bool:
        """No replica ready while the deployment is autoscaled: the request must wait."""
        return self.ready is not None and self.ready == 0


def parse_scale(raw: list) -> PublishedScale:
    values = [int(v) if v not in (None, b"", "") else None for v in raw]
    return PublishedScale(desired=values[0], ready=values[1])


# ---- the autoscaler's side: one pipeline for many deployments ------------------------------


@dataclass(frozen=True)
class Load:
    """A deployment's load over the last `window` seconds, summed over gateway processes."""

    in_flight: int = 0
    concurrency: float = 0.0  # average requests in flight over the window (busy time / window)
    requests_per_second: float = 0.0
    output_tokens_per_second: float = 0.0
    latency_p95_ms: float = 0.0
    requests: int = 0  # arrivals in the window
    last_request_at: float | None = None  # epoch seconds

    def value(self, metric: str) -> float:
        if metric == "concurrency":
            return max(float(self.in_flight), self.concurrency)
        if metric == "requests_per_second":
            return self.requests_per_second
        if metric == "output_tokens_per_second":
            return self.output_tokens_per_second
        return self.latency_p95_ms


def _p95(histogram: list[int]) -> float:
    total = sum(histogram)
    if not total:
        return 0.0
    rank = math.ceil(total * 0.95)
    seen = 0
    for index, count in enumerate(histogram):
        seen += count
        if seen >= rank:
            return float(LATENCY_BINS_MS[index]) if index < len(LATENCY_BINS_MS) else float(LATENCY_BINS_MS[-1] * 2)
    return float(LATENCY_BINS_MS[-1] * 2)


def read_loads(client: Any, deployment_ids: list[int], *, window: int, now: float | None = None) -> dict[int, Load]:
    """Every deployment's Load in one pipeline (a synchronous redis client)."""
    now = time.time() if now is None else now
    if not deployment_ids:
        return {}
    last_bucket = int(now // BUCKET_SECONDS)
    buckets = range(last_bucket - max(1, window // BUCKET_SECONDS) + 1, last_bucket + 1)
    pipe = client.pipeline(transaction=False)
    for dep in deployment_ids:
        stale = now - IN_FLIGHT_MAX_AGE_SECONDS
        pipe.zremrangebyscore(in_flight_key(dep), "-inf", stale)
        pipe.zcard(in_flight_key(dep))
        pipe.get(last_key(dep))
        for bucket in buckets:
            pipe.hgetall(bucket_key(dep, bucket))
    raw = pipe.execute()
    loads: dict[int, Load] = {}
    per = 3 + len(buckets)
    for index, dep in enumerate(deployment_ids):
        part = raw[index * per : (index + 1) * per]
        in_flight = int(part[1] or 0)
        last = float(part[2]) if part[2] else None
        requests = tokens = busy_ms = 0
        histogram = [0] * (len(LATENCY_BINS_MS) + 1)
        for fields in part[3:]:
            for name, value in (fields or {}).items():
                name = name.decode() if isinstance(name, bytes) else name
                count = int(value)
                if name == "r":
                    requests += count
                elif name == "t":
                    tokens += count
                elif name == "b":
                    busy_ms += count
                elif name.startswith("l") and name[1:].isdigit() and int(name[1:]) < len(histogram):
                    histogram[int(name[1:])] += count
        span = float(len(buckets) * BUCKET_SECONDS)
        loads[dep] = Load(
            in_flight=in_flight,
            concurrency=round(busy_ms / 1000.0 / span, 2),
            requests_per_second=round(requests / span, 2),
            output_tokens_per_second=round(tokens / span, 2),
            latency_p95_ms=_p95(histogram),
            requests=requests,
            last_request_at=last,
        )
    return loads


def publish_scale(pipe: Any, deployment_id: int, *, desired: int, ready: int) -> None:
    """What the gateway reads at admit: hold requests while `ready` is 0."""
    pipe.hset(scale_key(deployment_id), mapping={"desired": desired, "ready": ready})
    pipe.expire(scale_key(deployment_id), SCALE_TTL_SECONDS)


def unpublish_scale(pipe: Any, deployment_id: int) -> None:
    pipe.delete(scale_key(deployment_id))


# ---- held requests (scale from zero), one per gateway process ------------------------------


class QueueFull(Exception):
    """The deployment's hold queue in this gateway process is full."""


class ColdStartHolds:
    """Requests to a deployment at zero wait here, in a bounded queue per deployment, until the
    autoscaler publishes a ready replica (one poller per deployment, whatever the waiters)."""

    POLL_SECONDS = 0.2

    def __init__(self, *, bound: int) -> None:
        self.bound = bound
        self.waiting: dict[int, int] = {}
        self._ready: dict[int, asyncio.Event] = {}
        self._pollers: dict[int, asyncio.Task] = {}
        self.carried = 0  # held requests that went on to their replica (the bench reads it)

    async def hold(
        self, redis: Any, deployment_id: int, *, timeout: float, wake: Callable[[int], Any]
    ) -> bool:
        """Wait until a replica is ready (True) or `timeout` passes (False); QueueFull at once
        when `bound` requests already wait. The first waiter asks for a scale-up (`wake`)."""
        if self.waiting.get(deployment_id, 0) >= self.bound:
            raise QueueFull
        self.waiting[deployment_id] = self.waiting.get(deployment_id, 0) + 1
        try:
            event = self._ready.get(deployment_id)
            if event is None or event.is_set():
                event = self._ready[deployment_id] = asyncio.Event()
            if deployment_id not in self._pollers:
                self._pollers[deployment_id] = asyncio.ensure_future(self._poll(redis, deployment_id, event, wake))
            try:
                await asyncio.wait_for(event.wait(), timeout)
            except TimeoutError:
                return False
            self.carried += 1
            return True
        finally:
            self.waiting[deployment_id] -= 1
            if not self.waiting[deployment_id]:
                del self.waiting[deployment_id]

    async def _poll(self, redis: Any, deployment_id: int, event: asyncio.Event, wake: Callable[[int], Any]) -> None:
        try:
            next_wake = 0.0
            while self.waiting.get(deployment_id):
                try:
                    if time.monotonic() >= next_wake:
                        # One wake per deployment across gateway processes every few seconds
                        # (again if the first was lost: the autoscaler's tick also sees the load).
                        if await redis.set(wake_key(deployment_id), "1", nx=True, ex=WAKE_TTL_SECONDS):
                            asyncio.ensure_future(wake(deployment_id))
                        next_wake = time.monotonic() + WAKE_TTL_SECONDS
                    scale = parse_scale(await redis.hmget(scale_key(deployment_id), "desired", "ready"))
                    if not scale.at_zero:
                        event.set()
                        return
                except Exception:  # noqa: BLE001 - Redis hiccup: the waiters' timeout still bounds them
                    log.warning("cold-start poll failed", exc_info=True, extra={"deployment": deployment_id})
                await asyncio.sleep(self.POLL_SECONDS)
        finally:
            self._pollers.pop(deployment_id, None)


WAKE_TASK = "deployments.autoscale_wake"


_local_wake: Callable[[int], None] | None = None


def set_local_wake(waker: Callable[[int], None] | None) -> None:
    """The embedded mode's autoscaler, in this process (deployments.autoscale.EmbeddedAutoscaler),
    takes the wakes itself: a worker's would read another process's (empty) memory."""
    global _local_wake  # noqa: PLW0603 - one autoscaler per process
    _local_wake = waker


def wake(deployment_id: int) -> None:
    """Queue the autoscaler's immediate step for a deployment at zero (by name: the gateway's
    domain modules don't import tasks). Runs in a worker thread of the gateway."""
    from django.conf import settings
    from django.db import close_old_connections, connection

    if _local_wake is not None and not settings.REDIS_URL:
        _local_wake(deployment_id)
        return
    close_old_connections()
    try:
        # Not queued: the next autoscaler tick sees the held request anyway.
        enqueue(WAKE_TASK, deployment_id, what="scale-up from zero", deployment=deployment_id)
    finally:
        connection.close()  # eager tasks (tests, embedded) used this thread's connection
