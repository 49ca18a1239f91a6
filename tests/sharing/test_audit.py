"""The audit log: field-level diffs, append-only, searchable page, per-object history, read-only API and admin."""

from __future__ import annotations

import pytest
from django.contrib.admin.sites import site
from django.test import RequestFactory
from django.urls import reverse

from sharing.admin import AuditEntryAdmin
from sharing.audit import audit_record, compute_diff, flatten
from sharing.models import AuditEntry
from tests.conftest import login
from tests.sharing import factories as f


def test_flatten_nests_dicts_into_dotted_paths_and_keeps_lists_whole():
    assert flatten({"resources": {"gpus": 1, "cpu": "4"}, "extra_args": ["--x"], "env": {}}) == {
        "resources.gpus": 1,
        "resources.cpu": "4",
        "extra_args": ["--x"],
        "env": {},
    }


def test_diff_lists_only_changed_fields_with_old_and_new():
    before = {
        "replicas": {"min": 1, "max": 1},
        "resources": {"gpus": 1, "gpu_type": "A100"},
        "image": "a",
    }
    after = {
        "replicas": {"min": 1, "max": 3},
        "resources": {"gpus": 2, "gpu_type": "A100"},
        "image": "a",
        "new": True,
    }
    assert compute_diff(before, after) == {
        "new": [None, True],
        "replicas.max": [1, 3],
        "resources.gpus": [1, 2],
    }


@pytest.mark.django_db
def test_audit_record_stores_before_after_and_diff(tenants):
    dep = f.deployment(tenants.project, name="llama")
    entry = audit_record(
        actor=tenants.owner,
        organization=tenants.org,
        action="update",
        obj=dep,
        before={"spec": {"resources": {"gpus": 1}}},
        after={"spec": {"resources": {"gpus": 2}}},
    )
    entry.refresh_from_db()
    assert entry.object_type == "deployment" and entry.object_id == str(dep.pk)
    assert entry.object_repr == "llama" and entry.actor_repr == "owner"
    assert entry.diff == {"spec.resources.gpus": [1, 2]}


@pytest.mark.django_db
def test_secrets_are_redacted_but_their_change_is_recorded(tenants):
    entry = audit_record(
        actor=tenants.owner,
        organization=tenants.org,
        action="integration_change",
        obj=tenants.project,
        before={"secret": "hf_old_value"},
        after={"secret": "hf_new_value"},
    )
    assert "hf_old_value" not in str(entry.before) + str(entry.after) + str(entry.diff)
    assert "secret" in entry.diff


@pytest.mark.django_db
def test_an_entry_cannot_be_saved_twice(tenants):
    entry = audit_record(
        actor=None,
        organization=tenants.org,
        action="create",
        obj=tenants.project,
        before=None,
        after={"name": "Research"},
    )
    entry.object_repr = "tampered"
    with pytest.raises(ValueError):
        entry.save()
    assert AuditEntry.objects.get(pk=entry.pk).object_repr == "Research"
    assert entry.actor_repr == "system"


@pytest.mark.django_db
def test_admin_cannot_add_change_or_delete_entries(tenants):
    tenants.owner.is_staff = tenants.owner.is_superuser = True
    tenants.owner.save()
    request = RequestFactory().get("/")
    request.user = tenants.owner
    admin = AuditEntryAdmin(AuditEntry, site)
    assert not admin.has_add_permission(request)
    assert not admin.has_change_permission(request)
    assert not admin.has_delete_permission(request)
    entry = audit_record(
        actor=tenants.owner,
        organization=tenants.org,
        action="create",
        obj=tenants.project,
        before=None,
        after={"name": "Research"},
    )
    client = login(tenants.owner)
    response = client.post(
        reverse("admin:sharing_auditentry_change", args=[entry.pk]), {"object_repr": "x"}
    )
    assert response.status_code == 403
    assert (
        client.post(
            reverse("admin:sharing_auditentry_delete", args=[entry.pk]), {"post": "yes"}
        ).status_code
        == 403
    )
    assert AuditEntry.objects.filter(pk=entry.pk, object_repr="Research").exists()


