"""Logging filters of the console's LOGGING setting (console/settings.py)."""

from __future__ import annotations

import logging


class RefusalWithoutTraceback(logging.Filter):
    """A 403 is an ordinary answer (a viewer opened an admin's page), not a fault: django.request
    logs it at WARNING with the PermissionDenied's traceback, ~30 lines of noise per refusal. Keep
    the one line that says which path was refused; other records pass untouched."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "status_code", None) == 403:
            record.exc_info = None
            record.exc_text = None
        return True
