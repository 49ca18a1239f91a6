"""The Django admin's organization page sets the GPU quota through organization_quota_set, as the
signed-in operator: checked and audited as on the console."""

from __future__ import annotations

import pytest
from django.urls import reverse

from projects.models import GpuReservation, Membership
from sharing.models import AuditEntry
from tests.conftest import login


def _change_form(tenants, **changes) -> dict:
    org = tenants.org
    members = list(Membership.objects.filter(organization=org).order_by("pk"))
    data = {
        "name": org.name, "slug": org.slug, "gpu_quota": str(org.gpu_quota),
        "cpu_quota": "", "memory_quota_gib": "", "deployment_quota": "",
        "memberships-TOTAL_FORMS": str(len(members)), "memberships-INITIAL_FORMS": str(len(members)),
        "memberships-MIN_NUM_FORMS": "0", "memberships-MAX_NUM_FORMS": "1000",
    }  # fmt: skip
    for i, m in enumerate(members):
        data |= {f"memberships-{i}-id": str(m.pk), f"memberships-{i}-organization": str(org.pk),
                 f"memberships-{i}-user": str(m.user_id), f"memberships-{i}-role": m.role}  # fmt: skip
    return data | changes


def _superuser_client(tenants):
    tenants.owner.is_staff = tenants.owner.is_superuser = True
    tenants.owner.save()
    return login(tenants.owner)


@pytest.mark.django_db
def test_admin_sets_an_organizations_gpu_quota_through_the_service(tenants):
    client = _superuser_client(tenants)
    url = reverse("admin:projects_organization_change", args=[tenants.org.pk])
    assert 'name="gpu_quota"' in client.get(url).content.decode()
    assert client.get(url).context["inline_admin_formsets"][0].formset.prefix == "memberships"
    response = client.post(url, _change_form(tenants, gpu_quota="40"))
    assert response.status_code == 302, response.content.decode()[:3000]
    tenants.org.refresh_from_db()
    assert tenants.org.gpu_quota == 40
    entry = AuditEntry.objects.get(action="quota_change", object_type="organization")
    assert entry.diff == {"gpu_quota": [16, 40]} and entry.actor == tenants.owner


@pytest.mark.django_db
def test_admin_quota_below_use_or_out_of_range_is_refused_on_the_field(tenants):
    GpuReservation.objects.create(project=tenants.project, holder="deployment:999", gpus=5)
    client = _superuser_client(tenants)
    url = reverse("admin:projects_organization_change", args=[tenants.org.pk])
    for typed, reason in (("3", "The organization already uses 5 GPUs; the quota cannot go below that."),
                          ("99999999999999999999", "At most 100,000 GPUs.")):  # fmt: skip
        response = client.post(url, _change_form(tenants, gpu_quota=typed, name="Renamed"))
        assert response.status_code == 200
        assert reason in response.context["adminform"].form.errors["gpu_quota"]
    tenants.org.refresh_from_db()
    assert (tenants.org.gpu_quota, tenants.org.name) == (16, "Acme") and not AuditEntry.objects.exists()


@pytest.mark.django_db
def test_admin_role_changes_on_the_organization_page_go_through_the_service_and_keep_an_admin(tenants):
    """QA: the members inline saved roles straight to the row: no audit entry, and the
    organization's only admin could be made a viewer."""
    client = _superuser_client(tenants)  # the owner, Acme's only admin
    url = reverse("admin:projects_organization_change", args=[tenants.org.pk])
    users = list(Membership.objects.filter(organization=tenants.org).order_by("pk").values_list("user_id", flat=True))
    owner, member = users.index(tenants.owner.pk), users.index(tenants.member.pk)
    refused = client.post(url, _change_form(tenants, **{f"memberships-{owner}-role": "viewer"}))
    assert refused.status_code == 200 and "last admin" in refused.content.decode()
    assert Membership.objects.get(organization=tenants.org, user=tenants.owner).role == "admin"
    handed = client.post(url, _change_form(tenants, **{f"memberships-{owner}-role": "viewer",
                                                       f"memberships-{member}-role": "admin"}))  # fmt: skip
    assert handed.status_code == 302, handed.content.decode()[:2000]
    roles = dict(Membership.objects.filter(organization=tenants.org).values_list("user__username", "role"))
    assert roles["owner"] == "viewer" and roles["member"] == "admin"
    assert AuditEntry.objects.filter(action="update", actor=tenants.owner).count() == 2


