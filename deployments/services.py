"""Writes for compute pools, endpoints and model deployments: one path for every change."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from catalog.maas import resolve
from catalog.models import CatalogModel, ProfileBundle
from console import permissions
from console.diff import changes
from console.queue import enqueue
from deployments import kube
from deployments.kube import network
from deployments.kube.kubeconfig import KubeconfigRefused, reduce_kubeconfig
from deployments.models import (
    ACTIVE_STATES,
    POOL_EXPOSURE_FIELDS,
    ComputePool,
    DeploymentEvent,
    DeploymentScale,
    DeploymentState,
    Endpoint,
    ModelDeployment,
    PoolExposure,
    PoolKind,
    PoolManager,
    Revision,
    ServedName,
)
from deployments.renderers.input import is_dns1123_subdomain
from deployments.spec import (
    bundle_of_version,
    bundle_variables,
    check_ngc_credentials,
    check_storage_credentials,
    default_spec,
    gpu_hold,
    image_tag,
    image_with_tag,
    merge_spec,
    normalize_spec,
    rendered_replicas,
    resource_hold,
    rollout_needed,
    with_bundle_version,
)
from gateway.cache import invalidate
from projects.models import Environment, Organization, Project
from projects.services import project_lock, quota_reserve
from sharing.audit import audit_deployment, audit_record, deployment_snapshot, snapshot
from sharing.policies import enforce

log = logging.getLogger(__name__)

POOL_AUDIT_FIELDS = [
    "name", "kind", "engine_label", "api_url", "region", "description", "kubeconfig", "managed_by",
    "private_addresses_allowed",
]  # fmt: skip


def _audit_deployment(*, user: AbstractBaseUser | None, deployment: ModelDeployment, action: str,
                      before: dict | None) -> None:
    audit_deployment(actor=_user_or_none(user), deployment=deployment, action=action, before=before)


def _deployment_snapshot(deployment: ModelDeployment) -> dict:
    return deployment_snapshot(deployment)


def _audit_pool(*, user: AbstractBaseUser | None, pool: ComputePool, action: str,
                before: dict | None, after: dict | None) -> None:
    audit_record(actor=_user_or_none(user), organization=pool.organization, action=action, obj=pool,
                 before=before, after=after)


def _pool_snapshot(pool: ComputePool) -> dict:
    return snapshot(pool, POOL_AUDIT_FIELDS)


def _gateway_forget() -> None:
    """State changes reach every gateway on its next request, not after its cache expires."""
    transaction.on_commit(invalidate)

_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_ENGINE_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$")
_PATH = re.compile(r"^/[A-Za-z0-9._~/-]*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
POOL_FIELDS = (
    "name", "kind", "engine_label", "kubeconfig", "api_url", "region", "description",
    "private_addresses_allowed", *POOL_EXPOSURE_FIELDS,
)  # fmt: skip


def _user_or_none(user: AbstractBaseUser | None) -> AbstractBaseUser | None:
    return user if user is not None and user.is_authenticated else None


# The push task, by name: tasks import services, so services queue tasks without importing them.
PUSH_TASK = "deployments.push_deployment"


WAITING_TO_BE_PUSHED = "Saved; waiting to be pushed (the task queue can't be reached right now)."


def _enqueue_push(deployment_pk: int) -> None:
    """Queue the push when the transaction commits; the change is marked as waiting in the same
    transaction, so a queue that is down (or a crash right after the commit) loses nothing:
    push_waiting queues it later. A failed enqueue never turns a committed change into a 500."""
    marked = timezone.now()
    ModelDeployment.objects.filter(pk=deployment_pk).update(push_waiting_since=marked)
    transaction.on_commit(lambda: push_enqueue(deployment_pk, marked=marked))


def push_enqueue(deployment_pk: int, *, marked: Any = None) -> bool:
    """Send the push task; on success clear the waiting mark (if no newer change set it again)."""
    if not enqueue(PUSH_TASK, deployment_pk, what="push (left waiting)", deployment=deployment_pk):
        ModelDeployment.objects.filter(pk=deployment_pk, push_waiting_since__isnull=False).update(
            state_reason=WAITING_TO_BE_PUSHED
        )
        return False
    rows = ModelDeployment.objects.filter(pk=deployment_pk)
    if marked is not None:
        rows = rows.filter(push_waiting_since__lte=marked)
    rows.update(push_waiting_since=None)
    return True


# --- Events and state ---------------------------------------------------------------------------


def event_record(
    deployment: ModelDeployment | int,
    *,
    reason: str,
    message: str = "",
    type: str = "Normal",  # noqa: A002 - Kubernetes' word
    source: str = "console",
) -> DeploymentEvent:
    """Record an event; a repeat of the same reason and message bumps the count instead."""
    deployment_id = deployment if isinstance(deployment, int) else deployment.pk
    reason, message = reason[:100], message[:2000]
    existing = (
        DeploymentEvent.objects.filter(
            deployment_id=deployment_id, reason=reason, message=message, source=source
        )
        .order_by("-last_seen_at", "-id")
        .first()
    )
    if existing is not None:
        DeploymentEvent.objects.filter(pk=existing.pk).update(
            count=existing.count + 1, last_seen_at=timezone.now()
        )
        existing.count += 1
        return existing
    return DeploymentEvent.objects.create(
        deployment_id=deployment_id, type=type, reason=reason, message=message, source=source
    )


def state_claim(
    deployment: ModelDeployment | int,
    *,
    expect: str | tuple[str, ...],
    state: str,
    reason: str = "",
) -> bool:
    """Move a deployment from `expect` to `state`; False when someone else moved it first."""
    pk = deployment if isinstance(deployment, int) else deployment.pk
    expected = (expect,) if isinstance(expect, str) else tuple(expect)
    changed = ModelDeployment.objects.filter(pk=pk, state__in=expected).update(
        state=state,
        state_reason=reason[:2000],
        state_changed_at=timezone.now(),
        updated_at=timezone.now(),
    )
    if changed and not isinstance(deployment, int):
        deployment.state, deployment.state_reason = state, reason[:2000]
    if changed:
        _gateway_forget()  # gateways keep routing tables until the generation moves
    return bool(changed)


# --- Compute pools ------------------------------------------------------------------------------


def _require_pool_register(user: AbstractBaseUser | None, organization: Organization) -> None:
    if user is not None and not permissions.may_register_pool(user, organization):
        raise PermissionDenied(
            "Platform operators register compute pools; ask one to grant your organization a pool."
        )


def _require_pool_manage(user: AbstractBaseUser | None, pool: ComputePool) -> None:
    if user is not None and not permissions.may_manage_pool(user, pool):
        raise PermissionDenied(
            "Platform operators manage this compute pool; ask one to change or test it."
        )


def _acts_as_operator(user: AbstractBaseUser | None) -> bool:
    return user is None or permissions.is_pool_operator(user)  # None: the system (tasks, migrations)


def _exposure_errors(pool: ComputePool) -> dict[str, str]:
    """The pool's exposure: what its Ingress / HTTPRoute and the gateway's upstream need."""
    errors: dict[str, str] = {}
    if pool.exposure not in PoolExposure.values:
        return {"exposure": f"Choose one of {', '.join(PoolExposure.values)}."}
    routed = pool.exposure != PoolExposure.IN_CLUSTER
    if routed and not is_dns1123_subdomain(pool.exposure_host or ""):
        errors["exposure_host"] = "Enter the base host deployments answer under, e.g. models.example.com."
    for name in ("ingress_class", "tls_secret", "gateway_name"):
        value = getattr(pool, name)
        if value and not is_dns1123_subdomain(value):
            errors[name] = "Enter a Kubernetes object name (lower case letters, digits, '-' and '.')."
    for name in ("gateway_namespace", "ingress_namespace"):
        value = getattr(pool, name)
        if value and not re.match(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", value):
            errors[name] = "Enter a namespace name (lower case letters, digits and '-')."
    if pool.exposure == PoolExposure.GATEWAY_API:
        for name in ("gateway_name", "gateway_namespace"):
            if not getattr(pool, name):
                errors.setdefault(name, "The HTTPRoutes attach to this Gateway; enter it.")
    if pool.exposure_address and not re.match(r"^https?://[^\s/]+/?$", pool.exposure_address):
        errors["exposure_address"] = "Enter an address such as http://10.0.0.5:80 (no path)."
    if not routed:
        for name in ("exposure_host", "exposure_address", "ingress_class", "tls_secret", "gateway_name",
                     "gateway_namespace"):  # fmt: skip
            if getattr(pool, name):
                errors.setdefault(name, "Only pools exposed through an Ingress or a Gateway take this.")
    return errors


def _clean_pool(pool: ComputePool, *, operator: bool) -> None:
    """The one rule for a pool's settings, whoever saves it (form, API, apply -f, admin).

    A kubeconfig is reduced here and the reduced copy is what gets stored; the fields that
    would run a program, read a file or reach another address are refused by name.
    """

    errors: dict[str, str] = _exposure_errors(pool)
    if pool.kind not in PoolKind.values:
        errors["kind"] = f"Choose one of {', '.join(PoolKind.values)}."
    elif not operator and pool.kind != PoolKind.KUBECONFIG:
        errors["kind"] = (
            "Organizations bring a cluster by kubeconfig; sandbox and in-cluster pools are "
            "registered by platform operators."
        )
    if not _ENGINE_LABEL.match(pool.engine_label or ""):
        errors["engine_label"] = (
            "Enter the inference engine this pool runs, e.g. vllm (lower case, no spaces)."
        )
    if pool.kind == PoolKind.KUBECONFIG:
        try:
            reduced = reduce_kubeconfig(pool.kubeconfig or "")
        except KubeconfigRefused as err:
            errors["kubeconfig"] = err.text()
        else:
            pool.kubeconfig = reduced.to_yaml()
            if pool.needs_public_address():
                refusal = network.public_address_refusal(reduced.server)
                if refusal:
                    errors["kubeconfig"] = f"server: {reduced.host} {refusal}"
    elif pool.kubeconfig:
        errors["kubeconfig"] = "Only kubeconfig pools take a kubeconfig."
    if pool.exposure_address and "exposure_address" not in errors and pool.needs_public_address():
        # The gateway connects there with the engine's credential: the same rule as the API server.
        refusal = network.public_address_refusal(pool.exposure_address)
        if refusal:
            errors["exposure_address"] = f"{pool.exposure_address} {refusal}"
    if pool.api_url and not re.match(r"^https?://[^\s]+$", pool.api_url):
        errors["api_url"] = "Enter an http(s) URL such as http://127.0.0.1:8093."
    elif pool.api_url and not pool.is_sandbox:
        errors["api_url"] = (
            "Only sandbox pools take an API URL; other pools connect through their kubeconfig."
        )
    elif pool.kind == PoolKind.SANDBOX and "kind" not in errors:
        refusal = network.sandbox_url_refusal(pool.api_url)
        if refusal:
            errors["api_url" if pool.api_url else "kind"] = refusal
    if pool.private_addresses_allowed and pool.kind != PoolKind.KUBECONFIG:
        pool.private_addresses_allowed = False  # meaningless elsewhere; keep the row tidy
    if errors:
        raise ValidationError(errors)
    if (
        ComputePool.objects.filter(organization_id=pool.organization_id, name=pool.name)
        .exclude(pk=pool.pk)
        .exists()
    ):
        raise ValidationError(
            {"name": f"A compute pool named “{pool.name}” already exists in this organization."}
        )
    pool.full_clean(
        validate_constraints=False, exclude=["reachable", "last_check", "last_checked_at"]
    )


def _private_addresses_field(value: Any, *, operator: bool) -> bool:
    if not isinstance(value, bool):
        raise ValidationError({"private_addresses_allowed": "Give true or false."})
    if value and not operator:
        raise ValidationError(
            {"private_addresses_allowed": "Only platform operators can allow private addresses."}
        )
    return value


def pool_create(
    *,
    user: AbstractBaseUser | None,
    organization: Organization,
    name: str,
    kind: str,
    engine_label: str,
    kubeconfig: str = "",
    api_url: str = "",
    region: str = "",
    description: str = "",
    private_addresses_allowed: bool = False,
    **exposure: str,
) -> ComputePool:
    """Register a pool for (grant it to) an organization: operators, or its admins where allowed."""
    _require_pool_register(user, organization)
    operator = _acts_as_operator(user)
    unknown = sorted(set(exposure) - set(POOL_EXPOSURE_FIELDS))  # exposure: POOL_EXPOSURE_FIELDS
    if unknown:
        raise ValidationError({unknown[0]: "This is not a compute pool field."})
    pool = ComputePool(
        organization=organization, name=name.strip(), kind=kind, engine_label=engine_label.strip(),
        kubeconfig=kubeconfig, api_url=api_url.strip(), region=region.strip(), description=description,
        managed_by=PoolManager.OPERATOR if operator else PoolManager.ORGANIZATION,
        private_addresses_allowed=_private_addresses_field(private_addresses_allowed, operator=operator),
        **{key: (value or "").strip() for key, value in exposure.items()},
    )  # fmt: skip
    _clean_pool(pool, operator=operator)
    with transaction.atomic():
        pool.save()
        _audit_pool(user=user, pool=pool, action="create", before=None, after=_pool_snapshot(pool))
    log.info("compute pool created", extra={"pool": pool.pk, "organization": organization.pk})
    return pool


def pool_validate(
    *, user: AbstractBaseUser | None, organization: Organization, pool: ComputePool | None = None,
    **fields: Any,
) -> None:
    """Check a create (pool=None) or an update without saving: for forms that can't show an error
    after the save (Django admin). The same rules as pool_create/pool_update."""
    if pool is None:
        _require_pool_register(user, organization)
        operator = _acts_as_operator(user)
        draft = ComputePool(
            organization=organization, managed_by=PoolManager.OPERATOR if operator else PoolManager.ORGANIZATION,
        )  # fmt: skip
    else:
        _require_pool_manage(user, pool)
        operator = _acts_as_operator(user)
        draft = ComputePool.objects.get(pk=pool.pk)
    for key, value in fields.items():
        if key not in POOL_FIELDS:
            raise ValidationError({key: "This field can't be changed."})
        if key == "private_addresses_allowed":
            value = _private_addresses_field(value, operator=operator)
        if key == "kubeconfig" and not value and pool is not None:
            continue
        setattr(draft, key, value.strip() if isinstance(value, str) and key != "kubeconfig" else value)
    _clean_pool(draft, operator=operator)


def pool_update(*, user: AbstractBaseUser | None, pool: ComputePool, **fields: Any) -> ComputePool:
    """Change a pool's settings; an empty kubeconfig keeps the stored one (it is never shown)."""
    _require_pool_manage(user, pool)
    operator = _acts_as_operator(user)
    unknown = sorted(set(fields) - set(POOL_FIELDS))
    if unknown:
        raise ValidationError({unknown[0]: "This field can't be changed."})
    if "private_addresses_allowed" in fields:
        fields["private_addresses_allowed"] = _private_addresses_field(
            fields["private_addresses_allowed"], operator=operator
        )
    with transaction.atomic():
        locked = ComputePool.objects.select_for_update().get(pk=pool.pk)
        before = _pool_snapshot(locked)
        for key, value in fields.items():
            if key == "kubeconfig" and not value:
                continue
            setattr(
                locked,
                key,
                value.strip() if isinstance(value, str) and key != "kubeconfig" else value,
            )
        if fields.get("kubeconfig") or ("kind" in fields and fields["kind"] != pool.kind):
            # New connection settings belong to whoever set them: an operator's are trusted, an
            # organization's lose an operator's earlier allowance of private addresses.
            if operator:
                locked.managed_by = PoolManager.OPERATOR
            elif not fields.get("private_addresses_allowed"):
                locked.private_addresses_allowed = False
        if "engine_label" in fields and fields["engine_label"] != pool.engine_label:
            busy = locked.deployments.count()
            if busy:
                raise ValidationError(
                    {"engine_label": f"{_deployments_text(busy, 'runs', 'run')} on this pool with its current engine "
                                     f"label; move or delete {'it' if busy == 1 else 'them'} before changing it."}
                )  # fmt: skip
        _clean_pool(locked, operator=operator)
        locked.save()
        _audit_pool(user=user, pool=locked, action="update", before=before, after=_pool_snapshot(locked))
    return locked


