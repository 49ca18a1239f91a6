"""The gateway's HTTP/1.1 upstream pool (gateway/h1.py) against real servers on loopback: the
simulated engine, and small scripted asyncio servers for what an engine rarely does on purpose
(closing an idle connection as a request arrives, going silent, answering garbage, TLS)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import hashlib
import json
import re
import socket
import ssl
from dataclasses import dataclass, field

import pytest
import uvloop

from gateway.h1 import (
    ConnectError,
    InvalidResponse,
    InvalidURL,
    ServerDisconnected,
    TLSError,
    UpstreamError,
    UpstreamPool,
    UpstreamTimeout,
    _Connection,
)

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8}
JSON = {"content-type": "application/json"}


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    """Run a coroutine function in a fresh event loop of each kind (the gateway runs under
    uvicorn's choice, uvloop when installed), in its own thread (see test_rate_limits)."""

    def runner(main):
        start = uvloop.run if request.param == "uvloop" else asyncio.run
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(start, main()).result(timeout=60)

    return runner


def make_pool(**options) -> UpstreamPool:
    return UpstreamPool(**{"connect_timeout": 2.0, "read_timeout": 5.0, **options})


# ---- a scripted HTTP/1.1 server ----------------------------------------------------------------
@dataclass
class Seen:
    connections: int = 0
    closed: int = 0  # connections that ended (the client's close or the script's)
    requests: list[tuple[bytes, bytes]] = field(default_factory=list)  # (head, body)


async def read_request(reader: asyncio.StreamReader, seen: Seen) -> tuple[bytes, bytes] | None:
    """One request (head, body), or None when the client closed the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = int(re.search(rb"(?im)^content-length: *(\d+)", head).group(1))
    body = await reader.readexactly(length)
    seen.requests.append((head, body))
    return head, body


def response(body: bytes = b'{"ok": true}', status: int = 200, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (
        status,
        len(body),
        extra,
        body,
    )


@contextlib.asynccontextmanager
async def serve(script, tls: ssl.SSLContext | None = None, receive_buffer: int = 0):
    """Serve `script(reader, writer, seen, index)` for each connection; yields (port, seen)."""
    seen = Seen()

    async def on_connection(reader, writer):
        seen.connections += 1
        try:
            await script(reader, writer, seen, seen.connections)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            seen.closed += 1
            writer.close()

    sock = socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.bind(("127.0.0.1", 0))
    server = await asyncio.start_server(on_connection, sock=sock, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1], seen
    finally:
        server.close()


async def answer_all(reader, writer, seen, index):
    """A keep-alive server: answers every request on the connection."""
    while await read_request(reader, seen) is not None:
        writer.write(response())
        await writer.drain()


async def until(condition, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- against the simulated engine ---------------------------------------------------------------
def test_the_engine_answers_through_the_pool_with_content_length_and_chunked_bodies(
    run, engine_server
):
    _, base = engine_server

    async def main():
        pool = make_pool()
        try:
            plain = await pool.post(f"{base}/v1/chat/completions", json.dumps(CHAT).encode(), JSON)
            # A stream comes back chunked; the pool hands over the whole decoded body.
            streamed = await pool.post(
                f"{base}/v1/chat/completions", json.dumps({**CHAT, "stream": True}).encode(), JSON
            )
            refused = await pool.post(
                f"{base}/v1/chat/completions", json.dumps({**CHAT, "max_tokens": 0}).encode(), JSON
            )
            return plain, streamed, refused
        finally:
            await pool.aclose()

    plain, streamed, refused = run(main)
    assert plain.status == 200 and plain.content_type == b"application/json"
    assert plain.header(b"content-length") == str(len(plain.content)).encode()
    answer = json.loads(plain.content)
    assert answer["choices"][0]["message"]["content"] == "You said: hello there"
    assert answer["usage"]["prompt_tokens"] == 2
    assert streamed.status == 200 and streamed.header(b"transfer-encoding") == b"chunked"
    assert streamed.content_type.startswith(b"text/event-stream")
    assert streamed.content.endswith(b"data: [DONE]\n\n") and streamed.content.count(b"data: ") > 3
    assert refused.status == 400 and json.loads(refused.content)["error"]


def test_a_large_request_body_reaches_the_engine(run, engine_server):
    _, base = engine_server
    words = 800_000  # ~4.8 MB of "hello "

    async def main():
        pool = make_pool()
        try:
            body = {**CHAT, "messages": [{"role": "user", "content": "hello " * words}]}
            headers = {**JSON, "x-sandbox-max-model-len": str(2 * words)}
            return await pool.post(
                f"{base}/v1/chat/completions", json.dumps(body).encode(), headers
            )
        finally:
            await pool.aclose()

    answer = run(main)
    assert answer.status == 200
    assert json.loads(answer.content)["usage"]["prompt_tokens"] == words


# ---- scripted servers ----------------------------------------------------------------------------
def test_connections_are_kept_alive_and_reused(run):
    async def main():
        async with serve(answer_all) as (port, seen):
            pool = make_pool()
            url = f"http://127.0.0.1:{port}/v1/x"
            for _ in range(20):
                assert (await pool.post(url, b"{}", JSON)).status == 200
            sequential = seen.connections
            answers = await asyncio.gather(*(pool.post(url, b"{}", JSON) for _ in range(8)))
            concurrent = seen.connections
            for _ in range(20):
                await pool.post(url, b"{}", JSON)
            await pool.aclose()
            await until(lambda: seen.closed == seen.connections)
            return sequential, concurrent, seen.connections, answers, len(seen.requests)

    sequential, concurrent, total, answers, requests = run(main)
    assert sequential == 1
    assert all(a.status == 200 for a in answers) and concurrent <= 8
    assert total == concurrent  # the concurrent burst's connections serve what follows
    assert requests == 48


def test_the_request_head_carries_host_length_and_the_given_headers(run):
    async def main():
        async with serve(answer_all) as (port, seen):
            pool = make_pool()
            url = f"http://127.0.0.1:{port}/v1/chat/completions?x=1"
            await pool.post(url, b"abc", {**JSON, "x-request-id": "req_1", "content-length": "99"})
            await pool.post(url, b"", {"host": "llama.team.models.example.com"})
            await pool.aclose()
            return port, seen.requests

    port, requests = run(main)
    (first, body), (second, _) = requests
    lines = first.decode().split("\r\n")
    assert lines[0] == "POST /v1/chat/completions?x=1 HTTP/1.1"
    assert f"host: 127.0.0.1:{port}" in lines and "x-request-id: req_1" in lines
    assert [line for line in lines if line.startswith("content-length")] == ["content-length: 3"]
    assert body == b"abc"
    hosts = [line for line in second.decode().split("\r\n") if line.lower().startswith("host:")]
    assert hosts == ["host: llama.team.models.example.com"]  # an Ingress routes on it


def test_a_chunked_answer_arriving_in_pieces_is_decoded(run):
    async def script(reader, writer, seen, index):
        while await read_request(reader, seen) is not None:
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"
            )
            for piece in (b"hel", b"lo ", b"world"):
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
                await asyncio.sleep(0.01)
            writer.write(b"0\r\n\r\n")

    async def main():
        async with serve(script) as (port, seen):
            pool = make_pool()
            answers = [await pool.post(f"http://127.0.0.1:{port}/", b"", {}) for _ in range(2)]
            await pool.aclose()
            return answers, seen.connections

    answers, connections = run(main)
    assert [a.content for a in answers] == [b"hello world"] * 2
    assert answers[0].content_type == b"text/plain"
    assert connections == 1


def test_an_interim_100_continue_is_skipped(run):
    async def script(reader, writer, seen, index):
        while await read_request(reader, seen) is not None:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + response(b"final"))

    async def main():
        async with serve(script) as (port, seen):
            pool = make_pool()
            answers = [await pool.post(f"http://127.0.0.1:{port}/", b"", {}) for _ in range(2)]
            await pool.aclose()
            return answers, seen.connections

    answers, connections = run(main)
    assert [(a.status, a.content) for a in answers] == [(200, b"final")] * 2
    assert connections == 1


def test_a_body_without_length_ends_at_eof_and_the_connection_is_not_reused(run):
    async def script(reader, writer, seen, index):
        await read_request(reader, seen)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b" of it")

    async def main():
        async with serve(script) as (port, seen):
            pool = make_pool()
            answers = [await pool.post(f"http://127.0.0.1:{port}/", b"", {}) for _ in range(2)]
            await pool.aclose()
            return answers, seen.connections

    answers, connections = run(main)
    assert [a.content for a in answers] == [b"until the end of it"] * 2
    assert connections == 2


def test_a_keep_alive_connection_the_engine_closes_as_a_request_arrives_is_retried_once(run):
    """The engine answers the first request of a connection, and closes it on the next one
    without answering (its idle timeout fired as the request went out)."""

    async def script(reader, writer, seen, index):
        await read_request(reader, seen)
        writer.write(response())
        await writer.drain()
        await read_request(reader, seen)  # ...and closes without a word

    async def main():
        async with serve(script) as (port, seen):
            pool = make_pool()
            url = f"http://127.0.0.1:{port}/"
            answers = [await pool.post(url, b"%d" % i, {}) for i in range(3)]
            await pool.aclose()
            return answers, seen

    answers, seen = run(main)
    assert [a.status for a in answers] == [200] * 3
    # Each retry went to a fresh connection, and each request was answered exactly once.
    assert seen.connections == 3
    assert [body for _, body in seen.requests] == [b"0", b"1", b"1", b"2", b"2"]


def test_an_idle_connection_the_engine_closed_is_not_used(run):
    async def script(reader, writer, seen, index):
        await read_request(reader, seen)
        writer.write(response())  # keep-alive by the headers, then closes anyway

    async def main():
        async with serve(script) as (port, seen):
            pool = make_pool()
            url = f"http://127.0.0.1:{port}/"
            first = await pool.post(url, b"", {})
            await until(lambda: seen.closed == 1)
            await asyncio.sleep(0.05)
            second = await pool.post(url, b"", {})
            await pool.aclose()
            return first, second, seen

    first, second, seen = run(main)
    assert first.status == second.status == 200
    assert seen.connections == 2 and len(seen.requests) == 2


@pytest.mark.parametrize("later", [False, True], ids=["same-write", "while-idle"])
def test_a_connection_that_sent_more_than_one_answer_is_not_reused(run, later):
    async def script(reader, writer, seen, index):
        while await read_request(reader, seen) is not None:
            writer.write(response(b"first"))
            if later:
                await writer.drain()
                await asyncio.sleep(0.05)
            writer.write(response(b"unasked"))

    async def main():
        async with serve(script) as (port, seen):
            pool = make_pool()
            url = f"http://127.0.0.1:{port}/"
            first = await pool.post(url, b"", {})
            await asyncio.sleep(0.1)
            second = await pool.post(url, b"", {})
            await pool.aclose()
            return first, second, seen.connections

    first, second, connections = run(main)
    assert first.content == second.content == b"first"
    assert connections == 2


def test_a_fresh_connection_closed_without_an_answer_is_an_error_not_a_retry(run):
    async def script(reader, writer, seen, index):
        await read_request(reader, seen)  # and close

    async def main():
        async with serve(script) as (port, seen):
            pool = make_pool()
            with pytest.raises(ServerDisconnected) as info:
                await pool.post(f"http://127.0.0.1:{port}/", b"", {})
            await pool.aclose()
            return info.value, seen

    error, seen = run(main)
    assert isinstance(error, UpstreamError) and not isinstance(error, TimeoutError)
    assert seen.connections == 1 and len(seen.requests) == 1


def test_a_reused_connection_is_retried_only_once(run):
    """The first connection answers once; every later request, on any connection, is dropped."""

    async def script(reader, writer, seen, index):
        await read_request(reader, seen)
        if index == 1:
            writer.write(response())
            await writer.drain()
            await read_request(reader, seen)

    async def main():
        async with serve(script) as (port, seen):
            pool = make_pool()
            url = f"http://127.0.0.1:{port}/"
            await pool.post(url, b"", {})
            with pytest.raises(ServerDisconnected):
                await pool.post(url, b"", {})
            await pool.aclose()
            return seen

    seen = run(main)
    assert seen.connections == 2 and len(seen.requests) == 3


def test_a_response_cut_short_is_an_error_and_not_retried(run):
    async def script(reader, writer, seen, index):
        await read_request(reader, seen)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b")

    async def main():
        async with serve(script) as (port, seen):
            pool = make_pool()
            with pytest.raises(ServerDisconnected) as info:
                await pool.post(f"http://127.0.0.1:{port}/", b"", {})
            await pool.aclose()
            return info.value, seen.connections

    error, connections = run(main)
    assert not error.before_response and connections == 1


def test_garbage_instead_of_http_is_an_invalid_response(run):
    async def script(reader, writer, seen, index):
        await read_request(reader, seen)
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await reader.read()  # until the client closes

    async def main():
        async with serve(script) as (port, seen):
            pool = make_pool()
            with pytest.raises(InvalidResponse):
                await pool.post(f"http://127.0.0.1:{port}/", b"", {})
            await until(lambda: seen.closed == 1)  # the pool closed its side
            await pool.aclose()

    run(main)


def test_an_engine_silent_longer_than_the_read_timeout_times_out(run):
    async def script(reader, writer, seen, index):
        await read_request(reader, seen)
        await reader.read()  # silent until the client closes

    async def main():
        async with serve(script) as (port, seen):
            pool = make_pool(read_timeout=0.2)
            started = asyncio.get_running_loop().time()
            with pytest.raises(UpstreamTimeout) as info:
                await pool.post(f"http://127.0.0.1:{port}/", b"", {})
            elapsed = asyncio.get_running_loop().time() - started
            await until(lambda: seen.closed == 1)  # the pool closed its side at once
            await pool.aclose()
            return info.value, elapsed

    error, elapsed = run(main)
    assert isinstance(error, TimeoutError)  # the gateway's 504 upstream_timeout
    assert 0.15 < elapsed < 1.0


def test_the_read_timeout_is_the_longest_silence_not_the_whole_answer(run):
    async def script(reader, writer, seen, index):
        await read_request(reader, seen)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(8):  # 0.8 s in all, never more than 0.1 s apart
            await asyncio.sleep(0.1)
            writer.write(b"1\r\n.\r\n")
        writer.write(b"0\r\n\r\n")

    async def main():
        async with serve(script) as (port, seen):
            pool = make_pool(read_timeout=0.4)
            answer = await pool.post(f"http://127.0.0.1:{port}/", b"", {})
            await pool.aclose()
            return answer

    assert run(main).content == b"." * 8


def test_a_slow_upload_is_not_silence_but_an_engine_that_stops_reading_is(run, monkeypatch):
    """An 8 MB body the engine reads for ~1.6 s in all, never pausing 0.5 s: no timeout; the
    same body to an engine that stops reading after 256 KB: a timeout. Small socket buffers
    both sides, as over a slow network: the body waits on the pool's side, which hands it to
    the transport a slice at a time (flow control), never all 8 MB at once."""
    payload = b"x" * (8 * 1024 * 1024)
    made = _Connection.connection_made
    transports = []

    def small_send_buffer(self, transport):
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        transports.append(transport)
        made(self, transport)

    monkeypatch.setattr(_Connection, "connection_made", small_send_buffer)

    async def script(reader, writer, seen, index):
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"content-length: (\d+)", head).group(1))
        received = 0
        while received < length:
            received += len(await reader.read(256 * 1024))
            if index == 2:
                await reader.read()  # stops reading the body: silent until the client closes
                return
            await asyncio.sleep(0.05)
        writer.write(response())

    async def main():
        async with serve(script, receive_buffer=65536) as (port, seen):
            pool = make_pool(read_timeout=0.5)
            loop = asyncio.get_running_loop()
            started = loop.time()
            upload = asyncio.ensure_future(pool.post(f"http://127.0.0.1:{port}/", payload, {}))
            buffered = 0
            while not upload.done():
                if transports:
                    buffered = max(buffered, transports[0].get_write_buffer_size())
                await asyncio.sleep(0.005)
            answer, upload = upload.result(), loop.time() - started
            await pool.aclose()
            pool = make_pool(read_timeout=0.5)
            with pytest.raises(UpstreamTimeout):
                await pool.post(f"http://127.0.0.1:{port}/", payload, {})
            await pool.aclose()
            return answer, upload, buffered

    answer, upload, buffered = run(main)
    assert answer.status == 200 and upload > 1.0  # longer than the read timeout, yet fine
    assert 0 < buffered < 1024 * 1024


def test_an_answer_before_the_whole_body_was_read_ends_the_upload(run):
    """An engine refusing a 16 MB body at once (413) without reading it: the pool stops
    writing, returns the answer, and never reuses the connection."""

    async def script(reader, writer, seen, index):
        seen.requests.append((await reader.readuntil(b"\r\n\r\n"), b""))
        if index == 1:
            writer.write(response(b"too large", status=413))
            await writer.drain()
            await asyncio.sleep(0.3)  # not reading: the pool's writes stall meanwhile
            await reader.read()
        else:
            await reader.readexactly(16 * 1024 * 1024)
            writer.write(response())

    async def main():
        async with serve(script) as (port, seen):
            pool = make_pool()
            url = f"http://127.0.0.1:{port}/"
            refused = await pool.post(url, b"x" * (16 * 1024 * 1024), {})
            accepted = await pool.post(url, b"x" * (16 * 1024 * 1024), {})
            await pool.aclose()
            return refused, accepted, seen.connections

    refused, accepted, connections = run(main)
    assert (refused.status, refused.content) == (413, b"too large")
    assert accepted.status == 200 and connections == 2


def test_connecting_includes_the_tls_handshake_and_times_out(run):
    async def script(reader, writer, seen, index):
        await reader.read()  # accepts, never answers the TLS handshake

    async def main():
        async with serve(script) as (port, seen):
            pool = make_pool(connect_timeout=0.3)
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(UpstreamTimeout) as info:
                await pool.post(f"https://127.0.0.1:{port}/", b"", {})
            elapsed = loop.time() - started
            await pool.aclose()
            return info.value, elapsed

    error, elapsed = run(main)
    assert isinstance(error, TimeoutError) and 0.25 < elapsed < 2.0


def test_a_refused_port_is_a_connection_error(run):
    port = free_port()  # nothing listens there any more

    async def main():
        pool = make_pool()
        with pytest.raises(ConnectError) as info:
            await pool.post(f"http://127.0.0.1:{port}/", b"", {})
        await pool.aclose()
        return info.value

    error = run(main)
    assert isinstance(error, UpstreamError) and not isinstance(error, TimeoutError)
    assert isinstance(error.__cause__, ConnectionRefusedError)


def test_an_unknown_host_is_a_connection_error(run):
    async def main():
        pool = make_pool()
        with pytest.raises(ConnectError):
            await pool.post("http://no-such-engine.invalid/v1/x", b"", {})
        await pool.aclose()

    run(main)


@pytest.mark.parametrize(
    "headers",
    [
        {"x-sandbox-latency-ms": "1\r\nx-injected: yes"},
        {"x-sandbox-note": "a\nb"},
        {"x-sandbox-note": "a\0b"},
        {"x-bad\r\nname": "1"},
        {"x bad": "1"},
        {"host": "engine\r\nx-injected: yes"},
    ],
)
def test_header_names_or_values_with_line_breaks_are_refused(run, headers):
    async def main():
        async with serve(answer_all) as (port, seen):
            pool = make_pool()
            with pytest.raises(ValueError):
                await pool.post(f"http://127.0.0.1:{port}/", b"", headers)
            await pool.aclose()
            return seen.connections

    assert run(main) == 0  # refused before anything was sent


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/x", "http:///v1/x", "http://127.0.0.1:8000/v1/a b", "http://[::1/x"]
)
def test_a_url_the_pool_cannot_call_is_refused(run, url):
    async def main():
        pool = make_pool()
        with pytest.raises(InvalidURL):
            await pool.post(url, b"", {})
        await pool.aclose()

    run(main)


def test_a_cancelled_request_closes_its_connection(run):
    async def script(reader, writer, seen, index):
        await read_request(reader, seen)
        await reader.read()  # until the client closes

    async def main():
        async with serve(script) as (port, seen):
            pool = make_pool()
            task = asyncio.ensure_future(pool.post(f"http://127.0.0.1:{port}/", b"", {}))
            await until(lambda: len(seen.requests) == 1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await until(lambda: seen.closed == 1)  # the engine sees the client go (and stops)
            await pool.aclose()

    run(main)


def test_idle_connections_are_closed_after_the_keepalive(run):
    async def main():
        async with serve(answer_all) as (port, seen):
            pool = make_pool(keepalive=0.2)
            url = f"http://127.0.0.1:{port}/"
            await asyncio.gather(*(pool.post(url, b"", {}) for _ in range(3)))
            opened = seen.connections
            await until(lambda: seen.closed == opened)
            await pool.post(url, b"", {})
            await pool.aclose()
            return opened, seen.connections

    opened, total = run(main)
    assert total == opened + 1


def test_idle_connections_beyond_the_bound_are_closed(run):
    async def main():
        async with serve(answer_all) as (port, seen):
            pool = make_pool(max_idle_per_host=2)
            url = f"http://127.0.0.1:{port}/"
            await asyncio.gather(*(pool.post(url, b"", {}) for _ in range(6)))
            opened = seen.connections
            await until(lambda: seen.closed == opened - 2)
            await pool.aclose()
            return opened

    assert run(main) == 6


def test_large_bodies_both_ways_with_a_slow_reader(run):
    """An 8 MB request to an engine that reads it slowly (the pool waits on the transport's
    flow control), echoed back as an 8 MB response."""
    payload = bytes(range(256)) * (32 * 1024)

    async def script(reader, writer, seen, index):
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            length = int(re.search(rb"content-length: (\d+)", head).group(1))
            body = bytearray()
            while len(body) < length:
                body += await reader.read(min(256 * 1024, length - len(body)))
                await asyncio.sleep(0.002)
            seen.requests.append((head, bytes(body)))
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()

    async def main():
        async with serve(script) as (port, seen):
            pool = make_pool(read_timeout=2.0)
            answers = [await pool.post(f"http://127.0.0.1:{port}/", payload, {}) for _ in range(2)]
            await pool.aclose()
            return answers, seen

    answers, seen = run(main)
    assert [a.content == payload for a in answers] == [True, True]
    assert [body == payload for _, body in seen.requests] == [True, True]
    assert seen.connections == 1


# ---- TLS -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for engine.models.example.test (and nothing else)."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "engine.models.example.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("engine.models.example.test")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return folder / "cert.pem", folder / "key.pem"


def test_tls_through_an_address_verifies_the_given_server_name(run, certificate):
    cert, key = certificate
    names: list[str | None] = []

    async def main():
        server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_side.load_cert_chain(cert, key)
        server_side.sni_callback = lambda sslobj, name, context: names.append(name)
        client_side = ssl.create_default_context(cafile=str(cert))
        async with serve(answer_all, tls=server_side) as (port, seen):
            pool = make_pool(ssl_context=client_side)
            url = f"https://127.0.0.1:{port}/v1/x"
            host = {"host": "engine.models.example.test"}
            answers = [
                await pool.post(url, b"", host, server_hostname="engine.models.example.test")
                for _ in range(2)
            ]
            # Without the name, TLS checks the certificate against 127.0.0.1: refused.
            with pytest.raises(TLSError) as info:
                await pool.post(url, b"", host)
            await pool.aclose()
            return answers, info.value, seen

    answers, error, seen = run(main)
    assert [a.status for a in answers] == [200, 200]
    assert names[0] == "engine.models.example.test"
    assert isinstance(error.__cause__, ssl.SSLCertVerificationError)
    assert len(seen.requests) == 2  # one connection for both, none sent on the refused one


# ---- streams (UpstreamPool.stream) ---------------------------------------------------------------
CHUNKED_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def read_all(stream) -> list[bytes]:
    return [piece async for piece in stream.iter_chunks()]


def test_the_engine_streams_through_the_pool_event_by_event(run, engine_server):
    _, base = engine_server
    body = json.dumps({**CHAT, "stream": True, "max_tokens": 16}).encode()

    async def main():
        pool = make_pool()
        try:
            stream = await pool.stream(f"{base}/v1/chat/completions", body, JSON)
            pieces = await read_all(stream)
            complete = stream.complete
            stream.release()
            refused = await pool.stream(
                f"{base}/v1/chat/completions", json.dumps({**CHAT, "max_tokens": 0}).encode(), JSON
            )
            refusal = b"".join(await read_all(refused))
            refused.release()
            return stream, pieces, complete, refused, refusal
        finally:
            await pool.aclose()

    stream, pieces, complete, refused, refusal = run(main)
    assert stream.status == 200 and stream.content_type.startswith(b"text/event-stream")
    assert complete
    whole = b"".join(pieces)
    assert whole.endswith(b"data: [DONE]\n\n") and whole.count(b"data: ") > 3
    events = [json.loads(e[6:]) for e in whole.split(b"\n\n") if e.startswith(b"data: {")]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert text == "You said: hello there"
    assert refused.status == 400 and json.loads(refusal)["error"]


def test_a_stream_hands_over_each_chunk_before_the_engine_sends_the_next(run):
    """The engine sends the rest only once the client has the first chunk: a client that waited
    for the whole body would never see it."""

    async def script(reader, writer, seen, index):
        await read_request(reader, seen)
        writer.write(CHUNKED_HEAD + chunk(b"data: first\n\n"))
        await writer.drain()
        await seen.got_first.wait()
        writer.write(chunk(b"data: second\n\n") + b"0\r\n\r\n")
        await writer.drain()

    async def main():
        async with serve(script) as (port, seen):
            seen.got_first = asyncio.Event()
            pool = make_pool()
            stream = await pool.stream(f"http://127.0.0.1:{port}/", b"{}", JSON)
            pieces = []
            async with asyncio.timeout(3):
                async for piece in stream.iter_chunks():
                    pieces.append(piece)
                    seen.got_first.set()
            stream.release()
            await pool.aclose()
            return stream.status, pieces

    status, pieces = run(main)
    assert status == 200
    assert pieces == [b"data: first\n\n", b"data: second\n\n"]


def test_a_stream_without_length_ends_at_eof_and_its_connection_is_not_reused(run):
    async def script(reader, writer, seen, index):
        await read_request(reader, seen)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata: a\n\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"data: b\n\n")
        await writer.drain()

    async def main():
        async with serve(script) as (port, seen):
            pool = make_pool()
            bodies = []
            for _ in range(2):
                stream = await pool.stream(f"http://127.0.0.1:{port}/", b"", {})
                bodies.append(b"".join(await read_all(stream)))
                stream.release()
            await pool.aclose()
            return bodies, seen.connections

    bodies, connections = run(main)
    assert bodies == [b"data: a\n\ndata: b\n\n"] * 2
    assert connections == 2


def test_a_stream_read_to_its_end_and_released_reuses_the_connection(run):
    async def script(reader, writer, seen, index):
        while await read_request(reader, seen) is not None:
            writer.write(CHUNKED_HEAD)
            for piece in (b"data: 1\n\n", b"data: [DONE]\n\n"):
                await asyncio.sleep(0.01)
                writer.write(chunk(piece))
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    async def main():
        async with serve(script) as (port, seen):
            # One connection slot: a stream that didn't give its slot back would block the next.
            pool = make_pool(max_connections=1)
            url = f"http://127.0.0.1:{port}/"
            bodies = []
            async with asyncio.timeout(3):
                for _ in range(3):
                    stream = await pool.stream(url, b"{}", JSON)
                    bodies.append(b"".join(await read_all(stream)))
                    stream.release()
                reused = seen.connections
                # Released before its end: the connection can't carry another request.
                stream = await pool.stream(url, b"{}", JSON)
                stream.release()
                await pool.post(url, b"{}", JSON)
            await pool.aclose()
            return bodies, reused, seen.connections

    bodies, reused, total = run(main)
    assert bodies == [b"data: 1\n\ndata: [DONE]\n\n"] * 3
    assert reused == 1 and total == 2


def test_closing_a_stream_midway_makes_the_engine_see_the_disconnect(run):
    async def script(reader, writer, seen, index):
        await read_request(reader, seen)
        writer.write(CHUNKED_HEAD + chunk(b"data: token\n\n"))
        await writer.drain()
        seen.rest = await reader.read()  # b"" once the client hangs up

    async def main():
        async with serve(script) as (port, seen):
            pool = make_pool(max_connections=1)
            stream = await pool.stream(f"http://127.0.0.1:{port}/", b"", {})
            async for piece in stream.iter_chunks():
                assert piece == b"data: token\n\n"
                break
            stream.close()
            await until(lambda: seen.closed == 1)
            # Its slot is free again.
            async with asyncio.timeout(1):
                await pool.aclose()
            return seen.rest

    assert run(main) == b""


@pytest.mark.parametrize("waiting_for", ["head", "body"])
def test_a_cancelled_stream_closes_its_connection(run, waiting_for):
    async def script(reader, writer, seen, index):
        await read_request(reader, seen)
        if waiting_for == "body":
            writer.write(CHUNKED_HEAD + chunk(b"data: 1\n\n"))
            await writer.drain()
        await reader.read()  # until the client closes

    async def main():
        async with serve(script) as (port, seen):
            pool = make_pool(max_connections=1)
            got = []

            async def consume():
                stream = await pool.stream(f"http://127.0.0.1:{port}/", b"", {})
                async for piece in stream.iter_chunks():
                    got.append(piece)

            task = asyncio.ensure_future(consume())
            await until(lambda: len(got) == 1 if waiting_for == "body" else len(seen.requests) == 1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await until(lambda: seen.closed == 1)  # the engine sees the client go (and stops)
            # The slot came back: another stream can start.
            async with asyncio.timeout(1):
                next_one = asyncio.ensure_future(pool.stream(f"http://127.0.0.1:{port}/", b"", {}))
                await until(lambda: seen.connections == 2)
                next_one.cancel()
            await pool.aclose()

    run(main)


def test_a_stream_silent_longer_than_the_read_timeout_times_out_midway(run):
    async def script(reader, writer, seen, index):
        await read_request(reader, seen)
        writer.write(CHUNKED_HEAD)
        for _ in range(5):  # 0.5 s of steady tokens, never 0.3 s apart: no timeout
            await asyncio.sleep(0.1)
            writer.write(chunk(b"data: t\n\n"))
        await reader.read()  # then silent until the client closes

    async def main():
        async with serve(script) as (port, seen):
            pool = make_pool(read_timeout=0.3)
            stream = await pool.stream(f"http://127.0.0.1:{port}/", b"", {})
            got = []
            with pytest.raises(UpstreamTimeout):
                async for piece in stream.iter_chunks():
                    got.append(piece)
            await until(lambda: seen.closed == 1)  # the pool closed its side
            stream.close()  # already closed: nothing more happens
            await pool.aclose()
            return b"".join(got)

    assert run(main) == b"data: t\n\n" * 5


def test_a_stream_cut_short_is_an_error_after_what_arrived(run):
    async def script(reader, writer, seen, index):
        await read_request(reader, seen)
        writer.write(CHUNKED_HEAD + chunk(b"data: 1\n\n"))
        await writer.drain()
        await asyncio.sleep(0.05)
        # ...and the connection closes without the last chunk

    async def main():
        async with serve(script) as (port, seen):
            pool = make_pool()
            stream = await pool.stream(f"http://127.0.0.1:{port}/", b"", {})
            got = []
            with pytest.raises(ServerDisconnected) as info:
                async for piece in stream.iter_chunks():
                    got.append(piece)
            await pool.aclose()
            return got, info.value, seen.connections

    got, error, connections = run(main)
    assert got == [b"data: 1\n\n"]
    assert not error.before_response and connections == 1  # not retried


def test_a_stream_on_a_keep_alive_connection_the_engine_closed_is_retried_before_any_byte(run):
    async def script(reader, writer, seen, index):
        await read_request(reader, seen)
        writer.write(CHUNKED_HEAD + chunk(b"data: %d\n\n" % index) + b"0\r\n\r\n")
        await writer.drain()
        await read_request(reader, seen)  # ...and closes without a word

    async def main():
        async with serve(script) as (port, seen):
            pool = make_pool()
            bodies = []
            for _ in range(2):
                stream = await pool.stream(f"http://127.0.0.1:{port}/", b"x", {})
                bodies.append(b"".join(await read_all(stream)))
                stream.release()
            await pool.aclose()
            return bodies, seen

    bodies, seen = run(main)
    assert bodies == [b"data: 1\n\n", b"data: 2\n\n"]
    assert seen.connections == 2 and len(seen.requests) == 3


def test_a_slow_reader_holds_the_engine_back_instead_of_buffering_the_stream(run):
    """16 MB streamed as fast as the engine can; the reader takes one chunk and then waits
    longer than the read timeout: the client holds at most about `max_buffered` bytes, the
    engine's writes block (TCP's window), and nothing times out; read on, every byte arrives."""
    total = 16 * 1024 * 1024
    piece = bytes(range(256)) * 256  # 64 KB

    async def script(reader, writer, seen, index):
        await read_request(reader, seen)
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
        for _ in range(total // len(piece)):
            writer.write(piece)
            await writer.drain()
            seen.sent += len(piece)
        await reader.read()

    async def main():
        async with serve(script) as (port, seen):
            seen.sent = 0
            pool = make_pool(read_timeout=0.5, max_buffered=64 * 1024)
            stream = await pool.stream(f"http://127.0.0.1:{port}/", b"", {})
            connection = stream._connection
            chunks = stream.iter_chunks()
            first = await anext(chunks)
            received, digest = len(first), hashlib.sha256(first)
            most_buffered = 0
            for _ in range(40):  # 0.8 s without reading
                await asyncio.sleep(0.02)
                most_buffered = max(most_buffered, connection.buffered)
            sent_while_paused = seen.sent
            paused = connection.reading_paused
            async for data in chunks:
                received += len(data)
                digest.update(data)
            stream.release()
            await pool.aclose()
            return most_buffered, paused, sent_while_paused, received, digest.digest()

    most_buffered, paused, sent_while_paused, received, digest = run(main)
    assert paused
    # The bound plus what one read from the socket may add past it.
    assert most_buffered <= 64 * 1024 + 256 * 1024
    # The engine stopped: far from the 16 MB it would have sent to a client buffering it all.
    assert sent_while_paused < 4 * 1024 * 1024
    assert received == total
    assert digest == hashlib.sha256(piece * (total // len(piece))).digest()
