"""Celery tasks: write the gateway's usage events (a Redis Stream, see gateway.usage) as UsageRecord
rows; fold new records into the hourly usage rollups."""

from __future__ import annotations

import json
import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import datetime
from decimal import Decimal

from celery import shared_task
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from deployments.external import external_health_record
from deployments.models import ModelDeployment
from gateway import overflow, rollup
from gateway.cache import sync_redis
from gateway.models import UsageRecord
from gateway.usage import (
    CLAIM_IDLE_MS,
    MAX_TOKEN_COUNT,
    USAGE_GROUP,
    USAGE_LIST_KEY,
    USAGE_STREAM_KEY,
)
from projects.models import APIKey, Organization

log = logging.getLogger(__name__)

BATCH = 1000
LOCK_KEY = "modeldeck:gateway:usage:flush-lock"
LOCK_SECONDS = 120


def write_events(raw_events: list[bytes]) -> int:
    """Insert one batch; request_id is unique, so a batch written twice changes nothing."""
    events = []
    for raw in raw_events:
        try:
            events.append(json.loads(raw))
        except ValueError:
            log.error("dropping an unreadable usage event: %r", raw[:200])
    events = [e for e in events if isinstance(e, dict)]
    if not events:
        return 0

    def ids(field: str) -> set[int]:
        return {e[field] for e in events if type(e.get(field)) is int}

    # Rows the events point at may be gone by now (a deleted deployment, user or organization).
    dep_ids = set(ModelDeployment.objects.filter(pk__in=ids("deployment_id")).values_list("pk", flat=True))
    org_ids = set(Organization.objects.filter(pk__in=ids("organization_id")).values_list("pk", flat=True))
    user_ids = set(get_user_model().objects.filter(pk__in=ids("user_id")).values_list("pk", flat=True))
    records = []
    for e in events:
        if e.get("organization_id") not in org_ids:
            continue
        try:
            records.append(_record(e, dep_ids, user_ids))
        except (KeyError, TypeError, ValueError, ArithmeticError):
            # Not what a gateway writes: kept out so it can't block every batch after it.
            log.error("dropping a malformed usage event: %r", e)
    with transaction.atomic():
        UsageRecord.objects.bulk_create(records, ignore_conflicts=True, batch_size=500)
        # last_used_at only moves forward, whatever order batches arrive in.
        last_used: dict[int, datetime] = {}
        for r in records:
            if r.api_key_id and (
                r.api_key_id not in last_used or r.created_at > last_used[r.api_key_id]
            ):
                last_used[r.api_key_id] = r.created_at
        for key_id, when in last_used.items():
            APIKey.objects.filter(pk=key_id).exclude(last_used_at__gte=when).update(
                last_used_at=when
            )
    return len(records)


