"""One multiplexed Redis connection per gateway process for the hot path's scripts.

Every admitted request costs the gateway two Redis commands (admit, finish; gateway/ratelimit.py).
Through redis.asyncio each took about 115 µs of the gateway's CPU (Pipeline and connection-pool
objects, the retry wrapper, parsing in Python); written straight to a socket with hiredis's
packer and reader it is about 40 µs (figures from a loop of one EVALSHA, on this machine). So
the scripts go through this connection:

- the commands of one call (a batch) leave in one write and their replies are matched in order
  (Redis answers a connection's commands in the order it received them). Holding a turn's
  batches for one write (auto-pipelining) was measured and gained nothing at concurrency 32
  (throughput ratio 0.28-0.31 with it, 0.31-0.32 without, CPU per request the same, in
  interleaved runs on 2 cores), so it was left out;
- a batch that meets a dropped connection (Redis restarted, CLIENT KILL, an idle timeout) is sent
  once more on a fresh one, like every other gateway client (cache.redis_options): both scripts
  are safe to run twice;
- a reply that takes longer than the socket timeout closes the connection and fails what was
  waiting on it (later replies could no longer be matched);
- error replies come back as redis-py's exception classes (NoScriptError for NOSCRIPT), so the
  limiter treats them as it did.

Only plain `redis://` and `unix://` URLs take this path; `rediss://` keeps redis.asyncio (its
certificate options live in the URL and redis-py already handles them): see `connect_for`.
"""

from __future__ import annotations

import asyncio
import collections
import time

from redis.connection import parse_url
from redis.exceptions import AuthenticationError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

try:
    import hiredis
except ImportError:  # pragma: no cover - hiredis comes with redis[hiredis] (pyproject)
    hiredis = None


def _reply_error(message: str) -> ResponseError:
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return ResponseError(message)


class _Protocol(asyncio.Protocol):
    """Replies matched to batches in order; each batch is (count, replies so far, future)."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader(replyError=_ReplyError)
        self.pending: collections.deque = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None
        self.paused: asyncio.Future | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        pending = self.pending
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self._fail(RedisConnectionError(f"Redis protocol error: {exc}"))
                return
            if reply is False:
                return
            if isinstance(reply, _ReplyError):
                reply = _reply_error(reply.args[0] if reply.args else "")
            if not pending:  # nothing asked for it: the stream can't be trusted any more
                self._fail(RedisConnectionError("Redis sent a reply nobody asked for."))
                return
            count, replies, future, _ = pending[0]
            replies.append(reply)
            if len(replies) == count:
                pending.popleft()
                if not future.done():
                    future.set_result(replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"Redis closed the connection ({exc or 'end of stream'})."))

    def pause_writing(self) -> None:
        self.paused = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.paused is not None and not self.paused.done():
            self.paused.set_result(None)
        self.paused = None

    def _fail(self, exc: Exception) -> None:
        if self.lost is None:
            self.lost = exc
        while self.pending:
            *_, future, _ = self.pending.popleft()
            if not future.done():
                future.set_exception(exc)
        if self.paused is not None and not self.paused.done():
            self.paused.set_result(None)  # the writer wakes and finds `lost`
        if self.transport is not None:
            self.transport.abort()


class _ReplyError(Exception):
    """What hiredis makes of an error reply; turned into redis-py's class before anyone sees it."""


def _pack(command: tuple) -> bytes:
    return hiredis.pack_command(command)


