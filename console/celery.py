"""The Celery application shared by the web process, the worker and beat."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")

app = Celery("modeldeck")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# The gateway keeps its tasks (usage flush) beside its code, not in deployments/tasks.py.
app.autodiscover_tasks(["gateway"])
