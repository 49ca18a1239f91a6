"""Checks a project's Hugging Face token or NGC key against the real service."""

from __future__ import annotations

import logging

from django.conf import settings

from catalog import hub, ngc
from projects.models import Integration, IntegrationKind

log = logging.getLogger(__name__)


def check(integration: Integration) -> tuple[bool, str]:
    """Return (ok, message in words). Never raises: a failed check is an answer too."""
    if integration.kind == IntegrationKind.S3:
        # The endpoint is the tenant's: the server never calls an address a tenant gave it.
        fields = integration.s3_settings()
        ok = bool(fields.get("access_key_id") and fields.get("secret_access_key"))
        where = fields.get("endpoint_url") or "AWS S3"
        return ok, (
            f"Access key and secret are set for {where}. ModelDeck does not call the store itself; "
            "the deployment's pods use them, and a wrong key shows on the deployment as the "
            "engine's load error." if ok else "The access key id or secret access key is missing."
        )
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
