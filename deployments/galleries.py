"""Galleries: reusable resource templates (compute presets) and data sources (storage), shared
organization-wide or kept to one project.

A template is *copied* into a deployment's spec when the deployment is saved with it (form,
REST `resource_template`, `apply -f` `spec.resource_template`): editing or deleting a template
never changes a deployment until that deployment is updated with it again. Organization-wide
entries are an organization admin's; a project's are its writers'. Other organizations get 404.
"""

from __future__ import annotations

import json
import re
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.http import Http404

from console import permissions
from deployments.models import DataSource, DataSourceKind, ResourceTemplate
from deployments.renderers.input import is_quantity
from deployments.spec import resource_too_large
from projects.models import Organization, Project
from projects.selectors import organizations_for_user
from projects.services import _clean_s3_secret
from sharing.audit import audit_record

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_CLAIM = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_PATH = re.compile(r"^/[A-Za-z0-9._/-]*$")
TEMPLATE_FIELDS = ("cpu", "memory", "gpus", "gpu_type", "shm_size", "description")
SOURCE_FIELDS = ("kind", "claim_name", "uri", "mount_path", "credentials", "description")
MAX_GPUS = 16


# --- reads -----------------------------------------------------------------------------------


def visible(model, user: AbstractBaseUser, organization: Organization | None) -> QuerySet:
    orgs = organizations_for_user(user) if not user.is_superuser else Organization.objects.all()
    qs = model.objects.filter(organization__in=orgs).select_related("project", "organization")
    return qs.filter(organization=organization) if organization is not None else qs


def templates_for_user(user, organization: Organization | None = None) -> QuerySet[ResourceTemplate]:
    return visible(ResourceTemplate, user, organization)


def data_sources_for_user(user, organization: Organization | None = None) -> QuerySet[DataSource]:
    return visible(DataSource, user, organization)


def gallery_get(model, user, pk: int):
    """One entry the user may see; 404 otherwise (another organization's, or none)."""
    try:
        return visible(model, user, None).get(pk=pk)
    except ObjectDoesNotExist:
        raise Http404("No such entry.") from None


def template_for_project(project: Project, name: str) -> ResourceTemplate | None:
    """By name: the project's own first, else the organization-wide one."""
    rows = ResourceTemplate.objects.filter(organization_id=project.organization_id, name=name)
    return rows.filter(project=project).first() or rows.filter(project__isnull=True).first()


def templates_for_project(project: Project) -> QuerySet[ResourceTemplate]:
    return ResourceTemplate.objects.filter(
        Q(project=project) | Q(project__isnull=True), organization_id=project.organization_id
    ).order_by("name")


def apply_template(spec: dict[str, Any], template: ResourceTemplate) -> dict[str, Any]:
    """The spec with the template's resources copied in (the spec's own `resources` keys win:
    a document or form may start from a template and change one value)."""
    given = spec.get("resources") if isinstance(spec.get("resources"), dict) else {}
    resources = {"cpu": template.cpu, "memory": template.memory, "gpus": template.gpus, "gpu_type": template.gpu_type}
    if template.shm_size:
        resources["shm_size"] = template.shm_size  # rendered as the /dev/shm emptyDir's size
    return {**spec, "resources": {**resources, **given}}


def resolve_template(project: Project, spec: dict[str, Any], name: Any) -> dict[str, Any]:
    """`resource_template` given with a spec (REST, apply -f): the copied spec, or a field error."""
    if name in (None, ""):
        return spec
    template = template_for_project(project, str(name))
    if template is None:
        raise ValidationError({"resource_template": f"No resource template named “{name}” in project "
                                                    f"“{project.name}” or its organization."})  # fmt: skip
    return apply_template(spec, template)


