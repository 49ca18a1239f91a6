"""The gateway's database reads (only on a cache miss): an API key by hash, an organization's deployments."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import close_old_connections, connection
from django.db.models import Exists, OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce

from deployments.external import base_url, external_url_refusal
from deployments.models import DeploymentEvent, DeploymentState, Endpoint, ModelDeployment
from deployments.spec import autoscaled
from gateway.cache import (
    DeploymentInfo,
    KeyInfo,
    local_user_generation,
    sync_redis,
    user_generation_key,
)
from gateway.models import UsageRecord
from gateway.ratelimit import Budget, budgets_for
from gateway.upstream import upstream_for
from gateway.usage import price
from projects.models import APIKey, APIKeyScope, Membership
from sharing import access
from sharing.selectors import public_deployments, shared_deployments_for_org

_redis_lock = threading.Lock()
_redis_clients: dict[str, object] = {}


def load_key(digest: str) -> KeyInfo | None:
    close_old_connections()
    try:
        return _load_key(digest)
    finally:
        # Worker threads outlive requests; misses are rare, so don't keep a connection per thread.
        connection.close()


def load_month_spend(budgets: tuple[Budget, ...], month: str) -> list[Decimal]:
    """Each budget's spend in `month` ("2026-11", UTC) from the usage records, in its currency: what
    seeds a counter Redis lost (a restart) or never held (a budget set this month). One query each."""
    close_old_connections()
    try:
        start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
        end = (start + timedelta(days=32)).replace(day=1)
        records = UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end)
        spent = []
        for budget in budgets:
            if budget.level == "organization":
                mine = records.filter(organization_id=int(budget.ident))
            elif budget.level == "user":  # "<organization>.<user>": their spend in that organization
                organization_id, user_id = (int(part) for part in str(budget.ident).split("."))
                mine = records.filter(organization_id=organization_id, user_id=user_id)
            else:
                mine = records.filter(api_key_id=int(budget.ident))
            total = mine.filter(currency=budget.currency).aggregate(s=Coalesce(Sum("cost"), Decimal(0)))["s"]
            spent.append(total)
        return spent
    finally:
        connection.close()


def _user_generation(user_id: int) -> str:
    """The owner's generation in Redis (see gateway.cache), "" without Redis."""
    if not settings.REDIS_URL:
        return ""
    with _redis_lock:
        client = _redis_clients.get(settings.REDIS_URL)
        if client is None:
            client = _redis_clients[settings.REDIS_URL] = sync_redis()
    value = client.get(user_generation_key(user_id))
    return value.decode() if value else "0"


def _load_key(digest: str) -> KeyInfo | None:
    # The owner never changes, so it can be read first; the generations are read next and
    # everything that can change after that (revocation, membership, activity, groups): a
    # change committed after these reads bumps a generation this row is then filed under.
    user_id = APIKey.objects.filter(key_hash=digest).values_list("user_id", flat=True).first()
    if user_id is None:
        return None
    local = local_user_generation(user_id)
    generation = _user_generation(user_id)
    key = (
        APIKey.objects.filter(key_hash=digest)
        .select_related("user", "organization")
        .annotate(
            owner_is_member=Exists(
                Membership.objects.filter(user_id=OuterRef("user_id"), organization_id=OuterRef("organization_id"))
            ),
            member_budget=Subquery(
                Membership.objects.filter(
                    user_id=OuterRef("user_id"), organization_id=OuterRef("organization_id")
                ).values("monthly_budget")[:1]
            ),
        )
        .first()
    )
    if key is None:  # deleted in between (its owner was deleted)
        return None
    refusal = ""
    if not key.user.is_active:
        refusal = "its owner's account is deactivated"
    elif not key.owner_is_member:
        refusal = "its owner is no longer a member of the organization"
    elif key.scope != APIKeyScope.GATEWAY:
        refusal = "it is a REST API key; create a gateway key to call models"
    return KeyInfo(
        id=key.pk,
        prefix=key.prefix,
        organization_id=key.organization_id,
        user_id=key.user_id,
        expires_at=key.expires_at,
        revoked=key.revoked_at is not None,
        deployment_ids=frozenset(key.deployments.values_list("pk", flat=True)),
        group_ids=frozenset(key.user.groups.values_list("pk", flat=True)),
        refusal=refusal,
        user_generation=generation,
        local_user_generation=local,
        # Budgets are read with the row: changing one bumps the owner's generation on commit
        # (projects.services.budget_set), like every other change to what the key may do.
        budgets=budgets_for(
            organization_id=key.organization_id, user_id=key.user_id, api_key_id=key.pk,
            organization=key.organization.monthly_budget, user=key.member_budget,
            api_key=key.monthly_budget, currency=key.organization.budget_currency,
        ),  # fmt: skip
    )


