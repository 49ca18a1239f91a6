"""Per-organization upload storage limit for custom model artifacts (MODELDECK_UPLOAD_QUOTA_MB)."""

from __future__ import annotations

import os

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from catalog import services
from catalog.models import CatalogModel

pytestmark = pytest.mark.django_db


@pytest.fixture
def small_quota(settings, tmp_path):
    settings.MODELDECK_DATA_DIR = tmp_path
    settings.UPLOAD_QUOTA_BYTES = 12_000
    return tmp_path


def _upload(client, name: str, size: int):
    return client.post(
        reverse("catalog:custom_create"),
        {"name": name, "artifact": SimpleUploadedFile(f"{name}.bin", b"w" * size)},
    )


def test_upload_past_the_organizations_limit_is_a_field_error_and_nothing_is_kept(
    owner_client, outsider_client, tenants, small_quota
):
    assert _upload(owner_client, "first", 8_000).status_code == 302
    html = _upload(owner_client, "second", 8_000).content.decode()
    assert "upload storage limit" in html and "second" not in set(
        CatalogModel.objects.values_list("name", flat=True)
    )
    files = [f for _, _, names in os.walk(small_quota / "artifacts") for f in names]
    assert len(files) == 1  # the refused upload left nothing behind
    # Another organization's uploads count against its own limit only.
    assert _upload(outsider_client, "theirs", 8_000).status_code == 302
    # What still fits is accepted.
    assert _upload(owner_client, "small", 4_000).status_code == 302


def test_the_service_enforces_the_limit_for_every_caller(tenants, small_quota):
    services.model_add_custom(
        user=tenants.owner, organization=tenants.org, name="a",
        artifact=SimpleUploadedFile("a.bin", b"x" * 10_000),
    )  # fmt: skip
    with pytest.raises(ValidationError) as info:
        services.model_add_custom(
            user=tenants.owner, organization=tenants.org, name="b",
            artifact=SimpleUploadedFile("b.bin", b"x" * 3_000),
        )  # fmt: skip
    assert "artifact" in info.value.message_dict
    assert services.upload_usage(tenants.org) == (10_000, 12_000)


def test_the_upload_form_shows_the_organizations_usage(owner_client, small_quota):
    _upload(owner_client, "first", 8_000)
    html = owner_client.get(reverse("catalog:custom_create")).content.decode()
    assert "Upload storage of Acme: 7.8\xa0KB of 11.7\xa0KB used." in html
