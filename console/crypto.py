"""Encryption of secrets at rest (tokens, API keys of upstreams, kubeconfigs)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.db import models


@lru_cache(maxsize=4)
def _fernet(key_material: str) -> Fernet:
    # A Fernet key must be 32 url-safe base64 bytes; derive one so any string works.
    digest = hashlib.sha256(("modeldeck-secrets:" + key_material).encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def _key_material() -> str:
    return settings.MODELDECK_ENCRYPTION_KEY or settings.SECRET_KEY


def encrypt(plaintext: str) -> str:
    return _fernet(_key_material()).encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str) -> str:
    try:
        return _fernet(_key_material()).decrypt(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise ValueError(
            "A stored secret cannot be decrypted: MODELDECK_ENCRYPTION_KEY or SECRET_KEY changed."
        ) from exc


class EncryptedTextField(models.TextField):
    """A text column stored encrypted; Python code sees plaintext."""

    def from_db_value(self, value, expression, connection):
        if value in (None, ""):
            return value
        return decrypt(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value in (None, ""):
            return value
        return encrypt(value)


def last4(secret: str) -> str:
    return secret[-4:] if len(secret) >= 8 else ""


def bearer_matches(authorization: str, token: str | None) -> bool:
    """`Authorization: Bearer <token>` with the configured token; nothing matches an unset one."""
    if not token:
        return False
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )
