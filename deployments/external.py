"""External deployments: a model served on the tenant's own infrastructure (an OpenAI-compatible
URL with its own key), optionally overflowing to a managed deployment of the same organization.

The rules here: which URLs a tenant may make the gateway call (`external_url_refusal`, the
kubeconfig-server rules of deployments/kube/network.py), which deployment may take the overflow,
and the options the gateway's overflow decision reads (`spec["external"]`: timeout, concurrency
threshold, breaker). The gateway side is gateway/overflow.py. Nothing is pushed to a cluster:
no pool, no bundle, no GPUs held.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from catalog.models import CatalogModel
from console import permissions
from console.ids import is_digits, parse_id
from console.queue import enqueue
from deployments.kube import network
from deployments.models import (
    EXTERNAL_RUNNING_REASON,
    DeploymentKind,
    DeploymentState,
    Endpoint,
    EndpointHealth,
    ModelDeployment,
)
from deployments.services import (
    _NAME,
    _audit_deployment,
    _check_served_name_free,
    _claim_served_name,
    _deployment_snapshot,
    _duplicate_name_message,
    _gateway_forget,
    _locked,
    _new_revision,
    _user_or_none,
    event_record,
)
from deployments.spec import clean_limits_and_pricing, default_spec, merge_spec
from projects.models import Project
from projects.services import project_lock

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30
MAX_TIMEOUT_S = 600
MAX_CONCURRENCY = 100_000
# The breaker opens after this many failures in a row and lets one probe through after the cooldown.
DEFAULT_FAILURE_THRESHOLD = 3
DEFAULT_COOLDOWN_S = 30
OPTION_FIELDS = ("timeout_s", "max_concurrency", "failure_threshold", "cooldown_s")
# Named in the refusal so whoever runs the server knows which switch (README, "Settings").
PRIVATE_ADDRESSES_HOW = (
    "a platform operator can allow private addresses by starting ModelDeck with "
    "MODELDECK_EXTERNAL_PRIVATE_ADDRESSES=true."
)


def external_url_refusal(url: str) -> str:
    """Why the gateway may not call `url` for a tenant; "" when it may.

    http(s) only, no user:password@, no fragment; the host must resolve to public addresses
    (no loopback, link-local / metadata, private) unless the operator allows private ones
    (MODELDECK_EXTERNAL_PRIVATE_ADDRESSES) — the rule organization-managed pools follow."""
    url = (url or "").strip()
    if not url:
        return "Enter the endpoint's base URL, e.g. https://llm.example.com/v1."
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return f"Only http:// and https:// URLs can be called, not {parts.scheme or 'a bare path'}."
    if not parts.hostname:
        return "The URL has no host."
    if parts.username or parts.password:
        return "Put the credential in the API key field, not in the URL."
    if parts.fragment or parts.query:
        return "The base URL takes no query or fragment."
    try:
        _ = parts.port
    except ValueError:
        return "The URL's port is not a number between 1 and 65535."
    if settings.EXTERNAL_PRIVATE_ADDRESSES_ALLOWED:
        return ""
    if network.is_loopback_host(parts.hostname):
        return f"A loopback address is this server itself; {PRIVATE_ADDRESSES_HOW}"
    bad = network.non_public_addresses(parts.hostname, parts.port)
    if bad:
        return (
            f"{parts.hostname} resolves to {', '.join(bad[:3])}, a loopback, link-local or private "
            f"address; external endpoints must be public, but {PRIVATE_ADDRESSES_HOW}"
        )
    return ""


def base_url(url: str) -> str:
    """The URL the gateway appends `/chat/completions` etc. to: always ends in /v1."""
    url = url.strip().rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def _int_option(errors: dict, options: dict, field: str, default: int, low: int, high: int) -> int:
    value = options.get(field, default)
    if value in (None, ""):
        return default
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        errors[field] = f"A whole number between {low} and {high}."
        return default
    if not low <= number <= high:
        errors[field] = f"A whole number between {low} and {high}."
    return number


def _options(options: dict[str, Any], errors: dict) -> dict[str, int]:
    return {
        "timeout_s": _int_option(errors, options, "timeout_s", DEFAULT_TIMEOUT_S, 1, MAX_TIMEOUT_S),
        # 0: no threshold (only errors, time-outs and 429 send requests to the overflow).
        "max_concurrency": _int_option(errors, options, "max_concurrency", 0, 0, MAX_CONCURRENCY),
        "failure_threshold": _int_option(errors, options, "failure_threshold", DEFAULT_FAILURE_THRESHOLD, 1, 100),
        "cooldown_s": _int_option(errors, options, "cooldown_s", DEFAULT_COOLDOWN_S, 1, 3600),
    }


def _overflow(project: Project, overflow: Any, errors: dict, *, exclude: int | None) -> ModelDeployment | None:
    if overflow in (None, ""):
        return None
    org = project.organization_id
    rows = ModelDeployment.objects.filter(project__organization_id=org, kind=DeploymentKind.MANAGED)
    if isinstance(overflow, ModelDeployment):
        found = rows.filter(pk=overflow.pk).first()
    elif isinstance(overflow, int) or is_digits(overflow):
        found = rows.filter(pk=parse_id(overflow) or -1).first()
    elif isinstance(overflow, str):
        # By name: in the project first, else the organization's only one of that name.
        found = rows.filter(project=project, name=overflow).first()
        if found is None:
            named = list(rows.filter(name=overflow)[:2])
            found = named[0] if len(named) == 1 else None
    else:
        found = None
    if found is None or found.pk == exclude:
        errors["overflow"] = (
            "Choose a managed deployment of this organization (by id or name) to take the overflow."
        )
        return None
    return found


def external_check(
    *, project: Project, name: str, url: str, overflow: Any = None, served_model_name: str = "",
    options: dict[str, Any] | None = None, exclude: int | None = None,
    rate_limits: Any = None, pricing: Any = None,
) -> tuple[str, ModelDeployment | None, dict[str, Any]]:
    """Field errors (a ValidationError) or (url, overflow deployment, canonical spec). Rate limits
    and pricing are checked as a managed deployment's (spec field names: `pricing.currency`)."""
    errors: dict[str, str] = {}
    try:
        limits, prices = clean_limits_and_pricing(rate_limits, pricing)
    except ValidationError as exc:
        errors.update({key: messages[0] for key, messages in exc.message_dict.items()})
    name = (name or "").strip()
    if exclude is None:
        if not _NAME.match(name) or len(name) > 50:
            errors["name"] = "Lowercase letters, digits and dashes, starting with a letter (at most 50)."
        elif ModelDeployment.objects.filter(project=project, name=name).exists():
            errors["name"] = _duplicate_name_message(project, name)
    refusal = external_url_refusal(url)
    if refusal:
        errors["external_url"] = refusal
    target = _overflow(project, overflow, errors, exclude=exclude)
    served = (served_model_name or "").strip() or name
    if len(served) > 200 or any(c.isspace() for c in served):
        errors["served_model_name"] = "At most 200 characters, no spaces."
    opts = _options(options or {}, errors)
    if errors:
        raise ValidationError(errors)
    spec = default_spec()
    spec.update(engine="external", image="", served_model_name=served, replicas={"min": 0, "max": 0},
                resources={"cpu": "0", "memory": "0", "gpus": 0, "gpu_type": ""},
                rate_limits=limits, pricing=prices,
                external={**opts, "overflow": target.name if target else ""})  # fmt: skip
    _check_served_name_free(project.organization, served, exclude=exclude)
    return url.strip(), target, spec