def _deployments_text(count: int, one: str, many: str) -> str:
    """"1 deployment runs" / "3 deployments run": the count with its verb."""
    return f"1 deployment {one}" if count == 1 else f"{count} deployments {many}"


def pool_delete(*, user: AbstractBaseUser | None, pool: ComputePool) -> None:
    _require_pool_manage(user, pool)
    count = pool.deployments.count()
    if count:
        raise ValidationError(
            f"{_deployments_text(count, 'still uses', 'still use')} compute pool “{pool.name}”; "
            f"delete {'it' if count == 1 else 'them'} first."
        )
    with transaction.atomic():
        _audit_pool(user=user, pool=pool, action="delete", before=_pool_snapshot(pool), after=None)
        pool.delete()


def pool_test_connection(*, user: AbstractBaseUser | None, pool: ComputePool) -> dict[str, Any]:
    """Ask the pool's API server for its version and GPU nodes; the answer is stored on the pool.

    The stored and returned error is always in ModelDeck's own words (deployments.kube.classify):
    never the body of what answered, never the text of an exception.
    """
    _require_pool_manage(user, pool)
    try:
        result = kube.test_connection(pool)
    except kube.KubeError as err:
        result = {"ok": False, "version": "", "nodes": [], "error": err.message}
    except Exception:  # a check reports any failure in words; it never raises
        log.warning("pool connection test failed", exc_info=True, extra={"pool": pool.pk})
        result = {
            "ok": False,
            "version": "",
            "nodes": [],
            "error": "The check could not run; the server log has the details.",
        }
    result["checked_at"] = timezone.now().isoformat()
    ComputePool.objects.filter(pk=pool.pk).update(
        last_check=result, last_checked_at=timezone.now(), reachable=result["ok"]
    )
    pool.last_check, pool.reachable = result, result["ok"]
    return result


