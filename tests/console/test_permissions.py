"""console.permissions: organization role, project membership and guardian object grants."""

from __future__ import annotations

import pytest
from guardian.shortcuts import assign_perm, remove_perm

from console import permissions
from console.permissions import check as can
from projects.models import ProjectMember, Role
from tests.sharing import factories as f

ACTIONS = ("view", "change", "deactivate", "delete", "share")  # what a deployment page offers


@pytest.mark.django_db
def test_admin_and_member_may_do_everything(tenants):
    dep = f.deployment(tenants.project)
    for user in (tenants.owner, tenants.member):
        assert all(can(user, action, dep) == (True, "") for action in ACTIONS)


@pytest.mark.django_db
def test_viewer_may_only_view_and_is_told_why(tenants):
    dep = f.deployment(tenants.project, name="llama")
    assert can(tenants.viewer, "view", dep) == (True, "")
    for action in ("change", "deactivate", "delete", "share"):
        allowed, reason = can(tenants.viewer, action, dep)
        assert not allowed
        assert reason.startswith("Viewers cannot") and "Acme" in reason and "“Research”" in reason


@pytest.mark.django_db
def test_outsider_may_do_nothing_even_with_a_stray_guardian_grant(tenants):
    dep = f.deployment(tenants.project)
    assign_perm("deployments.view_modeldeployment", tenants.outsider, dep)
    assert can(tenants.outsider, "view", dep) == (
        False,
        "This deployment belongs to another organization.",
    )


@pytest.mark.django_db
def test_guardian_grants_one_action_on_one_deployment(tenants):
    dep = f.deployment(tenants.project)
    other = f.deployment(tenants.project)
    assign_perm("deployments.deactivate_modeldeployment", tenants.viewer, dep)
    assert can(tenants.viewer, "deactivate", dep)[0]
    assert not can(tenants.viewer, "delete", dep)[0]
    assert not can(tenants.viewer, "deactivate", other)[0]
    assign_perm("deployments.share_modeldeployment", tenants.viewer, dep)
    assert can(tenants.viewer, "share", dep)[0]
    remove_perm("deployments.share_modeldeployment", tenants.viewer, dep)
    assert not can(tenants.viewer, "share", dep)[0]


@pytest.mark.django_db
def test_project_member_role_lifts_an_org_viewer_in_that_project_only(tenants):
    from tests.factories import ProjectFactory

    dep = f.deployment(tenants.project)
    elsewhere = f.deployment(ProjectFactory(organization=tenants.org, name="Other"))
    ProjectMember.objects.create(project=tenants.project, user=tenants.viewer, role=Role.MEMBER)
    assert can(tenants.viewer, "delete", dep)[0]
    assert not can(tenants.viewer, "delete", elsewhere)[0]


@pytest.mark.django_db
def test_project_viewer_row_does_not_lift(tenants):
    dep = f.deployment(tenants.project)
    ProjectMember.objects.create(project=tenants.project, user=tenants.viewer, role=Role.VIEWER)
    assert not can(tenants.viewer, "change", dep)[0]


@pytest.mark.django_db
def test_unknown_action_is_a_programming_error(tenants):
    with pytest.raises(ValueError):
        can(tenants.owner, "launch", f.deployment(tenants.project))


# --- One rule on every path (issue 10): services, querysets and the admin agree.


@pytest.mark.django_db
def test_raising_a_project_quota_is_for_org_admins_on_every_path(tenants):
    """projects.services.project_update let a member raise a quota that
    sharing.services.project_quota_set refused; both now refuse, both let the admin."""
    from django.core.exceptions import PermissionDenied

    from projects.services import project_update
    from sharing.services import project_quota_set

    project = tenants.project
    with pytest.raises(PermissionDenied, match="Only organization admins can manage GPU quotas"):
        project_update(user=tenants.member, project=project, name=project.name,
                       description="", gpu_quota=12)  # fmt: skip
    with pytest.raises(PermissionDenied, match="Only organization admins can manage GPU quotas"):
        project_quota_set(user=tenants.member, project=project, gpu_quota=12)
    project.refresh_from_db()
    assert project.gpu_quota == 8
    # A member still edits the rest of the project; the admin changes the quota on either path.
    renamed = project_update(user=tenants.member, project=project, name="Research 2",
                             description="", gpu_quota=8)  # fmt: skip
    assert renamed.name == "Research 2"
    assert project_update(user=tenants.owner, project=project, name="Research 2",
                          description="", gpu_quota=10).gpu_quota == 10  # fmt: skip
    assert project_quota_set(user=tenants.owner, project=project, gpu_quota=12).gpu_quota == 12


@pytest.mark.django_db
def test_a_project_member_may_create_a_deployment_as_well_as_update_one(tenants):
    """deployment_create checked the organization role only: a project member could update a
    deployment but not create one in the same project."""
    from django.core.exceptions import PermissionDenied

    from tests.factories import deployment

    with pytest.raises(PermissionDenied, match="Viewers cannot change deployments"):
        deployment(tenants.project, user=tenants.viewer, name="before")
    ProjectMember.objects.create(project=tenants.project, user=tenants.viewer, role=Role.MEMBER)
    made = deployment(tenants.project, user=tenants.viewer, name="after", gpus=2)
    assert made.current_revision.created_by == tenants.viewer
    assert tenants.project.gpu_used() == 2  # its GPUs are reserved like any deployment's


