"""Bench-only helpers: a throwaway PostgreSQL database, and bulk seeding of large data sets.

This is the one documented path that writes rows with `bulk_create` instead of the services:
10,000 deployments and 100,000 usage records through `deployment_create` would take many
minutes and push 10,000 times. Rows are shaped as the services leave them (a first revision
per deployment, current = serving); product code and tests never import this module.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from urllib.parse import urlsplit, urlunsplit

# The server the bench database is created on (its `postgres` maintenance database).
ADMIN_URL = os.environ.get("BENCH_DATABASE_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")


@contextmanager
def bench_database(name: str) -> Iterator[str]:
    """CREATE a database of our own, yield its URL, DROP it afterwards (only the one we made)."""
    import psycopg

    # A stopped bench (SIGTERM, e.g. a timeout) still drops its database on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    db = f"modeldeck_bench_{name}_{os.getpid()}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    parts = urlsplit(ADMIN_URL)
    try:
        yield urlunsplit(parts._replace(path=f"/{db}"))
    finally:
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # Django never got configured: nothing of ours is connected
            pass
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def seed_deployments(*, project, model, bundle, pools, count: int, spec: dict, states=None):
    """`count` deployments over `pools`, each with revision 1 as current and serving revision.
    `states(i)` picks each row's state (default Running)."""
    from deployments.models import DeploymentState, ModelDeployment, Revision

    pick = states or (lambda i: DeploymentState.RUNNING)
    rows = ModelDeployment.objects.bulk_create(
        (
            ModelDeployment(project=project, model=model, bundle=bundle, pool=pools[i % len(pools)],
                            name=f"d{i:05d}", state=pick(i), state_reason="Revision 1: 1/1 replicas ready.")
            for i in range(count)
        ),
        batch_size=2000,
    )  # fmt: skip
    revisions = Revision.objects.bulk_create(
        (Revision(deployment=row, number=1, spec={**spec, "served_model_name": row.name}) for row in rows),
        batch_size=2000,
    )  # fmt: skip
    for row, revision in zip(rows, revisions, strict=True):
        row.current_revision = row.serving_revision = revision
    ModelDeployment.objects.bulk_update(rows, ["current_revision", "serving_revision"], batch_size=2000)
    return rows


def seed_usage(*, organization, user, deployments, keys, count: int, within: timedelta) -> None:
    """`count` usage records spread over the last `within`, over the given deployments and keys."""
    from django.utils import timezone

    from gateway.models import UsageRecord

    rng = random.Random(7)
    now = timezone.now()
    span = within.total_seconds()
    batch = []
    for i in range(count):
        deployment = deployments[rng.randrange(len(deployments))]
        key = keys[i % len(keys)]
        prompt, completion = rng.randint(10, 800), rng.randint(1, 400)
        batch.append(
            UsageRecord(
                request_id=uuid.uuid4().hex, deployment=deployment, deployment_name=deployment.name,
                organization=organization, user=user, api_key_id=key.pk, api_key_prefix=key.prefix,
                route="chat.completions", status_code=200 if i % 50 else 429, prompt_tokens=prompt,
                completion_tokens=completion, latency_ms=rng.uniform(20, 900), stream=bool(i % 3),
                cost=Decimal(prompt + completion) / Decimal(1_000_000), currency="USD",
                created_at=now - timedelta(seconds=rng.uniform(0, span)),
            )
        )  # fmt: skip
        if len(batch) == 5000:
            UsageRecord.objects.bulk_create(batch)
            batch = []
    if batch:
        UsageRecord.objects.bulk_create(batch)
