"""Usage is durable: events go to a Redis Stream before the client sees the answer, and a
consumer group writes them, acknowledging only after the database commit.

- a gateway process killed (SIGKILL) mid-burst: every successful response has its record;
- a consumer that read entries and died before writing them: the next consumer claims them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import redis
from django.conf import settings
from django.db import connection

from gateway.models import UsageRecord
from gateway.tasks import consume_usage, flush_usage
from gateway.usage import USAGE_GROUP, USAGE_STREAM_KEY, usage_from_body, usage_from_bytes
from tests.gateway.conftest import make_deployment, make_key
from tests.gateway.test_rate_limits import run_in_fresh_loop

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
CHAT = {"model": "llama-chat", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
LIMITS = {level: {"rpm": 100_000, "tpm": 10_000_000} for level in ("organization", "user", "api_key")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _database_url() -> str:
    """This test database, for a gateway process of its own."""
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))


def _start_gateway_process(engine_url: str, tmp_path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "console.settings",
        "DATABASE_URL": _database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "SECRET_KEY": "modeldeck-test",
        "MODELDECK_DATA_DIR": str(tmp_path),
        "MODELDECK_SANDBOX_ENGINE_URL": engine_url,
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "console.asgi:application", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--no-access-log"],
        env=env, cwd=ROOT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(url + "/healthz", timeout=1)
            return proc, url
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the gateway process did not start") from None
            time.sleep(0.1)


def test_gateway_killed_mid_burst_loses_no_usage_record(tenants, engine, engine_server, tmp_path):
    make_deployment(tenants.project, "llama", served_model_name="llama-chat", rate_limits=LIMITS)
    secret = make_key(tenants.member, tenants.org)
    proc, url = _start_gateway_process(engine_server[1], tmp_path)
    ok: list[str] = []
    failed = [0]

    async def burst() -> None:
        headers = {"authorization": f"Bearer {secret}", "x-sandbox-latency-ms": "20"}
        async with httpx.AsyncClient(base_url=url + "/v1", headers=headers, timeout=10) as client:

            async def worker() -> None:
                while True:
                    try:
                        response = await client.post("/chat/completions", json=CHAT)
                    except httpx.HTTPError:
                        failed[0] += 1  # in flight when the process died (or refused after)
                        return
                    assert response.status_code == 200, response.text
                    ok.append(response.headers["x-request-id"])

            async def killer() -> None:
                while len(ok) < 150:
                    await asyncio.sleep(0.01)
                os.kill(proc.pid, signal.SIGKILL)

            await asyncio.gather(killer(), *(worker() for _ in range(16)))

    try:
        run_in_fresh_loop(burst())
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert len(ok) >= 150
    flush_usage()
    written = set(UsageRecord.objects.filter(status_code=200).values_list("request_id", flat=True))
    assert set(ok) <= written  # every answered request was metered
    # Requests cut off by the kill may have been metered after the engine answered them (the
    # record is queued before the answer is sent); nothing else.
    assert len(written) - len(ok) <= failed[0]
    assert redis.Redis.from_url(settings.REDIS_URL).xlen(USAGE_STREAM_KEY) == 0


def test_entries_of_a_dead_consumer_are_claimed_and_written_once(tenants, gateway, _clean_redis):
    make_deployment(tenants.project, "llama", served_model_name="llama-chat")
    secret = make_key(tenants.member, tenants.org)
    with httpx.Client(base_url=gateway.base_url, headers={"authorization": f"Bearer {secret}"}) as client:
        ids = [client.post("/chat/completions", json=CHAT).headers["x-request-id"] for _ in range(12)]
    # A consumer reads everything, then dies before its database write (no XACK).
    flush_usage(max_batches=0)  # creates the group as the task does, reads nothing
    taken = _clean_redis.xreadgroup(USAGE_GROUP, "worker-that-died", {USAGE_STREAM_KEY: ">"}, count=100)
    assert len(taken[0][1]) == 12
    # Another consumer doesn't take entries that are still someone's, recently read ...
    assert consume_usage(_clean_redis, "worker-2") == 0
    assert UsageRecord.objects.count() == 0
    # ... but claims them once they sat idle past the claim time (the owner is dead).
    assert consume_usage(_clean_redis, "worker-2", claim_idle_ms=0) == 12
    assert sorted(UsageRecord.objects.values_list("request_id", flat=True)) == sorted(ids)
    assert _clean_redis.xpending(USAGE_STREAM_KEY, USAGE_GROUP)["pending"] == 0
    assert consume_usage(_clean_redis, "worker-3", claim_idle_ms=0) == 0
    assert UsageRecord.objects.count() == 12


def test_a_malformed_entry_does_not_block_the_ones_after_it(tenants, gateway, _clean_redis):
    make_deployment(tenants.project, "llama", served_model_name="llama-chat")
    secret = make_key(tenants.member, tenants.org)
    flush_usage(max_batches=0)  # the group exists
    _clean_redis.xadd(USAGE_STREAM_KEY, {"e": b'{"organization_id": %d, "cost": "x"}' % tenants.org.pk})
    _clean_redis.xadd(USAGE_STREAM_KEY, {"e": b"not json"})
    response = httpx.post(
        gateway.base_url + "/chat/completions", json=CHAT, headers={"authorization": f"Bearer {secret}"}
    )
    assert flush_usage() == 1
    assert list(UsageRecord.objects.values_list("request_id", flat=True)) == [response.headers["x-request-id"]]
    assert _clean_redis.xlen(USAGE_STREAM_KEY) == 0
    assert _clean_redis.xpending(USAGE_STREAM_KEY, USAGE_GROUP)["pending"] == 0


def test_token_counts_no_column_can_hold_are_dropped_without_blocking_the_batch(tenants, gateway, _clean_redis):
    """QA: an event whose tokens a PositiveIntegerField can't hold (an upstream's usage of 3e9 or
    -5) failed the whole batch on PostgreSQL, and every flush after it: no usage written at all."""
    make_deployment(tenants.project, "llama", served_model_name="llama-chat")
    secret = make_key(tenants.member, tenants.org)
    flush_usage(max_batches=0)  # the group exists
    response = httpx.post(
        gateway.base_url + "/chat/completions", json=CHAT, headers={"authorization": f"Bearer {secret}"}
    )
    (_, fields), = _clean_redis.xrange(USAGE_STREAM_KEY)
    good = json.loads(fields[b"e"])
    for n, tokens in enumerate((3_000_000_000, -5)):
        bad = {**good, "request_id": f"req_bad{n}", "prompt_tokens": tokens}
        _clean_redis.xadd(USAGE_STREAM_KEY, {"e": json.dumps(bad).encode()})
    assert flush_usage() == 1
    assert list(UsageRecord.objects.values_list("request_id", flat=True)) == [response.headers["x-request-id"]]
    assert _clean_redis.xpending(USAGE_STREAM_KEY, USAGE_GROUP)["pending"] == 0


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": 3_000_000_000, "completion_tokens": 1},
        {"prompt_tokens": -5, "completion_tokens": 1},
        {"prompt_tokens": [1], "completion_tokens": 1},
        {"prompt_tokens": float("inf"), "completion_tokens": 1},
        {"prompt_tokens": "12", "completion_tokens": 1},
    ],
)
def test_an_upstreams_usage_that_is_no_token_count_counts_nothing(usage):
    """An external endpoint is the tenant's own server: its `usage` is read, never trusted to be
    whole numbers a record can hold ([1] was a TypeError and Infinity an OverflowError, a 500
    after the answer with no record; -5 and 3e9 went on to the flush)."""
    assert usage_from_body({"usage": usage}) == (0, 1)
    body = ('{"choices": [], "usage": {"prompt_tokens": %s, "completion_tokens": 1}}'
            % ("Infinity" if usage["prompt_tokens"] == float("inf") else json.dumps(usage["prompt_tokens"])))
    assert usage_from_bytes(body.encode()) == (0, 1)


def test_a_whole_float_token_count_counts():
    """12.0 is twelve tokens (an encoder that writes every number as a float); 12.5 is no count."""
    assert usage_from_body({"usage": {"prompt_tokens": 12.0, "completion_tokens": 3}}) == (12, 3)
    assert usage_from_bytes(b'{"usage": {"prompt_tokens": 12.0, "completion_tokens": 3.0}}') == (12, 3)
    assert usage_from_body({"usage": {"prompt_tokens": 12.5, "completion_tokens": 3}}) == (0, 3)