def external_deployment_create(
    *, user: AbstractBaseUser | None, project: Project, model: CatalogModel, name: str, url: str,
    credential: str = "", overflow: Any = None, served_model_name: str = "",
    options: dict[str, Any] | None = None, endpoint: Endpoint | None = None, description: str = "",
    rate_limits: dict[str, Any] | None = None, pricing: dict[str, Any] | None = None,
) -> ModelDeployment:
    """An external deployment: Running at once (the gateway's breaker decides what answers).
    Rate limits and pricing work as a managed deployment's: the gateway enforces and meters them."""
    permissions.require(user, "change", project, what="deployments")
    if model.organization_id not in (None, project.organization_id):
        raise ValidationError({"model": "Choose a model of this organization's catalog."})
    url, target, spec = external_check(project=project, name=name, url=url, overflow=overflow,
                                       served_model_name=served_model_name, options=options,
                                       rate_limits=rate_limits, pricing=pricing)  # fmt: skip
    name = name.strip()
    try:
        with transaction.atomic():
            project_lock(project=project)  # a delete of the project waits for this, or this for it
            deployment = ModelDeployment(
                project=project, model=model, pool=None, bundle=None, kind=DeploymentKind.EXTERNAL,
                external_url=url, external_credential=credential or "", overflow=target,
                endpoint=endpoint, name=name, description=description, state=DeploymentState.RUNNING,
                state_reason=EXTERNAL_RUNNING_REASON,
                state_changed_at=timezone.now(), created_by=_user_or_none(user),
            )  # fmt: skip
            deployment.full_clean(validate_constraints=False)
            deployment.save()
            _claim_served_name(deployment, spec["served_model_name"])
            revision = _new_revision(deployment, spec, user=user, reason="Created")
            deployment.current_revision = deployment.serving_revision = revision
            deployment.save(update_fields=["current_revision", "serving_revision"])
            event_record(deployment, reason="Running", message=f"External endpoint {url}"
                         + (f", overflow to {target.name}." if target else "."))  # fmt: skip
            _audit_deployment(user=user, deployment=deployment, action="create", before=None)
            _gateway_forget()
            pk = deployment.pk
            transaction.on_commit(lambda: health_check_enqueue(pk))  # its first verdict now, not at the next round
    except IntegrityError:
        raise ValidationError({"name": _duplicate_name_message(project, name)}) from None
    return deployment