AMBIGUOUS = "ambiguous"


def load_public_caller(model: str) -> KeyInfo | str | None:
    """The caller a keyless request to a public deployment acts as, or None / AMBIGUOUS.

    Served model names are unique per organization only, so without a key a name can match
    public deployments of several organizations: then the caller must send a key. The caller is
    anonymous (no user, no key; ids 0 share one rate-limit bucket) and billed to the owner.
    """
    close_old_connections()
    try:

        rows = list(public_deployments(model).values_list("pk", "project__organization_id")[:2])
    finally:
        connection.close()
    if not rows:
        return None
    if len(rows) > 1:
        return AMBIGUOUS
    deployment_id, organization_id = rows[0]
    return KeyInfo(
        id=0, prefix="public", organization_id=organization_id, user_id=0, expires_at=None,
        revoked=False, deployment_ids=frozenset({deployment_id}),
    )  # fmt: skip


def load_deployments(organization_id: int) -> dict[str, DeploymentInfo]:
    """The organization's deployments by served model name (one query)."""
    close_old_connections()
    try:
        return _load_deployments(organization_id)
    finally:
        connection.close()


def _load_deployments(organization_id: int) -> dict[str, DeploymentInfo]:
    own = list(
        ModelDeployment.objects.filter(project__organization_id=organization_id)
        .select_related("current_revision", "pool", "project__organization", "endpoint", *OVERFLOW_RELATED)
        .order_by("pk")
    )
    shared = list(
        shared_deployments_for_org(organization_id)
        .select_related("current_revision", "pool", "project__organization", "endpoint", *OVERFLOW_RELATED)
        .order_by("pk")
    )
    snapshot = access.policy_snapshot([d.pk for d in own + shared])
    ran = _ever_ran([d.pk for d in own + shared] + [d.overflow_id for d in own + shared if d.overflow_id])
    by_name: dict[str, DeploymentInfo] = {}
    for row in own:
        _add(by_name, _info(row, organization_id, snapshot, ran))
    # A shared deployment is reachable by its name unless the caller's own organization uses it.
    for row in shared:
        info = _info(row, organization_id, snapshot, ran)
        if info.served_model_name not in by_name:
            by_name[info.served_model_name] = info
    return by_name


def _ever_ran(ids: list[int]) -> set[int]:
    """Deployments that have been Running at least once (their "Running" event): a revision of
    theirs has been ready behind the Service. A first rollout points the Service at its revision
    before any pod is ready, so serving_revision alone doesn't tell (one query)."""
    if not ids:
        return set()
    rows = DeploymentEvent.objects.filter(deployment_id__in=ids, reason="Running")
    return set(rows.values_list("deployment_id", flat=True).distinct())


# An external deployment's overflow target is read in the same query.
OVERFLOW_RELATED = ("overflow__current_revision", "overflow__pool", "overflow__project__organization")


