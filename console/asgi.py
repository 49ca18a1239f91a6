"""ASGI entry point: the inference gateway under /v1/ (and /metrics), the Django console for the rest."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")

django_application = get_asgi_application()

# Imported after Django is set up: the gateway reads models and settings.
from gateway.app import mount  # noqa: E402

application = mount(django_application)
