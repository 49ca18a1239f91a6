"""The embedded mode's stand-in for Redis: gateway/load.py's keys in this process's memory.

`make run` runs without Redis and serves the console and the gateway from one process; the
autoscaler runs in that process too (deployments/autoscale.py, EmbeddedAutoscaler), so what the
gateway measures (in-flight sets, 1-second buckets, the last request) and what the autoscaler
publishes (the scale a held request waits for) meet here, with the same keys and commands as in
Redis. Only the commands gateway/load.py sends exist, with Redis's replies (strings, not bytes).
Keys with a TTL expire as in Redis: read as absent once due, and swept every `SWEEP_SECONDS`.
"""

from __future__ import annotations

import threading
import time
from typing import Any

SWEEP_SECONDS = 10.0


class MemoryStore:
    """A thread-safe subset of Redis: the strings, hashes and sorted sets gateway/load.py uses."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, Any] = {}
        self._expires: dict[str, float] = {}  # key → monotonic deadline
        self._swept = time.monotonic()

    # ---- Redis's commands, as tuples (the gateway's command groups) -----------------------

    def execute(self, commands: list[tuple]) -> list:
        """Run the commands in order, atomically with respect to other callers; their replies."""
        with self._lock:
            now = time.monotonic()
            if now - self._swept >= SWEEP_SECONDS:
                self._sweep(now)
            return [self._run(now, command[0].upper(), *command[1:]) for command in commands]

    def _sweep(self, now: float) -> None:
        for key in [k for k, due in self._expires.items() if due <= now]:
            self._data.pop(key, None)
            del self._expires[key]
        self._swept = now

    def _get(self, now: float, key: str, kind: type) -> Any:
        due = self._expires.get(key)
        if due is not None and due <= now:
            self._data.pop(key, None)
            del self._expires[key]
        value = self._data.get(key)
        return value if isinstance(value, kind) else None

    def _make(self, now: float, key: str, kind: type) -> Any:
        value = self._get(now, key, kind)
        if value is None:
            value = self._data[key] = kind()
            self._expires.pop(key, None)
        return value

    def _run(self, now: float, name: str, *args: Any) -> Any:  # noqa: C901, PLR0911, PLR0912 - one branch per command
        key = str(args[0])
        if name == "ZADD":
            members = self._make(now, key, dict)
            added = 0
            for score, member in zip(args[1::2], args[2::2], strict=True):
                added += str(member) not in members
                members[str(member)] = float(score)
            return added
        if name == "ZREM":
            members = self._get(now, key, dict) or {}
            removed = sum(1 for member in args[1:] if members.pop(str(member), None) is not None)
            if not members:
                self._data.pop(key, None)
            return removed
        if name == "ZREMRANGEBYSCORE":
            members = self._get(now, key, dict) or {}
            low, high = _score(args[1]), _score(args[2])
            gone = [m for m, score in members.items() if low <= score <= high]
            for member in gone:
                del members[member]
            return len(gone)
        if name == "ZCARD":
            return len(self._get(now, key, dict) or {})
        if name == "HINCRBY":
            fields = self._make(now, key, _Hash)
            fields[str(args[1])] = str(int(fields.get(str(args[1]), 0)) + int(args[2]))
            return int(fields[str(args[1])])
        if name == "HSET":
            fields = self._make(now, key, _Hash)
            for field, value in zip(args[1::2], args[2::2], strict=True):
                fields[str(field)] = str(value)
            return len(args[1:]) // 2
        if name == "HGETALL":
            return dict(self._get(now, key, _Hash) or {})
        if name == "HMGET":
            fields = self._get(now, key, _Hash) or {}
            return [fields.get(str(field)) for field in args[1:]]
        if name == "EXPIRE":
            if self._get(now, key, object) is None:
                return 0
            self._expires[key] = now + float(args[1])
            return 1
        if name == "SET":
            options = [str(a).upper() for a in args[2:]]
            if "NX" in options and self._get(now, key, object) is not None:
                return None
            self._data[key] = str(args[1])
            self._expires.pop(key, None)
            if "EX" in options:
                self._expires[key] = now + float(args[2:][options.index("EX") + 1])
            return True
        if name == "GET":
            return self._get(now, key, str)
        if name == "DEL":
            found = 0
            for k in map(str, args):
                found += self._get(now, k, object) is not None
                self._data.pop(k, None)
                self._expires.pop(k, None)
            return found
        raise ValueError(f"the embedded store has no {name} command")

    # ---- redis-py's shapes: what the autoscaler (a synchronous client) and the holds call ---

    def pipeline(self, transaction: bool = False) -> _Pipeline:
        return _Pipeline(self)

    def close(self) -> None:
        """Nothing to close (the autoscaler closes the Redis client it made)."""

    def reset(self) -> None:
        """Forget everything (tests)."""
        with self._lock:
            self._data.clear()
            self._expires.clear()


class _Hash(dict):
    """A Redis hash (a dict of its own type, so a plain dict stays a sorted set)."""


def _score(value: Any) -> float:
    """A sorted-set bound: a number, or -inf / +inf as Redis writes them."""
    return float(str(value).lstrip("+"))  # float() reads "-inf" and "inf"


class _Pipeline:
    """redis-py's pipeline methods that gateway/load.py and the autoscaler call, queued and run
    together by execute()."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self._commands: list[tuple] = []

    def zremrangebyscore(self, key: str, low: Any, high: Any) -> None:
        self._commands.append(("ZREMRANGEBYSCORE", key, low, high))

    def zcard(self, key: str) -> None:
        self._commands.append(("ZCARD", key))

    def get(self, key: str) -> None:
        self._commands.append(("GET", key))

    def hgetall(self, key: str) -> None:
        self._commands.append(("HGETALL", key))

    def hset(self, key: str, mapping: dict) -> None:
        self._commands.append(("HSET", key, *[part for item in mapping.items() for part in item]))

    def expire(self, key: str, seconds: int) -> None:
        self._commands.append(("EXPIRE", key, seconds))

    def delete(self, *keys: str) -> None:
        self._commands.append(("DEL", *keys))

    def execute(self) -> list:
        commands, self._commands = self._commands, []
        return self._store.execute(commands)


class AsyncView:
    """The few redis.asyncio calls the gateway's cold-start holds make (gateway/load.py)."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    async def set(self, key: str, value: Any, *, nx: bool = False, ex: int | None = None) -> bool | None:
        options = [*(["NX"] if nx else []), *(["EX", ex] if ex is not None else [])]
        return self.store.execute([("SET", key, value, *options)])[0]

    async def hmget(self, key: str, *fields: str) -> list:
        return self.store.execute([("HMGET", key, *fields)])[0]

    async def execute(self, commands: list[tuple]) -> list:
        return self.store.execute(commands)


STORE = MemoryStore()
