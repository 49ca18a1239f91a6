"""API-machinery pieces of the sandbox API server: Status errors, selectors, patches, fields."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from sandbox.resources import ResourceType

# -- time ----------------------------------------------------------------------------------


def now_rfc3339() -> str:
    """Seconds precision, like metav1.Time on the wire."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def clone(value: Any) -> Any:
    """Deep copy of JSON data; much faster than copy.deepcopy for dicts and lists."""
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) for v in value]
    return value


# -- errors --------------------------------------------------------------------------------

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class ApiError(Exception):
    """An error the API server answers with a `Status` body, as a real server would."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        details: dict | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "")
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict:
        body: dict = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(rt: ResourceType, name: str, **extra: Any) -> dict:
    details: dict = {"name": name}
    if rt.group:
        details["group"] = rt.group
    details["kind"] = rt.plural
    details.update(extra)
    return details


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, f'{rt.group_resource} "{name}" not found', "NotFound", _details(rt, name))


def namespace_not_found(namespace: str) -> ApiError:
    return ApiError(
        404,
        f'namespaces "{namespace}" not found',
        "NotFound",
        {"name": namespace, "kind": "namespaces"},
    )


def already_exists(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        409, f'{rt.group_resource} "{name}" already exists', "AlreadyExists", _details(rt, name)
    )


def conflict(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {rt.group_resource} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        "Conflict",
        _details(rt, name),
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, message, "BadRequest")


def success_status(rt: ResourceType, name: str, uid: str) -> dict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": _details(rt, name, uid=uid),
    }


@dataclass
class FieldError:
    """One field.Error of k8s.io/apimachinery, rendered the way kubectl users know it."""

    kind: str  # Invalid | Required | Duplicate | NotSupported | Forbidden | TooLong | NotFound
    field: str
    value: Any = None
    detail: str = ""
    supported: list[str] | None = None

    _TYPES: ClassVar[dict[str, tuple[str, str]]] = {
        "Invalid": ("FieldValueInvalid", "Invalid value"),
        "Required": ("FieldValueRequired", "Required value"),
        "Duplicate": ("FieldValueDuplicate", "Duplicate value"),
        "NotSupported": ("FieldValueNotSupported", "Unsupported value"),
        "Forbidden": ("FieldValueForbidden", "Forbidden"),
        "TooLong": ("FieldValueTooLong", "Too long"),
        "NotFound": ("FieldValueNotFound", "Not found"),
    }

    def body(self) -> str:
        label = self._TYPES[self.kind][1]
        if self.kind in ("Invalid", "Duplicate", "NotSupported", "NotFound"):
            text = f"{label}: {_go_value(self.value)}"
        else:
            text = label
        if self.kind == "NotSupported" and self.supported:
            text += ": supported values: " + ", ".join(f'"{s}"' for s in self.supported)
        elif self.detail:
            text += f": {self.detail}"
        return text

    def message(self) -> str:
        return f"{self.field}: {self.body()}"

    def cause(self) -> dict:
        return {"reason": self._TYPES[self.kind][0], "message": self.body(), "field": self.field}


def _go_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        inner = ", ".join(f"{json.dumps(str(k))}:{json.dumps(v)}" for k, v in value.items())
        return "map[string]string{" + inner + "}"
    if isinstance(value, list):
        return "[]string{" + ", ".join(json.dumps(v) for v in value) + "}"
    return str(value)


def invalid(rt: ResourceType, name: str, errors: list[FieldError]) -> ApiError:
    messages = [e.message() for e in errors]
    summary = messages[0] if len(messages) == 1 else "[" + ", ".join(messages) + "]"
    details = {"name": name}
    if rt.group:
        details["group"] = rt.group
    details["kind"] = rt.kind
    details["causes"] = [e.cause() for e in errors]
    return ApiError(422, f'{rt.qualified_kind} "{name}" is invalid: {summary}', "Invalid", details)


# -- label and field selectors -------------------------------------------------------------

LABEL_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
DNS1123_SUBDOMAIN_RE = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)


def label_key_problem(key: str) -> str | None:
    """Why `key` is not a valid qualified label/annotation key, or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and not prefix:
        return "prefix part must be non-empty"
    if prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN_RE.match(prefix)):
        return (
            "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
            "characters, '-' or '.', and must start and end with an alphanumeric character "
            "(e.g. 'example.com', regex used for validation is "
            "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        )
    if not name:
        return "name part must be non-empty"
    if len(name) > 63:
        return "name part must be no more than 63 characters"
    if not LABEL_NAME_RE.match(name):
        return (
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start "
            "and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', "
            "regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        )
    return None


def label_value_problem(value: str) -> str | None:
    if len(value) > 63:
        return "must be no more than 63 characters"
    if not LABEL_VALUE_RE.match(value):
        return (
            "a valid label must be an empty string or consist of alphanumeric characters, '-', "
            "'_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  "
            "or 'my_value',  or '12345', regex used for validation is "
            "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        )
    return None


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        value = labels.get(self.key)
        if self.op in ("=", "in"):
            return present and value in self.values
        # "!=" and "notin" match objects without the label, like the real selector.
        return not present or value not in self.values


Selector = list[Requirement]

_SET_TERM_RE = re.compile(r"^(\S+?)\s+(in|notin)\s*\((.*)\)$")


def _split_terms(text: str) -> list[str]:
    terms, depth, current = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append("".join(current))
            current = []
        else:
            current.append(ch)
    terms.append("".join(current))
    return [t.strip() for t in terms]


def parse_label_selector(text: str | None) -> Selector:
    """Parse the `labelSelector` query parameter; ApiError 400 if it does not parse."""
    if not text or not text.strip():
        return []
    requirements: Selector = []
    for term in _split_terms(text):
        if not term:
            raise bad_request(
                f"unable to parse requirement: found '', expected: identifier in {text!r}"
            )
        if m := _SET_TERM_RE.match(term):
            key, op, raw = m.group(1), m.group(2), m.group(3)
            values = frozenset(v.strip() for v in raw.split(",") if v.strip())
            requirements.append(Requirement(key, op, values))
        elif term.startswith("!"):
            requirements.append(Requirement(term[1:].strip(), "!exists"))
        elif "!=" in term:
            key, _, value = term.partition("!=")
            requirements.append(Requirement(key.strip(), "!=", frozenset([value.strip()])))
        elif "=" in term:
            key, _, value = term.partition("==") if "==" in term else term.partition("=")
            requirements.append(Requirement(key.strip(), "=", frozenset([value.strip()])))
        else:
            requirements.append(Requirement(term, "exists"))
    for req in requirements:
        problem = label_key_problem(req.key)
        if problem:
            raise bad_request(
                f'unable to parse requirement: <nil>: Invalid value: "{req.key}": {problem}'
            )
        for value in req.values:
            if label_value_problem(value):
                raise bad_request(
                    f'unable to parse requirement: values[0][{req.key}]: Invalid value: "{value}": '
                    f"{label_value_problem(value)}"
                )
    return requirements


def selector_from_label_selector(selector: dict | None) -> Selector:
    """A metav1.LabelSelector (matchLabels/matchExpressions) as requirements."""
    if not selector:
        return []
    requirements = [
        Requirement(k, "=", frozenset([str(v)]))
        for k, v in (selector.get("matchLabels") or {}).items()
    ]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
    for expr in selector.get("matchExpressions") or []:
        op = ops.get(expr.get("operator", ""))
        if op:
            values = frozenset(str(v) for v in expr.get("values") or [])
            requirements.append(Requirement(expr.get("key", ""), op, values))
    return requirements


def selector_to_string(selector: dict | None) -> str:
    parts = [f"{k}={v}" for k, v in sorted((selector or {}).get("matchLabels", {}).items())]
    for expr in (selector or {}).get("matchExpressions") or []:
        op, key = expr.get("operator"), expr.get("key")
        values = ",".join(expr.get("values") or [])
        parts.append(
            {"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})", "Exists": key}.get(
                op, f"!{key}"
            )
        )
    return ",".join(parts)


def labels_match(selector: Selector, labels: dict[str, str] | None) -> bool:
    labels = labels or {}
    return all(req.matches(labels) for req in selector)


# Field selectors a real API server supports, per resource (metadata.* for everything).
FIELD_SELECTABLE: dict[str, tuple[str, ...]] = {
    "pods": (
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
    "events": (
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ),
    "secrets": ("type",),
    "nodes": ("spec.unschedulable",),
    "namespaces": ("status.phase",),
    "replicasets": ("status.replicas",),
}


@dataclass(frozen=True)
class FieldRequirement:
    path: tuple[str, ...]
    equal: bool
    value: str

    def matches(self, obj: dict) -> bool:
        current: Any = obj
        for part in self.path:
            current = current.get(part) if isinstance(current, dict) else None
        if self.path == ("source",) and isinstance(current, dict):
            current = current.get("component")
        if isinstance(current, bool):
            text = "true" if current else "false"
        elif current is None:
            text = ""
        else:
            text = str(current)
        return (text == self.value) == self.equal


def parse_field_selector(text: str | None, rt: ResourceType) -> list[FieldRequirement]:
    if not text or not text.strip():
        return []
    allowed = {"metadata.name", "metadata.namespace", *FIELD_SELECTABLE.get(rt.plural, ())}
    requirements = []
    for term in _split_terms(text):
        if "!=" in term:
            key, _, value = term.partition("!=")
            equal = False
        elif "==" in term:
            key, _, value = term.partition("==")
            equal = True
        elif "=" in term:
            key, _, value = term.partition("=")
            equal = True
        else:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        key = key.strip()
        if key not in allowed:
            raise bad_request(f"field label not supported: {key}")
        requirements.append(FieldRequirement(tuple(key.split(".")), equal, value.strip()))
    return requirements


# -- quantities ----------------------------------------------------------------------------

QUANTITY_RE = re.compile(
    r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))((?:[KMGTPE]i)|[numkMGTPE]|[eE][+-]?\d+)?$"
)
_SUFFIX = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def parse_quantity(value: Any) -> Decimal:
    """A resource.Quantity string (`500m`, `16Gi`, `1`) as a number; ValueError if malformed."""
    if isinstance(value, bool):
        raise ValueError(f"quantities must match the regular expression: {value!r}")
    if isinstance(value, int | float):
        return Decimal(str(value))
    m = QUANTITY_RE.match(str(value).strip())
    if not m:
        raise ValueError(
            "quantities must match the regular expression "
            "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
        )
    number, suffix = m.group(1), m.group(2) or ""
    try:
        if suffix[:1] in ("e", "E"):
            return Decimal(number + suffix)
        return Decimal(number) * _SUFFIX[suffix]
    except (InvalidOperation, KeyError) as exc:
        raise ValueError(str(exc)) from exc


def quantity_string(value: Any) -> str:
    """Numbers sent for quantities come back as strings, as a real server serialises them."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# -- patches -------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch. `target` may be modified in place; use the return value."""
    if not isinstance(patch, dict):
        return clone(patch)
    result = target if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# patchMergeKey of the Kubernetes Go types (by field name; `ports` depends on where it is).
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
    "conditions": "type",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
}
_PRIMITIVE_MERGE_LISTS = {"finalizers"}


def _merge_key(field_name: str, items: list, current: list | None) -> str | None:
    if field_name == "ports":
        sample = next((i for i in (items or []) + (current or []) if isinstance(i, dict)), {})
        if "containerPort" in sample:
            return "containerPort"
        if "port" in sample:
            return "port"
        return None
    return _MERGE_KEYS.get(field_name)


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Strategic merge patch as kubectl uses it: lists of named things merge by their key."""
    if not isinstance(patch, dict):
        return clone(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: clone(v) for k, v in patch.items() if k != "$patch"}
    result = target if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key == "$patch" or key.startswith("$setElementOrder/") or key == "$retainKeys":
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            if isinstance(result.get(name), list):
                result[name] = [v for v in result[name] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
            continue
        current = result.get(key)
        if isinstance(value, dict):
            if value.get("$patch") == "delete":
                result.pop(key, None)
            else:
                result[key] = strategic_merge_patch(current, value)
        elif isinstance(value, list):
            merge_key = _merge_key(key, value, current if isinstance(current, list) else None)
            if any(isinstance(v, dict) and v.get("$patch") == "replace" for v in value):
                result[key] = [
                    clone(v) for v in value if not (isinstance(v, dict) and "$patch" in v)
                ]
            elif merge_key and isinstance(current, list):
                result[key] = _merge_list(current, value, merge_key)
            elif key in _PRIMITIVE_MERGE_LISTS and isinstance(current, list):
                result[key] = current + [v for v in value if v not in current]
            else:
                result[key] = [
                    strategic_merge_patch(None, v) if isinstance(v, dict) else v
                    for v in value
                    if not (isinstance(v, dict) and v.get("$patch") == "delete")
                ]
        else:
            result[key] = value
    return result


def _merge_list(current: list, patch_items: list, merge_key: str) -> list:
    result = list(current)
    for item in patch_items:
        if not isinstance(item, dict):
            continue
        index = next(
            (i for i, cur in enumerate(result)
             if isinstance(cur, dict) and cur.get(merge_key) == item.get(merge_key)),
            None,
        )  # fmt: skip
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(strategic_merge_patch(None, item))
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


class JsonPatchError(Exception):
    pass


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise JsonPatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _resolve(doc: Any, parts: list[str]) -> tuple[Any, str]:
    parent = doc
    for part in parts[:-1]:
        if isinstance(parent, dict) and part in parent:
            parent = parent[part]
        elif isinstance(parent, list) and part.isdigit() and int(part) < len(parent):
            parent = parent[int(part)]
        else:
            raise JsonPatchError(f"doc is missing path: /{'/'.join(parts)}")
    return parent, parts[-1]


def json_patch(doc: Any, operations: list) -> Any:
    """RFC 6902 JSON patch. `doc` may be modified in place; use the return value."""
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise JsonPatchError("each operation needs an 'op' and a 'path'")
        kind, parts = op["op"], _pointer(op["path"])
        if kind in ("move", "copy"):
            src_parent, src_key = _resolve(doc, _pointer(op.get("from", "")))
            value = _get(src_parent, src_key)
            if kind == "move":
                _remove(src_parent, src_key)
            doc = _add(doc, parts, clone(value))
        elif kind == "add":
            doc = _add(doc, parts, clone(op.get("value")))
        elif kind == "remove":
            parent, key = _resolve(doc, parts)
            _get(parent, key)
            _remove(parent, key)
        elif kind == "replace":
            if not parts:
                doc = clone(op.get("value"))
                continue
            parent, key = _resolve(doc, parts)
            _get(parent, key)
            if isinstance(parent, list):
                parent[int(key)] = clone(op.get("value"))
            else:
                parent[key] = clone(op.get("value"))
        elif kind == "test":
            parent, key = _resolve(doc, parts) if parts else (None, "")
            current = doc if not parts else _get(parent, key)
            if current != op.get("value"):
                raise JsonPatchError(f"testing value {op['path']} failed")
        else:
            raise JsonPatchError(f"Unexpected kind: {kind}")
    return doc


def _get(parent: Any, key: str) -> Any:
    if isinstance(parent, dict) and key in parent:
        return parent[key]
    if isinstance(parent, list) and key.isdigit() and int(key) < len(parent):
        return parent[int(key)]
    raise JsonPatchError(f"doc is missing key: {key}")


def _remove(parent: Any, key: str) -> None:
    if isinstance(parent, list):
        del parent[int(key)]
    else:
        del parent[key]


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent, key = _resolve(doc, parts)
    if isinstance(parent, list):
        if key == "-":
            parent.append(value)
        elif key.isdigit() and int(key) <= len(parent):
            parent.insert(int(key), value)
        else:
            raise JsonPatchError(f"add operation index out of range: {key}")
    elif isinstance(parent, dict):
        parent[key] = value
    else:
        raise JsonPatchError(f"doc is missing path: {'/'.join(parts)}")
    return doc


# -- server-side apply field sets ----------------------------------------------------------

Path = tuple[str, ...]
# Fields no manager owns: the server writes them.
SYSTEM_METADATA = {
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
}


def leaf_items(obj: dict, scope: str) -> Iterator[tuple[Path, Any]]:
    """(path, value) for every leaf field a manager can own. Lists are atomic leaves.

    scope "main" covers everything but status; "status" covers only status.
    """
    for key, value in obj.items():
        if key in ("apiVersion", "kind"):
            continue
        if (key == "status") != (scope == "status"):
            continue
        if key == "metadata" and isinstance(value, dict):
            for mkey, mvalue in value.items():
                if mkey in SYSTEM_METADATA:
                    continue
                yield from _leaves(("metadata", mkey), mvalue)
        else:
            yield from _leaves((key,), value)


def _leaves(prefix: Path, value: Any) -> Iterator[tuple[Path, Any]]:
    if isinstance(value, dict) and value:
        for key, child in value.items():
            yield from _leaves((*prefix, key), child)
    else:
        yield prefix, value


def get_path(obj: Any, path: Path) -> Any:
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return _MISSING
        obj = obj[part]
    return obj


def delete_path(obj: dict, path: Path) -> None:
    parent: Any = obj
    for part in path[:-1]:
        parent = parent.get(part) if isinstance(parent, dict) else None
        if parent is None:
            return
    if isinstance(parent, dict):
        parent.pop(path[-1], None)


def overlaps(a: Path, b: Path) -> bool:
    shorter = min(len(a), len(b))
    return a[:shorter] == b[:shorter]


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()
MISSING = _MISSING


def fields_v1(paths: set[Path]) -> dict:
    tree: dict = {}
    for path in sorted(paths):
        node = tree
        for part in path:
            node = node.setdefault(f"f:{part}", {})
    return tree


def paths_from_fields_v1(tree: dict, prefix: Path = ()) -> set[Path]:
    paths: set[Path] = set()
    for key, child in (tree or {}).items():
        if not key.startswith("f:"):
            continue
        path = (*prefix, key[2:])
        if isinstance(child, dict) and any(k.startswith("f:") for k in child):
            paths |= paths_from_fields_v1(child, path)
        else:
            paths.add(path)
    return paths


@dataclass
class ManagedEntry:
    manager: str
    operation: str  # "Apply" | "Update"
    api_version: str
    time: str
    paths: set[Path] = field(default_factory=set)
    subresource: str = ""

    @classmethod
    def parse(cls, raw: dict) -> ManagedEntry:
        return cls(
            manager=raw.get("manager", ""),
            operation=raw.get("operation", "Update"),
            api_version=raw.get("apiVersion", ""),
            time=raw.get("time", ""),
            paths=paths_from_fields_v1(raw.get("fieldsV1") or {}),
            subresource=raw.get("subresource", ""),
        )

    def render(self) -> dict:
        entry = {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": fields_v1(self.paths),
        }
        if self.subresource:
            entry["subresource"] = self.subresource
        return entry