@pytest.mark.django_db
def test_the_membership_admin_keeps_user_and_organization_and_changes_roles_through_the_service(tenants):
    """QA: a membership's page moved it to another user or organization (keys and projects left
    behind) and saved roles unaudited, the last admin's too."""
    client = _superuser_client(tenants)
    owner = Membership.objects.get(organization=tenants.org, user=tenants.owner)
    elsewhere = {"user": str(tenants.outsider.pk), "organization": str(tenants.other_org.pk)}
    refused = client.post(reverse("admin:projects_membership_change", args=[owner.pk]), {"role": "viewer", **elsewhere})
    assert refused.status_code == 200 and "last admin" in refused.content.decode()
    member = Membership.objects.get(organization=tenants.org, user=tenants.member)
    saved = client.post(reverse("admin:projects_membership_change", args=[member.pk]), {"role": "admin", **elsewhere})
    assert saved.status_code == 302, saved.content.decode()[:2000]
    member.refresh_from_db()
    assert (member.user_id, member.organization_id, member.role) == (tenants.member.pk, tenants.org.pk, "admin")
    owner.refresh_from_db()
    assert owner.role == "admin"
    assert AuditEntry.objects.filter(action="update", actor=tenants.owner).count() == 1


@pytest.mark.django_db
def test_adding_a_member_in_the_admin_is_audited_like_the_members_page(tenants):
    """QA: a membership added on its admin page or the organization's members inline was saved
    bare: no audit entry, and the gateway's cached view of the user not told."""
    from tests.factories import UserFactory

    client = _superuser_client(tenants)
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    added = client.post(reverse("admin:projects_membership_add"),
                        {"user": str(alice.pk), "organization": str(tenants.org.pk), "role": "member"})  # fmt: skip
    assert added.status_code == 302, added.content.decode()[:2000]
    data = _change_form(tenants)
    n = int(data["memberships-TOTAL_FORMS"])
    data |= {"memberships-TOTAL_FORMS": str(n + 1), f"memberships-{n}-organization": str(tenants.org.pk),
             f"memberships-{n}-user": str(bob.pk), f"memberships-{n}-role": "viewer"}  # fmt: skip
    inline = client.post(reverse("admin:projects_organization_change", args=[tenants.org.pk]), data)
    assert inline.status_code == 302, inline.content.decode()[:2000]
    for user, role in ((alice, "member"), (bob, "viewer")):
        membership = Membership.objects.get(organization=tenants.org, user=user)
        assert membership.role == role
        entry = AuditEntry.objects.get(action="create", object_id=str(membership.pk), actor=tenants.owner)
        assert entry.after["role"] == role


@pytest.mark.django_db
def test_a_staff_member_who_is_not_its_admin_cannot_add_members_in_the_admin(tenants):
    from django.contrib.auth.models import Permission

    from tests.factories import UserFactory

    tenants.member.is_staff = True
    tenants.member.save()
    tenants.member.user_permissions.add(*Permission.objects.filter(codename__in=["add_membership", "view_membership"]))
    carol = UserFactory(username="carol")
    refused = login(tenants.member).post(reverse("admin:projects_membership_add"),
                                         {"user": str(carol.pk), "organization": str(tenants.org.pk), "role": "admin"})  # fmt: skip
    assert refused.status_code == 200 and "Only admins of Acme can add its members." in refused.content.decode()
    assert not Membership.objects.filter(user=carol).exists()
