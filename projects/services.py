"""Writes for organizations, projects, quotas and integrations."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import logging
import re
import secrets
from datetime import timedelta
from decimal import ROUND_DOWN, Decimal, InvalidOperation

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import ProtectedError
from django.http import Http404
from django.template.defaultfilters import pluralize
from django.utils import timezone
from django.utils.text import slugify

from catalog import integrations as integration_checks
from catalog.services import mappings_default_apply
from console import permissions
from console.crypto import last4
from console.ids import parse_id
from console.money import money_text
from deployments.models import DeploymentState, ModelDeployment
from gateway.cache import invalidate_user
from projects.keys import api_key_get, api_keys_revoke_for_member, gateway_forget_user
from projects.models import (
    BUDGET_DECIMAL_PLACES,
    BUDGET_MAX_DIGITS,
    S3_FIELDS,
    APIKey,
    GpuReservation,
    Integration,
    IntegrationKind,
    Invitation,
    Membership,
    Organization,
    OrganizationGroup,
    Project,
    ProjectMember,
    Role,
)
from projects.selectors import quota_decide, quota_limits
from sharing.audit import audit_record, snapshot

log = logging.getLogger(__name__)

PROJECT_FIELDS = ["name", "slug", "description", "gpu_quota"]


def _audit(**kwargs) -> None:
    audit_record(**kwargs)


def _snapshot(obj, fields: list[str]) -> dict:
    return snapshot(obj, fields)


class QuotaExceeded(ValidationError):
    """A GPU request does not fit the project's or the organization's quota."""


def organization_create(*, name: str, slug: str, gpu_quota: int = 8, admin: AbstractBaseUser | None = None) -> Organization:
    with transaction.atomic():
        org = Organization(name=name, slug=slug, gpu_quota=gpu_quota)
        org.full_clean()
        org.save()
        if admin is not None:
            Membership.objects.create(user=admin, organization=org, role=Role.ADMIN)
    return org


def membership_set(*, organization: Organization, user: AbstractBaseUser, role: str) -> Membership:
    with transaction.atomic():
        membership, _ = Membership.objects.update_or_create(
            organization=organization, user=user, defaults={"role": role}
        )
        membership.full_clean()
        gateway_forget_user(user.pk)
    return membership


def membership_remove(*, user: AbstractBaseUser | None, membership: Membership) -> int:
    """Remove a member from the organization: their project memberships go and every key they
    hold in it is revoked for good (reason kept); the gateway refuses them on the next request.

    Returns the number of keys revoked. Only organization admins remove members (``user`` None:
    an operator acting from the Django admin); the last admin can't be removed.
    """
    organization = membership.organization
    permissions.require(user, "admin", organization, what="members")
    with transaction.atomic():
        Organization.objects.select_for_update().get(pk=organization.pk)  # serialize removals
        locked = Membership.objects.filter(pk=membership.pk).select_related("user").first()
        if locked is None:
            return 0
        if user is not None and locked.role == Role.ADMIN and not Membership.objects.filter(
            organization=organization, role=Role.ADMIN
        ).exclude(pk=locked.pk).exists():
            raise ValidationError("This is the organization's last admin; make someone else admin first.")
        member = locked.user
        who = user.get_username() if user is not None and user.is_authenticated else "an operator"
        revoked = api_keys_revoke_for_member(
            actor=user, organization=organization, member=member,
            reason=f"Owner {member.get_username()} was removed from {organization.name} by {who}.",
        )  # fmt: skip
        ProjectMember.objects.filter(project__organization=organization, user=member).delete()
        # Out of the organization's groups too (access policies name them); the m2m signal
        # makes the gateway re-read the user's groups.
        member.groups.remove(*Group.objects.filter(organization_group__organization=organization))
        _audit(actor=user, organization=organization, action="delete", obj=locked,
               before={"user": member.get_username(), "role": locked.role}, after=None)
        locked.delete()
        gateway_forget_user(member.pk)
    log.info("member removed", extra={"organization": organization.pk, "user": member.pk, "keys_revoked": revoked})
    return revoked


def _check_org_quota_fits_projects(organization: Organization) -> None:
    used = organization.gpu_used()
    if organization.gpu_quota < used:
        raise ValidationError({"gpu_quota": f"The organization already uses {used} GPU{pluralize(used)}; the quota cannot go below that."})


# Kubernetes reserves the kube- prefix for its own namespaces, and `default` is where
# unqualified objects land (kubernetes.io/docs/concepts/overview/working-with-objects/namespaces/).
RESERVED_NAMESPACE_PREFIXES = ("kube-",)
RESERVED_NAMESPACES = frozenset({"default"})


def _namespace_candidates(organization: Organization, slug: str):
    readable = f"{organization.slug}-{slug}"
    if readable not in RESERVED_NAMESPACES and not readable.startswith(RESERVED_NAMESPACE_PREFIXES):
        yield readable
    # Organization ids are unique and slugs unique in an organization: only a readable name of
    # another tenant that happens to look like this can take it, hence the random last resort.
    yield f"md-{organization.pk}-{slug}"
    while True:
        yield f"md-{organization.pk}-{slug[:40]}-{secrets.token_hex(3)}"


def project_namespace_choose(*, organization: Organization, slug: str) -> str:
    """The namespace a new project gets: `<org slug>-<project slug>` when free, else one made
    unique from the organization's id. Chosen once; Project.kube_namespace is unique."""
    for candidate in _namespace_candidates(organization, slug):
        if not Project.objects.filter(kube_namespace=candidate).exists():
            return candidate
    raise AssertionError("unreachable")  # pragma: no cover - the candidates never end