# --- Endpoints ----------------------------------------------------------------------------------


RESERVED_ENDPOINT_PREFIXES = frozenset({"api", "admin", "static", "hub", "metrics", "v1", "healthz"})


def endpoint_path_normalize(path: str) -> str:
    """The one spelling of a gateway path: a leading "/", no trailing "/" (except the root)."""
    path = (path or "").strip()
    if not path.startswith("/"):
        path = "/" + path
    return path.rstrip("/") or "/"


def endpoint_check(*, project: Project, name: str, path: str) -> tuple[str, str]:
    """The name and normalized path a new endpoint gets, or a ValidationError naming each field.

    Names are unique in a project and compared exactly (as the database constraint does);
    paths are unique in the organization after normalizing ("chat/" and "/chat" are one path)."""
    name, path = (name or "").strip(), endpoint_path_normalize(path)
    errors = {}
    if not name:
        errors["name"] = "Enter a name."
    if not _PATH.match(path) or "//" in path or len(path) > 200:
        errors["path"] = "Use a path such as /llama-chat: letters, digits, '-', '_', '.', '~', '/'."
    elif path.strip("/").split("/")[0] in RESERVED_ENDPOINT_PREFIXES or "/v1/" in path + "/":
        # `<path>/v1/...` is routed to the gateway; it must not capture the console's own URLs.
        errors["path"] = f"{path} is taken by the console or the gateway; choose another path."
    elif Endpoint.objects.filter(project__organization=project.organization, path=path).exists():
        errors["path"] = (
            f"The path {path} is already used by another endpoint of this organization."
        )
    if name and Endpoint.objects.filter(project=project, name=name).exists():
        errors["name"] = f"An endpoint named “{name}” already exists in this project."
    if errors:
        raise ValidationError(errors)
    return name, path


def endpoint_create(
    *, user: AbstractBaseUser | None, project: Project, name: str, path: str
) -> Endpoint:
    permissions.require(user, "change", project, what="endpoints")
    name, path = endpoint_check(project=project, name=name, path=path)
    endpoint = Endpoint(project=project, name=name, path=path)
    endpoint.full_clean()
    endpoint.save()
    return endpoint


def endpoint_delete(*, user: AbstractBaseUser | None, endpoint: Endpoint) -> None:
    permissions.require(user, "change", endpoint)
    endpoint.delete()  # deployments keep running; they just lose the path (SET_NULL)


# --- Deployments --------------------------------------------------------------------------------


def _check_environment(
    environment: Environment | None, pool: ComputePool, spec: dict[str, Any]
) -> None:
    """The environment's policies narrowed by the deployment's own (spec ``policies``;
    sharing.policies is their one source); every broken rule named."""
    if environment is None and not spec.get("policies"):
        return

    enforce(environment=environment, deployment_policies=spec.get("policies"), pool=pool, spec=spec)


