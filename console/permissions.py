"""The one permission rule: may this user do this action on this object, and which rows may they see.

Every entry point asks this module — services (``require``), views and templates (``can``,
``reason``), selectors, the REST API and the Django admin (``restrict``) — so no two places can
disagree. It sits in the bottom layer: it reads only models (organization and project
memberships, django-guardian grants), never services or views.

Actions:
- ``view``: any member of the object's organization.
- ``change``, ``deactivate``, ``delete``, ``share``: an organization admin or member; else a
  project member (role admin or member) of the object's project; else a django-guardian grant
  on that very object (``assign_perm("deployments.change_modeldeployment", user, deployment)``).
- ``admin``: organization admins only — compute pools, GPU quotas, organization settings.

Anyone outside the organization may do nothing, and a guardian grant never reaches across
organizations. Superusers (platform operators in the Django admin) may do everything.
``user=None`` is the system itself (Celery tasks, management commands): services let it pass.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db.models import Model, Q, QuerySet
from guardian.shortcuts import get_objects_for_user

from projects.models import Membership, Organization, Project, ProjectMember, Role

ACTIONS = ("view", "change", "deactivate", "delete", "share", "admin")
WRITE_ROLES = (Role.ADMIN, Role.MEMBER)
VERBS = {
    "view": "see",
    "change": "change",
    "deactivate": "deactivate or activate",
    "delete": "delete",
    "share": "change sharing and access of",
    "admin": "manage",
}
# How the UI names each kind of object in a refusal ("Viewers cannot change deployments").
NOUNS = {
    "deployments.modeldeployment": "deployments",
    "deployments.computepool": "compute pools",
    "projects.project": "projects",
    "projects.organization": "the organization",
    "catalog.catalogmodel": "models",
    "catalog.profilebundle": "profile bundles",
    "catalog.maasmapping": "MaaS mappings",
}


def _organization(obj: Any) -> Organization:
    if isinstance(obj, Organization):
        return obj
    if isinstance(obj, Project):
        return obj.organization
    project = _project(obj)
    return project.organization if project is not None else obj.organization


def _project(obj: Any) -> Project | None:
    if isinstance(obj, Project):
        return obj
    if isinstance(obj, Organization):
        return None
    if getattr(obj, "project_id", None) is not None:
        return obj.project
    deployment = getattr(obj, "deployment", None)
    return deployment.project if deployment is not None and hasattr(deployment, "project") else None


def _role(user: Any, organization: Organization) -> str | None:
    return (
        Membership.objects.filter(user=user, organization=organization)
        .values_list("role", flat=True)
        .first()
    )


def _guardian_codename(action: str, model: Any) -> str:
    meta = model._meta
    return f"{meta.app_label}.{action}_{meta.model_name}"


def _noun(obj: Any) -> str:
    meta = obj._meta
    return NOUNS.get(f"{meta.app_label}.{meta.model_name}", str(meta.verbose_name_plural))


def _singular(obj: Any) -> str:
    meta = obj._meta
    return "deployment" if meta.model_name == "modeldeployment" else str(meta.verbose_name)


def check(user: Any, action: str, obj: Any, what: str | None = None) -> tuple[bool, str]:
    """Whether ``user`` may do ``action`` on ``obj``, and if not, why (a sentence for the UI).

    ``what`` names the objects in the refusal when the object's own name would mislead (a
    project's environments are changed through the project)."""
    if action not in ACTIONS:
        raise ValueError(f"Unknown action {action!r}; use one of {', '.join(ACTIONS)}.")
    if user is None or not user.is_authenticated:
        return False, "Sign in first."
    if user.is_superuser:
        return True, ""
    organization = _organization(obj)
    role = _role(user, organization)
    noun = what or _noun(obj)
    if role is None:
        return False, f"This {_singular(obj)} belongs to another organization."
    if action == "view" or role == Role.ADMIN:
        return True, ""
    if action == "admin":
        return False, f"Only organization admins can {VERBS['admin']} {noun}."
    if role == Role.MEMBER:
        return True, ""
    project = _project(obj)
    if project is not None and ProjectMember.objects.filter(
        project=project, user=user, role__in=WRITE_ROLES
    ).exists():
        return True, ""
    if isinstance(obj, Model) and not isinstance(obj, Organization | Project):
        if user.has_perm(_guardian_codename(action, type(obj)), obj):
            return True, ""
    where = f", to be added to project “{project.name}”" if project is not None else ""
    grant = f", or for this permission on “{obj}”" if not isinstance(obj, Organization | Project) else ""
    return False, (
        f"Viewers cannot {VERBS[action]} {noun}. Ask an admin of {organization.name} for the "
        f"member role{where}{grant}."
    )


