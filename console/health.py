"""Health checks of the parts the console depends on: database, broker, workers."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlparse

from django.conf import settings
from django.db import connection
from django.utils import timezone

from console.crypto import bearer_matches
from console.models import WorkerHeartbeat


def check_database() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return {"ok": True, "vendor": connection.vendor}
    except Exception as exc:  # any driver error means "down" to a health check
        return {"ok": False, "vendor": connection.vendor, "error": str(exc)[:300]}


def check_broker() -> dict:
    url = settings.CELERY_BROKER_URL
    if url.startswith("filesystem://"):
        folder = settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"]
        from pathlib import Path

        ok = Path(folder).is_dir()
        return {
            "ok": ok,
            "transport": "filesystem (embedded)",
            **({} if ok else {"error": f"{folder} missing"}),
        }
    parsed = urlparse(url)
    safe = f"{parsed.scheme}://{parsed.hostname}:{parsed.port or 6379}"
    try:
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        client.ping()
        return {"ok": True, "transport": "redis", "url": safe}
    except Exception as exc:  # a health check reports, it never raises
        return {"ok": False, "transport": "redis", "url": safe, "error": str(exc)[:300]}


def check_workers() -> dict:
    try:
        beat = WorkerHeartbeat.objects.order_by("-last_seen_at").first()
    except Exception as exc:
        return {"ok": False, "error": str(exc)[:300]}
    if beat is None:
        return {"ok": None, "detail": "no heartbeat yet (worker and beat send one every 30 s)"}
    age = (timezone.now() - beat.last_seen_at).total_seconds()
    return {
        "ok": age < timedelta(minutes=2).total_seconds(),
        "last_seen_seconds_ago": round(age, 1),
        "worker": beat.name,
    }


def report() -> dict:
    database = check_database()
    broker = check_broker()
    workers = check_workers() if database["ok"] else {"ok": None}
    healthy = database["ok"] and broker["ok"]
    return {
        "status": "ok" if healthy else "degraded",
        "database": database,
        "broker": broker,
        "workers": workers,
    }


def may_see_details(request) -> bool:
    """Component details (driver errors, hosts, worker names) are for staff and the metrics
    token's holder; everyone else learns only up or down."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        return True
    return bearer_matches(request.headers.get("Authorization", ""), settings.METRICS_TOKEN)


def public_view(result: dict) -> dict:
    return {"status": result["status"]}