@pytest.mark.django_db
def test_restrict_returns_exactly_the_rows_check_allows(tenants):
    from deployments.models import ModelDeployment
    from tests.factories import MembershipFactory, ProjectFactory, UserFactory, deployment

    mine = deployment(tenants.project, name="mine")
    elsewhere = deployment(ProjectFactory(organization=tenants.org, name="Other"), name="other")
    foreign = deployment(tenants.other_project, name="foreign")
    lifted = MembershipFactory(organization=tenants.org, role=Role.VIEWER,
                               user=UserFactory(username="lifted")).user  # fmt: skip
    ProjectMember.objects.create(project=tenants.project, user=lifted, role=Role.MEMBER)
    assign_perm("deployments.delete_modeldeployment", tenants.viewer, elsewhere)
    assign_perm("deployments.change_modeldeployment", tenants.outsider, mine)  # never crosses orgs
    users = (tenants.owner, tenants.member, tenants.viewer, lifted, tenants.outsider)
    everything = list(ModelDeployment.objects.all())
    for user in users:
        for action in (*ACTIONS, "admin"):
            restricted = set(permissions.restrict(ModelDeployment.objects.all(), user, action))
            allowed = {d for d in everything if permissions.can(user, action, d)}
            assert restricted == allowed, (user.username, action)
    assert set(permissions.restrict(ModelDeployment.objects.all(), tenants.viewer, "delete")) == {elsewhere}
    assert set(permissions.restrict(ModelDeployment.objects.all(), lifted, "change")) == {mine}
    assert set(permissions.restrict(ModelDeployment.objects.all(), tenants.outsider, "view")) == {foreign}


@pytest.mark.django_db
def test_admin_actions_run_as_the_signed_in_user(tenants, client):
    """Admin actions passed user=None, which skipped every check; now a staff viewer is refused
    as on the console, and sees no other organization's rows."""
    from django.contrib.auth.models import Permission
    from django.urls import reverse

    from deployments.models import DeploymentState
    from tests.factories import deployment

    mine = deployment(tenants.project, name="mine")
    foreign = deployment(tenants.other_project, name="foreign")
    tenants.viewer.is_staff = True
    tenants.viewer.save()
    tenants.viewer.user_permissions.add(*Permission.objects.filter(
        content_type__app_label="deployments", codename__endswith="modeldeployment"))  # fmt: skip
    client.force_login(tenants.viewer)
    changelist = reverse("admin:deployments_modeldeployment_changelist")
    listing = client.get(changelist).content.decode()
    assert "mine" in listing and "foreign" not in listing
    response = client.post(changelist, {"action": "deactivate", "_selected_action": [mine.pk]},
                           follow=True)  # fmt: skip
    html = response.content.decode()
    assert "Viewers cannot deactivate or activate deployments" in html
    mine.refresh_from_db()
    assert mine.state != DeploymentState.DEACTIVATED and tenants.project.gpu_used() == 1
    assert client.get(reverse("admin:deployments_modeldeployment_change", args=[foreign.pk])).status_code in (302, 404)


def test_every_product_admin_asks_the_permission_module():
    """A ModelAdmin that skipped console.permissions would show every organization's rows."""
    from django.contrib import admin

    from console.admin import RestrictedAdmin

    product = {"projects", "catalog", "deployments", "gateway", "sharing"}
    unrestricted = [
        f"{model._meta.label}: {type(model_admin).__name__}"
        for model, model_admin in admin.site._registry.items()
        if model._meta.app_label in product and not isinstance(model_admin, RestrictedAdmin)
    ]
    assert unrestricted == []
    assert sum(m._meta.app_label in product for m in admin.site._registry) >= 12


@pytest.mark.django_db
def test_a_staff_member_cannot_edit_roles_in_the_admin(tenants, client):
    """Memberships decide every permission: in the admin, as on the console, only an
    organization admin may change them — not a member with Django's model permissions."""
    from django.contrib.auth.models import Permission
    from django.urls import reverse

    tenants.member.is_staff = True
    tenants.member.save()
    tenants.member.user_permissions.add(*Permission.objects.filter(content_type__app_label="projects"))
    client.force_login(tenants.member)
    url = reverse("admin:projects_organization_change", args=[tenants.org.pk])
    page = client.get(url)
    assert page.status_code == 200 and 'name="name"' not in page.content.decode()  # read-only view
    client.post(url, {"name": "Taken over", "slug": "acme"})
    tenants.org.refresh_from_db()
    assert tenants.org.name == "Acme"
    assert client.get(reverse("admin:projects_organization_change", args=[tenants.other_org.pk])).status_code in (302, 404)


@pytest.mark.django_db
def test_records_are_read_only_in_the_admin_even_for_a_superuser(tenants, client):
    """Revisions, events and usage records were addable and deletable in the admin: deleting a
    deployment's serving revision broke rollback, deleting usage changed the bill."""
    from django.contrib.auth import get_user_model
    from django.urls import reverse

    from deployments.models import Revision
    from tests.factories import deployment

    row = deployment(tenants.project, name="mine")
    revision = Revision.objects.filter(deployment=row).first() or Revision.objects.create(
        deployment=row, number=1, spec=row.spec(), reason="test")  # fmt: skip
    root = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(root)
    for name in ("deployments_revision", "deployments_deploymentevent", "gateway_usagerecord",
                 "projects_gpureservation"):
        assert client.get(reverse(f"admin:{name}_add")).status_code == 403, name
    response = client.post(reverse("admin:deployments_revision_delete", args=[revision.pk]), {"post": "yes"})
    assert response.status_code == 403 and Revision.objects.filter(pk=revision.pk).exists()
    index = client.get(reverse("admin:index")).content.decode()
    assert "MaaS mappings" in index and "Maa s" not in index
    assert "GPU reservations" in index and "Gpu reservations" not in index
