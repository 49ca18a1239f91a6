"""Sharing modes and access policies: services, the gateway's may_call, the Manage Sharing page, the API."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from projects.models import Role
from sharing import access, services
from sharing.models import AuditEntry
from sharing.selectors import shared_deployments_for_org
from tests.conftest import login
from tests.factories import MembershipFactory, OrganizationFactory, UserFactory
from tests.sharing import factories as f


def _call(dep, *, org, user, groups=()):
    return access.may_call(
        deployment_id=dep.pk,
        owner_org_id=dep.project.organization_id,
        caller_org_id=org.pk if org else None,
        caller_user_id=user.pk if user else None,
        caller_group_ids=frozenset(g.pk for g in groups),
    )


@pytest.mark.django_db
def test_by_default_only_the_own_organization_may_call(tenants):
    dep = f.deployment(tenants.project)
    assert _call(dep, org=tenants.org, user=tenants.viewer) == (True, "own organization")
    allowed, reason = _call(dep, org=tenants.other_org, user=tenants.outsider)
    assert not allowed and reason == access.NOT_SHARED
    assert _call(dep, org=None, user=None) == (False, access.NEEDS_KEY)
    assert list(shared_deployments_for_org(tenants.other_org)) == []


@pytest.mark.django_db
def test_share_with_all_organizations(tenants):
    dep = f.deployment(tenants.project)
    third = OrganizationFactory(name="Initech")
    services.deployment_share_set(user=tenants.owner, deployment=dep, mode="all")
    assert _call(dep, org=tenants.other_org, user=tenants.outsider)[0]
    assert _call(dep, org=third, user=UserFactory(username="peter"))[0]
    assert list(shared_deployments_for_org(third)) == [dep]
    assert (
        list(shared_deployments_for_org(tenants.org)) == []
    )  # its own org doesn't list it as shared


@pytest.mark.django_db
def test_share_with_specific_organizations_only(tenants):
    dep = f.deployment(tenants.project)
    third = OrganizationFactory(name="Initech")
    services.deployment_share_set(
        user=tenants.member, deployment=dep, mode="specific", organizations=[tenants.other_org]
    )
    assert _call(dep, org=tenants.other_org, user=tenants.outsider)[0]
    assert _call(dep, org=third, user=UserFactory(username="peter")) == (False, access.NOT_SHARED)
    assert list(shared_deployments_for_org(tenants.other_org)) == [dep]
    assert list(shared_deployments_for_org(third)) == []


@pytest.mark.django_db
def test_specific_without_organizations_is_refused_on_the_field(tenants):
    dep = f.deployment(tenants.project)
    with pytest.raises(ValidationError) as exc:
        services.deployment_share_set(
            user=tenants.owner, deployment=dep, mode="specific", organizations=[]
        )
    assert "organizations" in exc.value.message_dict


@pytest.mark.django_db
def test_viewer_cannot_share_and_is_told_why(tenants):
    dep = f.deployment(tenants.project)
    with pytest.raises(PermissionDenied) as exc:
        services.deployment_share_set(user=tenants.viewer, deployment=dep, mode="all")
    assert "Viewers cannot change sharing and access" in str(exc.value)
    with pytest.raises(PermissionDenied):
        services.access_policy_set(user=tenants.viewer, deployment=dep, kind="public")


@pytest.mark.django_db
def test_sharing_is_audited_with_a_diff(tenants):
    dep = f.deployment(tenants.project)
    services.deployment_share_set(
        user=tenants.owner, deployment=dep, mode="specific", organizations=[tenants.other_org]
    )
    entry = AuditEntry.objects.get(action="share", object_id=str(dep.pk))
    assert entry.diff == {"mode": ["none", "specific"], "organizations": [[], ["globex"]]}
    assert entry.actor == tenants.owner and entry.organization == tenants.org


@pytest.mark.django_db
def test_public_needs_no_key(tenants):
    dep = f.deployment(tenants.project)
    services.access_policy_set(user=tenants.owner, deployment=dep, kind="public")
    assert _call(dep, org=None, user=None) == (True, "public")
    assert AuditEntry.objects.get(action="access_change").diff == {
        "kind": ["authenticated", "public"]
    }


@pytest.mark.django_db
def test_groups_policy_lets_only_group_members_call(tenants):
    dep = f.deployment(tenants.project)
    ml = Group.objects.create(name="ml-team")
    other = Group.objects.create(name="sales")
    services.access_policy_set(user=tenants.owner, deployment=dep, kind="groups", groups=[ml])
    assert _call(dep, org=tenants.org, user=tenants.member, groups=[ml])[0]
    assert _call(dep, org=tenants.org, user=tenants.member, groups=[other]) == (
        False,
        access.NOT_IN_GROUPS,
    )
    # Groups narrow the organizations it is shared with, never widen them.
    assert _call(dep, org=tenants.other_org, user=tenants.outsider, groups=[ml]) == (
        False,
        access.NOT_SHARED,
    )


@pytest.mark.django_db
def test_users_policy_and_users_must_be_able_to_see_it(tenants):
    dep = f.deployment(tenants.project)
    with pytest.raises(ValidationError) as exc:
        services.access_policy_set(
            user=tenants.owner, deployment=dep, kind="users", users=[tenants.outsider]
        )
    # Refused without naming the user: the admin must not learn who exists elsewhere.
    assert services.UNKNOWN_USERS in str(exc.value) and "outsider" not in str(exc.value)
    services.deployment_share_set(
        user=tenants.owner, deployment=dep, mode="specific", organizations=[tenants.other_org]
    )
    services.access_policy_set(
        user=tenants.owner, deployment=dep, kind="users", users=[tenants.outsider]
    )
    assert _call(dep, org=tenants.other_org, user=tenants.outsider)[0]
    assert _call(dep, org=tenants.org, user=tenants.member) == (False, access.NOT_IN_USERS)


@pytest.mark.django_db
def test_groups_kind_without_groups_is_refused(tenants):
    dep = f.deployment(tenants.project)
    with pytest.raises(ValidationError) as exc:
        services.access_policy_set(user=tenants.owner, deployment=dep, kind="groups")
    assert "groups" in exc.value.message_dict


@pytest.mark.django_db
def test_snapshot_is_one_query_for_many_deployments(tenants):
    deps = [f.deployment(tenants.project) for _ in range(5)]
    services.deployment_share_set(
        user=tenants.owner, deployment=deps[0], mode="specific", organizations=[tenants.other_org]
    )
    with CaptureQueriesContext(connection) as queries:
        snap = access.policy_snapshot([d.pk for d in deps])
    assert len(queries) == 1
    assert snap[deps[0].pk]["share_org_ids"] == frozenset({tenants.other_org.pk})
    assert snap[deps[1].pk]["share_mode"] == "none" and snap[deps[1].pk]["kind"] == "authenticated"


@pytest.mark.django_db(transaction=True)
def test_cache_serves_without_queries_and_a_change_invalidates_it(tenants, redis_client):
    dep = f.deployment(tenants.project)
    assert not _call(dep, org=tenants.other_org, user=tenants.outsider)[0]
    with CaptureQueriesContext(connection) as queries:
        assert not _call(dep, org=tenants.other_org, user=tenants.outsider)[0]
    assert len(queries) == 0
    before = redis_client.get(access.GENERATION_KEY)
    services.deployment_share_set(user=tenants.owner, deployment=dep, mode="all")
    assert redis_client.get(access.GENERATION_KEY) != before
    assert _call(dep, org=tenants.other_org, user=tenants.outsider)[0]


@pytest.mark.django_db
def test_another_process_sees_the_change_once_the_generation_moves(tenants, redis_client):
    dep = f.deployment(tenants.project)
    cache = access.PolicyCache()  # stands for a gateway process
    assert cache.get(dep.pk, generation=b"1")["share_mode"] == "none"
    services.deployment_share_set(user=tenants.owner, deployment=dep, mode="all")
    assert cache.get(dep.pk, generation=b"1")["share_mode"] == "none"  # same generation: cached
    assert cache.get(dep.pk, generation=b"2")["share_mode"] == "all"


@pytest.mark.django_db
def test_unknown_deployment_is_not_found():
    assert access.may_call(
        deployment_id=987654,
        owner_org_id=None,
        caller_org_id=1,
        caller_user_id=1,
        caller_group_ids=(),
    ) == (False, access.NOT_FOUND)


# ---------------------------------------------------------------- page


@pytest.mark.django_db
def test_sharing_page_shares_with_an_organization(tenants):
    dep = f.deployment(tenants.project, name="llama")
    client = login(tenants.owner)
    url = reverse("sharing:deployment_sharing", args=[dep.pk])
    html = client.get(url).content.decode()
    assert "Manage sharing" in html and "Globex" in html
    response = client.post(
        url, {"form": "share", "mode": "specific", "organizations": [tenants.other_org.pk]}
    )
    assert response.status_code == 302
    assert list(shared_deployments_for_org(tenants.other_org)) == [dep]
    html = client.get(url).content.decode()
    assert "Sharing saved." in html


@pytest.mark.django_db
def test_sharing_page_shows_the_error_on_the_field(tenants):
    dep = f.deployment(tenants.project)
    response = login(tenants.owner).post(
        reverse("sharing:deployment_sharing", args=[dep.pk]), {"form": "share", "mode": "specific"}
    )
    assert response.status_code == 200
    assert "Choose at least one other organization" in response.content.decode()


@pytest.mark.django_db
def test_public_access_shows_a_warning(tenants):
    dep = f.deployment(tenants.project)
    client = login(tenants.owner)
    url = reverse("sharing:deployment_sharing", args=[dep.pk])
    assert 'id="public-warning"' not in client.get(url).content.decode()
    client.post(url, {"form": "access", "kind": "public"})
    html = client.get(url).content.decode()
    assert 'id="public-warning"' in html and "without an API key" in html


@pytest.mark.django_db
def test_viewer_sees_the_page_read_only_and_gets_403_on_save(tenants):
    dep = f.deployment(tenants.project)
    client = login(tenants.viewer)
    url = reverse("sharing:deployment_sharing", args=[dep.pk])
    html = client.get(url).content.decode()
    assert "Viewers cannot change sharing" in html and "disabled" in html
    assert client.post(url, {"form": "share", "mode": "all"}).status_code == 403
    assert list(shared_deployments_for_org(tenants.other_org)) == []


@pytest.mark.django_db
def test_project_member_with_viewer_org_role_may_share(tenants):
    from projects.models import ProjectMember

    dep = f.deployment(tenants.project)
    ProjectMember.objects.create(project=tenants.project, user=tenants.viewer, role=Role.MEMBER)
    services.deployment_share_set(user=tenants.viewer, deployment=dep, mode="all")
    assert dep.share.mode == "all"


@pytest.mark.django_db
def test_outsider_gets_404_on_the_sharing_page_even_when_shared(tenants):
    dep = f.deployment(tenants.project)
    services.deployment_share_set(user=tenants.owner, deployment=dep, mode="all")
    client = login(tenants.outsider)
    url = reverse("sharing:deployment_sharing", args=[dep.pk])
    assert client.get(url).status_code == 404
    assert client.post(url, {"form": "share", "mode": "none"}).status_code == 404


# ---------------------------------------------------------------- API


@pytest.mark.django_db
def test_api_reads_and_sets_sharing_and_access(tenants):
    dep = f.deployment(tenants.project)
    client = login(tenants.owner)
    url = reverse("deployment-sharing-detail", args=[dep.pk])
    assert client.get(url).json() == {
        "deployment": dep.pk,
        "mode": "none",
        "organizations": [],
        "access": "authenticated",
        "groups": [],
        "users": [],
    }
    body = client.put(
        url,
        {"mode": "specific", "organizations": [tenants.other_org.pk], "access": "public"},
        content_type="application/json",
    ).json()
    assert (
        body["mode"] == "specific"
        and body["organizations"] == [tenants.other_org.pk]
        and body["access"] == "public"
    )
    bad = client.put(
        url, {"mode": "specific", "organizations": [], "access": "public"}, content_type="application/json"
    )
    assert bad.status_code == 400 and "organizations" in bad.json()
    sideways = {"mode": "sideways", "access": "public"}
    assert client.put(url, sideways, content_type="application/json").status_code == 400


@pytest.mark.django_db
def test_api_put_replaces_sharing_and_access_as_a_whole(tenants):
    dep = f.deployment(tenants.project)
    client = login(tenants.owner)
    url = reverse("deployment-sharing-detail", args=[dep.pk])
    first = {"mode": "all", "access": "users", "users": [tenants.member.pk]}
    assert client.put(url, first, content_type="application/json").status_code == 200
    # `access` left out neither keeps the users policy (a PATCH in disguise) nor widens it.
    missing = client.put(url, {"mode": "none"}, content_type="application/json")
    assert missing.status_code == 400 and set(missing.json()) == {"access"}
    assert client.get(url).json()["access"] == "users" and client.get(url).json()["mode"] == "all"
    # What a PUT leaves out is empty.
    body = client.put(url, {"mode": "none", "access": "authenticated"}, content_type="application/json").json()
    assert (body["mode"], body["organizations"], body["access"], body["users"]) == ("none", [], "authenticated", [])


@pytest.mark.django_db
def test_api_put_refused_for_access_changes_no_sharing_either(tenants):
    dep = f.deployment(tenants.project)
    client = login(tenants.owner)
    url = reverse("deployment-sharing-detail", args=[dep.pk])
    # The sharing is valid, the access policy is not (groups, but none named).
    refused = client.put(url, {"mode": "all", "access": "groups"}, content_type="application/json")
    assert refused.status_code == 400 and "groups" in refused.json()
    assert client.get(url).json()["mode"] == "none"


@pytest.mark.django_db
def test_api_refuses_viewer_and_hides_from_outsider(tenants):
    dep = f.deployment(tenants.project)
    url = reverse("deployment-sharing-detail", args=[dep.pk])
    # Refused before the body is read: a viewer learns nothing from its errors.
    response = login(tenants.viewer).put(url, {"mode": "all"}, content_type="application/json")
    assert response.status_code == 403 and "Viewers cannot" in response.json()["detail"]
    assert login(tenants.outsider).get(url).status_code == 404
    assert (
        login(tenants.outsider)
        .put(url, {"mode": "all"}, content_type="application/json")
        .status_code
        == 404
    )


@pytest.mark.django_db
def test_api_lists_deployments_shared_with_my_organization(tenants):
    dep = f.deployment(tenants.project, name="shared-llama")
    f.deployment(tenants.project, name="private")
    services.deployment_share_set(user=tenants.owner, deployment=dep, mode="all")
    other_user = MembershipFactory(organization=tenants.other_org, role=Role.VIEWER).user
    body = login(other_user).get(reverse("shared-deployment-list")).json()
    assert [d["name"] for d in body["results"]] == ["shared-llama"]
    assert body["results"][0]["organization"] == "Acme"


@pytest.mark.django_db
def test_public_deployments_are_found_by_served_name_for_keyless_calls(tenants):
    from sharing.selectors import public_deployments

    open_dep = f.deployment(tenants.project, revisions=[f.spec(served="open-llama")])
    f.deployment(tenants.project, revisions=[f.spec(served="closed-llama")])
    services.access_policy_set(user=tenants.owner, deployment=open_dep, kind="public")
    assert list(public_deployments("open-llama")) == [open_dep]
    assert list(public_deployments("closed-llama")) == []
    assert list(public_deployments()) == [open_dep]
