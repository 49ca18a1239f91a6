"""sharing.permissions.can: organization role, project membership and guardian object grants."""

from __future__ import annotations

import pytest
from guardian.shortcuts import assign_perm, remove_perm

from projects.models import ProjectMember, Role
from sharing.permissions import ACTIONS, can
from tests.sharing import factories as f


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