class RespConnection:
    """`await execute([(name, *args), ...])` → the replies, in order, errors as exceptions."""

    def __init__(
        self, url: str, *, connect_timeout: float, reply_timeout: float, retry_backoff: float = 0.05
    ) -> None:
        options = parse_url(url)
        self.path = options.get("path")
        self.host, self.port = options.get("host", "127.0.0.1"), options.get("port", 6379)
        self.username, self.password = options.get("username"), options.get("password")
        self.db = int(options.get("db") or 0)
        self.connect_timeout = connect_timeout
        self.reply_timeout = reply_timeout
        self.retry_backoff = retry_backoff
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the connection lives in

    # ---- connection ------------------------------------------------------------------------
    async def _connection(self) -> _Protocol:
        protocol = self._protocol
        loop = asyncio.get_running_loop()
        if protocol is not None and protocol.lost is None and self._loop is loop:
            return protocol
        if self._loop is not loop:  # used from another event loop (tests): start afresh there
            self._loop, self._protocol, self._connecting, self._watchdog = loop, None, None, None
        if self._closed:
            raise RedisConnectionError("The gateway's Redis connection is closed.")
        if self._connecting is None:  # one connect at a time; everyone else waits for it
            self._connecting = asyncio.ensure_future(self._connect())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        protocol = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.path:
                    _, protocol = await loop.create_unix_connection(_Protocol, self.path)
                else:
                    _, protocol = await loop.create_connection(_Protocol, self.host, self.port)
                handshake = []
                if self.password:
                    auth = (self.username, self.password) if self.username else (self.password,)
                    handshake.append(("AUTH", *auth))
                if self.db:
                    handshake.append(("SELECT", self.db))
                replies = await self._send(protocol, handshake) if handshake else []
        except (OSError, TimeoutError, RedisConnectionError) as exc:
            if protocol is not None:
                protocol.transport.abort()
            raise RedisConnectionError(
                f"Redis at {self._where()} could not be reached ({exc})."
            ) from None
        for reply in replies:
            if isinstance(reply, Exception):  # a wrong password, or a db that doesn't exist
                protocol.transport.abort()
                raise AuthenticationError(f"Redis at {self._where()} refused the gateway: {reply}")
        self._protocol = protocol
        return protocol

    def _where(self) -> str:
        return self.path or f"{self.host}:{self.port}"

    def _send(self, protocol: _Protocol, commands: list[tuple]) -> asyncio.Future:
        if protocol.lost is not None:
            raise protocol.lost
        future = asyncio.get_running_loop().create_future()
        protocol.pending.append((len(commands), [], future, time.monotonic()))
        protocol.transport.write(b"".join(_pack(c) for c in commands))
        self._arm_watchdog()
        return future

    def _arm_watchdog(self) -> None:
        if self._watchdog is None:
            loop = asyncio.get_running_loop()
            self._watchdog = loop.call_later(min(1.0, self.reply_timeout), self._check)

    def _check(self) -> None:
        """Once a second while replies are awaited: the oldest past the timeout drops the line."""
        self._watchdog = None
        protocol = self._protocol
        if protocol is None or not protocol.pending:
            return
        if time.monotonic() - protocol.pending[0][3] > self.reply_timeout:
            protocol._fail(
                RedisTimeoutError(f"Redis did not answer within {self.reply_timeout:g} s.")
            )
            return
        self._arm_watchdog()

    # ---- commands --------------------------------------------------------------------------
    async def execute(self, commands: list[tuple]) -> list:
        """Send the commands in one write; a dropped connection (or a timeout) is retried once."""
        for attempt in (1, 2):
            try:
                protocol = await self._connection()
                if protocol.paused is not None:
                    await protocol.paused  # Redis reads slower than we write: wait for room
                return await self._send(protocol, commands)
            except (RedisConnectionError, RedisTimeoutError):
                if attempt == 2 or self._closed:
                    raise
                await asyncio.sleep(self.retry_backoff)
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        self._closed = True
        same_loop = self._loop is asyncio.get_running_loop()  # else that loop owns (and ended) it
        if self._watchdog is not None and same_loop:
            self._watchdog.cancel()
        if self._protocol is not None and self._protocol.transport is not None and same_loop:
            self._protocol.transport.close()
        self._protocol = self._watchdog = None


def connect_for(url: str, **options) -> RespConnection | None:
    """The lean connection for `url`, or None where redis.asyncio must keep the job (TLS, no hiredis)."""
    if hiredis is None or not (url.startswith("redis://") or url.startswith("unix://")):
        return None
    return RespConnection(url, **options)