def slug_from_name(name: str, organization: Organization) -> str:
    """A free slug made from a project's name: "ML Team" → ml-team (then ml-team-2, …)."""
    base = slugify(name or "").replace("_", "-")[:26].strip("-") or "project"
    taken = set(Project.objects.filter(organization=organization, slug__startswith=base).values_list("slug", flat=True))
    slug, n = base, 2
    while slug in taken:
        slug, n = f"{base}-{n}", n + 1
    return slug


def project_create(
    *,
    user: AbstractBaseUser | None,
    organization: Organization,
    name: str,
    slug: str = "",
    description: str = "",
    gpu_quota: int = 4,
) -> Project:
    """A new project; an empty `slug` is made from the name."""
    permissions.require(user, "change", organization, what="projects")
    slug = (slug or "").strip() or slug_from_name(name, organization)
    project = Project(
        organization=organization,
        name=name,
        slug=slug,
        description=description,
        gpu_quota=gpu_quota,
        created_by=user if user is not None and user.is_authenticated else None,
    )
    project.full_clean(exclude=["kube_namespace"])  # errors name the fields the user typed
    project.kube_namespace = project_namespace_choose(organization=organization, slug=slug)
    project.full_clean()
    with transaction.atomic():
        project.save()
        if user is not None and user.is_authenticated:
            ProjectMember.objects.create(project=project, user=user, role=Role.ADMIN)
        mappings_default_apply(project=project)  # the organization's default MaaS rules
        _audit(actor=user, organization=organization, action="create", obj=project, before=None,
               after=_snapshot(project, PROJECT_FIELDS))
    log.info("project created", extra={"project": project.pk, "organization": organization.pk})
    return project


def project_update(
    *,
    user: AbstractBaseUser | None,
    project: Project,
    name: str,
    description: str,
    gpu_quota: int,
) -> Project:
    permissions.require(user, "change", project)
    with transaction.atomic():
        locked = Project.objects.select_for_update().get(pk=project.pk)
        before = _snapshot(locked, PROJECT_FIELDS)
        if gpu_quota != locked.gpu_quota:
            # One rule for quotas, whichever page or API asks: organization admins only.
            permissions.require(user, "admin", locked, what="GPU quotas")
        locked.name = name
        locked.description = description
        locked.gpu_quota = gpu_quota
        locked.full_clean()
        used = locked.gpu_used()
        if gpu_quota < used:
            raise ValidationError({"gpu_quota": f"Deployments in this project hold {used} GPU{pluralize(used)}; the quota cannot go below that."})
        locked.save()
        _audit(actor=user, organization=locked.organization,
               action="quota_change" if before["gpu_quota"] != gpu_quota else "update",
               obj=locked, before=before, after=_snapshot(locked, PROJECT_FIELDS))
    return locked


def _deployments_left(project: Project) -> list:
    return list(project.deployments.only("name", "state"))


def _deployments_left_message(project: Project, left: list) -> str:
    """Why a project with deployments ``left`` can't go, naming them ("" when it has none)."""
    if not left:
        return ""
    left = sorted(left, key=lambda d: d.name)
    shown = ", ".join(f"“{d.name}” ({d.get_state_display().lower()})" for d in left[:5])
    if len(left) > 5:
        shown += f" and {len(left) - 5} more"
    noun, them = ("deployment", "it") if len(left) == 1 else ("deployments", "them")
    text = (f"Project “{project.name}” still has {len(left)} {noun}: {shown}. "
            f"Delete {them} first (each deployment's page has Delete); a project is deleted only "
            "once it has none, so no deployment is ever removed with it.")  # fmt: skip
    if any(d.state == DeploymentState.DELETING for d in left):
        text += " A deployment being deleted is gone once its compute pool has removed its objects."
    return text


def project_lock(*, project: Project) -> Project:
    """Lock the project's organization row, then the project row (quota_reserve's order, so no
    deadlock), inside the caller's transaction; a project deleted meanwhile is a field error.

    Every change that adds a deployment takes it before inserting, and project_delete takes it
    before counting: a deploy and a delete of its project are serialized, one sees the other."""
    Organization.objects.select_for_update().filter(pk=project.organization_id).values_list("pk").first()
    locked = Project.objects.select_for_update().filter(pk=project.pk).first()
    if locked is None:
        raise ValidationError({"project": f"Project “{project.name}” has been deleted."})
    return locked


def project_delete(*, user: AbstractBaseUser | None, project: Project) -> None:
    """Delete an empty project: its members, integrations, MaaS rules, environments, endpoints
    and project-scoped templates and data sources go with it; deployments never do (refused
    while it has any, and ModelDeployment.project is PROTECT, so a row the count missed stops
    the delete instead of being cascaded away). Usage keeps no link to the project row."""
    permissions.require(user, "change", project)
    try:
        with transaction.atomic():
            project = project_lock(project=project)
            if refusal := _deployments_left_message(project, _deployments_left(project)):
                raise ValidationError({"deployments": refusal})
            _audit(actor=user, organization=project.organization, action="delete", obj=project,
                   before=_snapshot(project, PROJECT_FIELDS), after=None)  # fmt: skip
            project.delete()
    except ProtectedError as exc:
        # The deployments that stopped it, read again: the collector loaded only their keys.
        stopped = project.deployments.filter(pk__in=[obj.pk for obj in exc.protected_objects])
        refusal = _deployments_left_message(project, list(stopped.only("name", "state")))
        raise ValidationError({"deployments": refusal or f"Project “{project.name}” is still in use."}) from None


