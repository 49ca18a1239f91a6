"""PostgreSQL connections under ASGI stay within the pool: 300 concurrent API calls, ≤ max_size.

Before the pool, each request's thread kept its own connection for CONN_MAX_AGE seconds, so a
burst of requests left as many idle connections as it had threads, up to "too many clients".
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.db import connection
from django.test import Client

from console.env import database_from_url

ROOT = Path(__file__).resolve().parents[2]
POOL_MAX = 3
CALLS = 300


def test_postgres_urls_get_a_bounded_pool_and_no_persistent_connections(monkeypatch):
    monkeypatch.setenv("MODELDECK_DB_POOL_MAX", "6")
    db = database_from_url("DATABASE_URL", "postgres://u:p@h:5432/db")
    assert db["CONN_MAX_AGE"] == 0
    assert db["OPTIONS"]["pool"] == {"min_size": 1, "max_size": 6, "timeout": 10}
    monkeypatch.setenv("MODELDECK_DB_POOL_MAX", "0")
    assert "pool" not in database_from_url("DATABASE_URL", "postgres://u:p@h:5432/db")["OPTIONS"]
    sqlite = database_from_url("DATABASE_URL", "sqlite:///x.db")
    assert "pool" not in sqlite["OPTIONS"]  # the embedded mode keeps working without one


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.django_db(transaction=True)
def test_300_concurrent_api_calls_never_hold_more_connections_than_the_pool(tenants, tmp_path):
    db = settings.DATABASES["default"]
    client = Client()
    client.force_login(tenants.owner)  # committed (transaction=True): the server sees it
    cookie = client.cookies["sessionid"].value
    port = _free_port()
    url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "MODELDECK_DB_POOL_MAX": str(POOL_MAX),
        "MODELDECK_DB_POOL_TIMEOUT": "30",
        "MODELDECK_SSL_REDIRECT": "false",
        "MODELDECK_DATA_DIR": str(tmp_path),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "console.asgi:application", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    samples: list[int] = []
    stop = threading.Event()
    with connection.cursor() as cursor:  # this test process's own connections, not the server's
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [db["NAME"]])
        ours = [row[0] for row in cursor.fetchall()]

    def sample() -> None:
        # Every connection to the test database except this test process's own.
        while not stop.is_set():
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                    " AND pid <> pg_backend_pid() AND NOT pid = ANY(%s)",
                    [db["NAME"], ours],
                )
                samples.append(cursor.fetchone()[0])
            time.sleep(0.02)
        connection.close()

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=CALLS, max_keepalive_connections=0)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            cookies={"sessionid": cookie},
            limits=limits,
            timeout=60,
        ) as http:
            responses = await asyncio.gather(*(http.get("/api/v1/projects/") for _ in range(CALLS)))
        return [r.status_code for r in responses]

    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert server.poll() is None, server.stdout.read().decode()
                assert time.monotonic() < deadline, "uvicorn did not start"
                time.sleep(0.2)
        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.monotonic()
        # A thread of its own: a browser test earlier in the run may leave this thread's loop running.
        result: dict = {}
        runner = threading.Thread(target=lambda: result.update(statuses=asyncio.run(burst())))
        runner.start()
        runner.join()
        statuses = result["statuses"]
        elapsed = time.monotonic() - started
        time.sleep(0.3)
        stop.set()
        sampler.join()
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert statuses.count(200) == CALLS, {s: statuses.count(s) for s in set(statuses)}
    print(f"\n{CALLS} concurrent calls in {elapsed:.1f} s; connections sampled: max {max(samples)}, "
          f"{len(samples)} samples, pool max {POOL_MAX}")  # fmt: skip
    assert 1 <= max(samples) <= POOL_MAX
