"""Environment policies and the deployment-level policies that narrow them, checked against a spec.

Intersection semantics: a deployment-level policy of the same type can only narrow the
environment's — allowed sets intersect, maxima take the smaller value — never widen it.
An empty allowed set means "any" on either side.

``deployment_policies`` is a plain dict with any of these keys (others are ignored):
``{"allowed_pools": [pool names or ids], "allowed_pool_labels": {"region": ["us-east-1"]},
"allowed_gpu_types": ["A100"], "max_replicas": 2, "max_gpus_per_replica": 1}`` — the spec's
``policies`` field (deployments.spec checks its shape). A deployment policy that would widen its
environment's is refused at save time (``widenings``), naming the rule; the intersection below
keeps it harmless anywhere else (a promotion checks the target environment).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db.models import Q

from console.ids import is_digits, parse_id
from deployments.models import ComputePool

DEPLOYMENT_SOURCE = "The deployment's policy"


def deployment_source(rule: str) -> str:
    """Who set a rule, naming it: “The deployment's policy max_replicas”."""
    return f"{DEPLOYMENT_SOURCE} {rule}"


@dataclass(frozen=True)
class Violation:
    policy: str  # which rule: max_replicas, max_gpus_per_replica, allowed_gpu_types, allowed_pools, allowed_pool_labels
    message: str


@dataclass(frozen=True)
class Rule:
    """One effective rule and who set it (named in refusal messages)."""

    value: Any  # frozenset for allowed sets, int for maxima; None = no limit
    source: str


@dataclass
class EffectivePolicy:
    allowed_pools: Rule = field(default_factory=lambda: Rule(None, ""))
    allowed_gpu_types: Rule = field(default_factory=lambda: Rule(None, ""))
    max_replicas: Rule = field(default_factory=lambda: Rule(None, ""))
    max_gpus_per_replica: Rule = field(default_factory=lambda: Rule(None, ""))
    # label → Rule(frozenset of allowed values)
    allowed_pool_labels: dict[str, Rule] = field(default_factory=dict)

    def as_dict(self) -> dict:
        def plain(rule: Rule) -> Any:
            return sorted(rule.value, key=str) if isinstance(rule.value, frozenset) else rule.value

        return {
            "allowed_pools": plain(self.allowed_pools),
            "allowed_gpu_types": plain(self.allowed_gpu_types),
            "max_replicas": plain(self.max_replicas),
            "max_gpus_per_replica": plain(self.max_gpus_per_replica),
            "allowed_pool_labels": {k: plain(r) for k, r in self.allowed_pool_labels.items()},
        }


def environment_source(environment: Any) -> str:
    return f"Environment “{environment.name}”"


def _as_set(values: Any) -> frozenset | None:
    if values is None:
        return None
    items = frozenset(str(v) if not isinstance(v, int) else v for v in values)
    return items or None  # empty = any


def _narrow_set(current: Rule, values: Any, source: str) -> Rule:
    wanted = _as_set(values)
    if wanted is None:
        return current
    if current.value is None:
        return Rule(wanted, source)
    narrowed = current.value & wanted
    # The deployment named the binding set only if it actually removed something.
    return Rule(narrowed, source if narrowed != current.value else current.source)


def _narrow_max(current: Rule, value: Any, source: str) -> Rule:
    if value is None or value == "":
        return current
    value = int(value)
    if current.value is None or value < current.value:
        return Rule(value, source)
    return current


def _environment_pool_ids(environment: Any) -> list[int]:
    if environment is None or environment.pk is None:
        return []
    return list(environment.allowed_pools.values_list("pk", flat=True))


def _pool_ids(values: Any, organization: Any) -> list[int] | None:
    """Pool ids for a deployment policy's pools, given by id or by name (names are looked up in
    ``organization``; an unknown name matches no pool)."""
    if not values:
        return None
    ids = [pk for pk in map(parse_id, values) if pk is not None]
    names = [v for v in values if isinstance(v, str) and not is_digits(v)]
    if organization is None:
        return ids or [0]
    found = ComputePool.objects.filter(organization=organization).filter(
        Q(pk__in=ids) | Q(name__in=names)
    )
    return list(found.values_list("pk", flat=True)) or [0]  # nothing matched: no pool, not "any"


