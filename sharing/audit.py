"""The audit log's write side: record a change with a field-level diff of before and after."""

from __future__ import annotations

import contextvars
import datetime
import decimal
import functools
import uuid
from collections.abc import Callable
from typing import Any

from django.apps import apps
from django.db import models

from console.diff import changes, flatten  # noqa: F401 - flatten is part of this module's API
from projects.models import Organization
from sharing.models import AuditEntry

# Keys whose values never go into the log, only the fact that they changed.
SECRET_KEYS = frozenset({"secret", "kubeconfig", "token", "key_hash", "password", "api_key"})
REDACTED = "••••••"

# Short, stable names for the object types the product talks about (URLs use them).
OBJECT_TYPES = {
    "deployments.modeldeployment": "deployment",
    "deployments.revision": "revision",
    "deployments.computepool": "pool",
    "deployments.endpoint": "endpoint",
    "projects.project": "project",
    "projects.organization": "organization",
    "projects.environment": "environment",
    "projects.apikey": "api_key",
    "projects.integration": "integration",
    "projects.membership": "member",
    "projects.projectmember": "project_member",
    "projects.organizationgroup": "group",
    "projects.invitation": "invitation",
    "catalog.catalogmodel": "model",
    "catalog.profilebundle": "bundle",
    "catalog.maasmapping": "maas_mapping",
}


# Paths of a diff that hold another object's id without being a foreign key of the audited
# model (those are found on the model): a promotion records its source and target deployments.
EXTRA_REFERENCES: dict[str, dict[str, str]] = {
    "deployment": {"deployment": "deployments.modeldeployment"},
}


@functools.cache
def references_of(object_type: str) -> dict[str, type[models.Model]]:
    """The top-level diff paths of an object type's entries that are ids of other objects (its
    model's foreign keys by field name, as `snapshot` and `deployment_snapshot` record them: pool,
    environment, endpoint, project, model, bundle, …), each with the model it points to."""
    label = next((label for label, short in OBJECT_TYPES.items() if short == object_type), None)
    if label is None:
        return {}
    model = apps.get_model(label)
    refs = {
        field.name: field.related_model
        for field in model._meta.concrete_fields
        if field.is_relation and (field.many_to_one or field.one_to_one)
    }
    refs.update({path: apps.get_model(target) for path, target in EXTRA_REFERENCES.get(object_type, {}).items()})
    return refs


def reference_id(value: Any) -> int | None:
    """A diff side that is an object's id (JSON int); slugs, names and flags are not."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def reference_label(obj: models.Model) -> str:
    """How the log names an object a diff refers to: its name (a Profile Bundle with its version)."""
    name = getattr(obj, "name", None)
    if not name:
        return str(obj)[:200]
    version = getattr(obj, "version", None)
    return f"{name} v{version}" if isinstance(version, int) else str(name)


def reference_names(object_type: str, diff: dict[str, list]) -> dict[str, list[str | None]]:
    """{"pool": ["gpu-a", "gpu-b"]}: the names, as they are now, of the objects the diff's id
    paths point to (None for a side that is no id or no row). One query per kind of object."""
    refs = references_of(object_type)
    wanted: dict[type[models.Model], set[int]] = {}
    for path, pair in diff.items():
        if path in refs:
            wanted.setdefault(refs[path], set()).update(i for i in map(reference_id, pair) if i is not None)
    found = {
        model: {obj.pk: reference_label(obj) for obj in model._default_manager.filter(pk__in=ids)}
        for model, ids in wanted.items()
        if ids
    }
    names = {}
    for path, pair in diff.items():
        if path in refs and any(reference_id(v) is not None for v in pair):
            labels = found.get(refs[path], {})
            names[path] = [labels.get(i) if (i := reference_id(v)) is not None else None for v in pair]
    return names


# Who is asking, set per request by AuditContextMiddleware so services needn't pass the request.
_request_meta: contextvars.ContextVar[dict | None] = contextvars.ContextVar(
    "audit_request_meta", default=None
)


class AuditContextMiddleware:
    """Remembers the request id (X-Request-ID, or a new one) and client IP for audit entries."""

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response

    def __call__(self, request):
        request_id = (request.headers.get("X-Request-ID") or uuid.uuid4().hex)[:64]
        # Behind a proxy REMOTE_ADDR is the proxy; the deployment's proxy settings decide trust.
        token = _request_meta.set(
            {"request_id": request_id, "ip": request.META.get("REMOTE_ADDR") or None}
        )
        try:
            return self.get_response(request)
        finally:
            _request_meta.reset(token)


def object_type_of(obj: models.Model) -> str:
    return OBJECT_TYPES.get(obj._meta.label_lower, obj._meta.model_name)


def _jsonable(value: Any) -> Any:
    """Make a value JSON-safe the same way every time, so diffs compare like with like."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_jsonable(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, set | frozenset) else items
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, models.Model):
        return value.pk
    return value


