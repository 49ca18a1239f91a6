"""The Celery application shared by the web process, the worker and beat."""

from __future__ import annotations

import gc
import os

from celery import Celery
from celery.signals import worker_process_init, worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")

app = Celery("modeldeck")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# The gateway keeps its tasks (usage flush) beside its code, not in deployments/tasks.py.
app.autodiscover_tasks(["gateway"])


@worker_process_init.connect
@worker_ready.connect  # a worker whose tasks run in its own process (make run: --pool threads)
def _freeze_start_up_objects(**_kwargs) -> None:
    """A pool process starts with Django, the apps and their modules loaded: out of the garbage
    collector's sight from then on (gc.freeze), so a full collection during a status-sync cycle
    walks only what the cycle made, not every start-up object (and pages shared with the parent
    stay shared)."""
    gc.collect()
    gc.freeze()
