"""The gateway's lean Redis connection (gateway/resp.py): replies matched in order across
concurrent callers, error replies as redis-py's classes, one retry on a dropped connection,
a silent server timed out, AUTH and SELECT from the URL."""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import socket
import subprocess
import time
import uuid

import pytest
import redis
from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.resp import RespConnection, connect_for


def _run(coroutine):
    """asyncio.run in a thread of its own: the suite's main thread may already run a loop
    (Playwright's sync API), where asyncio.run refuses (see test_rate_limits)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result(timeout=60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _connection(url: str, **options) -> RespConnection:
    return RespConnection(url, **{"connect_timeout": 2.0, "reply_timeout": 2.0, **options})


def _db_url(db: int) -> str:
    return settings.REDIS_URL.rsplit("/", 1)[0] + f"/{db}"


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of the test's own (restarted and killed freely), with a password."""
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server")
    port = _free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", str(tmp_path), "--requirepass", "s3cret"]  # fmt: skip

    class Server:
        url = f"redis://:s3cret@127.0.0.1:{port}/3"
        proc = None

        def start(self):
            self.proc = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
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

        def stop(self):
            self.proc.kill()
            self.proc.wait(timeout=10)

    server = Server()
    server.start()
    yield server
    if server.proc.poll() is None:
        server.stop()


def test_concurrent_callers_get_their_own_replies_in_one_write():
    async def main():
        conn = _connection(settings.REDIS_URL)
        key = f"test:resp:{uuid.uuid4().hex}"
        try:
            # 200 callers in the same loop turn: each gets its own INCRBY result and echo.
            results = await asyncio.gather(
                *(conn.execute([("INCRBY", key, 1), ("ECHO", f"caller-{i}")]) for i in range(200))
            )
            await conn.execute([("DEL", key)])
        finally:
            await conn.aclose()
        return results

    results = _run(main())
    assert [echo for _, echo in results] == [f"caller-{i}".encode() for i in range(200)]
    assert sorted(count for count, _ in results) == list(range(1, 201))


def test_error_replies_are_redis_py_exceptions_in_place():
    async def main():
        conn = _connection(settings.REDIS_URL)
        try:
            return await conn.execute(
                [("EVALSHA", "0" * 40, 0), ("NOSUCHCOMMAND",), ("ECHO", "still in order")]
            )
        finally:
            await conn.aclose()

    noscript, unknown, echo = _run(main())
    assert isinstance(noscript, NoScriptError)
    assert isinstance(unknown, ResponseError) and not isinstance(unknown, NoScriptError)
    assert "unknown command" in str(unknown).lower()
    assert echo == b"still in order"


def test_select_and_auth_come_from_the_url(private_redis):
    async def main():
        conn = _connection(private_redis.url)
        try:
            await conn.execute([("SET", "where", "db3")])
        finally:
            await conn.aclose()

    _run(main())
    assert redis.Redis.from_url(private_redis.url).get("where") == b"db3"  # db 3, authenticated
    wrong = _connection(private_redis.url.replace("s3cret", "wrong"))
    with pytest.raises(RedisConnectionError):  # AuthenticationError is one: refused, not hung
        _run(wrong.execute([("PING",)]))


def test_a_killed_connection_is_retried_once_and_a_restart_costs_nothing_after(private_redis):
    async def main():
        conn = _connection(private_redis.url)
        admin = redis.Redis.from_url(private_redis.url)
        try:
            assert await conn.execute([("PING",)]) == [b"PONG"]
            assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
            await asyncio.sleep(0.1)  # the kill has reached us: the next call reconnects
            assert await conn.execute([("PING",)]) == [b"PONG"]

            private_redis.stop()
            started = time.monotonic()
            with pytest.raises(RedisConnectionError):
                await conn.execute([("PING",)])
            refused_in = time.monotonic() - started
            private_redis.start()
            return refused_in, await conn.execute([("PING",)])
        finally:
            admin.close()
            await conn.aclose()

    refused_in, after = _run(main())
    assert refused_in < 2.0  # Redis down is refused at once (connect refused), never hanging
    assert after == [b"PONG"]


def test_a_silent_server_times_out_and_fails_everything_waiting():
    """A server that accepts and never answers: the waiting callers fail after the reply timeout
    (one retry on a fresh connection, which is silent too), and the connection is dropped."""
    accepted: list[socket.socket] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.1)
    port = listener.getsockname()[1]

    async def main():
        conn = _connection(f"redis://127.0.0.1:{port}/0", reply_timeout=0.3)

        async def accept():
            while True:
                try:
                    accepted.append(await asyncio.to_thread(listener.accept))
                except TimeoutError:
                    continue

        acceptor = asyncio.ensure_future(accept())
        started = time.monotonic()
        results = await asyncio.gather(
            *(conn.execute([("PING",)]) for _ in range(3)), return_exceptions=True
        )
        elapsed = time.monotonic() - started
        acceptor.cancel()
        await conn.aclose()
        return results, elapsed

    try:
        results, elapsed = _run(main())
    finally:
        listener.close()
        for sock, _ in accepted:
            sock.close()
    assert all(isinstance(r, RedisTimeoutError) for r in results), results
    assert len(accepted) == 2  # the first connection, and the one retry
    assert 0.6 <= elapsed < 5


def test_only_plain_redis_urls_take_the_lean_path():
    assert connect_for("redis://127.0.0.1:6379/0", connect_timeout=1, reply_timeout=1) is not None
    assert (
        connect_for("unix:///tmp/redis.sock?db=2", connect_timeout=1, reply_timeout=1) is not None
    )
    assert connect_for("rediss://cache.example:6380/0", connect_timeout=1, reply_timeout=1) is None


def test_the_connection_follows_the_event_loop_it_is_used_from():
    conn = _connection(settings.REDIS_URL)
    assert _run(conn.execute([("ECHO", "first loop")])) == [b"first loop"]
    assert _run(conn.execute([("ECHO", "second loop")])) == [b"second loop"]
    _run(conn.aclose())
