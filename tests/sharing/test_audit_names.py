"""Audit diffs name the objects they refer to by id (pool, environment, endpoint, model, bundle,
project, a promotion's deployments): the name is recorded with the change; entries older than
that look the id up within their own organization only, and a deleted object reads "#id (deleted)"."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from deployments.models import ComputePool
from sharing.audit import audit_record, reference_names
from sharing.models import AuditEntry
from tests import factories
from tests.conftest import login
from tests.sharing import factories as f

pytestmark = pytest.mark.django_db


def _changes(html: str, path: str) -> list[str]:
    """The rendered lines of `path` in the page's diffs, tags stripped: ["unset → gpu-a", …]."""
    lines = re.findall(rf"<li><code>{re.escape(path)}</code>: (.*?)</li>", html, re.S)
    return [re.sub(r"<[^>]+>", "", line).strip() for line in lines]


def test_a_new_deployment_s_entry_names_its_pool_not_its_id(tenants):
    pool = f.pool(tenants.org, name="a100-west")
    deployment = factories.deployment(tenants.project, user=tenants.owner, name="chat", pool=pool)
    entry = AuditEntry.objects.get(object_type="deployment", object_id=str(deployment.pk), action="create")
    assert entry.diff["pool"] == [None, pool.pk]  # the diff keeps the id, for REST and filters
    assert entry.names["pool"] == [None, "a100-west"]
    client = login(tenants.viewer)
    assert _changes(client.get(reverse("sharing:audit")).content.decode(), "pool") == ["unset → a100-west"]
    history = client.get(reverse("sharing:object_history", args=["deployment", deployment.pk]),
                         HTTP_HX_REQUEST="true").content.decode()  # fmt: skip
    assert _changes(history, "pool") == ["unset → a100-west"]


def test_every_foreign_key_of_a_diff_shows_the_name_recorded_at_the_change(tenants):
    deployment = f.deployment(tenants.project, name="llama-chat")
    old_pool, new_pool = f.pool(tenants.org, name="gpu-a"), f.pool(tenants.org, name="gpu-b")
    staging, prod = f.environment(tenants.project, name="staging"), f.environment(tenants.project, name="prod")
    old_bundle, new_bundle = f.bundle(tenants.org), f.bundle(None)  # the second a built-in one
    model = f.catalog_model(tenants.org, name="Llama 3 8B")
    audit_record(
        actor=tenants.owner, organization=tenants.org, action="update", obj=deployment,
        before={"pool": old_pool.pk, "environment": staging.pk, "bundle": old_bundle.pk, "model": None,
                "project": None, "revision": 1, "state": "running"},
        after={"pool": new_pool.pk, "environment": prod.pk, "bundle": new_bundle.pk, "model": model.pk,
               "project": tenants.project.pk, "revision": 2, "state": "running"},
    )  # fmt: skip
    # Renamed and deleted since: the entry still says what they were called at the change.
    ComputePool.objects.filter(pk=old_pool.pk).update(name="renamed-later")
    staging.delete()
    html = login(tenants.owner).get(reverse("sharing:audit"), {"action": "update"}).content.decode()
    assert _changes(html, "pool") == ["gpu-a → gpu-b"]
    assert _changes(html, "environment") == ["staging → prod"]
    assert _changes(html, "bundle") == [f"{old_bundle.name} v1 → {new_bundle.name} v1"]
    assert _changes(html, "model") == ["unset → Llama 3 8B"]
    assert _changes(html, "project") == ["unset → Research"]
    assert _changes(html, "revision") == ["1 → 2"]  # a number that is no object's id stays a number


def test_an_older_entry_without_names_resolves_ids_within_its_own_organization(tenants):
    deployment = f.deployment(tenants.project, name="llama-chat")
    mine, theirs = f.pool(tenants.org, name="our-h100"), f.pool(tenants.other_org, name="globex-private-pool")
    gone = f.environment(tenants.project, name="qa")
    gone_id = gone.pk
    gone.delete()
    entry = audit_record(
        actor=tenants.owner, organization=tenants.org, action="update", obj=deployment,
        before={"pool": theirs.pk, "environment": gone_id}, after={"pool": mine.pk, "environment": None},
    )  # fmt: skip
    AuditEntry.objects.filter(pk=entry.pk).update(names={})  # as written before names were recorded
    html = login(tenants.owner).get(reverse("sharing:audit")).content.decode()
    assert _changes(html, "pool") == [f"#{theirs.pk} (deleted) → our-h100"]
    assert "globex-private-pool" not in html
    assert _changes(html, "environment") == [f"#{gone_id} (deleted) → unset"]


def test_a_promotion_names_its_source_and_target_deployments(tenants):
    source = f.deployment(tenants.project, name="llama-chat")
    target = f.deployment(tenants.project, name="llama-chat-prod")
    audit_record(
        actor=tenants.owner, organization=tenants.org, action="promote", obj=target,
        before={"environment": "staging", "deployment": source.pk, "revision": 3},
        after={"environment": "prod", "deployment": target.pk},
    )  # fmt: skip
    html = login(tenants.owner).get(reverse("sharing:audit")).content.decode()
    assert _changes(html, "deployment") == ["llama-chat → llama-chat-prod"]
    assert _changes(html, "environment") == ["staging → prod"]  # slugs already, left as they are


def test_reference_names_reads_one_query_per_kind_of_object(tenants, django_assert_num_queries):
    pools = [f.pool(tenants.org, name=f"p{i}") for i in range(3)]
    staging = f.environment(tenants.project, name="staging")
    with django_assert_num_queries(2):
        names = reference_names("deployment", {"pool": [pools[0].pk, pools[1].pk], "environment": [None, staging.pk],
                                               "state": ["running", "deactivated"]})  # fmt: skip
    assert names == {"pool": ["p0", "p1"], "environment": [None, "staging"]}