def _entries(tenants):
    a = f.deployment(tenants.project, name="llama-chat")
    b = f.deployment(tenants.project, name="embedder")
    audit_record(
        actor=tenants.owner,
        organization=tenants.org,
        action="update",
        obj=a,
        before={"replicas": 1},
        after={"replicas": 2},
    )
    audit_record(
        actor=tenants.member,
        organization=tenants.org,
        action="deactivate",
        obj=b,
        before={"state": "running"},
        after={"state": "deactivated"},
    )
    other = f.deployment(tenants.other_project, name="globex-secret")
    audit_record(
        actor=tenants.outsider,
        organization=tenants.other_org,
        action="update",
        obj=other,
        before={"replicas": 1},
        after={"replicas": 9},
    )
    return a, b, other


@pytest.mark.django_db
def test_audit_page_lists_the_organizations_entries_with_diffs_and_searches(tenants):
    a, b, other = _entries(tenants)
    client = login(tenants.viewer)
    html = client.get(reverse("sharing:audit")).content.decode()
    assert "llama-chat" in html and "embedder" in html and "globex-secret" not in html
    assert "replicas" in html and "→" in html
    html = client.get(reverse("sharing:audit"), {"q": "embed"}).content.decode()
    assert "embedder" in html and "llama-chat" not in html
    html = client.get(reverse("sharing:audit"), {"action": "update"}).content.decode()
    assert "llama-chat" in html and "embedder" not in html
    html = client.get(reverse("sharing:audit"), {"actor": "member"}).content.decode()
    assert "embedder" in html and "llama-chat" not in html


@pytest.mark.django_db
def test_a_filter_that_cant_be_read_is_shown_and_the_others_still_apply(tenants):
    """QA: one bad filter (a date typed by hand, an action from an old link) dropped them all:
    the page listed every entry under the user's filters, the htmx fragment with no word why."""
    _entries(tenants)
    client = login(tenants.viewer)
    for bad in ({"since": "2026-13-45"}, {"action": "nonsense"}):
        html = client.get(reverse("sharing:audit"), {"actor": "member", **bad}).content.decode()
        assert "embedder" in html and "llama-chat" not in html, bad
        assert ("From: Enter a valid date." if "since" in bad else "Action: Select a valid choice.") in html
        fragment = client.get(reverse("sharing:audit"), {"actor": "member", **bad}, HTTP_HX_REQUEST="true",
                              HTTP_HX_TARGET="audit-results").content.decode()  # fmt: skip
        assert "embedder" in fragment and "llama-chat" not in fragment, bad
        assert "This filter is left out" in fragment, bad


@pytest.mark.django_db
def test_audit_pages_link_to_each_other_keeping_the_filters(tenants):
    row = f.deployment(tenants.project, name="llama-chat")
    for n in range(51):
        audit_record(actor=tenants.owner, organization=tenants.org, action="update", obj=row,
                     before={"replicas": n}, after={"replicas": n + 1})  # fmt: skip
    client = login(tenants.owner)
    html = client.get(reverse("sharing:audit")).content.decode()
    assert 'rel="next" href="/audit/?page=2"' in html
    html = client.get(reverse("sharing:audit"), {"q": "llama", "page": "2"}).content.decode()
    assert 'rel="prev" href="/audit/?q=llama"' in html and "Page 2 of 2" in html


@pytest.mark.django_db
def test_audit_htmx_search_returns_only_the_results_fragment(tenants):
    _entries(tenants)
    response = login(tenants.owner).get(
        reverse("sharing:audit"),
        {"q": "llama"},
        HTTP_HX_REQUEST="true",
        HTTP_HX_TARGET="audit-results",
    )
    html = response.content.decode()
    assert 'id="audit-results"' in html and "<aside" not in html and "llama-chat" in html


@pytest.mark.django_db
def test_bad_date_filter_is_shown_not_a_500(tenants):
    response = login(tenants.owner).get(reverse("sharing:audit"), {"since": "yesterday"})
    assert response.status_code == 200 and "Enter a valid date" in response.content.decode()


@pytest.mark.django_db
def test_object_history_fragment_shows_one_objects_changes(tenants):
    a, b, other = _entries(tenants)
    url = reverse("sharing:object_history", args=["deployment", a.pk])
    html = login(tenants.owner).get(url, HTTP_HX_REQUEST="true").content.decode()
    assert "replicas" in html and "Deactivate" not in html and "<aside" not in html