def effective_policy(
    environment: Any, deployment_policies: dict | None = None, *, organization: Any = None
) -> EffectivePolicy:
    """The rules a deployment in ``environment`` must keep, narrowed by its own policies."""
    if organization is None and environment is not None and environment.pk is not None:
        organization = environment.project.organization
    policy = EffectivePolicy()
    if environment is not None:
        src = environment_source(environment)
        policy.allowed_pools = _narrow_set(
            policy.allowed_pools, _environment_pool_ids(environment), src
        )
        policy.allowed_gpu_types = _narrow_set(
            policy.allowed_gpu_types, environment.allowed_gpu_types, src
        )
        policy.max_replicas = _narrow_max(policy.max_replicas, environment.max_replicas, src)
        policy.max_gpus_per_replica = _narrow_max(
            policy.max_gpus_per_replica, environment.max_gpus_per_replica, src
        )
        for label, values in (environment.allowed_pool_labels or {}).items():
            policy.allowed_pool_labels[label] = _narrow_set(Rule(None, ""), _listify(values), src)
    dep = deployment_policies or {}
    src = deployment_source
    dep_pools = _pool_ids(dep.get("allowed_pools"), organization)
    policy.allowed_pools = _narrow_set(policy.allowed_pools, dep_pools, src("allowed_pools"))
    policy.allowed_gpu_types = _narrow_set(
        policy.allowed_gpu_types, dep.get("allowed_gpu_types"), src("allowed_gpu_types")
    )
    policy.max_replicas = _narrow_max(
        policy.max_replicas, dep.get("max_replicas"), src("max_replicas")
    )
    policy.max_gpus_per_replica = _narrow_max(
        policy.max_gpus_per_replica, dep.get("max_gpus_per_replica"), src("max_gpus_per_replica")
    )
    for label, values in (dep.get("allowed_pool_labels") or {}).items():
        current = policy.allowed_pool_labels.get(label, Rule(None, ""))
        policy.allowed_pool_labels[label] = _narrow_set(
            current, _listify(values), src("allowed_pool_labels")
        )
    return policy


def widenings(
    *, environment: Any, deployment_policies: dict | None, organization: Any = None
) -> list[Violation]:
    """Each deployment rule that asks for more than its environment allows, named: a deployment
    policy narrows its environment's, never widens it (refused at save time)."""
    dep = deployment_policies or {}
    if environment is None or not dep:
        return []
    env = effective_policy(environment, None, organization=organization)
    src = environment_source(environment)
    out: list[Violation] = []
    for rule in ("max_replicas", "max_gpus_per_replica"):
        limit, wanted = getattr(env, rule).value, dep.get(rule)
        if limit is not None and wanted not in (None, "") and int(wanted) > limit:
            out.append(Violation(rule, f"{deployment_source(rule)} ({wanted}) would widen {src}, "
                                       f"which allows at most {limit}; a deployment policy can only narrow."))  # fmt: skip
    allowed = env.allowed_gpu_types.value
    extra = sorted(set(_listify(dep.get("allowed_gpu_types"))) - set(allowed or ()))
    if allowed is not None and extra:
        out.append(Violation("allowed_gpu_types", f"{deployment_source('allowed_gpu_types')} lists "
                             f"{', '.join(extra)}, which {src} does not allow (only {_names(allowed)}); "
                             "a deployment policy can only narrow."))  # fmt: skip
    allowed = env.allowed_pools.value
    if allowed is not None and dep.get("allowed_pools"):
        org = organization or environment.project.organization
        outside = []
        for value in dep["allowed_pools"]:
            ids = _pool_ids([value], org) or []
            if not set(ids) & set(allowed):
                outside.append(str(value))
        if outside:
            out.append(Violation("allowed_pools", f"{deployment_source('allowed_pools')} lists "
                                 f"{', '.join(outside)}, which {src} does not allow (only "
                                 f"{_pool_names(allowed)}); a deployment policy can only narrow."))  # fmt: skip
    for label, values in sorted((dep.get("allowed_pool_labels") or {}).items()):
        rule = env.allowed_pool_labels.get(label)
        extra = sorted(set(_listify(values)) - set(rule.value or ())) if rule else []
        if rule is not None and rule.value is not None and extra:
            out.append(Violation("allowed_pool_labels", f"{deployment_source('allowed_pool_labels')} "
                                 f"lists {label} {', '.join(extra)}, which {src} does not allow "
                                 f"(only {_names(rule.value)}); a deployment policy can only narrow."))  # fmt: skip
    return out


def _listify(values: Any) -> list:
    if isinstance(values, str):
        return [values]
    return list(values or [])


def _names(values: frozenset) -> str:
    if not values:
        return "nothing (the policies leave no choice)"
    return ", ".join(sorted(str(v) for v in values))


def _pool_label(pool: Any, label: str) -> str:
    if label == "engine":
        label = "engine_label"
    value = getattr(pool, label, None)
    if value is None:
        # Labels other than pool attributes come from the pool's last check (node labels).
        value = (getattr(pool, "last_check", None) or {}).get("labels", {}).get(label, "")
    return str(value)