def redact(data: dict | None) -> dict | None:
    if data is None:
        return None
    out: dict = {}
    for key, value in data.items():
        if key in SECRET_KEYS and value not in (None, ""):
            out[key] = REDACTED
        elif isinstance(value, dict):
            out[key] = redact(value)
        else:
            out[key] = value
    return out


def compute_diff(before: dict | None, after: dict | None) -> dict[str, list]:
    """Field-level changes as {"dotted.path": [old, new]} (the shape stored on AuditEntry.diff)."""
    return {c["field"]: [c["old"], c["new"]] for c in changes(before, after)}


def snapshot(obj: models.Model, fields: list[str] | None = None) -> dict:
    """A JSON-safe dict of a model's concrete fields (FKs as ids), for before/after."""
    data: dict = {}
    for field in obj._meta.concrete_fields:
        if fields is not None and field.name not in fields:
            continue
        data[field.name] = _jsonable(getattr(obj, field.attname))
    return data


def deployment_snapshot(deployment: models.Model) -> dict:
    """What the log keeps of a deployment: where it runs, its state, and the current spec."""
    revision = getattr(deployment, "current_revision", None)
    return _jsonable(
        {
            "name": deployment.name,
            "state": deployment.state,
            "pool": deployment.pool_id,
            "environment": deployment.environment_id,
            "endpoint": deployment.endpoint_id,
            "revision": revision.number if revision else None,
            "spec": revision.spec if revision else {},
        }
    )


def audit_record(
    *,
    actor: Any,
    organization: Organization,
    action: str,
    obj: models.Model,
    before: dict | None,
    after: dict | None,
    request_id: str = "",
    ip: str | None = None,
) -> AuditEntry:
    """Append one entry. Call inside the service's transaction so the change and its record are one unit.

    Call it before deleting ``obj`` (its id is kept). Request id and IP come from
    AuditContextMiddleware when not given.
    """
    meta = _request_meta.get() or {}
    request_id = request_id or meta.get("request_id", "")
    ip = ip or meta.get("ip")
    raw_before = _jsonable(before) if before is not None else None
    raw_after = _jsonable(after) if after is not None else None
    # Diff the real values (so a changed secret shows as changed), then hide them.
    diff = {
        path: [REDACTED if v not in (None, "") else v for v in pair]
        if path.rsplit(".", 1)[-1] in SECRET_KEYS
        else pair
        for path, pair in compute_diff(raw_before, raw_after).items()
    }
    user = actor if actor is not None and getattr(actor, "is_authenticated", False) else None
    entry = AuditEntry(
        organization=organization,
        actor=user,
        actor_repr=user.get_username() if user else "system",
        action=action,
        object_type=object_type_of(obj),
        object_id=str(obj.pk),
        object_repr=str(obj)[:200],
        before=redact(raw_before),
        after=redact(raw_after),
        diff=diff,
        # Names of the objects the diff names by id, as they are at the change: the log reads
        # "pool: gpu-a → gpu-b" later, whatever is renamed or deleted since.
        names=reference_names(object_type_of(obj), diff),
        request_id=request_id[:64],
        ip=ip or None,
    )
    entry.full_clean()
    entry.save()
    return entry


def audit_deployment(
    *, actor: Any, deployment: models.Model, action: str, before: dict | None
) -> AuditEntry:
    """Record a deployment change; the after-state is re-read so state claims made by UPDATE show.

    Usage in a deployments service, inside its transaction::

        before = deployment_snapshot(locked)      # before changing anything
        ...                                        # the change
        audit_deployment(actor=user, deployment=locked, action="deactivate", before=before)
    """
    fresh = (
        type(deployment)
        .objects.select_related("current_revision", "project__organization")
        .get(pk=deployment.pk)
    )
    return audit_record(
        actor=actor,
        organization=fresh.project.organization,
        action=action,
        obj=fresh,
        before=before,
        after=deployment_snapshot(fresh),
    )