def _ensure_group(client) -> None:
    import redis

    try:
        # From the stream's start: entries queued before the group existed are read too.
        client.xgroup_create(USAGE_STREAM_KEY, USAGE_GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _write_entries(client, entries) -> int:
    """Write one batch of stream entries, then acknowledge (and delete) them: after the commit."""
    if not entries:
        return 0
    written = write_events([fields[b"e"] for _, fields in entries if fields and b"e" in fields])
    ids = [entry_id for entry_id, _ in entries]
    pipe = client.pipeline(transaction=False)
    pipe.xack(USAGE_STREAM_KEY, USAGE_GROUP, *ids)
    pipe.xdel(USAGE_STREAM_KEY, *ids)
    pipe.execute()
    return written


def consume_usage(
    client, consumer: str, *, max_batches: int = 50, claim_idle_ms: int = CLAIM_IDLE_MS
) -> int:
    """One consumer's pass over the stream: first what dead consumers left pending (idle longer
    than claim_idle_ms), then new entries. Returns the records written."""
    _ensure_group(client)
    written = 0
    start = "0-0"
    for _ in range(max_batches):
        start, entries, *_ = client.xautoclaim(
            USAGE_STREAM_KEY, USAGE_GROUP, consumer, claim_idle_ms, start_id=start, count=BATCH
        )
        written += _write_entries(client, entries)
        if start in (b"0-0", "0-0"):
            break
    for _ in range(max_batches):
        response = client.xreadgroup(USAGE_GROUP, consumer, {USAGE_STREAM_KEY: ">"}, count=BATCH)
        entries = response[0][1] if response else []
        written += _write_entries(client, entries)
        if len(entries) < BATCH:
            break
    return written


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _record(e: dict, dep_ids: set, user_ids: set) -> UsageRecord:
    for field in ("prompt_tokens", "completion_tokens"):
        if not 0 <= e[field] <= MAX_TOKEN_COUNT:  # the database would refuse the whole batch
            raise ValueError(f"{field} out of range")
    return UsageRecord(
        request_id=e["request_id"],
        deployment_id=e["deployment_id"] if e["deployment_id"] in dep_ids else None,
        deployment_name=e["deployment_name"][:100],
        organization_id=e["organization_id"],
        user_id=e["user_id"] if e["user_id"] in user_ids else None,
        api_key_id=e["api_key_id"],
        api_key_prefix=e["api_key_prefix"],
        revision_id=e.get("revision_id"),
        served_by=str(e.get("served_by") or "")[:10],
        route=e["route"],
        status_code=e["status_code"],
        prompt_tokens=e["prompt_tokens"],
        completion_tokens=e["completion_tokens"],
        latency_ms=e["latency_ms"],
        ttft_ms=e["ttft_ms"],
        stream=e["stream"],
        cost=Decimal(e["cost"]),
        currency=e["currency"],
        created_at=datetime.fromisoformat(e["created_at"]),
    )


@shared_task(name="gateway.flush_usage", ignore_result=True)
def flush_usage(max_batches: int = 50) -> int:
    """Move queued usage events into the database, oldest first, in batches.

    The stream's consumer group lets several flushes run at once (each reads other entries);
    an entry is acknowledged only after its batch committed, and request_id is unique, so a
    crash anywhere re-inserts nothing. The list of older versions is drained under a lock.
    """
    if not settings.REDIS_URL:
        return 0  # embedded mode writes usage directly

    client = sync_redis()
    try:
        written = consume_usage(client, consumer_name(), max_batches=max_batches)
        if client.exists(USAGE_LIST_KEY):
            written += _drain_list(client, max_batches)
    finally:
        client.close()
    return written


def _drain_list(client, max_batches: int) -> int:
    import redis

    lock = client.lock(LOCK_KEY, timeout=LOCK_SECONDS, blocking=False)
    if not lock.acquire():
        return 0
    written = 0
    try:
        for _ in range(max_batches):
            batch = client.lrange(USAGE_LIST_KEY, 0, BATCH - 1)
            if not batch:
                break
            written += write_events(batch)
            client.ltrim(USAGE_LIST_KEY, len(batch), -1)
            if len(batch) < BATCH:
                break
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:
            pass
    return written


@shared_task(name="gateway.fold_usage", ignore_result=True)
def fold_usage() -> int:
    """Fold the usage records committed since the last run into the hourly rollups (safe to
    run twice at once: gateway/rollup.py claims each batch on the cursor row)."""
    return rollup.fold()


# Probes at once: a round of dead endpoints (each waits out overflow.HEALTH_TIMEOUT_S) takes about
# one time-out per this many, not one per endpoint, so it keeps within the 15 s between rounds:
# at least 8 threads, one per 2 endpoints beyond that (a round of dead ones then takes about two
# time-outs, 10 s), at most 64 (128 dead endpoints; past that, rounds take longer than 15 s).
HEALTH_CHECK_THREADS = 8
HEALTH_CHECK_MAX_THREADS = 64


@shared_task(name="gateway.check_external_endpoints")
def check_external_endpoints() -> dict[str, int]:
    """Health-check every running external deployment (beat, every 15 s, in every mode): the
    verdict goes on the deployment's row (what the pages and the API show; a change reaches the
    gateways through their routing tables) and, with Redis, opens or closes the breaker all
    gateway processes share at once (gateway/overflow.py)."""
    return _check_endpoints(ModelDeployment.objects.all())


@shared_task(name="gateway.check_external_endpoint", ignore_result=True)
def check_external_endpoint(deployment_id: int) -> dict[str, int]:
    """Health-check one external deployment now (queued on commit when its URL changed, so its
    page shows the new URL's verdict within seconds, not at the next round); nothing if it is
    gone, not external or not running."""
    return _check_endpoints(ModelDeployment.objects.filter(pk=deployment_id))


def _check_endpoints(qs) -> dict[str, int]:
    """Probe the running external deployments of `qs` concurrently (HTTP only in the threads);
    each verdict is recorded here, in this thread, as it comes."""
    rows = list(qs.filter(kind="external", state="running").select_related("current_revision"))
    counts = {"checked": 0, "healthy": 0}
    if not rows:
        return counts
    client = sync_redis() if settings.REDIS_URL else None
    try:
        threads = min(len(rows), max(HEALTH_CHECK_THREADS, min(HEALTH_CHECK_MAX_THREADS, -(-len(rows) // 2))))
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="health-check") as pool:
            probes = {
                pool.submit(overflow.probe, row.external_url, row.external_credential): row for row in rows
            }
            for done in as_completed(probes):
                row = probes[done]
                try:
                    healthy, seen = done.result()
                except Exception:  # a broken probe says nothing of the endpoint; the others still count
                    log.exception("external endpoint not checked", extra={"deployment": row.pk})
                    continue
                external_health_record(deployment=row, healthy=healthy, detail=seen)
                if client is not None:
                    overflow.record_health(client, row.pk, row.spec().get("external") or {}, healthy)
                counts["checked"] += 1
                counts["healthy"] += healthy
                if not healthy:
                    log.info("external endpoint unhealthy", extra={"deployment": row.pk, "seen": seen})
    finally:
        if client is not None:
            client.close()
    return counts