def quota_reserve(
    *, project: Project, holder: str, gpus: int, surge: int = 0, surge_from: str = "",
    cpu_millicores: int | None = None, memory_bytes: int | None = None, deployments: int | None = None,
) -> GpuReservation | None:
    """Set the GPUs ``holder`` keeps in ``project`` to ``gpus`` (plus ``surge`` while a blue-green
    rollout keeps the serving revision's pods beside the new ones), within both quotas; likewise
    CPU, memory and the active-deployment count where given (None: keep what it holds).

    Locks the organization row, then the project row (always in that order, so two
    reservations can't deadlock), then sums what is held: two concurrent requests are
    serialized and can never overshoot. Call inside the caller's transaction to make the
    reservation and the change it pays for one unit. A holder left with nothing loses its row.
    """
    extra = {"cpu_millicores": cpu_millicores, "memory_bytes": memory_bytes, "deployments": deployments}
    if gpus < 0 or any(v is not None and v < 0 for v in extra.values()):
        raise ValidationError({"gpus": "A reservation cannot be negative."})
    with transaction.atomic():
        org = Organization.objects.select_for_update().get(pk=project.organization_id)
        locked = Project.objects.select_for_update().get(pk=project.pk)
        decision = quota_decide(project=locked, organization=org, holder=holder, gpus=gpus,
                                surge=surge, surge_from=surge_from, **extra)  # fmt: skip
        if decision.refusal:
            raise QuotaExceeded(decision.refusal, code="surge" if decision.surge_refused else "quota")
        gpus += decision.surge
        current = GpuReservation.objects.filter(holder=holder).first()
        values = {k: (v if v is not None else getattr(current, k, 0) if current else 0) for k, v in extra.items()}
        if gpus == 0 and not any(values.values()):
            GpuReservation.objects.filter(holder=holder).delete()
            return None
        if current:
            current.gpus = gpus
            current.project = locked
            for key, value in values.items():
                setattr(current, key, value)
            current.save(update_fields=["gpus", "project", "updated_at", *values])
            return current
        return GpuReservation.objects.create(project=locked, holder=holder, gpus=gpus, **values)


def quota_release(*, holder: str) -> None:
    GpuReservation.objects.filter(holder=holder).delete()


def organization_quota_check(*, user: AbstractBaseUser | None, organization: Organization, gpu_quota: int) -> None:
    """Raise what organization_quota_set would refuse, without writing: for a form that must
    refuse before it saves anything else (the Django admin's organization page)."""
    permissions.require(user, "admin", organization, what="the organization's GPU quota")
    candidate = copy.copy(organization)
    candidate.gpu_quota = gpu_quota
    candidate.clean_fields(exclude=[f.name for f in Organization._meta.concrete_fields if f.name != "gpu_quota"])
    _check_org_quota_fits_projects(candidate)


def organization_quota_set(*, user: AbstractBaseUser | None, organization: Organization, gpu_quota: int) -> Organization:
    """The console's quota pages, POST /api/v1/organizations/<id>/quota/ and the Django admin:
    organization admins only, never below what is held, audited."""
    permissions.require(user, "admin", organization, what="the organization's GPU quota")
    with transaction.atomic():
        org = Organization.objects.select_for_update().get(pk=organization.pk)
        before = {"gpu_quota": org.gpu_quota}
        organization_quota_check(user=user, organization=org, gpu_quota=gpu_quota)
        org.gpu_quota = gpu_quota
        org.full_clean()
        org.save(update_fields=["gpu_quota"])
        _audit(actor=user, organization=org, action="quota_change", obj=org, before=before,
               after={"gpu_quota": org.gpu_quota})
    return org


QUOTA_LIMIT_FIELDS = ("cpu_quota", "memory_quota_gib", "deployment_quota")
QUOTA_LIMIT_MAX = 10**9  # well inside the columns (PositiveIntegerField: up to 2,147,483,647)


def quota_limits_set(
    *, user: AbstractBaseUser | None, owner: Organization | Project, cpu_quota: int | None,
    memory_quota_gib: int | None, deployment_quota: int | None,
) -> Organization | Project:
    """Set an organization's or a project's quotas beyond GPUs (None: no limit): an
    organization admin's act, like GPU quotas; never below what is held now."""
    org = owner if isinstance(owner, Organization) else owner.organization
    permissions.require(user, "admin", org, what="quotas")
    wanted = {"cpu_quota": cpu_quota, "memory_quota_gib": memory_quota_gib, "deployment_quota": deployment_quota}
    errors = {k: f"Give a whole number from 0 to {QUOTA_LIMIT_MAX:,}, or nothing for no limit." for k, v in wanted.items()
              if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0 or v > QUOTA_LIMIT_MAX)}  # fmt: skip
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        Organization.objects.select_for_update().get(pk=org.pk)  # the ledger's lock order: org, then project
        model = type(owner)
        locked = model.objects.select_for_update().get(pk=owner.pk)
        before = {k: getattr(locked, k) for k in QUOTA_LIMIT_FIELDS}
        for limit in quota_limits(locked):
            quota = wanted[limit["name"]]
            if quota is not None and quota < limit["used"]:
                errors[limit["name"]] = f"{limit['used']:g} {limit['label']} are held now; the quota cannot go below that."
        if errors:
            raise ValidationError(errors)
        for key, value in wanted.items():
            setattr(locked, key, value)
        locked.save(update_fields=list(QUOTA_LIMIT_FIELDS))
        _audit(actor=user, organization=org, action="quota_change", obj=locked, before=before, after=wanted)
    return locked