def resolve_data_sources(project: Project, spec: dict[str, Any]) -> dict[str, Any]:
    """`data_sources` given by name (REST, apply -f): each copied from the gallery (the project's,
    else the organization's) as {name, kind, claim_name, mount_path}; a mapping given in full
    stays as is (normalize_spec checks it)."""
    names = spec.get("data_sources")
    if not isinstance(names, list) or not any(isinstance(n, str) for n in names):
        return spec
    rows = DataSource.objects.filter(organization_id=project.organization_id)
    copied = []
    for item in names:
        if not isinstance(item, str):
            copied.append(item)
            continue
        source = rows.filter(project=project, name=item).first() or rows.filter(project__isnull=True, name=item).first()
        if source is None:
            raise ValidationError({"data_sources": f"No data source named “{item}” in project “{project.name}” "
                                                   "or its organization."})  # fmt: skip
        if source.kind == DataSourceKind.S3:
            raise ValidationError({"data_sources": f"“{item}” is an S3 bucket: give it as the model's storage "
                                                   "(s3://…) instead; only claims are mounted."})  # fmt: skip
        copied.append({"name": source.name, "kind": source.kind, "claim_name": source.claim_name,
                       "mount_path": source.mount_path or f"/data/{source.name}"})  # fmt: skip
    return {**spec, "data_sources": copied}


# --- writes ----------------------------------------------------------------------------------


def _scope(user, organization: Organization, project: Project | None) -> None:
    if project is not None:
        if project.organization_id != organization.pk:
            raise ValidationError({"project": "Choose a project of this organization."})
        permissions.require(user, "change", project, what="the project's gallery")
    else:
        permissions.require(user, "admin", organization, what="organization-wide gallery entries")


def _name(errors: dict, name: str) -> str:
    name = (name or "").strip()
    if not _NAME.match(name) or len(name) > 63:
        errors["name"] = "Lowercase letters, digits and dashes (at most 63)."
    return name


def _template_fields(fields: dict[str, Any], errors: dict) -> dict[str, Any]:
    out = {k: fields.get(k) for k in TEMPLATE_FIELDS}
    for key, example in (("cpu", "4 or 500m"), ("memory", "16Gi")):
        value = str(out[key] or "").strip()
        if not value or not is_quantity(value):
            errors[key] = f"A Kubernetes quantity, e.g. {example}."
        elif too_large := resource_too_large(key, value):
            errors[key] = too_large
        out[key] = value
    try:
        out["gpus"] = int(str(out["gpus"] if out["gpus"] not in (None, "") else 0))
        if not 0 <= out["gpus"] <= MAX_GPUS:
            raise ValueError
    except (TypeError, ValueError):
        errors["gpus"] = f"A whole number from 0 to {MAX_GPUS}."
        out["gpus"] = 0
    out["gpu_type"] = str(out["gpu_type"] or "").strip()[:100]
    out["shm_size"] = str(out["shm_size"] or "").strip()
    if out["shm_size"] and not is_quantity(out["shm_size"]):
        errors["shm_size"] = "A Kubernetes quantity, e.g. 16Gi (or empty)."
    out["description"] = str(out["description"] or "")[:300]
    return out