def terms_over(stored: dict[str, Any], fields: dict[str, Any]) -> tuple[Any, Any]:
    """(rate_limits, pricing): each of `fields`' over the stored spec's, key by key; left out: as
    stored; null: the defaults (unlimited, free), as at create (a non-mapping is left for the
    check to refuse). The update and `apply -f`'s plan both read them so."""

    def over(key: str) -> Any:
        if key not in fields:
            return stored.get(key)
        given, current = fields[key], stored.get(key)
        if isinstance(given, dict) and isinstance(current, dict):
            return merge_spec(current, given)
        return given

    return over("rate_limits"), over("pricing")


def external_deployment_update(
    *, user: AbstractBaseUser | None, deployment: ModelDeployment, **fields: Any
) -> ModelDeployment:
    """Change URL, credential (empty keeps it), overflow, served name, options, rate limits or
    pricing (the given keys over the current ones, as a managed deployment's update; null: back to
    unlimited / free); a new revision."""
    permissions.require(user, "change", deployment.project, what="deployments")
    if not deployment.is_external:
        raise ValidationError({"kind": "Only an external deployment has an external URL."})
    unknown = set(fields) - {"url", "credential", "overflow", "served_model_name", "options", "description",
                             "rate_limits", "pricing"}  # fmt: skip
    if unknown:
        raise ValidationError({k: "Not a field of an external deployment." for k in sorted(unknown)})
    with transaction.atomic():
        locked = _locked(deployment)
        before = _deployment_snapshot(locked)
        stored = locked.spec()
        current = stored.get("external", {})
        limits, prices = terms_over(stored, fields)
        options = {k: current.get(k) for k in OPTION_FIELDS} | dict(fields.get("options") or {})
        url, target, spec = external_check(
            project=locked.project, name=locked.name, url=fields.get("url", locked.external_url),
            overflow=fields.get("overflow", locked.overflow_id), exclude=locked.pk,
            served_model_name=fields.get("served_model_name", locked.served_name()), options=options,
            rate_limits=limits, pricing=prices,
        )  # fmt: skip
        if url != locked.external_url:
            # The last verdict was about the old URL: not checked yet; the new one is, at once.
            locked.health, locked.health_detail, locked.health_checked_at = EndpointHealth.UNKNOWN, "", None
            pk = locked.pk
            transaction.on_commit(lambda: health_check_enqueue(pk))
        locked.external_url, locked.overflow = url, target
        if fields.get("credential"):
            locked.external_credential = fields["credential"]
        if "description" in fields:
            locked.description = fields["description"] or ""
        locked.save(update_fields=["external_url", "overflow", "external_credential", "description", "updated_at",
                                   "health", "health_detail", "health_checked_at"])  # fmt: skip
        _claim_served_name(locked, spec["served_model_name"])
        revision = _new_revision(locked, spec, user=user, reason="External endpoint changed")
        locked.current_revision = locked.serving_revision = revision
        locked.save(update_fields=["current_revision", "serving_revision"])
        _audit_deployment(user=user, deployment=locked, action="update", before=before)
        _gateway_forget()
    return locked