def integration_set(*, user: AbstractBaseUser | None, project: Project, kind: str, secret: str) -> Integration:
    """Store a project's credential encrypted; it is never shown again, only its last 4 characters."""
    permissions.require(user, "change", project)
    secret = secret.strip()
    if not secret:
        raise ValidationError({"secret": "Paste the token or key; it cannot be empty."})
    shown = secret
    if kind == IntegrationKind.S3:
        secret, shown = _clean_s3_secret(secret)
    with transaction.atomic():
        existing = Integration.objects.select_for_update().filter(project=project, kind=kind).first()
        before = {"kind": kind, "secret_last4": existing.secret_last4} if existing else None
        integration = existing or Integration(project=project, kind=kind)
        integration.secret = secret
        integration.secret_last4 = last4(shown)
        integration.check_ok = None
        integration.checked_at = None
        integration.check_message = ""
        integration.updated_by = user if user is not None and user.is_authenticated else None
        integration.full_clean()
        integration.save()
        _audit(actor=user, organization=project.organization, action="integration_change", obj=integration,
               before=before, after={"kind": kind, "secret_last4": integration.secret_last4})
    return integration


_S3_REGION = re.compile(r"^[a-z]{2}(-[a-z0-9]+)+-\d+$|^[a-z0-9][a-z0-9-]{0,62}$")
_S3_ENDPOINT = re.compile(r"^https?://[^\s/@]+(:\d{1,5})?/?$")


def _clean_s3_secret(secret: str) -> tuple[str, str]:
    """An S3 integration's secret: a JSON object with access_key_id and secret_access_key, and
    optionally endpoint_url (S3-compatible stores: MinIO, Ceph, Cloud Storage's S3 interop) and
    region. Returns (canonical JSON, what its last 4 characters are shown of: the key id).
    The endpoint is only ever used by the deployment's pods in the cluster, never called by
    ModelDeck's server."""
    try:
        data = json.loads(secret)
    except (ValueError, RecursionError):  # "[[[…" nested past the parser's limit is no object either
        data = None
    if not isinstance(data, dict):
        raise ValidationError({"secret": "S3 credentials are an access key id and a secret access key "
                                         "(and optionally an endpoint URL and a region)."})  # fmt: skip
    unknown = sorted(set(data) - set(S3_FIELDS))
    if unknown:
        raise ValidationError({"secret": f"Unknown S3 setting “{unknown[0]}”."})
    clean = {k: str(data.get(k) or "").strip() for k in S3_FIELDS}
    for key, words in (("access_key_id", "an access key id"), ("secret_access_key", "a secret access key")):
        if not clean[key]:
            raise ValidationError({key: f"Give {words}."})
        if any(c.isspace() for c in clean[key]) or len(clean[key]) > 256:
            raise ValidationError({key: "It cannot contain spaces (and is at most 256 characters)."})
    if clean["endpoint_url"] and not _S3_ENDPOINT.match(clean["endpoint_url"]):
        raise ValidationError({"endpoint_url": "Give the endpoint as https://host[:port], e.g. "
                                               "https://minio.example.com or https://storage.googleapis.com."})  # fmt: skip
    if clean["region"] and not _S3_REGION.match(clean["region"]):
        raise ValidationError({"region": "Give a region name such as us-east-1."})
    kept = {k: v for k, v in clean.items() if v}
    return json.dumps(kept, sort_keys=True), clean["access_key_id"]


def integration_delete(*, user: AbstractBaseUser | None, integration: Integration) -> None:
    permissions.require(user, "change", integration.project)
    with transaction.atomic():
        _audit(actor=user, organization=integration.project.organization, action="integration_change",
               obj=integration, before={"kind": integration.kind, "secret_last4": integration.secret_last4}, after=None)
        integration.delete()


def integration_check(*, user: AbstractBaseUser | None, integration: Integration) -> Integration:
    """Ask the outside service whether the stored credential works; the answer is saved on it."""
    permissions.require(user, "change", integration.project, what="integration checks")
    ok, message = integration_checks.check(integration)
    log.info("integration checked", extra={"project": integration.project_id, "kind": integration.kind, "ok": ok})
    return integration_record_check(integration=integration, ok=ok, message=message)


def integration_record_check(*, integration: Integration, ok: bool, message: str) -> Integration:
    integration.check_ok = ok
    integration.check_message = message[:500]
    integration.checked_at = timezone.now()
    integration.save(update_fields=["check_ok", "check_message", "checked_at"])
    return integration


# --- Members, invitations, project membership and groups (organization settings) ---

MEMBER_NOT_FOUND = (
    "No user you can add with that username or email; invite them by email instead "
    "(someone who already belongs to another organization joins by accepting an invitation)."
)
NOT_A_MEMBER = "Only members of this organization can be added; add or invite them to the organization first."


def _actor(user: AbstractBaseUser | None) -> AbstractBaseUser | None:
    return user if user is not None and user.is_authenticated else None


def _check_role(role: str) -> None:
    if role not in Role.values:
        raise ValidationError({"role": f"Choose one of: {', '.join(Role.values)}."})


def _member_state(membership: Membership) -> dict:
    return {"user": membership.user.get_username(), "role": membership.role}


def member_add(*, user: AbstractBaseUser | None, organization: Organization, username: str, role: str = Role.MEMBER) -> Membership:
    """Add an existing user (by username or email) to the organization with a role.

    Directly only a user of no organization yet (an account the operator made), one who already
    shares an organization with the admin, or anyone when a superuser adds them. Someone who
    belongs to other organizations only joins by accepting an invitation: an admin of one tenant
    can't pull another tenant's users in, learn their email, or probe which names exist (the
    answer is the same as for a name that doesn't)."""
    permissions.require(user, "admin", organization, what="members")
    _check_role(role)
    name = (username or "").strip()
    if not name:
        raise ValidationError({"username": "Type a username or an email address."})
    User = get_user_model()
    found = User.objects.filter(username__iexact=name, is_active=True).first() or (
        User.objects.filter(email__iexact=name, is_active=True).order_by("pk").first() if "@" in name else None
    )
    if found is None or not _directly_addable(user, found):
        raise ValidationError({"username": MEMBER_NOT_FOUND})
    return member_join(user=user, organization=organization, member=found, role=role)


