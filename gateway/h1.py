"""A lean HTTP/1.1 keep-alive client for the gateway's calls to the engines, streamed or not.

Why it exists: against the simulated engine, aiohttp's ClientSession.post + read costs ~204 µs
of CPU per request, an asyncio Protocol feeding httptools' parser ~50 µs — and the gateway spends
~390 µs per proxied request in all (bench/gateway.py). This module is that Protocol plus what a
shared pool needs: keep-alive (LIFO, bounded, idle connections closed after KEEPALIVE_SECONDS),
one retry of the keep-alive race, connect and read timeouts, TLS with a server-name override,
write flow control.

Streams (`UpstreamPool.stream`): the same connection in another mode, handing the body over as
it arrives; at most `max_buffered` bytes wait for a slow reader before the connection stops
reading from the engine (TCP's window then stops the engine's writes), and a stream closed before
its end drops the connection, which is how the engine learns to stop generating.

What it deliberately doesn't do: HTTP/2, proxies or any environment setting, redirects, cookies,
compression, methods other than POST, streamed request bodies. External endpoints (the overflow
path) and TorchServe keep aiohttp (gateway/upstream.py).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import re
import socket
import ssl
from urllib.parse import urlsplit

import httptools

KEEPALIVE_SECONDS = 15.0
MAX_IDLE_PER_HOST = 256
# Bodies up to this size go out in one write with the head (one send); larger ones in slices of
# it, each when the transport has room (its buffer never holds a copy of a whole 16 MB body).
_CHUNK = 256 * 1024
# A stream's body waiting for its reader, beyond which the connection stops reading the engine.
MAX_BUFFERED = 256 * 1024
_UNSAFE_VALUE = re.compile(r"[\r\n\0]")
_NOT_TOKEN = re.compile(r"[^!#$%&'*+\-.^_`|~0-9A-Za-z]")


class UpstreamError(ConnectionError):
    """The engine could not be reached, or its answer was cut short or not HTTP/1.1 (a 502)."""


class ConnectError(UpstreamError):
    """Connecting failed: refused, unreachable, no such host."""


class PrivateAddress(ConnectError):
    """A public-only host (an organization's cluster) resolved only to addresses the platform
    does not call for tenants: never connected to."""

    def __init__(self, host: str, addresses: list[str]) -> None:
        super().__init__(f"{host} resolved only to {', '.join(addresses[:3])}, not a public address")
        self.host, self.addresses = host, addresses


class TLSError(UpstreamError):
    """The TLS handshake failed (a certificate not valid for the host, an unknown CA, ...)."""


class ServerDisconnected(UpstreamError):
    """The connection closed or was reset before the whole response arrived."""

    def __init__(self, message: str, *, before_response: bool = False) -> None:
        super().__init__(message)
        self.before_response = before_response  # not one byte of the response had arrived


class InvalidResponse(UpstreamError):
    """What came back is not an HTTP/1.1 response."""


class InvalidURL(UpstreamError):
    """The deployment's URL is not one this client can call (not http(s), unsafe characters)."""


class UpstreamTimeout(TimeoutError):
    """Connecting took longer than connect_timeout, or the engine was silent for read_timeout."""


class UpstreamResponse:
    """A complete response: status, headers as (lower-case name, value) bytes pairs, body."""

    __slots__ = ("status", "headers", "content")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], content: bytes) -> None:
        self.status = status
        self.headers = headers
        self.content = content

    def header(self, name: bytes) -> bytes | None:
        """The first value of the header `name` (lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def content_type(self) -> bytes | None:
        return self.header(b"content-type")


class UpstreamStream:
    """A response whose head has arrived: status, headers as in UpstreamResponse; the body comes
    through `iter_chunks()`. End it with `release()` (read to its end: the connection may serve
    another request) or `close()` (drops the connection: the engine stops generating)."""

    __slots__ = ("status", "headers", "_connection", "_pool")

    def __init__(self, connection: _Connection, pool: UpstreamPool) -> None:
        self.status = connection.parser.get_status_code()
        self.headers, connection.headers = connection.headers, []
        self._connection: _Connection | None = connection
        self._pool = pool

    header = UpstreamResponse.header
    content_type = UpstreamResponse.content_type

    async def iter_chunks(self):
        """The body's bytes as they arrive (what has arrived since the last one, joined). Raises
        UpstreamTimeout after read_timeout of silence, ServerDisconnected if the body is cut
        short; either, or a cancellation, closes the connection."""
        connection = self._connection
        if connection is None:
            return
        chunks = connection.chunks
        try:
            while True:
                if chunks:
                    chunk = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                    chunks.clear()
                    connection.buffered = 0
                    if connection.reading_paused:
                        connection.resume()
                    yield chunk
                elif connection.error is not None:
                    raise connection.error
                elif connection.done:
                    return
                else:
                    connection.readable = connection.loop.create_future()
                    await connection.readable
        except BaseException:
            self.close()
            raise

    @property
    def complete(self) -> bool:
        """The whole body has arrived."""
        return self._connection is not None and self._connection.done

    def release(self) -> None:
        """Back to the pool if the body was read to its end and the engine keeps the connection
        alive; else closed."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        connection.readable = None
        if (
            connection.done
            and not connection.chunks
            and connection.keep_alive
            and not connection.closed
            and not connection.paused
            and not connection.reading_paused
        ):
            self._pool._release(connection)
        else:
            connection.close()
        self._pool._slots.release()

    def close(self) -> None:
        """Drop the connection (whatever is left of the body is not read)."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        connection.close()
        self._pool._slots.release()


@functools.lru_cache(maxsize=1024)
def _split(url: str) -> tuple[str, str, int, str, str]:
    """(scheme, host, port, Host header, request target) of an http(s) URL; a handful per
    deployment, hence the cache."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:  # a bad IPv6 literal or port
        raise InvalidURL(f"Not a valid URL: {url!r}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidURL(f"Not an http(s) URL: {url!r}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    netloc = parts.netloc.rpartition("@")[2]  # never the credentials
    if _UNSAFE_VALUE.search(target) or " " in target or _UNSAFE_VALUE.search(netloc):
        raise InvalidURL(f"Unsafe characters in URL: {url!r}")
    return parts.scheme, parts.hostname, port, netloc, target


def _prepare(
    url: str, body: bytes, headers: dict[str, str], server_hostname: str | None, public_only: bool = False
) -> tuple[tuple, bytes]:
    """The pool key (scheme, host, port, TLS server name, public only) and the request's head for
    `url`. Public-only connections are kept apart: one to a platform engine is never reused for
    an address an organization gave."""
    scheme, host, port, netloc, target = _split(url)
    key = (scheme, host, port, server_hostname if scheme == "https" else None, public_only)
    return key, _request_head(target, netloc, headers, len(body))


def _request_head(target: str, host: str, headers: dict[str, str], length: int) -> bytes:
    lines = []
    for name, value in headers.items():
        lowered = name.lower()
        if lowered == "host":
            host = value  # an Ingress / HTTPRoute routes on it
        elif lowered == "content-length":
            continue  # ours, from the body
        elif _NOT_TOKEN.search(name) or _UNSAFE_VALUE.search(value):
            # Some values come from callers (x-sandbox-*): never let one add a header or a request.
            raise ValueError(f"Refusing to send the header {name!r}: {value!r}")
        else:
            lines.append(f"{name}: {value}\r\n")
    if _UNSAFE_VALUE.search(host):
        raise ValueError(f"Refusing to send the Host header {host!r}")
    head = f"POST {target} HTTP/1.1\r\nhost: {host}\r\ncontent-length: {length}\r\n{''.join(lines)}\r\n"
    return head.encode("latin-1")


class _Connection(asyncio.Protocol):
    """One connection to an engine, carrying one request at a time."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        key: tuple,
        read_timeout: float,
        max_buffered: int = MAX_BUFFERED,
    ) -> None:
        self.loop = loop
        self.key = key
        self.read_timeout = read_timeout
        self.max_buffered = max_buffered
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.keep_alive = False
        self.paused = False
        self.waiter: asyncio.Future | None = None  # the response (a stream's head) being awaited
        self.in_flight = False  # a request whose response has not fully arrived (nor failed)
        self.streaming = False  # hand the body over as it arrives (UpstreamStream)
        self.chunks: collections.deque[bytes] = collections.deque()  # a stream's unread body
        self.buffered = 0  # bytes in `chunks`
        self.reading_paused = False  # stopped reading: the stream's reader is behind
        self.readable: asyncio.Future | None = None  # set while the stream's reader waits
        self.done = False  # a stream's body has fully arrived
        self.error: BaseException | None = None  # why a stream's body failed
        self.drained: asyncio.Future | None = None  # set while a write waits on pause_writing
        self.timer: asyncio.TimerHandle | None = None
        self.last_activity = 0.0
        self.received = False  # any byte of the current response
        self.headers_done = False
        self.framed = False  # the body has a length (Content-Length or chunked), else ends at EOF
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    async def exchange(
        self, head: bytes, body: bytes, *, streaming: bool = False
    ) -> UpstreamResponse | None:
        """Send the request; the whole response, or (streaming) None once its head arrived, the
        body then coming into `chunks` until `done` or `error`."""
        loop = self.loop
        self.waiter = waiter = loop.create_future()
        self.received = self.headers_done = self.framed = self.keep_alive = False
        self.in_flight, self.streaming, self.done, self.error = True, streaming, False, None
        self.last_activity = loop.time()
        # One timer per request; it re-arms itself from the last activity rather than being
        # replaced on every chunk (aiohttp's sock_read: the longest silence, not a total). The
        # engine reading the request (resume_writing) counts as activity too.
        self.timer = loop.call_at(self.last_activity + self.read_timeout, self._check_silence)
        try:
            try:
                if len(body) <= _CHUNK:
                    self.transport.write(head + body)
                else:
                    await self._write_in_slices(head, body)
            except (OSError, RuntimeError) as exc:  # the transport closed under us
                raise ServerDisconnected(f"{exc}", before_response=True) from exc
            return await waiter
        finally:
            if not (streaming and self.in_flight):
                self.timer.cancel()  # else a stream's body is still coming: silence still counts
            self.waiter = self.drained = None

    async def _write_in_slices(self, head: bytes, body: bytes) -> None:
        self.transport.write(head)
        view = memoryview(body)
        for offset in range(0, len(body), _CHUNK):
            if self.paused:
                self.drained = self.loop.create_future()
                await self.drained
                if self.waiter.done():
                    # Answered (say, 413) or failed before taking it all. Still paused, so the
                    # connection is not reused: the engine may still expect the rest.
                    return
            self.transport.write(view[offset : offset + _CHUNK])

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if not self.closed:
            self.closed = True
            self.transport.abort()

    def resume(self) -> None:
        """The stream's reader caught up: read from the engine again."""
        self.reading_paused = False
        self.last_activity = self.loop.time()  # the wait was the reader's, not the engine's
        if not self.closed:
            self.transport.resume_reading()

    # ---- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if not self.in_flight:
            self.close()  # bytes nobody asked for: the connection can't be trusted any more
            return
        self.received = True
        self.last_activity = self.loop.time()
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(InvalidResponse(f"The engine's response is not HTTP/1.1 ({exc})"))

    def eof_received(self) -> None:
        return None  # let the transport close; connection_lost decides what the EOF meant

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None and not self.in_flight:
            self.timer.cancel()
        if not self.in_flight:
            return
        if self.headers_done and not self.framed and exc is None:
            self.keep_alive = False
            self._finish()  # a body without a length ends where the connection does
        else:
            failure = ServerDisconnected(
                "The engine closed the connection before it answered"
                if not self.received
                else "The engine closed the connection in the middle of its response",
                before_response=not self.received,
            )
            failure.__cause__ = exc
            self._fail(failure)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.last_activity = self.loop.time()  # the engine is reading: not silent
        self._wake_writer()

    # ---- httptools callbacks -------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.headers = []
        self.body = []
        self.headers_done = self.framed = False
        if not self.in_flight:
            self.close()  # a second response to one request

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length" or name == b"transfer-encoding":
            self.framed = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        if self.streaming and self.parser.get_status_code() >= 200:
            waiter = self.waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)  # the head: the stream's reader takes it from here

    def on_body(self, body: bytes) -> None:
        if not self.streaming:
            self.body.append(body)
            return
        self.chunks.append(body)
        self.buffered += len(body)
        self._wake_reader()
        if self.buffered > self.max_buffered and not self.reading_paused:
            # The reader (the client behind it) is slower than the engine: stop reading, so the
            # socket's buffers fill and TCP stops the engine, rather than buffering the stream.
            self.reading_paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() < 200:
            self.headers_done = False
            return  # 100 Continue, 103 Early Hints: the answer comes after them
        self.keep_alive = self.parser.should_keep_alive()
        self._finish()

    # ---- outcomes ------------------------------------------------------------------------
    def _finish(self) -> None:
        self.in_flight = False
        self.timer.cancel()
        if self.streaming:
            self.done = True
            self._wake_reader()
            self._wake_writer()
            return
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            response = UpstreamResponse(
                self.parser.get_status_code(), self.headers, b"".join(self.body)
            )
            self.headers, self.body = [], []  # an idle connection holds no response
            waiter.set_result(response)
        self._wake_writer()

    def _fail(self, exc: BaseException) -> None:
        self.in_flight = False
        self.timer.cancel()
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        elif self.streaming:
            self.error = exc  # the head is out: the failure reaches the stream's reader
            self._wake_reader()
        self._wake_writer()

    def _wake_reader(self) -> None:
        if self.readable is not None and not self.readable.done():
            self.readable.set_result(None)

    def _wake_writer(self) -> None:
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def _check_silence(self) -> None:
        if not self.in_flight:
            return
        if self.reading_paused:
            self.last_activity = self.loop.time()  # waiting on the stream's reader, not the engine
        due = self.last_activity + self.read_timeout
        if self.loop.time() >= due - 0.001:
            self._fail(UpstreamTimeout(f"The engine sent nothing for {self.read_timeout:g} s"))
        else:
            self.timer = self.loop.call_at(due, self._check_silence)


