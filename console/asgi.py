"""ASGI entry point: the inference gateway under /v1/ (and /metrics), the Django console for the rest."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")

django_application = get_asgi_application()

# Imported after Django is set up: the gateway reads models and settings.
from django.conf import settings  # noqa: E402

from deployments.autoscale import EmbeddedAutoscaler  # noqa: E402
from gateway.app import mount  # noqa: E402

application = mount(django_application)

if settings.EMBEDDED:
    # No Redis: the gateway measures in this process's memory, so the autoscaler runs here too
    # (with Redis, Celery beat runs it in a worker). The embedded mode serves from one process.
    EmbeddedAutoscaler().start()