def _directly_addable(actor: AbstractBaseUser | None, found: AbstractBaseUser) -> bool:
    if actor is not None and actor.is_superuser:
        return True
    theirs = Membership.objects.filter(user=found).values("organization_id")
    if not theirs.exists():
        return True
    return actor is not None and Membership.objects.filter(user=actor, organization_id__in=theirs).exists()


def member_join(*, user: AbstractBaseUser | None, organization: Organization, member: AbstractBaseUser,
                role: str = Role.MEMBER) -> Membership:
    """Make `member` (a user already chosen, e.g. in the Django admin) a member of the
    organization with `role`: checked and audited as member_add."""
    permissions.require(user, "admin", organization, what="members")
    _check_role(role)
    with transaction.atomic():
        Organization.objects.select_for_update().get(pk=organization.pk)
        if Membership.objects.filter(organization=organization, user=member).exists():
            raise ValidationError({"username": f"{member.get_username()} is already a member of {organization.name}."})
        membership = Membership(organization=organization, user=member, role=role)
        membership.full_clean()
        membership.save()
        _audit(actor=user, organization=organization, action="create", obj=membership, before=None,
               after=_member_state(membership))
        gateway_forget_user(member.pk)
    return membership


def member_role_check(*, user: AbstractBaseUser | None, membership: Membership, role: str) -> None:
    """member_role_set's rules, asked before anything is saved (the Django admin's forms)."""
    permissions.require(user, "admin", membership.organization, what="members")
    _check_role(role)
    _last_admin_check(membership, role)


def _last_admin_check(membership: Membership, role: str) -> None:
    if membership.role == Role.ADMIN and role != Role.ADMIN and not Membership.objects.filter(
        organization_id=membership.organization_id, role=Role.ADMIN
    ).exclude(pk=membership.pk).exists():
        raise ValidationError({"role": "This is the organization's last admin; make someone else admin first."})


def member_role_set(*, user: AbstractBaseUser | None, membership: Membership, role: str) -> Membership:
    """Change a member's role; the organization always keeps at least one admin."""
    organization = membership.organization
    permissions.require(user, "admin", organization, what="members")
    _check_role(role)
    with transaction.atomic():
        Organization.objects.select_for_update().get(pk=organization.pk)  # serialize with removals
        locked = Membership.objects.select_related("user").get(pk=membership.pk)
        before = _member_state(locked)
        _last_admin_check(locked, role)
        locked.role = role
        locked.full_clean()
        locked.save(update_fields=["role"])
        _audit(actor=user, organization=organization, action="update", obj=locked, before=before,
               after=_member_state(locked))
        gateway_forget_user(locked.user_id)
    return locked


def _invitation_hash(token: str) -> str:
    key = hashlib.sha256(("modeldeck-invitations:" + (settings.MODELDECK_ENCRYPTION_KEY or settings.SECRET_KEY)).encode()).digest()
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()


def invitation_link(token: str, base_url: str | None = None) -> str:
    return f"{(base_url or settings.PUBLIC_URL).rstrip('/')}/organization/invitations/{token}/"


def invitation_create(
    *, user: AbstractBaseUser | None, organization: Organization, email: str, role: str = Role.MEMBER,
    base_url: str | None = None,
) -> tuple[Invitation, str]:
    """Invite an email address: a one-time link (its token stored only as a keyed hash) that
    expires after MODELDECK_INVITATION_DAYS. Returns the invitation and the link, shown once."""
    permissions.require(user, "admin", organization, what="members")
    _check_role(role)
    email = (email or "").strip()
    token = secrets.token_urlsafe(32)
    invitation = Invitation(
        organization=organization, email=email, role=role, token_hash=_invitation_hash(token),
        created_by=_actor(user), expires_at=timezone.now() + timedelta(days=settings.INVITATION_DAYS),
    )
    invitation.full_clean()
    if Membership.objects.filter(organization=organization, user__email__iexact=email).exists():
        raise ValidationError({"email": f"A member of {organization.name} already has this email address."})
    link = invitation_link(token, base_url)
    with transaction.atomic():
        # A new invitation replaces a pending one for the same address: only the newest link works.
        Invitation.objects.filter(
            organization=organization, email__iexact=email, accepted_at__isnull=True, revoked_at__isnull=True
        ).update(revoked_at=timezone.now())
        invitation.save()
        _audit(actor=user, organization=organization, action="create", obj=invitation, before=None,
               after={"email": email, "role": role, "expires_at": invitation.expires_at})
        who = user.get_username() if _actor(user) else "An administrator"

        def send() -> None:
            try:
                send_mail(
                    f"You are invited to {organization.name} on ModelDeck",
                    f"{who} invited you to join {organization.name} on ModelDeck as {Role(role).label.lower()}.\n\n"
                    f"Open this link to accept (it works once, until {invitation.expires_at:%Y-%m-%d %H:%M} UTC):\n{link}\n",
                    None, [email],
                )
            except OSError:  # the mail server is down: the admin still has the link to pass on
                log.warning("invitation mail not sent", extra={"invitation": invitation.pk}, exc_info=True)

        transaction.on_commit(send)
    return invitation, link


