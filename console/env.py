"""Strict readers for settings that come from the environment: a bad value stops the start."""

from __future__ import annotations

import os
from urllib.parse import unquote, urlparse


class EnvError(Exception):
    """A setting in the environment has a value ModelDeck cannot use."""


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value


def env_bool(name: str, default: bool) -> bool:
    value = env_str(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise EnvError(f"{name}={value!r} is not a boolean; use true or false.")


def env_int(
    name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    value = env_str(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise EnvError(f"{name}={value!r} is not a whole number.") from None
    if minimum is not None and number < minimum:
        raise EnvError(f"{name}={number} is below the minimum {minimum}.")
    if maximum is not None and number > maximum:
        raise EnvError(f"{name}={number} is above the maximum {maximum}.")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = env_str(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def database_from_url(name: str, url: str) -> dict:
    """Turn DATABASE_URL into Django's DATABASES entry (sqlite:///path or postgres://...)."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        path = unquote(parsed.path)
        if (
            path.startswith("/")
            and url.startswith("sqlite:///")
            and not url.startswith("sqlite:////")
        ):
            path = path[1:]  # sqlite:///relative.db is relative; sqlite:////abs.db is absolute
        if not path:
            raise EnvError(f"{name}={url!r} has no file path (use sqlite:///modeldeck.sqlite3).")
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": path,
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    if parsed.scheme in {"postgres", "postgresql", "pgsql"}:
        if not parsed.path.strip("/"):
            raise EnvError(f"{name}={url!r} names no database (postgres://user@host:5432/dbname).")
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parsed.path.lstrip("/")),
            "USER": unquote(parsed.username or ""),
            "PASSWORD": unquote(parsed.password or ""),
            "HOST": parsed.hostname or "",
            "PORT": str(parsed.port or ""),
            # Under ASGI each request may run on another thread, and persistent connections
            # (CONN_MAX_AGE) piled up idle until PostgreSQL said "too many clients". A
            # process-wide psycopg pool bounds them instead; Django requires CONN_MAX_AGE=0 then.
            "CONN_MAX_AGE": 0,
            # With a pool, Django turns this into psycopg_pool's `check`: one cheap round trip
            # per checkout, so a connection the server dropped (restart, failover,
            # pg_terminate_backend) is replaced instead of failing the request.
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": _pool_options(),
        }
    raise EnvError(f"{name}={url!r}: only sqlite:/// and postgres:// URLs are supported.")


def _pool_options() -> dict:
    """psycopg_pool settings for Django's OPTIONS["pool"] (MODELDECK_DB_POOL_MAX=0: no pool)."""
    max_size = env_int("MODELDECK_DB_POOL_MAX", 4, minimum=0, maximum=100)
    if max_size == 0:
        return {}
    min_size = env_int("MODELDECK_DB_POOL_MIN", 1, minimum=0, maximum=max_size)
    timeout = env_int("MODELDECK_DB_POOL_TIMEOUT", 10, minimum=1, maximum=600)
    return {"pool": {"min_size": min_size, "max_size": max_size, "timeout": timeout}}


def redis_url(name: str, url: str | None) -> str | None:
    if url is None:
        return None
    parsed = urlparse(url)
    if parsed.scheme not in {"redis", "rediss", "unix"}:
        raise EnvError(f"{name}={url!r} is not a redis:// URL.")
    return url
