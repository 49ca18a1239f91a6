"""Every kind of change the governance issue names leaves an audit entry with a diff, through the real services."""

from __future__ import annotations

import pytest

from projects.keys import api_key_create, api_key_revoke
from projects.services import integration_set, organization_quota_set, project_update
from sharing.models import AuditEntry


@pytest.mark.django_db
def test_key_create_and_revoke_are_audited_without_the_secret(tenants):
    key, secret = api_key_create(user=tenants.member, organization=tenants.org, name="ci-bot")
    api_key_revoke(user=tenants.owner, key=key)
    created = AuditEntry.objects.get(action="key_create", object_id=str(key.pk))
    revoked = AuditEntry.objects.get(action="key_revoke", object_id=str(key.pk))
    assert created.actor == tenants.member and created.after["name"] == "ci-bot"
    assert revoked.actor == tenants.owner and revoked.diff == {"revoked": [False, True]}
    assert secret not in str(created.before) + str(created.after) + str(created.diff)


@pytest.mark.django_db
def test_quota_and_integration_changes_are_audited(tenants):
    organization_quota_set(user=tenants.owner, organization=tenants.org, gpu_quota=12)
    project_update(user=tenants.owner, project=tenants.project, name="Research", description="", gpu_quota=6)
    integration_set(user=tenants.owner, project=tenants.project, kind="huggingface", secret="hf_abcdefgh1234")
    integration_set(user=tenants.owner, project=tenants.project, kind="huggingface", secret="hf_zyxwvuts9876")
    org_entry = AuditEntry.objects.get(action="quota_change", object_type="organization")
    assert org_entry.diff == {"gpu_quota": [16, 12]}
    assert AuditEntry.objects.get(action="quota_change", object_type="project").diff["gpu_quota"] == [8, 6]
    change = AuditEntry.objects.filter(action="integration_change").order_by("id").last()
    assert change.diff == {"secret_last4": ["1234", "9876"]}
    assert AuditEntry.objects.filter(action="quota_change").count() == 2  # one entry a change, not two