def invitation_revoke(*, user: AbstractBaseUser | None, invitation: Invitation) -> Invitation:
    permissions.require(user, "admin", invitation.organization, what="members")
    with transaction.atomic():
        updated = Invitation.objects.filter(
            pk=invitation.pk, accepted_at__isnull=True, revoked_at__isnull=True
        ).update(revoked_at=timezone.now())
        if not updated:
            raise ValidationError("This invitation was already accepted or revoked.")
        _audit(actor=user, organization=invitation.organization, action="delete", obj=invitation,
               before={"email": invitation.email, "role": invitation.role}, after=None)
    invitation.refresh_from_db()
    return invitation


INVITATION_INVALID = "This invitation link is not valid: it was used, revoked or mistyped."


def invitation_by_token(token: str) -> Invitation:
    """The pending invitation of a link; ValidationError (one text for every failure but expiry)."""
    invitation = Invitation.objects.select_related("organization").filter(
        token_hash=_invitation_hash(token or "")
    ).first()
    if invitation is None or invitation.state() in ("accepted", "revoked"):
        raise ValidationError(INVITATION_INVALID)
    if invitation.state() == "expired":
        raise ValidationError("This invitation has expired; ask an admin of the organization for a new one.")
    return invitation


def invitation_accept(*, user: AbstractBaseUser, token: str) -> Membership:
    """The signed-in user joins the invitation's organization with its role; the link is spent."""
    if user is None or not user.is_authenticated:
        raise ValidationError("Sign in or create an account first.")
    with transaction.atomic():
        invitation = invitation_by_token(token)
        claimed = Invitation.objects.filter(pk=invitation.pk, accepted_at__isnull=True, revoked_at__isnull=True).update(
            accepted_at=timezone.now(), accepted_by=user
        )
        if not claimed:  # a concurrent accept won
            raise ValidationError(INVITATION_INVALID)
        organization = invitation.organization
        membership, created = Membership.objects.get_or_create(
            organization=organization, user=user, defaults={"role": invitation.role}
        )
        _audit(actor=user, organization=organization, action="update", obj=invitation,
               before={"accepted": False}, after={"accepted": True, "user": user.get_username()})
        if created:
            _audit(actor=user, organization=organization, action="create", obj=membership, before=None,
                   after=_member_state(membership))
        gateway_forget_user(user.pk)
    return membership


def _username_errors(User, username: str) -> list[str]:  # noqa: N803 - the user model class
    try:
        User._meta.get_field(User.USERNAME_FIELD).run_validators(username)
    except ValidationError as exc:
        return exc.messages
    return []


def invitation_signup(*, token: str, username: str, password: str) -> Membership:
    """Create an account for an invited address and accept the invitation with it, in one step."""
    User = get_user_model()
    invitation = invitation_by_token(token)
    username = (username or "").strip()
    errors: dict[str, list[str]] = {}
    if not username:
        errors["username"] = ["Choose a username."]
    elif invalid := _username_errors(User, username):
        errors["username"] = invalid  # said beside the password's, not only once the password passes
    elif User.objects.filter(username__iexact=username).exists():
        errors["username"] = ["That username is taken; sign in instead if it is yours."]
    if User.objects.filter(email__iexact=invitation.email).exists():
        errors["username"] = [f"An account with {invitation.email} exists already: sign in with it to accept."]
    try:
        validate_password(password or "", User(username=username, email=invitation.email))
    except ValidationError as exc:
        errors["password"] = exc.messages
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        account = User(username=username, email=invitation.email)
        account.set_password(password)
        account.full_clean()
        account.save()
        return invitation_accept(user=account, token=token)


def project_member_set(*, user: AbstractBaseUser | None, project: Project, member: AbstractBaseUser, role: str) -> ProjectMember:
    """Add an organization member to a project (or change their project role)."""
    permissions.require(user, "admin", project.organization, what="project members")
    _check_role(role)
    if not Membership.objects.filter(organization=project.organization, user=member).exists():
        raise ValidationError({"user": NOT_A_MEMBER})
    with transaction.atomic():
        row = ProjectMember.objects.select_for_update().filter(project=project, user=member).first()
        before = {"user": member.get_username(), "role": row.role} if row else None
        row = row or ProjectMember(project=project, user=member)
        row.role = role
        row.full_clean()
        row.save()
        _audit(actor=user, organization=project.organization, action="update" if before else "create", obj=row,
               before=before, after={"user": member.get_username(), "role": role, "project": project.name})
    return row


def project_member_remove(*, user: AbstractBaseUser | None, project_member: ProjectMember) -> None:
    project = project_member.project
    permissions.require(user, "admin", project.organization, what="project members")
    with transaction.atomic():
        _audit(actor=user, organization=project.organization, action="delete", obj=project_member,
               before={"user": project_member.user.get_username(), "role": project_member.role, "project": project.name},
               after=None)
        project_member.delete()


def _group_state(group: OrganizationGroup) -> dict:
    return {
        "name": group.name,
        "description": group.description,
        "members": sorted(group.group.user_set.values_list("username", flat=True)),
    }


def _auth_group_name(organization: Organization, name: str) -> str:
    # auth.Group names are unique platform-wide; the organization's id keeps tenants apart.
    return f"org{organization.pk}:{name}"[:150]


def _group_name_free(organization: Organization, name: str, but: int | None = None) -> None:
    # The unique constraint would say so too, but as a form-wide error naming two fields; the
    # user typed a name, so the refusal belongs on the name.
    if OrganizationGroup.objects.filter(organization=organization, name=name).exclude(pk=but).exists():
        raise ValidationError({"name": f"{organization.name} already has a group named “{name}”."})


