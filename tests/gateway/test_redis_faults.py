"""Redis faults under traffic: a restarted Redis or killed connections cost no request once
Redis answers again (the gateway's clients retry once on a dropped connection and health-check
idle ones; scripts missing after a restart are loaded again on NOSCRIPT).

Each test runs its own redis-server on a free port (no persistence), so restarting it or
killing its clients touches nobody else's Redis.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import httpx
import pytest
import redis

from tests.gateway.conftest import make_deployment, make_key, start_console

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]

CHAT = {"model": "llama-chat", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
LIMITS = {level: {"rpm": 100_000, "tpm": 10_000_000} for level in ("organization", "user", "api_key")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    def __init__(self, directory) -> None:
        self.port = _free_port()
        self.directory = directory
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def private_redis(settings, tmp_path):
    server = PrivateRedis(tmp_path)
    server.start()
    settings.REDIS_URL = server.url
    yield server
    server.stop()


@pytest.fixture
def served(tenants, engine, private_redis):
    """A deployment with all three limit levels on (so every request runs the full script)
    behind a gateway whose Redis is the private one."""
    make_deployment(tenants.project, "llama", served_model_name="llama-chat", rate_limits=LIMITS)
    secret = make_key(tenants.member, tenants.org)
    server = start_console()
    yield server, {"authorization": f"Bearer {secret}"}
    server.stop()


def _send(client: httpx.Client, count: int) -> list[int]:
    out = []
    for _ in range(count):
        try:
            out.append(client.post("/chat/completions", json=CHAT).status_code)
        except httpx.HTTPError:
            out.append(0)
    return out


def test_redis_restarted_mid_traffic_costs_no_request_after_recovery(served, private_redis):
    server, headers = served
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as client:
        assert _send(client, 20) == [200] * 20  # the pool now holds connections to this Redis
        private_redis.stop()
        during = _send(client, 5)  # Redis down: refused clearly (503), never hanging
        assert set(during) <= {503}, during
        private_redis.start()  # empty: no generations, no scripts, no windows
        after = _send(client, 60)
    assert after == [200] * 60, {code: after.count(code) for code in set(after)}


def test_connections_killed_mid_traffic_cost_no_request(served, private_redis):
    server, headers = served
    admin = redis.Redis.from_url(private_redis.url)
    statuses: list[int] = []
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as client:
        for _ in range(6):
            statuses += _send(client, 15)
            # Every pooled connection of the gateway dies (as on a failover or a proxy restart).
            killed = admin.client_kill_filter(_type="normal", skipme=True)
            assert killed >= 1
        statuses += _send(client, 15)
    admin.close()
    assert statuses == [200] * len(statuses), {code: statuses.count(code) for code in set(statuses)}


def test_idle_connections_closed_by_redis_are_replaced(served, private_redis):
    """Pooled connections Redis closed while they sat idle (its `timeout`) are replaced without
    failing a request (health check on idle connections, then the retry on a dropped one)."""
    server, headers = served
    admin = redis.Redis.from_url(private_redis.url)
    admin.config_set("timeout", 1)  # Redis closes connections idle for 1 s
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as client:
        assert _send(client, 5) == [200] * 5
        time.sleep(2.5)
        assert _send(client, 10) == [200] * 10
    admin.close()