# The one-deployment health check (gateway.tasks), by name: tasks import this module.
HEALTH_CHECK_TASK = "gateway.check_external_endpoint"


def health_check_enqueue(deployment_pk: int) -> bool:
    """Queue a health check of one external deployment (it is new, or its URL changed); a queue
    that can't be reached loses nothing: the round every 15 s checks it anyway."""
    return enqueue(HEALTH_CHECK_TASK, deployment_pk, what="health check", deployment=deployment_pk)


HEALTH_EVENTS = {
    EndpointHealth.HEALTHY: ("EndpointReachable", "Normal", "The endpoint answers"),
    EndpointHealth.UNHEALTHY: ("EndpointUnreachable", "Warning", "The endpoint is unreachable"),
}


def health_event(health: str, detail: str) -> dict[str, str]:
    """The event of a change of verdict, worded once: the probe's "answered HTTP 200" would
    repeat the verb after "The endpoint answers", so a healthy verdict shows only its status."""
    reason, kind, words = HEALTH_EVENTS[health]
    if not detail:
        return {"reason": reason, "type": kind, "message": f"{words}."}
    if health == EndpointHealth.HEALTHY:
        return {"reason": reason, "type": kind, "message": f"{words} ({detail.removeprefix('answered ')})."}
    return {"reason": reason, "type": kind, "message": f"{words}: {detail}."}


def external_health_record(*, deployment: ModelDeployment, healthy: bool, detail: str) -> bool:
    """The health check's verdict on `deployment`'s URL, as probed (`deployment.external_url`).

    Every check moves `health_checked_at`; only a change of verdict records an event and makes
    the gateways reload their routing tables (where, without Redis, their breakers learn it), so a
    steady state costs them nothing. A verdict about a URL changed since the probe is dropped.
    Returns whether the verdict changed."""
    health = EndpointHealth.HEALTHY if healthy else EndpointHealth.UNHEALTHY
    detail = (detail or "")[:300]
    now = timezone.now()
    rows = ModelDeployment.objects.filter(pk=deployment.pk, kind=DeploymentKind.EXTERNAL,
                                          external_url=deployment.external_url)  # fmt: skip
    with transaction.atomic():
        # Claimed like a state: of two checks that saw the same change, one records it.
        changed = rows.exclude(health=health).update(health=health, health_detail=detail, health_checked_at=now)
        if not changed:
            rows.update(health_detail=detail, health_checked_at=now)
            return False
        event_record(deployment, **health_event(health, detail))
        _gateway_forget()
    return True
