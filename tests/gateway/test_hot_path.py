"""The hot path: no database reads per request (only cache misses), and the flush task's registration."""

from __future__ import annotations

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
    # Deployments are re-read at most once per second (state changes show within 1 s).
    assert calls["deployments"] <= int(elapsed) + 3
    assert calls["deployments"] < 40


def test_flush_task_is_registered_under_the_beat_schedule_name():
    from django.conf import settings

    from console.celery import app

    app.loader.import_default_modules()
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "gateway.flush_usage" in scheduled
    assert "gateway.flush_usage" in app.tasks
