"""Short-lived signed URLs for uploaded model artifacts: a pod (TorchServe's init container)
fetches the archive from ModelDeck without a session or a key, only with a URL that names one
model's archive by id and sha256, signed with the SECRET_KEY and valid for a few minutes."""

from __future__ import annotations

from django.conf import settings
from django.core import signing

from catalog.models import CatalogModel

SALT = "modeldeck.catalog.artifact"


def artifact_url_ttl() -> int:
    """Seconds a signed artifact URL stays valid (MODELDECK_ARTIFACT_URL_TTL, default 15 min)."""
    return int(getattr(settings, "ARTIFACT_URL_TTL", 900))


def artifact_token(model: CatalogModel) -> str:
    return signing.TimestampSigner(salt=SALT).sign_object({"m": model.pk, "s": model.artifact_sha256})


def artifact_url(model: CatalogModel, *, base_url: str) -> str:
    """The URL a pod downloads `model`'s uploaded artifact from (the route checks it)."""
    return f"{base_url.rstrip('/')}/catalog/artifacts/{artifact_token(model)}/"


def artifact_for_token(token: str) -> CatalogModel | None:
    """The model whose archive the token names, or None when it is forged, expired, or the
    archive it was signed for is gone."""
    try:
        data = signing.TimestampSigner(salt=SALT).unsign_object(token, max_age=artifact_url_ttl())
    except (signing.BadSignature, ValueError, TypeError):
        return None
    if not isinstance(data, dict):
        return None
    model = CatalogModel.objects.filter(pk=data.get("m")).first()
    if model is None or not model.artifact or model.artifact_sha256 != data.get("s"):
        return None
    return model