def _check_served_name_free(
    organization: Organization, served: str, *, exclude: int | None = None
) -> None:
    clash = (
        ModelDeployment.objects.filter(
            project__organization=organization, current_revision__spec__served_model_name=served
        )
        .exclude(pk=exclude)
        .first()
    )
    if clash is not None:
        raise ValidationError(
            {"served_model_name": f"Deployment “{clash.name}” already serves the model name “{served}” in this "
                                  "organization; give this one another model name for clients."}
        )  # fmt: skip


def _claim_served_name(deployment: ModelDeployment, served: str) -> None:
    """Hold ``served`` for this deployment in its organization. The unique constraint decides
    a race that _check_served_name_free (a read) can't: the loser gets a field error."""
    try:
        with transaction.atomic():  # a savepoint: the caller's transaction goes on to raise cleanly
            ServedName.objects.update_or_create(
                deployment=deployment,
                defaults={"organization_id": deployment.project.organization_id, "name": served},
            )
    except IntegrityError:
        raise ValidationError(
            {"served_model_name": f"Another deployment of this organization already serves the model name "
                                  f"“{served}”; choose another name."}
        ) from None  # fmt: skip


RELEASE_ALL = {"cpu_millicores": 0, "memory_bytes": 0, "deployments": 0}  # nothing held beside GPUs


def _reserve(
    deployment: ModelDeployment, gpus: int, spec: dict[str, Any] | None = None, *, surge: Revision | None = None
) -> None:
    """Hold `gpus` in the quota for this deployment, plus the GPUs of the ``surge`` revision
    whose pods keep serving beside the new ones during a blue-green rollout, and the CPU, memory
    and deployment count of `spec`; a refusal names the numbers and lands on the field it is
    about (one the surge alone causes points at the recreate strategy)."""
    extra = resource_hold(spec) if spec is not None else {}
    try:
        quota_reserve(project=deployment.project, holder=deployment.gpu_holder(), gpus=gpus,
                      surge=gpu_hold(surge.spec, deployment.replicas_wanted(surge.spec)) if surge is not None else 0,
                      surge_from=f"revision {surge.number}" if surge is not None else "", **extra)  # fmt: skip
    except ValidationError as exc:
        text = " ".join(exc.messages)
        field = "update_strategy" if getattr(exc, "code", "") == "surge" else "resources.gpus"
        if "CPU core" in text:
            field = "resources.cpu"
        elif "GiB of memory" in text:
            field = "resources.memory"
        elif "active deployment" in text:
            field = "quota"
        raise ValidationError({field: ValidationError(text, code=getattr(exc, "code", None))}) from None


# How a change to what the pods run reaches the pool: blue-green (the serving revision answers
# until the new one is ready; both hold GPUs meanwhile) or recreate (the serving revision stops
# first: no surge, and requests are refused until the new revision is ready).
UPDATE_STRATEGIES = ("blue_green", "recreate")
# The start of a deployment's reason after a rollout failed and was rolled back by itself; the
# status sync keeps it (the deployment stays Failed, served by the old pods) until the next change.
UPDATE_FAILED = "Update failed: "


def _new_revision(
    deployment: ModelDeployment, spec: dict[str, Any], *, user: AbstractBaseUser | None, reason: str,
    pods_revision: int | None = None,
) -> Revision:
    # Callers hold the deployment's row lock (or create it): numbers stay unique and dense.
    last = deployment.revisions.order_by("-number").values_list("number", flat=True).first() or 0
    revision = Revision(deployment=deployment, number=last + 1, spec=spec, reason=reason[:200],
                        created_by=_user_or_none(user), pods_revision=pods_revision)  # fmt: skip
    revision.full_clean(exclude=["deployment"])
    revision.save()
    return revision


def _duplicate_name_message(project: Project, name: str) -> str:
    return (
        f"Project “{project.name}” already has a deployment named “{name}”; choose another name, "
        "or update that deployment instead."
    )