def group_create(*, user: AbstractBaseUser | None, organization: Organization, name: str, description: str = "") -> OrganizationGroup:
    permissions.require(user, "admin", organization, what="groups")
    name = (name or "").strip()
    group = OrganizationGroup(organization=organization, name=name, description=(description or "").strip())
    _group_name_free(organization, name)
    group.full_clean(exclude=["group"])
    with transaction.atomic():
        group.group = Group.objects.create(name=_auth_group_name(organization, name))
        group.save()
        _audit(actor=user, organization=organization, action="create", obj=group, before=None, after=_group_state(group))
    return group


def group_update(*, user: AbstractBaseUser | None, group: OrganizationGroup, name: str, description: str = "") -> OrganizationGroup:
    permissions.require(user, "admin", group.organization, what="groups")
    with transaction.atomic():
        locked = OrganizationGroup.objects.select_for_update().select_related("group").get(pk=group.pk)
        before = _group_state(locked)
        locked.name = (name or "").strip()
        locked.description = (description or "").strip()
        _group_name_free(locked.organization, locked.name, but=locked.pk)
        locked.full_clean()
        locked.save()
        Group.objects.filter(pk=locked.group_id).update(name=_auth_group_name(locked.organization, locked.name))
        _audit(actor=user, organization=locked.organization, action="update", obj=locked, before=before,
               after=_group_state(locked))
    return locked


def group_delete(*, user: AbstractBaseUser | None, group: OrganizationGroup) -> None:
    """Delete a group; access policies naming it then admit nobody through it."""
    permissions.require(user, "admin", group.organization, what="groups")
    with transaction.atomic():
        _audit(actor=user, organization=group.organization, action="delete", obj=group, before=_group_state(group),
               after=None)
        auth_group = group.group
        auth_group.user_set.clear()  # the signal makes the gateway re-read its members
        auth_group.delete()  # cascades to the OrganizationGroup row


def group_member_add(*, user: AbstractBaseUser | None, group: OrganizationGroup, member: AbstractBaseUser) -> OrganizationGroup:
    permissions.require(user, "admin", group.organization, what="groups")
    if not Membership.objects.filter(organization=group.organization, user=member).exists():
        raise ValidationError({"user": NOT_A_MEMBER})
    with transaction.atomic():
        locked = OrganizationGroup.objects.select_for_update().select_related("group").get(pk=group.pk)
        before = _group_state(locked)
        if member.groups.filter(pk=locked.group_id).exists():
            raise ValidationError({"user": f"{member.get_username()} is already in {locked.name}."})
        member.groups.add(locked.group)
        _audit(actor=user, organization=locked.organization, action="update", obj=locked, before=before,
               after=_group_state(locked))
    return locked


def group_member_remove(*, user: AbstractBaseUser | None, group: OrganizationGroup, member: AbstractBaseUser) -> OrganizationGroup:
    permissions.require(user, "admin", group.organization, what="groups")
    with transaction.atomic():
        locked = OrganizationGroup.objects.select_for_update().select_related("group").get(pk=group.pk)
        before = _group_state(locked)
        member.groups.remove(locked.group)
        _audit(actor=user, organization=locked.organization, action="update", obj=locked, before=before,
               after=_group_state(locked))
    return locked
# ---------------------------------------------------------------------------------------------
# Monthly budgets: organization, member (user in the organization) and API key
# ---------------------------------------------------------------------------------------------

BUDGET_FIELD = "monthly_budget"


def budget_parse(value: object) -> Decimal | None:
    """A budget amount from a form, JSON or a number: None (no limit) or a Decimal ≥ 0 with at
    most BUDGET_DECIMAL_PLACES places; anything else is a field error on `monthly_budget`."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ValidationError({BUDGET_FIELD: "Enter an amount such as 25 or 0.05, or leave it empty for no limit."})
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValidationError(
            {BUDGET_FIELD: f"“{str(value)[:40]}” is not an amount; enter a number such as 25 or 0.05."}
        ) from None
    if not amount.is_finite():
        raise ValidationError({BUDGET_FIELD: "Enter a finite amount."})
    if amount < 0:
        raise ValidationError({BUDGET_FIELD: "A budget can't be negative; 0 stops all spending, empty means no limit."})
    # The size first: quantizing 1e30 to 4 places needs more digits than Decimal's context has.
    if amount >= Decimal(10) ** (BUDGET_MAX_DIGITS - BUDGET_DECIMAL_PLACES):
        most = Decimal(10) ** (BUDGET_MAX_DIGITS - BUDGET_DECIMAL_PLACES) - 1
        raise ValidationError({BUDGET_FIELD: f"That amount is too large; at most {most:,}."})
    if amount != amount.quantize(Decimal(1).scaleb(-BUDGET_DECIMAL_PLACES), rounding=ROUND_DOWN):
        raise ValidationError({BUDGET_FIELD: f"Use at most {BUDGET_DECIMAL_PLACES} decimal places."})
    return amount.quantize(Decimal(1).scaleb(-BUDGET_DECIMAL_PLACES))


def _budgets_forget(user_ids: list[int]) -> None:
    """On commit, every gateway re-reads these users' keys (their budgets travel with the key)."""
    transaction.on_commit(lambda: [invalidate_user(pk) for pk in user_ids])


