"""Queueing a Celery task by name from a service, where a queue that can't be reached must not
undo what was committed: each caller has its own way to catch up (a waiting mark, the next round
or tick), so a failed send is logged and answered False, never raised."""

from __future__ import annotations

import logging

from celery import current_app

log = logging.getLogger(__name__)


def enqueue(task_name: str, *args, what: str, deployment: int | None = None) -> bool:
    """`task_name`.delay(*args); False (logged as "<what> not queued") when the transport fails."""
    try:
        current_app.tasks[task_name].delay(*args)
    except Exception as exc:  # noqa: BLE001 - kombu's OperationalError and whatever the transport raises
        log.warning("%s not queued: %s", what, exc, extra={"deployment": deployment})
        return False
    return True
