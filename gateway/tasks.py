"""Celery tasks: drain the gateway's usage buffer from Redis into UsageRecord rows; fold new
records into the hourly usage rollups."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from decimal import Decimal

from celery import shared_task
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from deployments.models import ModelDeployment
from gateway import rollup
from gateway.models import UsageRecord
from gateway.usage import USAGE_LIST_KEY
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
    if not events:
        return 0
    # Rows the events point at may be gone by now (a deleted deployment, user or organization).
    dep_ids = set(
        ModelDeployment.objects.filter(
            pk__in={e["deployment_id"] for e in events if e["deployment_id"]}
        ).values_list("pk", flat=True)
    )
    org_ids = set(
        Organization.objects.filter(pk__in={e["organization_id"] for e in events}).values_list(
            "pk", flat=True
        )
    )
    user_ids = set(
        get_user_model()
        .objects.filter(pk__in={e["user_id"] for e in events if e["user_id"]})
        .values_list("pk", flat=True)
    )
    records = [
        UsageRecord(
            request_id=e["request_id"],
            deployment_id=e["deployment_id"] if e["deployment_id"] in dep_ids else None,
            deployment_name=e["deployment_name"][:100],
            organization_id=e["organization_id"],
            user_id=e["user_id"] if e["user_id"] in user_ids else None,
            api_key_id=e["api_key_id"],
            api_key_prefix=e["api_key_prefix"],
            revision_id=e.get("revision_id"),
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
        for e in events
        if e["organization_id"] in org_ids
    ]
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


@shared_task(name="gateway.flush_usage", ignore_result=True)
def flush_usage(max_batches: int = 50) -> int:
    """Move buffered usage events into the database, oldest first, in batches.

    Read a batch, insert it (ignore_conflicts on request_id), then trim it from the list: a
    crash between insert and trim re-inserts nothing next time. A lock keeps two flushes
    from trimming each other's batches when beat runs late and fires twice.
    """
    if not settings.REDIS_URL:
        return 0  # embedded mode writes usage directly
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
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
        client.close()
    return written


@shared_task(name="gateway.fold_usage", ignore_result=True)
def fold_usage() -> int:
    """Fold the usage records committed since the last run into the hourly rollups (safe to
    run twice at once: gateway/rollup.py claims each batch on the cursor row)."""
    return rollup.fold()
