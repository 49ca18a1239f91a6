"""The hot path: no database reads per request (only cache misses and generation changes, one
reload at a time), and the flush task's registration."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.gateway.conftest import make_deployment, make_key

pytestmark = pytest.mark.django_db(transaction=True)


def test_requests_read_the_database_only_on_cache_misses(tenants, gateway):
    make_deployment(tenants.project, "llama", served_model_name="llama-chat")
    secret = make_key(tenants.member, tenants.org)
    app = gateway.app.gateway
    calls = {"key": 0, "deployments": 0}
    load_key, load_deployments = app._load_key, app._load_deployments

    async def counting_key(digest):
        calls["key"] += 1
        return await load_key(digest)

    async def counting_deployments(org_id):
        calls["deployments"] += 1
        return await load_deployments(org_id)

    app._load_key, app._load_deployments = counting_key, counting_deployments
    started = time.monotonic()
    with httpx.Client(
        base_url=gateway.base_url, headers={"authorization": f"Bearer {secret}"}
    ) as client:
        for _ in range(40):
            body = {"model": "llama-chat", "messages": [{"role": "user", "content": "hi"}]}
            assert client.post("/chat/completions", json=body).status_code == 200
    elapsed = time.monotonic() - started
    # The first request after start sees a new generation and reloads once; then nothing.
    assert calls["key"] <= 2
    # The routing table is read once and kept while the generation stays (no expiry per second).
    assert calls["deployments"] == 1, (calls, elapsed)


def test_a_change_reloads_the_table_once_and_the_old_one_answers_meanwhile(tenants, gateway, _clean_redis):
    """Another process commits a change (the shared generation moves): 32 concurrent requests
    start one reload between them (single flight), and while it is slow they are answered from
    the previous table instead of waiting for it."""
    import asyncio

    from gateway.cache import GENERATION_KEY
    from tests.gateway.test_rate_limits import run_in_fresh_loop

    make_deployment(tenants.project, "llama", served_model_name="llama-chat")
    secret = make_key(tenants.member, tenants.org)
    headers = {"authorization": f"Bearer {secret}"}
    body = {"model": "llama-chat", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(gateway.base_url + "/chat/completions", json=body, headers=headers).status_code == 200
    app = gateway.app.gateway
    load_deployments = app._load_deployments
    loads, loaded = [], []
    release = threading.Event()

    async def slow_load(org_id):
        loads.append(org_id)
        # A table of 10,000 deployments takes seconds: this one takes until the burst is answered
        # (a fixed sleep raced 32 requests on a busy machine).
        await asyncio.to_thread(release.wait, 30)
        table = await load_deployments(org_id)
        loaded.append(org_id)
        return table

    app._load_deployments = slow_load
    _clean_redis.incr(GENERATION_KEY)  # a commit in another process (no in-process bump)

    async def burst():
        async with httpx.AsyncClient(base_url=gateway.base_url, headers=headers, timeout=30) as client:
            responses = await asyncio.gather(*(client.post("/chat/completions", json=body) for _ in range(32)))
            return responses, list(loaded)

    try:
        responses, loaded_when_answered = run_in_fresh_loop(burst())
    finally:
        release.set()
    assert [r.status_code for r in responses] == [200] * 32
    assert len(loads) == 1  # one reload for all of them
    assert loaded_when_answered == []  # all answered from the old table, the reload still running
    deadline = time.monotonic() + 10
    while not loaded and time.monotonic() < deadline:
        time.sleep(0.01)
    assert loaded == [tenants.org.pk]
    assert httpx.post(gateway.base_url + "/chat/completions", json=body, headers=headers).status_code == 200
    assert len(loads) == 1  # the new table is in: no further reloads


def test_flush_task_is_registered_under_the_beat_schedule_name():
    from django.conf import settings

    from console.celery import app

    app.loader.import_default_modules()
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "gateway.flush_usage" in scheduled
    assert "gateway.flush_usage" in app.tasks
