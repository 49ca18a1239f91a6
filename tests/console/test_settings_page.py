"""The settings page changes the organization's GPU quota with the quotas page's form and service."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.conftest import login


@pytest.mark.django_db
def test_admin_sets_the_quota_and_bad_input_or_a_member_is_refused_in_words(tenants):
    url = reverse("settings")
    page = login(tenants.owner).post(url, {"gpu_quota": "12"}, follow=True).content.decode()
    tenants.org.refresh_from_db()
    assert tenants.org.gpu_quota == 12 and "GPU quota is now 12" in page

    page = login(tenants.owner).post(url, {"gpu_quota": "lots"}, follow=True).content.decode()
    assert "Enter the GPU quota as a whole number" in page
    page = login(tenants.owner).post(url, {"gpu_quota": "-3"}, follow=True).content.decode()
    assert "A GPU quota can&#x27;t be negative" in page
    page = login(tenants.member).post(url, {"gpu_quota": "40"}, follow=True).content.decode()
    assert "Only organization admins" in page
    tenants.org.refresh_from_db()
    assert tenants.org.gpu_quota == 12