def _info(
    row: ModelDeployment, organization_id: int, snapshot: dict[int, dict], ran: set[int]
) -> DeploymentInfo:
    spec = row.spec()
    pricing = spec.get("pricing") or {}
    if row.is_external:
        return _external_info(row, organization_id, snapshot, ran)
    upstream = upstream_for(row)
    return DeploymentInfo(
        id=row.pk,
        name=row.name,
        organization_id=organization_id,
        served_model_name=row.served_name(),
        engine=spec.get("engine", ""),
        state=row.state,
        upstream=upstream.base,
        upstream_host=upstream.host,
        upstream_credential=row.engine_credential or "",
        public_only=row.pool.needs_public_address(),
        endpoint_path=row.endpoint.path.rstrip("/") if row.endpoint_id else "",
        rate_limits=spec.get("rate_limits") or {},
        currency=(pricing.get("currency") or "USD")[:3],
        input_per_million=price(pricing.get("input_per_million")),
        output_per_million=price(pricing.get("output_per_million")),
        created=int(row.created_at.timestamp()),
        sandbox=row.pool.is_sandbox,
        owner_organization_id=row.project.organization_id,
        policy=snapshot.get(row.pk),
        serving_revision_id=(
            row.serving_revision_id or 0
            if row.state == DeploymentState.RUNNING or row.pk in ran
            else 0
        ),
        cold_start_hold_seconds=cold_start_hold(spec),
        autoscaled=autoscaled(spec),
    )


def cold_start_hold(spec: dict) -> int:
    """Seconds the gateway holds a request while the deployment scales up from zero (0: never)."""
    auto, replicas = spec.get("autoscaling") or {}, spec.get("replicas") or {}
    if not auto.get("enabled") or replicas.get("min") != 0:
        return 0
    return int(auto.get("cold_start_hold_seconds") or 0)


def _external_info(
    row: ModelDeployment, organization_id: int, snapshot: dict[int, dict], ran: set[int]
) -> DeploymentInfo:
    """The external URL as the upstream (checked again here: a name may resolve elsewhere now),
    the overflow deployment as a nested info (gateway/overflow.py)."""
    spec = row.spec()
    pricing = spec.get("pricing") or {}
    refused = bool(external_url_refusal(row.external_url))
    target = row.overflow
    overflow = None
    if target is not None and not target.is_external and target.pool_id:
        overflow = _info(target, organization_id, snapshot, ran)
    return DeploymentInfo(
        id=row.pk, name=row.name, organization_id=organization_id,
        served_model_name=row.served_name(), state=row.state,
        # A refused address is never called: an unroutable upstream fails over (or answers 502).
        upstream="http://0.0.0.0:9" if refused else base_url(row.external_url)[: -len("/v1")],
        upstream_credential=row.external_credential or "",
        endpoint_path=row.endpoint.path.rstrip("/") if row.endpoint_id else "",
        rate_limits=spec.get("rate_limits") or {}, currency=(pricing.get("currency") or "USD")[:3],
        input_per_million=price(pricing.get("input_per_million")),
        output_per_million=price(pricing.get("output_per_million")),
        created=int(row.created_at.timestamp()), owner_organization_id=row.project.organization_id,
        policy=snapshot.get(row.pk),
        serving_revision_id=row.serving_revision_id or 0 if row.state == DeploymentState.RUNNING else 0,
        external=True, external_options=spec.get("external") or {}, overflow=overflow,
        health=row.health, health_detail=row.health_detail,
        health_checked_at=row.health_checked_at.timestamp() if row.health_checked_at else 0.0,
    )  # fmt: skip


def _add(by_name: dict[str, DeploymentInfo], info: DeploymentInfo) -> None:
    # Names are unique per organization; if a stale row shares one, the running one wins.
    current = by_name.get(info.served_model_name)
    if current is None or (
        current.state != DeploymentState.RUNNING and info.state == DeploymentState.RUNNING
    ):
        by_name[info.served_model_name] = info


def load_endpoint_paths() -> frozenset[str]:
    """Every Endpoint path (any organization): which `<path>/v1/...` URLs are the gateway's."""
    close_old_connections()
    try:
        return frozenset(
            p.rstrip("/") for p in Endpoint.objects.values_list("path", flat=True).distinct() if p.strip("/")
        )
    finally:
        connection.close()