@pytest.mark.django_db
def test_a_long_object_history_comes_in_pages_of_25(tenants):
    a, _, _ = _entries(tenants)
    for n in range(2, 31):  # 30 changes in all
        audit_record(actor=tenants.owner, organization=tenants.org, action="update", obj=a,
                     before={"replicas": n - 1}, after={"replicas": n})  # fmt: skip
    url = reverse("sharing:object_history", args=["deployment", a.pk])
    client = login(tenants.owner)
    first = client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert first.count("<tr><td") == 25 and "1–25 of 30" in first and 'rel="next"' in first
    assert 'hx-boost="true"' in first  # the pager's links load into the box, not a new page
    second = client.get(url, {"page": 2}, HTTP_HX_REQUEST="true").content.decode()
    assert second.count("<tr><td") == 5 and "26–30 of 30" in second


@pytest.mark.django_db
def test_outsider_gets_404_on_another_organizations_object_history(tenants):
    a, b, other = _entries(tenants)
    client = login(tenants.outsider)
    assert (
        client.get(reverse("sharing:object_history", args=["deployment", a.pk])).status_code == 404
    )
    assert (
        client.get(
            reverse("sharing:object_history", args=["project", tenants.project.pk])
        ).status_code
        == 404
    )
    assert (
        client.get(reverse("sharing:object_history", args=["api_key", "12345"])).status_code == 404
    )


@pytest.mark.django_db
def test_api_lists_filters_and_never_writes(tenants):
    a, b, other = _entries(tenants)
    client = login(tenants.owner)
    url = reverse("audit-entry-list")
    body = client.get(url).json()
    names = {e["object_repr"] for e in body["results"]}
    assert names == {"llama-chat", "embedder"}
    only = client.get(url, {"object_type": "deployment", "object_id": a.pk}).json()["results"]
    assert [e["diff"] for e in only] == [{"replicas": [1, 2]}]
    assert client.get(url, {"action": "nonsense"}).status_code == 400
    assert client.get(url, {"since": "2999-01-01"}).json()["results"] == []
    entry_id = only[0]["id"]
    detail = reverse("audit-entry-detail", args=[entry_id])
    assert client.get(detail).status_code == 200
    assert (
        client.post(url, {"action": "create"}, content_type="application/json").status_code == 405
    )
    assert (
        client.patch(detail, {"object_repr": "x"}, content_type="application/json").status_code
        == 405
    )
    assert client.delete(detail).status_code == 405
    assert login(tenants.outsider).get(detail).status_code == 404
    assert AuditEntry.objects.filter(pk=entry_id, object_repr="llama-chat").exists()


@pytest.mark.django_db
def test_middleware_puts_request_id_and_ip_on_entries(tenants, settings):
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "sharing.audit.AuditContextMiddleware"]
    dep = f.deployment(tenants.project)
    login(tenants.owner).post(
        reverse("sharing:deployment_sharing", args=[dep.pk]),
        {"form": "share", "mode": "all"},
        HTTP_X_REQUEST_ID="req-abc-123",
        REMOTE_ADDR="10.1.2.3",
    )
    entry = AuditEntry.objects.get(action="share")
    assert entry.request_id == "req-abc-123" and entry.ip == "10.1.2.3"
    # Outside a request (tasks, shell) nothing is made up.
    later = audit_record(
        actor=None, organization=tenants.org, action="update", obj=dep, before={}, after={}
    )
    assert later.request_id == "" and later.ip is None


@pytest.mark.django_db
def test_audit_deployment_reads_the_state_after_the_change(tenants):
    from deployments.models import ModelDeployment, Revision
    from sharing.audit import audit_deployment, deployment_snapshot

    dep = f.deployment(tenants.project, revisions=[f.spec(replicas=1)])
    before = deployment_snapshot(dep)
    # A change made by UPDATE (as state claims do) and a new revision.
    revision = Revision.objects.create(
        deployment=dep, number=2, spec=f.spec(replicas=3, served="x")
    )
    ModelDeployment.objects.filter(pk=dep.pk).update(state="deactivated", current_revision=revision)
    entry = audit_deployment(actor=tenants.owner, deployment=dep, action="update", before=before)
    assert entry.diff["state"] == ["running", "deactivated"]
    assert entry.diff["revision"] == [1, 2]
    assert entry.diff["spec.replicas.max"] == [1, 3]
