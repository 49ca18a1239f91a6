"""Affinity and tolerations checked against Kubernetes' own schema, before they reach a cluster.

schemas/k8s-v1.30-scheduling.json is the Kubernetes v1.30 OpenAPI (as strict JSON Schema) for
Affinity and Toleration; on top of its types, the API server's own rules for operators, values
and weights (k8s.io/kubernetes pkg/apis/core/validation: ValidateNodeSelectorRequirement,
validateLabelSelectorRequirement, validateWeightedPodAffinityTerms), which the schema does not
carry. `nodeAffinity: 5` was once accepted and wedged a cluster's scheduler loop.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema

_SCHEMA_FILE = Path(__file__).resolve().parent / "schemas" / "k8s-v1.30-scheduling.json"
AFFINITY = "io.k8s.api.core.v1.Affinity"
TOLERATION = "io.k8s.api.core.v1.Toleration"

NODE_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt")
LABEL_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


@functools.cache
def _validator(definition: str) -> jsonschema.protocols.Validator:
    schema = json.loads(_SCHEMA_FILE.read_text())
    root = {"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": f"#/$defs/{definition}"}
    cls = jsonschema.validators.validator_for(root)
    return cls(root)


def _where(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _type_errors(definition: str, value: Any, prefix: str) -> list[str]:
    errors = sorted(_validator(definition).iter_errors(value), key=lambda e: list(e.path))
    out = []
    for err in errors:
        where = prefix + _where(err.absolute_path)
        if err.validator == "type":
            wanted = err.validator_value
            wanted = [t for t in (wanted if isinstance(wanted, list) else [wanted]) if t != "null"]
            out.append(f"{where} must be {' or '.join(_a(t) for t in wanted)}, not {err.instance!r}")
        elif err.validator == "additionalProperties":
            out.append(f"{where}: {err.message}")
        elif err.validator == "required":
            out.append(f"{where}: {err.message}")
        else:
            out.append(f"{where}: {err.message}")
    return out


def _a(json_type: str) -> str:
    return {"object": "a mapping", "array": "a list", "string": "a string",
            "integer": "a whole number", "number": "a number", "boolean": "true or false"}.get(
        json_type, json_type)  # fmt: skip


def _requirements(
    items: Any, path: str, operators: tuple[str, ...], *, numeric: bool
) -> Iterator[str]:
    for i, req in enumerate(items or []):
        where = f"{path}[{i}]"
        op = req.get("operator")
        values = req.get("values") or []
        if op not in operators:
            yield f"{where}.operator must be one of {', '.join(operators)}, not {op!r}"
        elif op in ("In", "NotIn") and not values:
            yield f"{where}.values must be non-empty when operator is {op}"
        elif op in ("Exists", "DoesNotExist") and values:
            yield f"{where}.values must be empty when operator is {op}"
        elif numeric and op in ("Gt", "Lt"):
            if len(values) != 1 or not str(values[0]).lstrip("-").isdigit():
                yield f"{where}.values must be one whole number when operator is {op}"


def _selector_terms(node_selector: Mapping[str, Any], path: str) -> Iterator[str]:
    terms = node_selector.get("nodeSelectorTerms") or []
    if not terms:
        yield f"{path}.nodeSelectorTerms must have at least one term"
    for i, term in enumerate(terms):
        for key in ("matchExpressions", "matchFields"):
            yield from _requirements(
                (term or {}).get(key), f"{path}.nodeSelectorTerms[{i}].{key}", NODE_OPERATORS,
                numeric=True,
            )  # fmt: skip


def _weight(item: Mapping[str, Any], path: str) -> Iterator[str]:
    weight = item.get("weight")
    if not isinstance(weight, int) or not 1 <= weight <= 100:
        yield f"{path}.weight must be a whole number from 1 to 100"


def _pod_term(term: Mapping[str, Any], path: str) -> Iterator[str]:
    if not term.get("topologyKey"):
        yield f"{path}.topologyKey is required"
    for key in ("labelSelector", "namespaceSelector"):
        selector = term.get(key) or {}
        yield from _requirements(
            selector.get("matchExpressions"), f"{path}.{key}.matchExpressions", LABEL_OPERATORS,
            numeric=False,
        )  # fmt: skip


def affinity_errors(affinity: Any) -> list[str]:
    """What the API server would refuse in a pod's `affinity`, in words; empty when fine."""
    errors = _type_errors(AFFINITY, affinity, "affinity")
    if errors or not affinity:
        return errors
    node = affinity.get("nodeAffinity") or {}
    required = node.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is not None:
        errors += _selector_terms(
            required, "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
        )
    for i, pref in enumerate(node.get("preferredDuringSchedulingIgnoredDuringExecution") or []):
        where = f"affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[{i}]"
        errors += _weight(pref, where)
        errors += _requirements(
            (pref.get("preference") or {}).get("matchExpressions"),
            f"{where}.preference.matchExpressions", NODE_OPERATORS, numeric=True,
        )  # fmt: skip
    for kind in ("podAffinity", "podAntiAffinity"):
        rules = affinity.get(kind) or {}
        for i, term in enumerate(rules.get("requiredDuringSchedulingIgnoredDuringExecution") or []):
            where = f"affinity.{kind}.requiredDuringSchedulingIgnoredDuringExecution[{i}]"
            errors += _pod_term(term, where)
        for i, pref in enumerate(rules.get("preferredDuringSchedulingIgnoredDuringExecution") or []):
            where = f"affinity.{kind}.preferredDuringSchedulingIgnoredDuringExecution[{i}]"
            errors += _weight(pref, where)
            errors += _pod_term(pref.get("podAffinityTerm") or {}, f"{where}.podAffinityTerm")
    return errors


def toleration_errors(toleration: Any, index: int) -> list[str]:
    """Type errors in one toleration (the operator/effect rules are checked by the caller)."""
    return _type_errors(TOLERATION, toleration, f"tolerations[{index}]")