def check_spec(
    *, environment: Any, deployment_policies: dict | None, pool: Any, spec: dict
) -> list[Violation]:
    """Every rule the spec (on ``pool``) breaks, each message naming the rule and its owner."""
    organization = getattr(pool, "organization", None) if pool is not None else None
    policy = effective_policy(environment, deployment_policies, organization=organization)
    violations: list[Violation] = []
    replicas = (spec.get("replicas") or {}).get("max")
    resources = spec.get("resources") or {}
    gpus = resources.get("gpus")
    gpu_type = (resources.get("gpu_type") or "").strip()
    # Several GPU flavors: every one the pods may land on must be allowed.
    gpu_types = [t for t in resources.get("gpu_types") or [] if t] or [gpu_type]

    rule = policy.max_replicas
    if rule.value is not None and replicas is not None and int(replicas) > rule.value:
        violations.append(
            Violation(
                "max_replicas",
                f"{rule.source} allows at most {rule.value} replica{'s' if rule.value != 1 else ''}; "
                f"the spec asks for {replicas}.",
            )
        )
    rule = policy.max_gpus_per_replica
    if rule.value is not None and gpus is not None and int(gpus) > rule.value:
        violations.append(
            Violation(
                "max_gpus_per_replica",
                f"{rule.source} allows at most {rule.value} GPU{'s' if rule.value != 1 else ''} per replica; "
                f"the spec asks for {gpus}.",
            )
        )
    rule = policy.allowed_gpu_types
    outside = [t for t in gpu_types if t not in (rule.value or ())]
    if rule.value is not None and (gpus or 0) > 0 and outside:
        asked = f"“{outside[0]}”" if outside[0] else "no particular GPU type"
        violations.append(
            Violation(
                "allowed_gpu_types",
                f"{rule.source} allows only GPU types {_names(rule.value)}; the spec asks for {asked}.",
            )
        )
    if pool is not None:
        rule = policy.allowed_pools
        if rule.value is not None and pool.pk not in rule.value:
            names = _pool_names(rule.value)
            violations.append(
                Violation(
                    "allowed_pools",
                    f"{rule.source} allows only the compute pools {names}; “{pool.name}” is not one of them.",
                )
            )
        for label, rule in sorted(policy.allowed_pool_labels.items()):
            if rule.value is None:
                continue
            have = _pool_label(pool, label)
            if have not in rule.value:
                violations.append(
                    Violation(
                        "allowed_pool_labels",
                        f"{rule.source} allows only pools with {label} {_names(rule.value)}; "
                        f"“{pool.name}” has {label} “{have or 'unset'}”.",
                    )
                )
    return violations


def _pool_names(pool_ids: frozenset) -> str:
    if not pool_ids:
        return _names(pool_ids)

    names = ComputePool.objects.filter(pk__in=pool_ids).values_list("name", flat=True)
    return ", ".join(f"“{n}”" for n in sorted(names)) or "(deleted pools)"


# The spec field each rule is about, so a refusal lands on the right form field / API key.
FIELD_FOR_POLICY = {
    "max_replicas": "replicas.max",
    "max_gpus_per_replica": "resources.gpus",
    "allowed_gpu_types": "resources.gpu_type",
    "allowed_pools": "pool",
    "allowed_pool_labels": "pool",
}


def enforce(*, environment: Any, deployment_policies: dict | None, pool: Any, spec: dict) -> None:
    """Raise ValidationError({field: [messages]}) naming every broken rule; nothing when all hold.
    A deployment policy that would widen the environment's is refused under ``policies.<rule>``."""
    from django.core.exceptions import ValidationError

    errors: dict[str, list[str]] = {}
    organization = getattr(pool, "organization", None) if pool is not None else None
    for v in widenings(environment=environment, deployment_policies=deployment_policies,
                       organization=organization):  # fmt: skip
        errors.setdefault(f"policies.{v.policy}", []).append(v.message)
    for name in (deployment_policies or {}).get("allowed_pools") or []:
        if organization is not None and _pool_ids([name], organization) == [0]:
            errors.setdefault("policies.allowed_pools", []).append(
                f"{deployment_source('allowed_pools')} names “{name}”, which is no compute pool of "
                "this organization."
            )
    violations = check_spec(
        environment=environment, deployment_policies=deployment_policies, pool=pool, spec=spec
    )
    for v in violations:
        errors.setdefault(FIELD_FOR_POLICY[v.policy], []).append(v.message)
    if errors:
        raise ValidationError(errors)