def organization_budget_set(
    *, user: AbstractBaseUser | None, organization: Organization, amount: object, currency: str | None = None
) -> Organization:
    """Set (or clear, None) the organization's monthly budget; organization admins only."""
    permissions.require(user, "admin", organization, what="the organization's budget")
    value = budget_parse(amount)
    if currency is not None:
        currency = str(currency).strip().upper()
        if not re.fullmatch(r"[A-Z]{3}", currency):
            raise ValidationError({"budget_currency": "Use a three-letter currency code such as USD or EUR."})
    if currency is not None and currency != organization.budget_currency:
        _budget_currency_check(organization, currency)
    with transaction.atomic():
        org = Organization.objects.select_for_update().get(pk=organization.pk)
        before = {BUDGET_FIELD: org.monthly_budget, "budget_currency": org.budget_currency}
        org.monthly_budget = value
        if currency is not None:
            org.budget_currency = currency
        org.save(update_fields=[BUDGET_FIELD, "budget_currency"])
        after = {BUDGET_FIELD: org.monthly_budget, "budget_currency": org.budget_currency}
        if before != after:
            _audit(actor=user, organization=org, action="budget_change", obj=org, before=before, after=after)
            _budgets_forget(list(Membership.objects.filter(organization=org).values_list("user_id", flat=True)))
    return org


def _budget_currency_check(organization: Organization, currency: str) -> None:
    """A budget counts the spend priced in its own currency: one in EUR over deployments priced
    in USD would count nothing and never stop a request. Refused while the organization's
    deployments are priced in other currencies only (none yet: any currency)."""
    priced = {
        code for code in ModelDeployment.objects.filter(project__organization=organization)
        .exclude(state=DeploymentState.DELETING)
        .values_list("current_revision__spec__pricing__currency", flat=True).distinct()
        if isinstance(code, str) and code
    }  # fmt: skip
    if priced and currency not in priced:
        raise ValidationError({"budget_currency": (
            f"No deployment of {organization.name} is priced in {currency} (they are priced in "
            f"{', '.join(sorted(priced))}): a budget counts only spend in its own currency, so this one would "
            f"count nothing. Keep {' or '.join(sorted(priced))}, or price the deployments in {currency} first."
        )})  # fmt: skip


def member_budget_set(*, user: AbstractBaseUser | None, membership: Membership, amount: object) -> Membership:
    """Set (or clear) one member's monthly budget in the organization; organization admins only."""
    permissions.require(user, "admin", membership.organization, what="members' budgets")
    value = budget_parse(amount)
    with transaction.atomic():
        row = Membership.objects.select_for_update().select_related("user", "organization").get(pk=membership.pk)
        before = {BUDGET_FIELD: row.monthly_budget, "user": row.user.get_username()}
        row.monthly_budget = value
        row.save(update_fields=[BUDGET_FIELD])
        if before[BUDGET_FIELD] != value:
            _audit(actor=user, organization=row.organization, action="budget_change", obj=row,
                   before=before, after={BUDGET_FIELD: value, "user": row.user.get_username()})
            _budgets_forget([row.user_id])
    return row


def api_key_budget_set(*, user: AbstractBaseUser, key: APIKey, amount: object) -> APIKey:
    """Set (or clear) a key's own monthly budget: its owner or an organization admin. It can't be
    above the owner's or the organization's budget (those apply to the key anyway)."""
    if key.user_id != getattr(user, "pk", None) and not permissions.can(user, "admin", key.organization):
        raise PermissionDenied("Only the key's owner or an organization admin can set its budget.")
    value = budget_parse(amount)
    with transaction.atomic():
        row = APIKey.objects.select_for_update().select_related("organization").get(pk=key.pk)
        if row.revoked_at is not None:
            raise ValidationError({BUDGET_FIELD: "This key is revoked."})
        org = row.organization
        member = Membership.objects.filter(user_id=row.user_id, organization=org).first()
        ceilings = [
            (b, who) for b, who in (
                (member.monthly_budget if member else None, "its owner's"),
                (org.monthly_budget, "the organization's"),
            ) if b is not None
        ]  # fmt: skip
        for ceiling, who in ceilings:
            if value is not None and value > ceiling:
                raise ValidationError(
                    {BUDGET_FIELD: f"A key's budget can't be above {who} monthly budget of {money_text(ceiling)} {org.budget_currency}."}
                )
        before = {BUDGET_FIELD: row.monthly_budget}
        row.monthly_budget = value
        row.save(update_fields=[BUDGET_FIELD])
        if before[BUDGET_FIELD] != value:
            _audit(actor=user, organization=org, action="budget_change", obj=row, before=before,
                   after={BUDGET_FIELD: value})
            _budgets_forget([row.user_id])
    key.monthly_budget = row.monthly_budget
    return key


BUDGET_LEVELS = ("organization", "member", "key")


def budget_set(
    *, user: AbstractBaseUser, organization: Organization, level: str, target: object = None,
    amount: object = None, currency: str | None = None,
) -> Organization | Membership | APIKey:
    """One entry for the console's Budgets page and POST /api/v1/budgets/: `level` organization
    (target ignored), member (target: the member's user id) or key (target: the key's id), all in
    `organization`. A target outside it, or one the user may not see, is a 404."""
    if level not in BUDGET_LEVELS:
        raise ValidationError({"level": f"Choose one of: {', '.join(BUDGET_LEVELS)}."})
    if level == "organization":
        return organization_budget_set(user=user, organization=organization, amount=amount, currency=currency)
    ident = parse_id(target)
    if ident is None:
        raise ValidationError({"target": "Give the member's user id or the key's id."})
    if level == "member":
        membership = Membership.objects.filter(organization=organization, user_id=ident).first()
        if membership is None:
            raise Http404("No such member.")
        return member_budget_set(user=user, membership=membership, amount=amount)
    key = api_key_get(user, ident)  # 404 unless the user owns it or administers its organization
    if key.organization_id != organization.pk:
        raise Http404("No such API key.")
    return api_key_budget_set(user=user, key=key, amount=amount)
