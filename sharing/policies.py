"""Environment policies and the deployment-level policies that narrow them, checked against a spec.

Intersection semantics: a deployment-level policy of the same type can only narrow the
environment's — allowed sets intersect, maxima take the smaller value — never widen it.
An empty allowed set means "any" on either side.

``deployment_policies`` is a plain dict with any of these keys (others are ignored):
``{"allowed_pools": [pool ids], "allowed_pool_labels": {"region": ["us-east-1"]},
"allowed_gpu_types": ["A100"], "max_replicas": 2, "max_gpus_per_replica": 1}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from deployments.models import ComputePool

DEPLOYMENT_SOURCE = "The deployment's policy"


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


def effective_policy(environment: Any, deployment_policies: dict | None = None) -> EffectivePolicy:
    """The rules a deployment in ``environment`` must keep, narrowed by its own policies."""
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
    src = DEPLOYMENT_SOURCE
    dep_pools = dep.get("allowed_pools")
    dep_pools = [int(p) for p in dep_pools] if dep_pools else None
    policy.allowed_pools = _narrow_set(policy.allowed_pools, dep_pools, src)
    policy.allowed_gpu_types = _narrow_set(
        policy.allowed_gpu_types, dep.get("allowed_gpu_types"), src
    )
    policy.max_replicas = _narrow_max(policy.max_replicas, dep.get("max_replicas"), src)
    policy.max_gpus_per_replica = _narrow_max(
        policy.max_gpus_per_replica, dep.get("max_gpus_per_replica"), src
    )
    for label, values in (dep.get("allowed_pool_labels") or {}).items():
        current = policy.allowed_pool_labels.get(label, Rule(None, ""))
        policy.allowed_pool_labels[label] = _narrow_set(current, _listify(values), src)
    return policy


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
    policy = effective_policy(environment, deployment_policies)
    violations: list[Violation] = []
    replicas = (spec.get("replicas") or {}).get("max")
    resources = spec.get("resources") or {}
    gpus = resources.get("gpus")
    gpu_type = (resources.get("gpu_type") or "").strip()

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
    if rule.value is not None and (gpus or 0) > 0 and gpu_type not in rule.value:
        asked = f"“{gpu_type}”" if gpu_type else "no particular GPU type"
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
    """Raise ValidationError({field: [messages]}) naming every broken rule; nothing when all hold."""
    from django.core.exceptions import ValidationError

    violations = check_spec(
        environment=environment, deployment_policies=deployment_policies, pool=pool, spec=spec
    )
    if violations:
        errors: dict[str, list[str]] = {}
        for v in violations:
            errors.setdefault(FIELD_FOR_POLICY[v.policy], []).append(v.message)
        raise ValidationError(errors)
