"""Numbers past a field's bound are refused in words that fit the field, never as Django's or
DRF's raw bound ("less than or equal to 9223372036854775807") and never as a 500."""

from __future__ import annotations

import pytest

from tests.factories import rest_api_client

HUGE = 99999999999999999999  # past every integer column


def _words(response) -> str:
    return str(response.json())


@pytest.mark.django_db
def test_huge_gpu_quotas_and_limits_are_refused_in_words_over_rest(tenants):
    client = rest_api_client(tenants.owner)
    for method, url, body in (
        ("post", "/api/v1/projects/", {"name": "Big", "gpu_quota": HUGE}),
        ("patch", f"/api/v1/projects/{tenants.project.pk}/", {"gpu_quota": HUGE}),
        ("post", f"/api/v1/organizations/{tenants.org.pk}/quota/", {"gpu_quota": HUGE}),
    ):
        response = getattr(client, method)(url, body, format="json")
        assert response.status_code == 400, (url, response.content)
        assert response.json()["gpu_quota"] == ["At most 100,000 GPUs."], url
    response = client.post(f"/api/v1/projects/{tenants.project.pk}/limits/", {"cpu_quota": HUGE}, format="json")
    assert response.status_code == 400
    assert "from 0 to 1,000,000,000" in _words(response) and "Ensure" not in _words(response)


@pytest.mark.django_db
def test_huge_budget_ids_are_refused_in_words(tenants):
    client = rest_api_client(tenants.owner)
    response = client.post("/api/v1/budgets/", {"level": "member", "target": HUGE, "monthly_budget": "5"}, format="json")
    assert response.status_code == 400 and "9223372036854775807" not in _words(response)
    assert "Give the member's user id or the key's id." in _words(response)
    response = client.post("/api/v1/budgets/", {"level": "organization", "organization": HUGE, "monthly_budget": "5"}, format="json")
    assert response.status_code == 400 and "Give the organization's numeric id." in _words(response)
