"""REST parity of organization settings and usage: members, invitations, groups, project members,
integrations (write-only secrets, check), usage records (JSON, CSV) and aggregates."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.utils import timezone

from projects import services
from projects.keys import api_key_create, api_key_state
from projects.models import APIKey, Invitation, Membership, OrganizationGroup, ProjectMember
from sharing.models import AuditEntry
from tests.catalog.catalog_fixtures import hub_env  # noqa: F401 - fixture
from tests.catalog.conftest import ALICE_TOKEN, _hub_server, offline_hub  # noqa: F401 - fixtures
from tests.factories import UserFactory, deployment, rest_api_client

pytestmark = pytest.mark.django_db


def test_members_add_change_role_and_remove_revokes_keys(tenants):
    api = rest_api_client(tenants.owner)
    UserFactory(username="newbie", email="newbie@example.com")
    created = api.post("/api/v1/members/", {"username": "newbie@example.com", "role": "viewer"}, format="json")
    assert created.status_code == 201 and created.json()["role"] == "viewer"
    member_id = created.json()["id"]
    listed = api.get("/api/v1/members/").json()
    assert {m["username"] for m in listed["results"]} == {"owner", "member", "viewer", "newbie"}
    assert api.patch(f"/api/v1/members/{member_id}/", {"role": "member"}, format="json").json()["role"] == "member"
    key, _ = api_key_create(user=Membership.objects.get(pk=member_id).user, organization=tenants.org, name="k")
    removed = api.delete(f"/api/v1/members/{member_id}/")
    assert removed.status_code == 200 and removed.json() == {"keys_revoked": 1}
    key.refresh_from_db()
    assert api_key_state(key) == "revoked"
    assert AuditEntry.objects.filter(object_type="member", action="delete", object_id=str(member_id)).exists()


def test_member_api_errors_are_4xx_and_scoped(tenants):
    api = rest_api_client(tenants.owner)
    assert api.post("/api/v1/members/", {"username": "ghost"}, format="json").status_code == 400
    assert api.post("/api/v1/members/", {"username": "outsider", "role": "boss"}, format="json").status_code == 400
    theirs = Membership.objects.get(user=tenants.outsider)
    assert api.get(f"/api/v1/members/{theirs.pk}/").status_code == 404
    assert api.delete(f"/api/v1/members/{theirs.pk}/").status_code == 404
    assert api.get(f"/api/v1/members/?organization={tenants.other_org.pk}").status_code == 404
    viewer = rest_api_client(tenants.viewer)
    mine = Membership.objects.get(user=tenants.member)
    assert viewer.patch(f"/api/v1/members/{mine.pk}/", {"role": "admin"}, format="json").status_code == 403


def test_invitation_link_only_in_the_create_response_and_accepted_once(tenants):
    api = rest_api_client(tenants.owner)
    created = api.post("/api/v1/invitations/", {"email": "grace@example.com", "role": "member"}, format="json")
    assert created.status_code == 201 and created["Cache-Control"] == "no-store"
    link = created.json()["link"]
    token = link.rstrip("/").rsplit("/", 1)[1]
    listed = api.get("/api/v1/invitations/").json()["results"]
    assert [i["email"] for i in listed] == ["grace@example.com"] and "link" not in listed[0]
    assert not Invitation.objects.filter(token_hash__contains=token).exists()
    grace = UserFactory(username="grace", email="grace@example.com")
    Membership.objects.create(user=grace, organization=tenants.other_org, role="viewer")  # a REST key needs an org
    guest = rest_api_client(grace, tenants.other_org)
    joined = guest.post("/api/v1/invitations/accept/", {"token": token}, format="json")
    assert joined.status_code == 200 and joined.json()["organization"] == tenants.org.pk
    assert guest.post("/api/v1/invitations/accept/", {"token": token}, format="json").status_code == 404
    # Members don't see invitations (email addresses).
    assert rest_api_client(tenants.member).get("/api/v1/invitations/").status_code == 403


def test_groups_and_their_members_over_rest(tenants):
    api = rest_api_client(tenants.owner)
    group = api.post("/api/v1/groups/", {"name": "ml", "description": "ML team"}, format="json")
    assert group.status_code == 201
    gid = group.json()["id"]
    assert api.post("/api/v1/groups/", {"name": "ml"}, format="json").status_code == 400  # taken
    added = api.post(f"/api/v1/groups/{gid}/members/", {"user": tenants.member.pk}, format="json")
    assert added.status_code == 200 and added.json()["members"] == [{"id": tenants.member.pk, "username": "member"}]
    assert api.post(f"/api/v1/groups/{gid}/members/", {"user": tenants.outsider.pk}, format="json").status_code == 404
    assert tenants.member.groups.filter(organization_group__pk=gid).exists()
    assert api.patch(f"/api/v1/groups/{gid}/", {"name": "ml-team"}, format="json").json()["name"] == "ml-team"
    assert rest_api_client(tenants.outsider).get(f"/api/v1/groups/{gid}/").status_code == 404
    assert rest_api_client(tenants.member).delete(f"/api/v1/groups/{gid}/").status_code == 403
    assert api.delete(f"/api/v1/groups/{gid}/members/{tenants.member.pk}/").json()["members"] == []
    assert api.delete(f"/api/v1/groups/{gid}/").status_code == 204
    assert not OrganizationGroup.objects.filter(pk=gid).exists()


def test_project_members_over_rest(tenants):
    api = rest_api_client(tenants.owner)
    url = f"/api/v1/projects/{tenants.project.pk}/members/"
    assert api.post(url, {"user": tenants.viewer.pk, "role": "member"}, format="json").status_code == 200
    assert ProjectMember.objects.filter(project=tenants.project, user=tenants.viewer, role="member").exists()
    assert any(m["username"] == "viewer" for m in api.get(url).json())
    assert api.post(url, {"user": tenants.outsider.pk}, format="json").status_code == 404
    assert api.delete(f"{url}{tenants.viewer.pk}/").status_code == 204
    assert rest_api_client(tenants.outsider).get(url).status_code == 404


@pytest.mark.parametrize("user", [2**63, 2**70])
def test_a_user_id_past_any_row_is_a_400_on_the_field(tenants, user):
    """QA (schemathesis-style probe): `{"user": 2**70}` to project members was a 500 on SQLite
    (`make run`'s database) and, on PostgreSQL, a 400 that named no field."""
    api = rest_api_client(tenants.owner)
    group = api.post("/api/v1/groups/", {"name": "ml"}, format="json").json()["id"]
    for url in (f"/api/v1/projects/{tenants.project.pk}/members/", f"/api/v1/groups/{group}/members/"):
        response = api.post(url, {"user": user}, format="json")
        assert response.status_code == 400, (url, response.content[:200])
        assert "user" in response.json(), response.json()


def test_integration_secret_is_write_only_and_the_check_asks_the_hub(tenants, hub_env):  # noqa: F811
    api = rest_api_client(tenants.owner)
    url = f"/api/v1/projects/{tenants.project.pk}/integrations/"
    saved = api.post(url, {"kind": "huggingface", "secret": ALICE_TOKEN}, format="json")
    assert saved.status_code == 200 and ALICE_TOKEN not in saved.content.decode()
    assert saved.json()["secret_last4"] == ALICE_TOKEN[-4:]
    assert ALICE_TOKEN not in api.get(url).content.decode()
    checked = api.post(f"{url}huggingface/check/")
    assert checked.status_code == 200 and checked.json()["check_ok"] is True and "alice" in checked.json()["check_message"]
    assert api.post(url, {"kind": "huggingface", "secret": "  "}, format="json").status_code == 400
    assert api.post(url, {"kind": "s3", "secret": "x"}, format="json").status_code == 400
    assert rest_api_client(tenants.viewer).post(url, {"kind": "ngc", "secret": "nvapi-x"}, format="json").status_code == 403
    assert rest_api_client(tenants.outsider).get(url).status_code == 404
    assert api.delete(f"{url}huggingface/").status_code == 204
    assert api.post(f"{url}huggingface/check/").status_code == 404


def _record(dep, key: APIKey, n: int, cost: str) -> None:
    from gateway.models import UsageRecord

    UsageRecord.objects.create(
        request_id=f"req-{key.pk}-{n}", deployment=dep, deployment_name=dep.name, organization=key.organization,
        user=key.user, api_key_id=key.pk, api_key_prefix=key.prefix, route="chat.completions", status_code=200,
        prompt_tokens=10, completion_tokens=20, latency_ms=40.0 + n, cost=Decimal(cost), currency="USD",
        created_at=timezone.now(),
    )  # fmt: skip


def test_usage_records_csv_and_summary_match_the_console(tenants, owner_client):
    dep = deployment(tenants.project, user=tenants.owner)
    mine, _ = api_key_create(user=tenants.owner, organization=tenants.org, name="mine")
    theirs, _ = api_key_create(user=tenants.member, organization=tenants.org, name="theirs")
    for n in range(3):
        _record(dep, mine, n, "0.00000001")
    _record(dep, theirs, 9, "0.5")
    api = rest_api_client(tenants.owner)
    own = api.get("/api/v1/usage/").json()
    assert own["count"] == 3
    org = api.get("/api/v1/usage/?scope=organization").json()
    assert org["count"] == 4
    summary = api.get(f"/api/v1/usage/summary/?scope=deployment&deployment={dep.pk}&range=1h").json()
    assert summary["totals"]["requests"] == 4 and summary["totals"]["completion_tokens"] == 80
    assert summary["totals"]["cost"] == "0.50000003"
    csv = api.get("/api/v1/usage/?scope=organization&format=csv")
    assert csv.status_code == 200 and csv["Content-Type"].startswith("text/csv")
    body = b"".join(csv.streaming_content).decode()
    console = b"".join(owner_client.get("/hub/usage/organization/?format=csv").streaming_content).decode()
    assert body.splitlines()[1:] == console.splitlines()[1:] and len(body.splitlines()) == 5
    assert api.get("/api/v1/usage/?scope=everything").status_code == 400
    assert api.get("/api/v1/usage/?range=1y").status_code == 400
    assert rest_api_client(tenants.outsider).get(f"/api/v1/usage/?scope=deployment&deployment={dep.pk}").status_code == 404


def test_s3_credentials_over_rest_are_write_only_and_validated(tenants):
    import json

    api = rest_api_client(tenants.owner)
    url = f"/api/v1/projects/{tenants.project.pk}/integrations/"
    secret = json.dumps({"access_key_id": "AKIAEXAMPLE1234", "secret_access_key": "wJalrXUtnFEMI/K7MDENG",
                         "endpoint_url": "https://minio.example.com"})  # fmt: skip
    saved = api.post(url, {"kind": "s3", "secret": secret}, format="json")
    assert saved.status_code == 200 and saved.json()["secret_last4"] == "1234"
    assert "wJalrXUtnFEMI" not in saved.content.decode() + api.get(url).content.decode()
    bad = api.post(url, {"kind": "s3", "secret": json.dumps({"access_key_id": "AKIA"})}, format="json")
    assert bad.status_code == 400 and "secret_access_key" in bad.json()
    assert api.delete(f"{url}s3/").status_code == 204


def test_an_admin_cannot_pull_in_another_organization_s_user_nor_tell_they_exist(tenants):
    """The outsider, admin of Globex, types Acme's member: the same answer as for a name nobody
    has, no email shown, nothing joined. Acme's own people, users of no organization yet and a
    superuser's additions still join directly; anyone else joins by accepting an invitation."""
    api = rest_api_client(tenants.outsider)
    UserFactory(username="fresh", email="fresh@example.com")
    for name in ("member", tenants.member.email, "ghost"):
        refused = api.post("/api/v1/members/", {"username": name}, format="json")
        assert refused.status_code == 400, name
        assert refused.json() == {"username": [services.MEMBER_NOT_FOUND]}, name
    assert not Membership.objects.filter(user=tenants.member, organization=tenants.other_org).exists()
    assert tenants.member.email not in str(refused.json())
    assert api.post("/api/v1/members/", {"username": "fresh"}, format="json").status_code == 201

    # Someone who shares an organization with the admin: Acme's owner joins Globex too, then adds
    # Acme's member there.
    services.member_join(user=tenants.outsider, organization=tenants.other_org, member=tenants.owner, role="admin")
    shared = rest_api_client(tenants.owner).post(
        f"/api/v1/members/?organization={tenants.other_org.pk}", {"username": "member"}, format="json"
    )
    assert shared.status_code == 201, shared.json()
    root = UserFactory(username="root", is_superuser=True)
    services.member_join(user=tenants.outsider, organization=tenants.other_org, member=root, role="admin")
    assert services.member_add(user=root, organization=tenants.other_org, username="viewer").role == "member"
