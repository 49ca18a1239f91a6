"""Django's cache and Celery's broker talk to Redis like the gateway does (gateway/cache.py):
idle connections health-checked, timeouts retried, keepalive on; a killed connection costs
nothing."""

from __future__ import annotations

import uuid

import pytest
import redis
from django.conf import settings
from django.core.cache import cache

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="production mode (Redis) only")


def test_the_cache_pool_has_the_gateway_settings_and_survives_a_killed_connection():
    key = f"test:cache:{uuid.uuid4().hex}"
    cache.set(key, "kept", 30)
    pool = cache._cache.get_client(key).connection_pool
    kwargs = pool.connection_kwargs
    assert kwargs["health_check_interval"] == 10 and kwargs["socket_timeout"] == 5
    assert kwargs["socket_keepalive"] is True and kwargs["retry_on_timeout"] is True
    admin = redis.Redis.from_url(settings.REDIS_URL)
    try:
        name = f"cache-{uuid.uuid4().hex[:8]}"
        connection = pool.get_connection()
        connection.send_command("CLIENT", "SETNAME", name)
        connection.read_response()
        pool.release(connection)
        admin.execute_command("CLIENT", "KILL", "SKIPME", "yes", "ID", _client_id(admin, name))
        assert cache.get(key) == "kept"  # the dead pooled connection is replaced, not an error
    finally:
        cache.delete(key)
        admin.close()


def _client_id(admin: redis.Redis, name: str) -> int:
    for client in admin.client_list():
        if client.get("name") == name:
            return int(client["id"])
    raise AssertionError(f"no client named {name}")


def test_the_celery_broker_has_the_same_settings():
    from console.celery import app

    with app.connection_for_write() as connection:
        kwargs = connection.default_channel.client.connection_pool.connection_kwargs
    assert kwargs["health_check_interval"] == 10
    assert kwargs["socket_keepalive"] is True and kwargs["retry_on_timeout"] is True