def can(user: Any, action: str, obj: Any) -> bool:
    """Whether ``user`` may do ``action`` on ``obj`` (for views and templates)."""
    return check(user, action, obj)[0]


def require(user: Any, action: str, obj: Any, what: str | None = None) -> None:
    """For services: raise PermissionDenied with the reason when ``check`` says no.

    ``user=None`` is the system (tasks, management commands) and is never refused."""
    if user is None:
        return
    allowed, why = check(user, action, obj, what)
    if not allowed:
        raise PermissionDenied(why)


def _paths(model: type[Model]) -> tuple[str, str | None]:
    """The lookups from ``model`` to its organization and to its project (None: no project)."""
    if model is Organization:
        return "pk", None
    if model is Project:
        return "organization", "pk"
    names = {f.name for f in model._meta.get_fields()}
    if "project" in names:
        return "project__organization", "project"
    if "organization" in names:
        return "organization", None
    if "deployment" in names:
        return "deployment__project__organization", "deployment__project"
    raise TypeError(f"{model.__name__} is not organization-scoped; permissions cannot restrict it.")


def restrict(queryset: QuerySet, user: Any, action: str = "view") -> QuerySet:
    """Only the rows of ``queryset`` on which ``user`` may do ``action`` (NetBox's restrict):
    the same rule as ``check``, as one query."""
    if action not in ACTIONS:
        raise ValueError(f"Unknown action {action!r}; use one of {', '.join(ACTIONS)}.")
    if user is None or not user.is_authenticated:
        return queryset.none()
    if user.is_superuser:
        return queryset
    model = queryset.model
    org_path, project_path = _paths(model)
    memberships = Membership.objects.filter(user=user)
    mine = queryset.filter(**{f"{org_path}__in": memberships.values("organization")})
    if action == "view":
        return mine
    admins = memberships.filter(role=Role.ADMIN).values("organization")
    if action == "admin":
        return mine.filter(**{f"{org_path}__in": admins})
    writers = memberships.filter(role__in=WRITE_ROLES).values("organization")
    allowed = Q(**{f"{org_path}__in": writers})
    if project_path is not None:
        lifted = ProjectMember.objects.filter(user=user, role__in=WRITE_ROLES).values("project")
        allowed |= Q(**{f"{project_path}__in": lifted})
    if model not in (Organization, Project):
        granted = get_objects_for_user(
            user, _guardian_codename(action, model), klass=model, with_superuser=False,
            accept_global_perms=False,
        )
        allowed |= Q(pk__in=granted.values("pk"))
    return mine.filter(allowed)


# --- Compute pools: a platform operator's act (README "Who may register compute pools") ---


def is_pool_operator(user: Any) -> bool:
    """A platform operator: a superuser, or a user given the `operate_computepool` permission."""
    return bool(
        user is not None
        and user.is_authenticated
        and user.is_active
        and user.has_perm("deployments.operate_computepool")
    )


def may_register_pool(user: Any, organization: Organization) -> bool:
    """Operators register pools for any organization; organization admins bring their own
    cluster only where MODELDECK_ORG_ADMINS_MAY_ADD_POOLS is on."""
    if is_pool_operator(user):
        return True
    return bool(
        user is not None
        and user.is_authenticated
        and settings.ORG_ADMINS_MAY_ADD_POOLS
        and _role(user, organization) == Role.ADMIN
    )


def may_manage_pool(user: Any, pool: Any) -> bool:
    """Edit, test and remove: operators any pool; organization admins (setting on) only the
    pools their organization brought (managed_by "organization"), never one an operator granted."""
    if is_pool_operator(user):
        return True
    return bool(
        user is not None
        and user.is_authenticated
        and settings.ORG_ADMINS_MAY_ADD_POOLS
        and pool.managed_by == "organization"
        and _role(user, pool.organization) == Role.ADMIN
    )