def _source_fields(fields: dict[str, Any], errors: dict, *, current: DataSource | None) -> dict[str, Any]:
    out = {k: fields.get(k, getattr(current, k, "") if current else "") for k in SOURCE_FIELDS}
    out = {k: ("" if v is None else v) for k, v in out.items()}
    kind = out["kind"]
    if kind not in DataSourceKind.values:
        errors["kind"] = f"Choose one of {', '.join(DataSourceKind.values)}."
    out["claim_name"] = str(out["claim_name"]).strip()
    out["uri"] = str(out["uri"]).strip()
    out["mount_path"] = str(out["mount_path"]).strip()
    if out["mount_path"] and (not _PATH.match(out["mount_path"]) or ".." in out["mount_path"]):
        errors["mount_path"] = "An absolute path inside the container, e.g. /data."
    if kind == DataSourceKind.S3:
        if not re.match(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?$", out["uri"]):
            errors["uri"] = "Give the bucket as s3://bucket[/prefix]."
        out["claim_name"] = ""
        creds = fields.get("credentials")
        if creds in (None, "") and current is not None and current.credentials:
            out["credentials"] = current.credentials  # write-only: absent keeps the stored ones
        else:
            try:
                raw = creds if isinstance(creds, str) else json.dumps(creds or {})
                out["credentials"], _ = _clean_s3_secret(raw)
            except ValidationError as exc:
                for key, messages in exc.message_dict.items():
                    errors["credentials" if key == "secret" else f"credentials.{key}"] = " ".join(messages)
    elif kind in DataSourceKind.values:
        if not _CLAIM.match(out["claim_name"]) or len(out["claim_name"]) > 253:
            errors["claim_name"] = "The PersistentVolumeClaim's name (lowercase letters, digits, '-' and '.')."
        out["uri"], out["credentials"] = "", ""
    out["description"] = str(out["description"])[:300]
    return out


def _save(obj, user, action: str, before: dict | None) -> None:
    try:
        with transaction.atomic():
            obj.full_clean(validate_constraints=False)
            obj.save()
            audit_record(actor=user if user is not None and user.is_authenticated else None,
                         organization=obj.organization, action=action, obj=obj, before=before,
                         after={"name": obj.name})  # fmt: skip
    except IntegrityError:
        where = f"project “{obj.project.name}”" if obj.project_id else "the organization"
        raise ValidationError({"name": f"{where[0].upper()}{where[1:]} already has one named “{obj.name}”."}) from None


def template_errors(name: str, fields: dict[str, Any]) -> dict[str, str]:
    """The rules template_create applies, as field errors (the form shows them with its own)."""
    errors: dict[str, str] = {}
    _name(errors, name)
    _template_fields(fields, errors)
    return errors


def template_create(*, user, organization: Organization, name: str, project: Project | None = None,
                    **fields: Any) -> ResourceTemplate:  # fmt: skip
    _scope(user, organization, project)
    errors: dict[str, str] = {}
    name = _name(errors, name)
    clean = _template_fields(fields, errors)
    if errors:
        raise ValidationError(errors)
    template = ResourceTemplate(organization=organization, project=project, name=name,
                                created_by=user if user is not None and user.is_authenticated else None, **clean)  # fmt: skip
    _save(template, user, "create", None)
    return template


def template_update(*, user, template: ResourceTemplate, **fields: Any) -> ResourceTemplate:
    """Changes the template only: deployments made with it keep their copied resources."""
    _scope(user, template.organization, template.project)
    errors: dict[str, str] = {}
    current = {k: getattr(template, k) for k in TEMPLATE_FIELDS}
    clean = _template_fields({**current, **fields}, errors)
    if errors:
        raise ValidationError(errors)
    for key, value in clean.items():
        setattr(template, key, value)
    _save(template, user, "update", current)
    return template


def data_source_create(*, user, organization: Organization, name: str, project: Project | None = None,
                       **fields: Any) -> DataSource:  # fmt: skip
    _scope(user, organization, project)
    errors: dict[str, str] = {}
    name = _name(errors, name)
    clean = _source_fields(fields, errors, current=None)
    if errors:
        raise ValidationError(errors)
    source = DataSource(organization=organization, project=project, name=name,
                        created_by=user if user is not None and user.is_authenticated else None, **clean)  # fmt: skip
    _save(source, user, "create", None)
    return source


def data_source_update(*, user, source: DataSource, **fields: Any) -> DataSource:
    _scope(user, source.organization, source.project)
    errors: dict[str, str] = {}
    clean = _source_fields(fields, errors, current=source)
    if errors:
        raise ValidationError(errors)
    before = {"kind": source.kind, "claim_name": source.claim_name, "uri": source.uri}
    for key, value in clean.items():
        setattr(source, key, value)
    _save(source, user, "update", before)
    return source


def gallery_delete(*, user, obj) -> None:
    """Deployments copied what they needed: deleting an entry changes none of them."""
    _scope(user, obj.organization, obj.project)
    with transaction.atomic():
        audit_record(actor=user if user is not None and user.is_authenticated else None,
                     organization=obj.organization, action="delete", obj=obj, before={"name": obj.name}, after=None)  # fmt: skip
        obj.delete()


def credentials_last4(source: DataSource) -> str:
    if not source.credentials:
        return ""
    try:
        key = json.loads(source.credentials).get("access_key_id", "")
    except ValueError:
        return ""
    return key[-4:] if len(key) >= 8 else ""
