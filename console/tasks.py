"""Console-wide Celery tasks."""

from __future__ import annotations

import socket

from celery import shared_task
from django.utils import timezone

from console.models import WorkerHeartbeat


@shared_task(name="console.health_ping", ignore_result=True)
def health_ping() -> str:
    """Scheduled by beat; proves both beat and a worker run (shown on /healthz)."""
    name = f"worker@{socket.gethostname()}"
    WorkerHeartbeat.objects.update_or_create(name=name, defaults={"last_seen_at": timezone.now()})
    return name