def deployment_check(
    *,
    project: Project,
    model: CatalogModel | None,
    pool: ComputePool | None,
    name: str,
    spec: dict[str, Any],
    bundle: ProfileBundle | None = None,
    endpoint: Endpoint | None = None,
    environment: Environment | None = None,
) -> tuple[ProfileBundle, dict[str, Any]]:
    """Every rule a new deployment must pass, without writing anything: the bundle it gets and
    its canonical spec. Raises one ValidationError naming every field at fault (spec keys such
    as ``resources.gpus``), so the form can show them while the user types. The quota is
    checked at the save, under locks (quota_reserve)."""
    org = project.organization
    errors: dict[str, list[str]] = {}

    def refuse(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    def refuse_all(exc: ValidationError) -> None:
        for field, messages in exc.message_dict.items() if hasattr(exc, "error_dict") else (
            ("__all__", exc.messages),
        ):
            if field not in errors:
                errors[field] = list(messages)

    name = (name or "").strip()
    if not _NAME.match(name) or len(name) > 50:
        refuse("name", "Use at most 50 lowercase letters, digits and '-'; start with a letter, end with a "
                       "letter or digit (it becomes the Kubernetes Service name).")  # fmt: skip
    elif ModelDeployment.objects.filter(project=project, name=name).exists():
        refuse("name", _duplicate_name_message(project, name))
    if model is not None and model.organization_id != org.pk:
        refuse("model", "No such model in this organization.")
    if pool is not None and pool.organization_id != org.pk:
        refuse("pool", "No such compute pool in this organization.")
    if endpoint is not None and endpoint.project_id != project.pk:
        refuse("endpoint", f"“{endpoint.name}” belongs to another project.")
    if environment is not None and environment.project_id != project.pk:
        refuse("environment", f"“{environment.name}” is an environment of another project.")
    if model is None or pool is None or errors.keys() & {"model", "pool"}:
        raise ValidationError(errors or {"model": "Choose a model and a compute pool."})
    if bundle is None:

        resolution = resolve(project, model)
        if resolution.bundle is None:
            refuse("bundle", resolution.message)
            raise ValidationError(errors)
        bundle = resolution.bundle
    if bundle.organization_id not in (None, org.pk):
        refuse("bundle", "No such Profile Bundle in this organization.")
        raise ValidationError(errors)
    if bundle.engine_label() != pool.engine_label:
        refuse("pool", f"Profile Bundle “{bundle}” needs a pool with engine label “{bundle.engine_label()}”, "
                       f"but compute pool “{pool.name}” has “{pool.engine_label}”. Pick a matching pool or bundle.")  # fmt: skip
    canonical: dict[str, Any] | None = None
    try:
        canonical = normalize_spec(spec, bundle=bundle, model=model)
    except ValidationError as exc:
        refuse_all(exc)
    try:
        check_ngc_credentials(project=project, bundle=bundle, model=model)
        check_storage_credentials(project=project, model=model)
    except ValidationError as exc:
        refuse_all(exc)
    if canonical is not None:
        try:
            _check_environment(environment if "environment" not in errors else None, pool, canonical)
            # A served name that is the deployment's taken name: the name's error says it already.
            if not ("name" in errors and canonical["served_model_name"] == name):
                _check_served_name_free(org, canonical["served_model_name"])
        except ValidationError as exc:
            refuse_all(exc)
    if errors:
        raise ValidationError(errors)
    assert canonical is not None
    return bundle, canonical


def deployment_create(
    *,
    user: AbstractBaseUser | None,
    project: Project,
    model: CatalogModel,
    pool: ComputePool,
    name: str,
    spec: dict[str, Any],
    bundle: ProfileBundle | None = None,
    endpoint: Endpoint | None = None,
    environment: Environment | None = None,
    description: str = "",
    deactivated: bool = False,
) -> ModelDeployment:
    """Create a deployment and its revision 1, reserving its GPUs in the same transaction; the
    push to the pool is queued when the transaction commits.

    ``deactivated=True`` creates it already deactivated, in the same one transaction: it holds
    no GPUs and nothing is pushed until it is activated (``apply -f`` with ``state: deactivated``).
    """
    # The same rule as updating: organization role, project membership (console.permissions).
    permissions.require(user, "change", project, what="deployments")
    name = (name or "").strip()
    bundle, canonical = deployment_check(
        project=project, model=model, pool=pool, name=name, spec=spec, bundle=bundle,
        endpoint=endpoint, environment=environment,
    )  # fmt: skip
    hold = 0 if deactivated else gpu_hold(canonical)

    try:
        with transaction.atomic():
            project_lock(project=project)  # a delete of the project waits for this, or this for it
            deployment = ModelDeployment(
                project=project, model=model, pool=pool, bundle=bundle, endpoint=endpoint,
                environment=environment, name=name, description=description,
                state=DeploymentState.DEACTIVATED if deactivated else DeploymentState.PENDING,
                state_reason="Created deactivated: no GPUs held, nothing pushed." if deactivated
                else "Waiting for the push to the compute pool.",
                state_changed_at=timezone.now(), created_by=_user_or_none(user),
            )  # fmt: skip
            deployment.full_clean(validate_constraints=False)
            deployment.save()
            _claim_served_name(deployment, canonical["served_model_name"])
            if not deactivated:
                _reserve(deployment, hold, canonical)
            revision = _new_revision(deployment, canonical, user=user, reason="Created")
            deployment.current_revision = revision
            deployment.save(update_fields=["current_revision"])
            event_record(deployment, reason="Created",
                         message=f"Revision 1 created by {user or 'the system'}: {hold} GPU{'' if hold == 1 else 's'} reserved"
                                 + (" (deactivated)." if deactivated else "."))  # fmt: skip
            if not deactivated:
                _enqueue_push(deployment.pk)
            _audit_deployment(user=user, deployment=deployment, action="create", before=None)
    except IntegrityError:
        # Two creates racing for the same name: the unique constraint decides.
        raise ValidationError({"name": _duplicate_name_message(project, name)}) from None
    log.info("deployment created", extra={"deployment": deployment.pk, "project": project.pk})
    return deployment


def _locked(deployment: ModelDeployment) -> ModelDeployment:
    """The row, locked, with what it points at read after the lock was granted.

    Two statements on purpose: after waiting for a lock, PostgreSQL re-reads only the locked
    row; rows joined in the same statement (the current revision) stay as they were when the
    statement started, so a merge over them silently reverted the other writer's field (20
    concurrent PATCHes lost 7 fields). Under READ COMMITTED the second statement sees it all."""
    ModelDeployment.objects.select_for_update().filter(pk=deployment.pk).values_list("pk").get()
    return (
        ModelDeployment.objects
        .select_related(
            "project", "project__organization", "model", "bundle", "pool", "current_revision",
            "serving_revision",
        )
        .get(pk=deployment.pk)
    )


def _surge_revision(locked: ModelDeployment, pods: int) -> Revision | None:
    """The serving revision whose pods run beside revision-pods ``pods`` (a blue-green rollout
    in progress), whose GPUs the reservation must cover too; None when nothing runs beside."""
    serving = locked.serving_revision
    if locked.state == DeploymentState.DEACTIVATED or serving is None or serving.pods_number() == pods:
        return None
    return serving


def _revise(
    *,
    user: AbstractBaseUser | None,
    deployment: ModelDeployment,
    spec: dict[str, Any] | Callable[[ModelDeployment], dict[str, Any]],
    reason: str,
    action: str = "update",
    update_strategy: str = "blue_green",
) -> Revision:
    """A new revision with a canonical spec: quota re-checked, blue-green push queued.

    ``spec`` may be a function of the locked row: a change merged over the current spec must
    be merged under the lock, or two concurrent PATCHes each revert the other's field.
    ``update_strategy="recreate"``: a change that rolls out stops the serving revision first
    (its GPUs are not held twice; requests are refused until the new revision is ready)."""
    if update_strategy not in UPDATE_STRATEGIES:
        raise ValidationError({"update_strategy": f"Choose one of {', '.join(UPDATE_STRATEGIES)}."})
    with transaction.atomic():
        locked = _locked(deployment)
        before = _deployment_snapshot(locked)
        if locked.state == DeploymentState.DELETING:
            raise ValidationError("This deployment is being deleted.")
        if locked.pool_id is None:  # deployments/external.py owns its changes
            raise ValidationError({"kind": EXTERNAL_ONLY})
        if callable(spec):
            spec = spec(locked)
        current = locked.current_revision
        before_spec = with_bundle_version(current.spec, locked.bundle) if current else None
        if current is not None and before_spec == spec:
            return current  # nothing changed: no revision, no push
        _switch_bundle(locked, spec)
        _check_served_name_free(
            locked.project.organization, spec["served_model_name"], exclude=locked.pk
        )
        _claim_served_name(locked, spec["served_model_name"])
        _check_environment(locked.environment, locked.pool, spec)
        was_serving = locked.serving_revision
        base = current  # the revision whose pods the new one reuses when nothing rolls out
        rollout = current is None or rollout_needed(before_spec, spec)
        if rollout and was_serving is not None and was_serving.pk != current.pk and (
            locked.state != DeploymentState.DEACTIVATED and not rollout_needed(with_bundle_version(was_serving.spec, locked.bundle), spec)
        ):
            # Back to what the serving pods run (a rollback during a rollout that hangs): they
            # take it at once; the unfinished rollout's objects go with the push.
            rollout, base = False, was_serving
        recreate = rollout and update_strategy == "recreate" and was_serving is not None
        last = locked.revisions.order_by("-number").values_list("number", flat=True).first() or 0
        pods = last + 1 if rollout else base.pods_number()
        if recreate:
            locked.serving_revision = None  # the push points the Service at the new revision at once
        if locked.state != DeploymentState.DEACTIVATED:
            # Autoscaled: what runs now (the autoscaler's count within the new [min, max]).
            _reserve(locked, gpu_hold(spec, locked.replicas_wanted(spec)), spec, surge=_surge_revision(locked, pods))
        reason = reason or "Updated"
        if not rollout:
            scaled = rendered_replicas(base.spec) != rendered_replicas(spec)
            how = "scaled in place" if scaled else "no rollout needed"
            if base is not current:
                how = f"revision {base.number}'s pods; revision {current.number} is removed"
            reason = f"{reason[:150]} ({how})"
        elif recreate:
            reason = f"{reason[:170]} (recreate)"
        revision = _new_revision(locked, spec, user=user, reason=reason,
                                 pods_revision=None if rollout else base.pods_number())  # fmt: skip
        locked.current_revision = revision
        updated = ["current_revision", "updated_at", "bundle"]
        serving = locked.serving_revision
        if recreate:
            updated.append("serving_revision")
        elif not rollout and serving is not None and serving.pods_number() == revision.pods_number():
            # Same pods behind the Service: the new revision serves at once (prices and limits
            # reach the gateway on commit); the push only sets the replica count.
            locked.serving_revision = revision
            updated.append("serving_revision")
        locked.save(update_fields=updated)
        if rollout and locked.state != DeploymentState.DEACTIVATED:
            old = locked.state
            if recreate:
                serving_note = f"; revision {was_serving.number} is stopped first: requests are refused until it is ready"
            else:
                serving_note = (
                    f"; revision {serving.number} keeps serving until it is ready" if serving is not None else ""
                )
            state_claim(locked, expect=old, state=DeploymentState.DEPLOYING,
                        reason=f"Rolling out revision {revision.number}{serving_note}.")  # fmt: skip
        elif base is not current or (
            locked.state == DeploymentState.FAILED and locked.state_reason.startswith(UPDATE_FAILED)
        ):
            # Back on the serving pods, or a change after a rolled-back update: the next sync
            # tells the pods' state again.
            state_claim(locked, expect=locked.state, state=DeploymentState.DEPLOYING,
                        reason=f"Applying revision {revision.number} to revision {base.pods_number()}'s pods.")  # fmt: skip
        event_record(locked, reason="RevisionCreated",
                     message=f"Revision {revision.number}: {reason or 'updated'} (by {user or 'the system'}).")  # fmt: skip
        _enqueue_push(locked.pk)
        _audit_deployment(user=user, deployment=locked, action=action, before=before)
        _gateway_forget()
    deployment.refresh_from_db()
    return revision


def deployment_rollout_failed(*, deployment_id: int, revision_id: int, problem: str) -> Revision | None:
    """A rollout failed (image pull error, crash loop, no capacity within the grace, progress
    deadline) while the serving revision still answers: roll back by itself.

    The serving revision's spec becomes a new revision on the same pods (nothing rolls out; the
    push removes the failed revision's objects), the reservation drops the surge, and the
    deployment reads "Update failed: <reason>; revision N still serving" (Failed, still served)
    until the next change; the failed revision stays in the history, to retry (roll back to it)
    once fixed. Only while that revision is still the current one: a newer change wins.
    Returns the new revision, or None when there was nothing to roll back."""
    with transaction.atomic():
        row = ModelDeployment.objects.filter(pk=deployment_id).first()
        if row is None:
            return None
        locked = _locked(row)
        failed, serving = locked.current_revision, locked.serving_revision
        if (
            failed is None or failed.pk != revision_id or serving is None
            or serving.pods_number() == failed.pods_number()
            or locked.state in (DeploymentState.DEACTIVATED, DeploymentState.DELETING)
        ):  # fmt: skip
            return None
        before = _deployment_snapshot(locked)
        problem = problem.strip().rstrip(".")
        message = f"{UPDATE_FAILED}{problem}; revision {serving.number} still serving."
        revision = _new_revision(locked, serving.spec, user=None,
                                 reason=f"Automatic rollback: revision {failed.number} failed",
                                 pods_revision=serving.pods_number())  # fmt: skip
        _claim_served_name(locked, serving.spec["served_model_name"])
        _switch_bundle(locked, serving.spec)  # back to the bundle version the serving pods run
        try:
            _reserve(locked, gpu_hold(serving.spec, locked.replicas_wanted(serving.spec)))  # the surge goes
        except ValidationError:
            pass  # held from before the surge rule and grown meanwhile: keep what is held
        locked.current_revision = locked.serving_revision = revision
        locked.save(update_fields=["current_revision", "serving_revision", "updated_at", "bundle"])
        state_claim(locked, expect=locked.state, state=DeploymentState.FAILED, reason=message)
        event_record(locked, reason="RolloutFailed", type="Warning",
                     message=f"Revision {failed.number} failed: {problem}")  # fmt: skip
        event_record(locked, reason="RolledBack", type="Warning",
                     message=f"{message} Revision {failed.number}'s objects are removed; roll back to revision "
                             f"{failed.number} to retry it, or update the deployment.")  # fmt: skip
        _enqueue_push(locked.pk)
        _audit_deployment(user=None, deployment=locked, action="rollback", before=before)
        _gateway_forget()
    log.info("rollout failed, rolled back", extra={"deployment": deployment_id, "revision": failed.number})
    return revision


def deployment_rollout_done(*, deployment_id: int) -> None:
    """Traffic reached the current revision's pods: the serving revision's surge is released
    (the reservation shrinks to what the current spec holds)."""
    with transaction.atomic():
        row = ModelDeployment.objects.filter(pk=deployment_id).first()
        if row is None:
            return
        locked = _locked(row)
        if locked.state in (DeploymentState.DEACTIVATED, DeploymentState.DELETING) or locked.current_revision is None:
            return
        if _surge_revision(locked, locked.current_revision.pods_number()) is None:
            spec = locked.current_revision.spec
            _reserve(locked, gpu_hold(spec, locked.replicas_wanted(spec)))


def _refuse_if_managed(user: AbstractBaseUser | None, deployment: ModelDeployment) -> None:
    """A deployment a ModelDeployment resource manages changes only there: its controller (the
    system, ``user=None``) is the one writer, so console, REST and ``apply -f`` are refused."""
    if user is not None and deployment.managed_by_resource:
        raise ValidationError(deployment.managed_message(), code="managed")


EXTERNAL_ONLY = ("An external deployment runs on its owner's infrastructure: it has no replicas, engine or spec "
                 "to change here. Change its URL, API key, overflow, options, rate limits or pricing instead "
                 "(its Edit page; in the API, PATCH external_url, api_key, overflow, options, rate_limits, pricing).")
def _bundle_asked(deployment: ModelDeployment, spec: dict[str, Any]) -> ProfileBundle:
    """The version of the deployment's bundle ``spec`` names (``bundle_version``), else its own."""
    bundle = bundle_of_version(deployment.bundle, spec.get("bundle_version"))
    if bundle is None:
        known = ", ".join(str(v) for v in deployment.bundle.versions().values_list("version", flat=True))
        raise ValidationError(
            {"bundle_version": f"Profile Bundle “{deployment.bundle.name}” has no version "
                               f"{spec.get('bundle_version')} (versions: {known})."}
        )  # fmt: skip
    return bundle


def _switch_bundle(locked: ModelDeployment, spec: dict[str, Any]) -> None:
    """Point the (locked) deployment at the bundle version its new revision runs."""
    bundle = _bundle_asked(locked, spec)
    if bundle.pk == locked.bundle_id:
        return
    if bundle.engine_label() != locked.pool.engine_label:
        raise ValidationError(
            {"bundle_version": f"{bundle} needs a pool with engine label “{bundle.engine_label()}”; "
                               f"“{locked.pool.name}” has “{locked.pool.engine_label}”."}
        )  # fmt: skip
    locked.bundle = bundle


def deployment_update_spec(
    *, deployment: ModelDeployment, spec: dict[str, Any], replace: bool = False
) -> dict[str, Any]:
    """The canonical spec an update to ``spec`` gives, without writing anything: the edit form
    checks with it as the user types, deployment_update saves it. The given keys go over the
    current spec (a new NIM tag moves the image's tag), or with ``replace`` over the defaults.
    ``bundle_version`` moves the deployment to another version of its Profile Bundle (with its
    image, unless the spec chose one) and ``bundle_vars`` sets the bundle's variables."""
    if deployment.pool_id is None:  # deployments/external.py owns its changes
        raise ValidationError({"kind": EXTERNAL_ONLY})
    current = deployment.current_revision.spec if deployment.current_revision else {}
    if not isinstance(spec, dict):
        raise ValidationError({"spec": "The spec must be a mapping."})
    bundle = _bundle_asked(deployment, spec)
    if replace:
        return normalize_spec(merge_spec(default_spec(), spec), bundle=bundle, model=deployment.model)
    merged = merge_spec(current, spec)
    if not isinstance(spec.get("autoscaling"), dict) or "scale_to_zero_after_seconds" not in spec["autoscaling"]:
        # The stored idle window belongs to min 0: a new minimum above 0 drops it (and 0 again
        # brings the default back) instead of refusing the scale.
        if isinstance(merged.get("autoscaling"), dict):
            merged["autoscaling"].pop("scale_to_zero_after_seconds", None)
    if bundle.pk != deployment.bundle_id and "image" not in spec and merged.get("image") == deployment.bundle.image:
        merged["image"] = ""  # the new version's image, as a new deployment would get
    if deployment.model.source == "ngc" and spec.get("nim_tag") and "image" not in spec:
        merged["image"] = image_with_tag(current.get("image", ""), str(spec["nim_tag"]))
    return normalize_spec(merged, bundle=bundle, model=deployment.model)


def deployment_update(
    *,
    user: AbstractBaseUser | None,
    deployment: ModelDeployment,
    spec: dict[str, Any],
    reason: str = "",
    model: CatalogModel | None = None,
    replace: bool = False,
    update_strategy: str = "blue_green",
) -> Revision:
    """Change the spec (given keys replace the current ones); blue-green: the new revision
    serves only once it is ready (``update_strategy="recreate"``: the old one stops first).
    The model itself can't change in place."""
    permissions.require(user, "change", deployment)
    _refuse_if_managed(user, deployment)
    if model is not None and model.pk != deployment.model_id:
        raise ValidationError(
            {"model": f"A deployment's model can't be changed in place ({deployment.model} → {model}); "
                      "create a new deployment for the new model and delete this one when it serves."}
        )  # fmt: skip
    # Checked once outside the lock so bad input fails fast, then merged again under it.
    deployment_update_spec(deployment=deployment, spec=spec, replace=replace)
    return _revise(
        user=user, deployment=deployment, reason=reason or "Spec updated", update_strategy=update_strategy,
        spec=lambda locked: deployment_update_spec(deployment=locked, spec=spec, replace=replace),
    )  # fmt: skip


def _bundle_view(bundle: ProfileBundle, spec: dict[str, Any]) -> dict[str, Any]:
    """What a bundle version puts into the pods, for the change preview."""
    return {
        "bundle": str(bundle), "image": spec.get("image"), "bundle_args": " ".join(map(str, bundle.default_args or [])),
        "variables": bundle_variables(bundle, spec) or None,
    }  # fmt: skip


def deployment_bundle_plan(
    *, deployment: ModelDeployment, version: int | None = None, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The spec and the field-by-field changes a bundle version / variables change would make,
    without writing anything: the deployment page shows it before the rollout, the REST API
    answers it for a dry run. ``variables`` replace the deployment's whole set (empty: defaults)."""
    change: dict[str, Any] = {"bundle_vars": dict(variables or {})}
    if version is not None:
        change["bundle_version"] = version
    spec = deployment_update_spec(deployment=deployment, spec=change)
    bundle = _bundle_asked(deployment, spec)
    current = with_bundle_version(deployment.current_revision.spec, deployment.bundle)
    before = _bundle_view(deployment.bundle, current)
    return {
        "bundle": bundle, "spec": spec, "change": change,
        "changes": changes(before, _bundle_view(bundle, spec)),
        "rollout": rollout_needed(current, spec),
    }  # fmt: skip


def deployment_bundle_change(
    *, user: AbstractBaseUser | None, deployment: ModelDeployment, version: int | None = None,
    variables: dict[str, Any] | None = None, reason: str = "",
) -> Revision:
    """Move the deployment to another version of its Profile Bundle and/or set the bundle's
    variables: a new revision through deployment_update, rolled out blue-green."""
    permissions.require(user, "change", deployment)
    plan = deployment_bundle_plan(deployment=deployment, version=version, variables=variables)
    what = ", ".join(c["field"] for c in plan["changes"]) or "nothing"
    return deployment_update(user=user, deployment=deployment, spec=plan["change"],
                             reason=reason or f"Bundle {plan['bundle']}: {what} changed")  # fmt: skip


def deployment_set_nim_tag(
    *, user: AbstractBaseUser | None, deployment: ModelDeployment, tag: str
) -> Revision:
    """Move a NIM deployment to another image tag in place (a new revision, blue-green)."""
    permissions.require(user, "change", deployment)
    _refuse_if_managed(user, deployment)
    tag = (tag or "").strip()
    if deployment.model.source != "ngc":
        raise ValidationError(
            {
                "nim_tag": "Only NIM models from NGC have tags; for other models create a new deployment."
            }
        )
    if not _TAG.match(tag):
        raise ValidationError({"nim_tag": "Enter an image tag such as 1.3.0."})
    known = deployment.model.ngc_tags or []
    if known and tag not in known:
        raise ValidationError(
            {
                "nim_tag": f"NGC lists no tag {tag} for this NIM; known tags: {', '.join(known[:10])}."
            }
        )
    if image_tag(deployment.current_revision.spec["image"]) == tag:
        return deployment.current_revision

    def retagged(locked: ModelDeployment) -> dict[str, Any]:
        spec = dict(locked.current_revision.spec)
        spec["image"] = image_with_tag(spec["image"], tag)
        spec["nim_tag"] = tag
        return normalize_spec(spec, bundle=locked.bundle, model=locked.model)

    return _revise(user=user, deployment=deployment, spec=retagged, reason=f"NIM tag {tag}")


def deployment_rollback(
    *, user: AbstractBaseUser | None, deployment: ModelDeployment, revision_number: int,
    update_strategy: str = "blue_green",
) -> Revision:
    """Re-apply an old revision's spec as a new revision (also how a failed, rolled-back
    revision is retried)."""
    permissions.require(user, "change", deployment)
    _refuse_if_managed(user, deployment)
    old = deployment.revisions.filter(number=revision_number).first()
    if old is None:
        raise ValidationError(
            {"revision_number": f"This deployment has no revision {revision_number}."}
        )
    if deployment.current_revision_id == old.pk:
        raise ValidationError(
            {"revision_number": f"Revision {revision_number} is already the current one."}
        )
    return _revise(
        user=user,
        deployment=deployment,
        spec=old.spec,
        reason=f"Rollback to revision {revision_number}",
        action="rollback",
        update_strategy=update_strategy,
    )


def deployment_deactivate(
    *, user: AbstractBaseUser | None, deployment: ModelDeployment
) -> ModelDeployment:
    """Scale to zero and give the GPUs back to the quota; the spec and the Service stay."""
    permissions.require(user, "deactivate", deployment)
    _refuse_if_managed(user, deployment)
    with transaction.atomic():
        locked = _locked(deployment)
        before = _deployment_snapshot(locked)
        if locked.state == DeploymentState.DEACTIVATED:
            return locked
        if not state_claim(locked, expect=ACTIVE_STATES, state=DeploymentState.DEACTIVATED,
                           reason="Deactivated: scaled to zero, GPUs released."):  # fmt: skip
            raise ValidationError(
                f"A deployment that is {locked.get_state_display().lower()} can't be deactivated."
            )
        quota_reserve(project=locked.project, holder=locked.gpu_holder(), gpus=0, **RELEASE_ALL)
        event_record(
            locked,
            reason="Deactivated",
            message=f"Scaled to zero by {user or 'the system'}; GPUs released.",
        )
        _enqueue_push(locked.pk)
        _audit_deployment(user=user, deployment=locked, action="deactivate", before=before)
        _gateway_forget()
    deployment.refresh_from_db()
    return deployment


def deployment_activate(
    *, user: AbstractBaseUser | None, deployment: ModelDeployment
) -> ModelDeployment:
    """Reserve the GPUs again (quota checked) and scale back up."""
    permissions.require(user, "deactivate", deployment)
    _refuse_if_managed(user, deployment)
    with transaction.atomic():
        locked = _locked(deployment)
        before = _deployment_snapshot(locked)
        if locked.state != DeploymentState.DEACTIVATED:
            raise ValidationError("Only a deactivated deployment can be activated.")
        gpus = gpu_hold(locked.current_revision.spec)  # autoscaled: starts again at its minimum
        _reserve(locked, gpus, locked.current_revision.spec)
        DeploymentScale.objects.filter(deployment=locked).update(desired=None, low_since=None, idle_since=None)
        state_claim(locked, expect=DeploymentState.DEACTIVATED, state=DeploymentState.PENDING,
                    reason="Activated: scaling up.")  # fmt: skip
        event_record(
            locked,
            reason="Activated",
            message=f"Activated by {user or 'the system'}: {gpus} GPU{'' if gpus == 1 else 's'} reserved.",
        )
        _enqueue_push(locked.pk)
        _audit_deployment(user=user, deployment=locked, action="activate", before=before)
        _gateway_forget()
    deployment.refresh_from_db()
    return deployment


def deployment_retry(
    *, user: AbstractBaseUser | None, deployment: ModelDeployment
) -> ModelDeployment:
    """Push a failed deployment's current revision again, as it is: after what made it fail was
    fixed outside its spec (the pool's credentials, a node with room, an image pushed since). Its
    GPUs are still held; the status sync decides again from what the pool then shows."""
    permissions.require(user, "change", deployment)
    _refuse_if_managed(user, deployment)
    with transaction.atomic():
        locked = _locked(deployment)
        before = _deployment_snapshot(locked)
        number = locked.current_revision.number if locked.current_revision else None
        if locked.pool_id is None:
            raise ValidationError("An external deployment runs nothing here to apply again; its health check retries by itself.")
        if locked.state == DeploymentState.FAILED and locked.state_reason.startswith(UPDATE_FAILED):
            raise ValidationError(
                "Its update failed and was rolled back: the deployment still answers. Retry the failed "
                "revision with Roll back to it, or fix it with Update."
            )
        if number is None or not state_claim(
            locked, expect=DeploymentState.FAILED, state=DeploymentState.PENDING,
            reason=f"Retrying revision {number}: applying it again.",
        ):  # fmt: skip
            raise ValidationError(
                f"Only a failed deployment can be retried; this one is {locked.get_state_display().lower()}."
            )
        event_record(locked, reason="Retried", message=f"Revision {number} applied again by {user or 'the system'}.")
        _enqueue_push(locked.pk)
        _audit_deployment(user=user, deployment=locked, action="retry", before=before)
        _gateway_forget()
    deployment.refresh_from_db()
    return deployment


def deployment_delete(
    *, user: AbstractBaseUser | None, deployment: ModelDeployment
) -> ModelDeployment:
    """Mark for deletion; the push task deletes the pool's objects and then the row."""
    permissions.require(user, "delete", deployment)
    _refuse_if_managed(user, deployment)
    with transaction.atomic():
        locked = _locked(deployment)
        before = _deployment_snapshot(locked)
        if locked.state != DeploymentState.DELETING:
            state_claim(locked, expect=locked.state, state=DeploymentState.DELETING,
                        reason="Deleting the deployment's objects from the compute pool.")  # fmt: skip
            event_record(
                locked, reason="Deleting", message=f"Deletion requested by {user or 'the system'}."
            )
            _audit_deployment(user=user, deployment=locked, action="delete", before=before)
            _gateway_forget()
        _enqueue_push(locked.pk)
    return locked


def deployment_finish_delete(deployment_id: int) -> bool:
    """The pool holds nothing of the deployment any more: release its GPUs and remove the row."""
    with transaction.atomic():
        locked = (
            ModelDeployment.objects.select_for_update()
            .filter(pk=deployment_id, state=DeploymentState.DELETING)
            .first()
        )
        if locked is None:
            return False
        quota_reserve(project=locked.project, holder=locked.gpu_holder(), gpus=0, **RELEASE_ALL)
        locked.delete()
    return True


def deployment_engine_credential(*, deployment: ModelDeployment) -> str:
    """The deployment's engine credential, made once (the engine requires it; the gateway sends it).

    Stored encrypted; concurrent pushes agree on one value: the first writer wins, the others
    read it back.
    """
    import secrets

    if deployment.engine_credential:
        return deployment.engine_credential
    value = secrets.token_urlsafe(32)  # URL-safe: goes into a header and the proxy's config as is
    with transaction.atomic():
        locked = ModelDeployment.objects.select_for_update().get(pk=deployment.pk)
        if not locked.engine_credential:
            locked.engine_credential = value
            locked.save(update_fields=["engine_credential"])
            _gateway_forget()
        deployment.engine_credential = locked.engine_credential
    return deployment.engine_credential