async def lookup(loop: asyncio.AbstractEventLoop, host: str, port: int) -> list[str]:
    """The addresses `host` resolves to (the loop's resolver: uvloop's own, not socket's)."""
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


class UpstreamPool:
    """Keep-alive connections to the engines, shared by every request of one gateway process.

    Create it inside the running loop (like the aiohttp session). Idle connections are kept per
    (scheme, host, port, TLS server name), most recently used first, at most
    `max_idle_per_host` of them, and closed after `keepalive` seconds unused.
    """

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        keepalive: float = KEEPALIVE_SECONDS,
        max_idle_per_host: int = MAX_IDLE_PER_HOST,
        max_connections: int = 1000,
        max_buffered: int = MAX_BUFFERED,
        ssl_context: ssl.SSLContext | None = None,
        address_allowed=lambda address: False,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.address_allowed = address_allowed  # for public_only requests: may this IP be called
        self.read_timeout = read_timeout
        self.keepalive = keepalive
        self.max_idle_per_host = max_idle_per_host
        self.max_buffered = max_buffered
        self._slots = asyncio.Semaphore(max_connections)  # requests in flight, one connection each
        self._ssl_context = ssl_context
        self._idle: dict[tuple, list[_Connection]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    async def post(
        self, url: str, body: bytes, headers: dict[str, str], *, server_hostname: str | None = None,
        public_only: bool = False,
    ) -> UpstreamResponse:
        """POST `body` to `url`; the whole response. Raises UpstreamTimeout (a TimeoutError) or
        an UpstreamError; ValueError for a header that can't be sent safely."""
        key, head = _prepare(url, body, headers, server_hostname, public_only)
        async with self._slots:
            return await self._on_connection(key, lambda c: self._exchange(c, head, body))

    async def stream(
        self, url: str, body: bytes, headers: dict[str, str], *, server_hostname: str | None = None,
        public_only: bool = False,
    ) -> UpstreamStream:
        """POST `body` to `url`; returns once the response's head has arrived, the body then
        read through the stream (which must be released or closed: it holds a connection).
        Raises as `post` does; the keep-alive race is retried only before any byte came back."""
        key, head = _prepare(url, body, headers, server_hostname, public_only)
        await self._slots.acquire()  # held until the stream is released or closed
        try:
            return await self._on_connection(key, lambda c: self._start(c, head, body))
        except BaseException:
            self._slots.release()
            raise

    async def _on_connection(self, key: tuple, run):
        """`run(connection)` on an idle connection to `key` when there is one; when the engine had
        closed that one as the request went out (not one byte came back, so it never answered
        it), once more on a fresh connection — never more than once."""
        connection = self._take_idle(key)
        if connection is not None:
            try:
                return await run(connection)
            except ServerDisconnected as exc:
                if not exc.before_response:
                    raise
        return await run(await self._connect(key))

    async def _start(self, connection: _Connection, head: bytes, body: bytes) -> UpstreamStream:
        try:
            await connection.exchange(head, body, streaming=True)
        except BaseException:
            connection.close()  # after an error or a cancellation, nothing on it can be trusted
            raise
        return UpstreamStream(connection, self)

    async def aclose(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()

    async def _exchange(
        self, connection: _Connection, head: bytes, body: bytes
    ) -> UpstreamResponse:
        try:
            response = await connection.exchange(head, body)
        except BaseException:
            connection.close()  # after an error or a cancellation, nothing on it can be trusted
            raise
        if connection.keep_alive and not connection.closed and not connection.paused:
            self._release(connection)
        else:
            connection.close()
        return response

    async def _connect(self, key: tuple) -> _Connection:
        scheme, host, port, server_hostname, public_only = key
        loop = asyncio.get_running_loop()
        tls = self._tls() if scheme == "https" else None
        try:
            async with asyncio.timeout(self.connect_timeout):
                # An organization's cluster (public_only): resolved here, every address the
                # platform's rule refuses dropped, and the connection made to what is left — the
                # name can't resolve elsewhere between a check and the connect (DNS rebinding).
                target = await self._public_addresses(loop, host, port) if public_only else host
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop, key, self.read_timeout, self.max_buffered),
                    target,
                    port,
                    ssl=tls,
                    server_hostname=(server_hostname or host) if tls else None,
                )
        except TimeoutError as exc:
            raise UpstreamTimeout(
                f"Connecting to {host}:{port} took over {self.connect_timeout:g} s"
            ) from exc
        except UpstreamError:  # PrivateAddress, ConnectError from the lookup: already in words
            raise
        except ssl.SSLError as exc:  # before OSError: it is one
            raise TLSError(f"TLS with {server_hostname or host}:{port} failed: {exc}") from exc
        except OSError as exc:
            raise ConnectError(f"Connecting to {host}:{port} failed: {exc}") from exc
        return connection

    async def _public_addresses(self, loop, host: str, port: int) -> str:
        """The first public address of `host` (an IP literal is its own); PrivateAddress when
        it has none. The rule is the platform's one (a callable given to the pool)."""
        literal = host.strip("[]")
        if self.address_allowed(literal):
            return literal
        try:
            addresses = await lookup(loop, literal, port)
        except OSError as exc:
            raise ConnectError(f"Resolving {host} failed: {exc}") from exc
        public = [address for address in addresses if self.address_allowed(address)]
        if not public:
            raise PrivateAddress(host, sorted(set(addresses)))
        return public[0]

    def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()  # loads the CA store once
        return self._ssl_context

    def _take_idle(self, key: tuple) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if connection.loop.time() - connection.idle_since >= self.keepalive:
                # The most recently used one is too old, so every one under it is.
                for stale in (connection, *idle):
                    stale.close()
                idle.clear()
                return None
            if not connection.closed and not connection.transport.is_closing():
                return connection
        return None

    def _release(self, connection: _Connection) -> None:
        if self._closed:
            connection.close()
            return
        idle = self._idle.setdefault(connection.key, [])
        if len(idle) >= self.max_idle_per_host:
            connection.close()
            return
        connection.idle_since = connection.loop.time()
        idle.append(connection)
        if self._sweeper is None:
            self._sweeper = connection.loop.call_later(self.keepalive, self._sweep)

    def _sweep(self) -> None:
        """Close the connections idle for `keepalive` seconds (and those the engine closed)."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        oldest = None
        for key, idle in list(self._idle.items()):
            keep = []
            for connection in idle:
                if connection.closed or now - connection.idle_since >= self.keepalive:
                    connection.close()
                else:
                    keep.append(connection)
            if keep:
                self._idle[key] = keep
                first = keep[0].idle_since  # the lists are in the order they went idle
                oldest = first if oldest is None else min(oldest, first)
            else:
                del self._idle[key]
        if oldest is not None:
            self._sweeper = loop.call_at(oldest + self.keepalive, self._sweep)
