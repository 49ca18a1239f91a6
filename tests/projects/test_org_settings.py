"""Organization settings in the console: members, invitations, roles, project membership, groups."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from projects import services
from projects.keys import api_key_create, api_key_state
from projects.models import (
    APIKeyScope,
    Invitation,
    Membership,
    OrganizationGroup,
    ProjectMember,
    Role,
)
from sharing.forms import AccessForm
from sharing.models import AuditEntry
from tests.conftest import login
from tests.factories import UserFactory


@pytest.mark.django_db
def test_admin_adds_an_existing_user_by_email_and_it_is_audited(owner_client, tenants):
    newcomer = UserFactory(username="newcomer", email="new@example.com")
    response = owner_client.post(reverse("org:members"), {"form": "add", "username": "NEW@example.com", "role": "viewer"})
    assert response.status_code == 302
    membership = Membership.objects.get(organization=tenants.org, user=newcomer)
    assert membership.role == Role.VIEWER
    entry = AuditEntry.objects.get(object_type="member", object_id=str(membership.pk))
    assert entry.action == "create" and entry.after == {"user": "newcomer", "role": "viewer"}


@pytest.mark.django_db
def test_adding_an_unknown_user_is_a_field_error(owner_client, tenants):
    response = owner_client.post(reverse("org:members"), {"form": "add", "username": "nobody", "role": "member"})
    assert response.status_code == 200
    assert "invite them by email instead" in response.content.decode()


@pytest.mark.django_db
def test_invitation_link_works_once_and_is_stored_hashed(owner_client, tenants, client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.post(
            reverse("org:members"), {"form": "invite", "email": "ada@example.com", "role": "member"}
        )
    assert response.status_code == 200
    html = response.content.decode()
    link = re.search(r'value="(http://testserver/organization/invitations/[^"]+/)"', html).group(1)
    assert 'data-copy-target="invite-link-url"' in html and "the mail went to the server's log only" in html  # no mail server here
    token = link.rstrip("/").rsplit("/", 1)[1]
    assert len(mail.outbox) == 1 and link in mail.outbox[0].body and mail.outbox[0].to == ["ada@example.com"]
    invitation = Invitation.objects.get(email="ada@example.com")
    assert token not in invitation.token_hash and len(invitation.token_hash) == 64
    assert AuditEntry.objects.filter(object_type="invitation", action="create").exists()

    path = link.removeprefix("http://testserver")
    page = client.get(path)
    assert page.status_code == 200 and "Join Acme" in page.content.decode()
    weak = client.post(path, {"username": "ada", "password": "1"})
    assert weak.status_code == 200 and not get_user_model().objects.filter(username="ada").exists()
    joined = client.post(path, {"username": "ada", "password": "a-Long-enough-pw-42"})
    assert joined.status_code == 302
    ada = get_user_model().objects.get(username="ada")
    assert ada.email == "ada@example.com"
    assert Membership.objects.get(organization=tenants.org, user=ada).role == Role.MEMBER
    # Spent: a second use is refused.
    again = login(tenants.viewer).get(path)
    assert again.status_code == 404 and "not valid" in again.content.decode()


@pytest.mark.django_db
def test_expired_and_revoked_invitations_are_refused(owner_client, tenants):
    invitation, link = services.invitation_create(user=tenants.owner, organization=tenants.org, email="x@example.com")
    path = "/" + link.split("/", 3)[3]
    Invitation.objects.filter(pk=invitation.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    response = login(tenants.viewer).post(path)
    assert response.status_code == 404 and "expired" in response.content.decode()
    assert not Membership.objects.filter(user__email="x@example.com").exists()

    invitation, link = services.invitation_create(user=tenants.owner, organization=tenants.org, email="y@example.com")
    assert owner_client.post(reverse("org:invitation_revoke", args=[invitation.pk])).status_code == 302
    response = owner_client.get("/" + link.split("/", 3)[3])
    assert response.status_code == 404


@pytest.mark.django_db
def test_removing_a_member_needs_confirmation_and_revokes_their_keys(owner_client, tenants):
    key, _ = api_key_create(user=tenants.member, organization=tenants.org, name="app")
    group = services.group_create(user=tenants.owner, organization=tenants.org, name="ml")
    services.group_member_add(user=tenants.owner, group=group, member=tenants.member)
    membership = Membership.objects.get(organization=tenants.org, user=tenants.member)
    page = owner_client.get(reverse("org:members")).content.decode()
    remove_url = reverse("org:member_remove", args=[membership.pk])
    form = re.search(rf'<form method="post" action="{remove_url}"[^>]*>', page).group(0)
    assert "data-confirm=" in form and "API keys" in form
    response = owner_client.post(remove_url)
    assert response.status_code == 302
    assert not Membership.objects.filter(pk=membership.pk).exists()
    key.refresh_from_db()
    assert api_key_state(key) == "revoked" and "removed from Acme" in key.revoked_reason
    assert not tenants.member.groups.filter(pk=group.group_id).exists()
    assert AuditEntry.objects.filter(object_type="member", action="delete").exists()


@pytest.mark.django_db
def test_the_last_admin_can_neither_leave_nor_be_demoted(owner_client, tenants):
    own = Membership.objects.get(organization=tenants.org, user=tenants.owner)
    owner_client.post(reverse("org:member_role", args=[own.pk]), {"role": "member"})
    own.refresh_from_db()
    assert own.role == Role.ADMIN
    owner_client.post(reverse("org:member_remove", args=[own.pk]))
    assert Membership.objects.filter(pk=own.pk).exists()


@pytest.mark.django_db
def test_viewers_and_members_cannot_manage_members(tenants):
    target = Membership.objects.get(organization=tenants.org, user=tenants.viewer)
    for user in (tenants.viewer, tenants.member):
        client = login(user)
        assert client.get(reverse("org:members")).status_code == 200  # reading is fine
        assert client.post(reverse("org:members"), {"form": "add", "username": "outsider", "role": "admin"}).status_code == 403
        assert client.post(reverse("org:member_role", args=[target.pk]), {"role": "admin"}).status_code == 403
        assert client.post(reverse("org:member_remove", args=[target.pk])).status_code == 403
    assert not Membership.objects.filter(organization=tenants.org, user=tenants.outsider).exists()


@pytest.mark.django_db
def test_another_organizations_members_and_groups_are_404(outsider_client, tenants):
    membership = Membership.objects.get(organization=tenants.org, user=tenants.member)
    group = services.group_create(user=tenants.owner, organization=tenants.org, name="ml")
    for url in (
        reverse("org:member_role", args=[membership.pk]),
        reverse("org:member_remove", args=[membership.pk]),
        reverse("org:group_detail", args=[group.pk]),
        reverse("org:group_delete", args=[group.pk]),
        reverse("org:group_member_add", args=[group.pk]),
    ):
        assert outsider_client.post(url, {"role": "viewer", "user": tenants.outsider.pk}).status_code == 404, url
    # Their own admin page never lists Acme's people.
    html = outsider_client.get(reverse("org:members")).content.decode()
    assert "owner" not in html and "outsider" in html


@pytest.mark.django_db
def test_another_organizations_admin_gets_404_editing_or_deleting_a_group(outsider_client, tenants):
    group = services.group_create(user=tenants.owner, organization=tenants.org, name="ml", description="research")
    services.group_member_add(user=tenants.owner, group=group, member=tenants.member)
    audited = AuditEntry.objects.count()
    edit, delete = reverse("org:group_detail", args=[group.pk]), reverse("org:group_delete", args=[group.pk])
    assert outsider_client.get(edit).status_code == 404
    assert outsider_client.post(edit, {"name": "pwned", "description": ""}).status_code == 404
    assert outsider_client.post(delete).status_code == 404
    assert outsider_client.get(delete).status_code == 405  # a delete is a POST only
    group.refresh_from_db()
    assert (group.name, group.description) == ("ml", "research")
    assert tenants.member.groups.filter(pk=group.group_id).exists()
    assert AuditEntry.objects.count() == audited
    # Their own groups page lists their organization's groups, never Acme's.
    assert f'href="{edit}"' not in outsider_client.get(reverse("org:groups")).content.decode()
    assert f'href="{edit}"' in login(tenants.owner).get(reverse("org:groups")).content.decode()


def _field(page: str, name: str) -> str:
    """The `.field` block of the input `name` in a rendered form (label, input, errors)."""
    return re.search(rf'<div class="field[^"]*">\s*<label for="id_{name}">.*?</ul>', page, re.S).group(0)


@pytest.mark.django_db
def test_a_taken_group_name_is_a_field_error_and_keeps_what_was_typed(owner_client, tenants):
    services.group_create(user=tenants.owner, organization=tenants.org, name="ml")
    response = owner_client.post(reverse("org:groups"), {"name": "ml", "description": "Fine-tuning crew"})
    assert response.status_code == 200
    page = response.content.decode()
    name = _field(page, "name")
    assert "has-error" in name and "Acme already has a group named “ml”." in name
    assert 'value="ml"' in name
    assert 'value="Fine-tuning crew"' in _field(page, "description")
    assert OrganizationGroup.objects.filter(organization=tenants.org).count() == 1
    # Another organization may use the same name.
    assert login(tenants.outsider).post(reverse("org:groups"), {"name": "ml"}).status_code == 302


@pytest.mark.django_db
def test_renaming_a_group_checks_the_name_keeps_the_input_and_is_audited(owner_client, tenants):
    services.group_create(user=tenants.owner, organization=tenants.org, name="ops")
    group = services.group_create(user=tenants.owner, organization=tenants.org, name="ml", description="research")
    url = reverse("org:group_detail", args=[group.pk])
    for bad, words in (("ops", "already has a group named"), ("x" * 81, "at most 80 characters")):
        response = owner_client.post(url, {"name": bad, "description": "new words"})
        assert response.status_code == 200, bad
        page = response.content.decode()
        assert "has-error" in _field(page, "name") and words in _field(page, "name")
        assert f'value="{bad}"' in _field(page, "name") and 'value="new words"' in _field(page, "description")
        group.refresh_from_db()
        assert (group.name, group.description) == ("ml", "research")
    response = owner_client.post(url, {"name": "ML team", "description": "new words"}, follow=True)
    assert response.redirect_chain == [(url, 302)] and "Group saved." in response.content.decode()
    group.refresh_from_db()
    group.group.refresh_from_db()
    assert (group.name, group.group.name) == ("ML team", f"org{tenants.org.pk}:ML team")
    entry = AuditEntry.objects.filter(object_type="group", action="update").latest("pk")
    assert entry.before["name"] == "ml" and entry.after["name"] == "ML team"
    # Members read the page but can't change or delete the group.
    member = login(tenants.member)
    assert member.get(url).status_code == 200
    assert member.post(url, {"name": "mine"}).status_code == 403
    assert member.post(reverse("org:group_delete", args=[group.pk])).status_code == 403
    response = owner_client.post(reverse("org:group_delete", args=[group.pk]))
    assert response.status_code == 302 and response["Location"] == reverse("org:groups")
    assert not OrganizationGroup.objects.filter(pk=group.pk).exists()


@pytest.mark.django_db
def test_members_table_is_paginated_and_searchable(owner_client, tenants):
    for n in range(12):
        services.membership_set(organization=tenants.org, user=UserFactory(username=f"bulk{n:02d}"), role="viewer")
    page = owner_client.get(reverse("org:members"), {"per_page": 10}).content.decode()
    assert "1–10 of 15" in page and "Next" in page
    found = owner_client.get(reverse("org:members"), {"q": "bulk07"}).content.decode()
    assert "bulk07" in found and "bulk08" not in found


@pytest.mark.django_db
def test_admin_puts_a_member_in_a_group_and_a_groups_policy_admits_them(owner_client, tenants):
    response = owner_client.post(reverse("org:groups"), {"name": "ML team", "description": "research"})
    group = OrganizationGroup.objects.get(organization=tenants.org, name="ML team")
    assert response.status_code == 302 and response["Location"] == group.get_absolute_url()
    response = owner_client.post(reverse("org:group_member_add", args=[group.pk]), {"user": tenants.member.pk})
    assert response.status_code == 302
    assert tenants.member.groups.filter(pk=group.group_id).exists()
    # Someone outside the organization can't be put in it.
    response = owner_client.post(reverse("org:group_member_add", args=[group.pk]), {"user": tenants.outsider.pk})
    assert response.status_code == 404
    entry = AuditEntry.objects.filter(object_type="group", action="update").latest("pk")
    assert entry.diff["members"][1] == ["member"]

    # The access form offers this organization's groups, never another's.
    theirs = services.group_create(user=tenants.outsider, organization=tenants.other_org, name="secret-team")
    choices = AccessForm(organization_ids=[tenants.org.pk]).fields["groups"].queryset
    assert group.group in choices and theirs.group not in choices

    response = owner_client.post(
        reverse("org:group_member_remove", args=[group.pk, tenants.member.pk]))
    assert response.status_code == 302 and not tenants.member.groups.filter(pk=group.group_id).exists()


@pytest.mark.django_db
def test_groups_policy_cannot_name_another_organizations_group(tenants):
    from django.core.exceptions import ValidationError

    from sharing.services import access_policy_set
    from tests.factories import deployment

    dep = deployment(tenants.project, user=tenants.owner)
    theirs = services.group_create(user=tenants.outsider, organization=tenants.other_org, name="secret-team")
    with pytest.raises(ValidationError) as exc:
        access_policy_set(user=tenants.owner, deployment=dep, kind="groups", groups=[theirs.group])
    assert "groups" in exc.value.message_dict


@pytest.mark.django_db
def test_project_membership_is_managed_on_the_project_page(owner_client, tenants):
    url = reverse("projects:member_add", args=[tenants.project.pk])
    assert owner_client.post(url, {"user": tenants.viewer.pk, "role": "member"}).status_code == 302
    row = ProjectMember.objects.get(project=tenants.project, user=tenants.viewer)
    assert row.role == Role.MEMBER
    # Lifted: the viewer may now change that project's objects.
    from console import permissions

    assert permissions.can(tenants.viewer, "change", tenants.project)
    page = owner_client.get(tenants.project.get_absolute_url()).content.decode()
    assert "data-confirm=\"Remove viewer from project" in page
    assert owner_client.post(url, {"user": tenants.outsider.pk, "role": "member"}).status_code == 404
    remove = reverse("projects:member_remove", args=[tenants.project.pk, tenants.viewer.pk])
    assert login(tenants.member).post(remove).status_code == 403
    assert owner_client.post(remove).status_code == 302
    assert not ProjectMember.objects.filter(pk=row.pk).exists()
    assert AuditEntry.objects.filter(object_type="project_member", action="delete").exists()


@pytest.mark.django_db
def test_rest_key_of_removed_member_stops_working(tenants):
    from rest_framework.test import APIClient

    _, secret = api_key_create(user=tenants.member, organization=tenants.org, name="cli", scope=APIKeyScope.REST)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    assert client.get("/api/v1/projects/").status_code == 200
    services.membership_remove(user=tenants.owner, membership=Membership.objects.get(organization=tenants.org, user=tenants.member))
    assert client.get("/api/v1/projects/").status_code == 401


@pytest.mark.django_db
def test_signup_on_an_invitation_for_an_existing_address_asks_to_sign_in(client, tenants):
    _, link = services.invitation_create(user=tenants.owner, organization=tenants.org, email="outsider@example.com")
    path = "/" + link.split("/", 3)[3]
    response = client.post(path, {"username": "someone-else", "password": "a-Long-enough-pw-42"})
    assert response.status_code == 200 and "sign in with it to accept" in response.content.decode()
    assert not get_user_model().objects.filter(username="someone-else").exists()
    # Signed in, the existing account joins.
    joined = login(tenants.outsider).post(path)
    assert joined.status_code == 302
    assert Membership.objects.get(organization=tenants.org, user=tenants.outsider).role == Role.MEMBER


@pytest.mark.django_db
def test_the_invitation_page_signed_out_says_every_error_at_once_and_offers_sign_in_not_sign_out(client, tenants):
    # QA: a username such as "<b>bob</b>" was refused only once the password passed (two rounds),
    # and the signed-out page's top bar had "Sign out" and an organization switcher ("No organization").
    _, link = services.invitation_create(user=tenants.owner, organization=tenants.org, email="new@example.com")
    path = "/" + link.split("/", 3)[3]
    page = client.get(path).content.decode()
    assert f'href="/login/?next={path}">Sign in</a>' in page
    assert "Sign out" not in page and 'id="org-switch"' not in page

    response = client.post(path, {"username": "<b>bob</b>", "password": "x"})
    form = response.context["form"]
    assert form.errors["username"] == [
        "Enter a valid username. This value may contain only letters, numbers, and @/./+/-/_ characters."
    ]
    assert form.errors["password"][0].startswith("This password is too short.")
    assert not get_user_model().objects.filter(email="new@example.com").exists()


@pytest.mark.django_db
def test_pending_invitations_are_a_paginated_table(owner_client, tenants):
    for n in range(12):
        services.invitation_create(user=tenants.owner, organization=tenants.org, email=f"p{n:02d}@example.com")
    page = owner_client.get(reverse("org:members")).content.decode()
    assert "1–10 of 12" in page
    found = owner_client.get(reverse("org:members"), {"inv_q": "p03@"}).content.decode()
    assert "p03@example.com" in found and "p04@example.com" not in found


@pytest.mark.django_db
def test_django_admin_lists_groups_and_invitations_of_the_admins_organization_only(tenants):
    from django.contrib.auth.models import Permission

    services.group_create(user=tenants.owner, organization=tenants.org, name="acme-team")
    services.group_create(user=tenants.outsider, organization=tenants.other_org, name="globex-team")
    services.invitation_create(user=tenants.owner, organization=tenants.org, email="a@example.com")
    tenants.owner.is_staff = True
    tenants.owner.save()
    tenants.owner.user_permissions.add(*Permission.objects.filter(codename__in=["view_organizationgroup", "view_invitation"]))
    client = login(tenants.owner)
    groups = client.get(reverse("admin:projects_organizationgroup_changelist")).content.decode()
    assert "acme-team" in groups and "globex-team" not in groups
    invitations = client.get(reverse("admin:projects_invitation_changelist"))
    assert invitations.status_code == 200 and "a@example.com" in invitations.content.decode()
