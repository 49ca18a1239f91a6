"""Checks a project's Hugging Face token or NGC key against the real service."""

from __future__ import annotations

import logging

from django.conf import settings

from catalog import hub, ngc
from projects.models import Integration, IntegrationKind

log = logging.getLogger(__name__)


def check(integration: Integration) -> tuple[bool, str]:
    """Return (ok, message in words). Never raises: a failed check is an answer too."""
    try:
        if integration.kind == IntegrationKind.HUGGINGFACE:

            result = hub.check_token(
                endpoint=settings.HF_ENDPOINT,
                token=integration.secret,
                timeout=float(settings.HUB_TIMEOUT_SECONDS),
            )
        else:

            result = ngc.check_key(
                base_url=settings.NGC_API_URL,
                api_key=integration.secret,
                timeout=float(settings.HUB_TIMEOUT_SECONDS),
            )
        return bool(result.ok), str(result.message)
    except Exception as exc:  # the check reports any failure in words to the user
        log.warning(
            "integration check failed", exc_info=True, extra={"integration": integration.pk}
        )
        return False, f"The check could not run: {exc}"
