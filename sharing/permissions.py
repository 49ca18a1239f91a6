"""Who may do what to a model deployment: organization role, project membership, guardian grants.

Rules (documented choice):
- Organization admin: every action on every deployment of the organization.
- Organization member: every action on every deployment of the organization — members work in
  every project of their organization, as ``projects.selectors.can_change`` already decides.
- Organization viewer: view only, unless the viewer is a project member (role member or admin)
  of the deployment's project, or was granted an object permission with django-guardian
  (``assign_perm("deployments.change_modeldeployment", user, deployment)``; the extra
  codenames ``deactivate_modeldeployment`` and ``share_modeldeployment`` exist too).
- Anyone outside the organization: nothing. Guardian grants never reach across organizations,
  so a stray grant can't leak a deployment to another tenant (sharing does that, for calls).
"""

from __future__ import annotations

from typing import Any

from projects.models import ProjectMember, Role
from projects.selectors import role_in

ACTIONS = ("view", "change", "deactivate", "delete", "share")
# Guardian codename that grants each action on one deployment.
PERMISSION_FOR = {
    "view": "deployments.view_modeldeployment",
    "change": "deployments.change_modeldeployment",
    "deactivate": "deployments.deactivate_modeldeployment",
    "delete": "deployments.delete_modeldeployment",
    "share": "deployments.share_modeldeployment",
}
VERBS = {
    "view": "see",
    "change": "change",
    "deactivate": "deactivate or activate",
    "delete": "delete",
    "share": "change sharing and access of",
}


def can(user: Any, action: str, obj: Any) -> tuple[bool, str]:
    """Whether ``user`` may do ``action`` on deployment ``obj``, and if not, why (for the UI)."""
    if action not in ACTIONS:
        raise ValueError(f"Unknown action {action!r}; use one of {', '.join(ACTIONS)}.")
    if user is None or not user.is_authenticated:
        return False, "Sign in first."
    project = obj.project
    organization = project.organization
    role = role_in(user, organization)
    if role is None:
        return False, "This deployment belongs to another organization."
    if role in (Role.ADMIN, Role.MEMBER):
        return True, ""
    if action == "view":
        return True, ""
    if ProjectMember.objects.filter(
        project=project, user=user, role__in=[Role.ADMIN, Role.MEMBER]
    ).exists():
        return True, ""
    if user.has_perm(PERMISSION_FOR[action], obj):
        return True, ""
    return False, (
        f"Viewers cannot {VERBS[action]} deployments. Ask an admin of {organization.name} for the "
        f"member role, to be added to project “{project.name}”, or for this permission on “{obj}”."
    )


def require(user: Any, action: str, obj: Any) -> None:
    """Raise PermissionDenied with the reason when ``can`` says no (for services)."""
    from django.core.exceptions import PermissionDenied

    allowed, reason = can(user, action, obj)
    if not allowed:
        raise PermissionDenied(reason)
