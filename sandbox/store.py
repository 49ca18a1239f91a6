"""The sandbox API server's storage and write semantics (etcd + registry strategies, in memory).

Stored objects are never mutated after they are stored: every write builds a new dict. That
lets readers (HTTP responses, the simulated kubelet) use what they got without holding the lock.
"""

from __future__ import annotations

import base64
import json
import random
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sandbox.apimachinery import (
    MISSING,
    ApiError,
    FieldError,
    FieldRequirement,
    JsonPatchError,
    ManagedEntry,
    Path,
    Selector,
    already_exists,
    bad_request,
    clone,
    conflict,
    delete_path,
    get_path,
    invalid,
    json_patch,
    labels_match,
    leaf_items,
    merge_patch,
    namespace_not_found,
    not_found,
    now_rfc3339,
    overlaps,
    selector_to_string,
    strategic_merge_patch,
    success_status,
)
from sandbox.resources import Registry, ResourceType
from sandbox.validation import apply_defaults, check_types, validate

APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"

# How many change events are kept so that a watch can resume from a resourceVersion.
HISTORY_SIZE = 20_000

Listener = Callable[[str, ResourceType, dict], None]


@dataclass
class ListResult:
    items: list[dict]
    resource_version: str
    continue_token: str = ""
    remaining: int | None = None


def random_suffix(length: int = 5) -> str:
    # The alphabet of k8s.io/apimachinery/pkg/util/rand: no vowels, no look-alikes.
    return "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=length))


class ObjectStore:
    """All objects of one emulated cluster, with the semantics of the real API server's writes."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.lock = threading.RLock()
        # resource key -> namespace ("" when cluster-scoped) -> name -> object
        self._data: dict[str, dict[str, dict[str, dict]]] = {rt.key: {} for rt in registry}
        # owner uid -> {(resource key, namespace, name)}: cascading deletes without scans
        self._dependents: dict[str, set[tuple[str, str, str]]] = {}
        self._rv = 0
        self._listeners: list[Listener] = []
        self.history: deque[tuple[int, str, ResourceType, dict]] = deque(maxlen=HISTORY_SIZE)
        self._next_ip = 10
        self._next_node_port = 30000

    # -- reads -------------------------------------------------------------------------

    @property
    def resource_version(self) -> str:
        return str(self._rv)

    def try_get(self, rt: ResourceType, namespace: str, name: str) -> dict | None:
        return self._data[rt.key].get(namespace if rt.namespaced else "", {}).get(name)

    def get(self, rt: ResourceType, namespace: str, name: str) -> dict:
        obj = self.try_get(rt, namespace, name)
        if obj is None:
            raise not_found(rt, name)
        return obj

    def objects(self, rt: ResourceType, namespace: str | None = None) -> list[dict]:
        """A snapshot of every object of a type (optionally in one namespace); unsorted."""
        with self.lock:
            buckets = self._data[rt.key]
            if namespace is not None:
                return list(buckets.get(namespace, {}).values())
            return [obj for bucket in buckets.values() for obj in bucket.values()]

    def count(self, rt: ResourceType) -> int:
        return sum(len(bucket) for bucket in self._data[rt.key].values())

    def list(
        self,
        rt: ResourceType,
        namespace: str | None,
        label_selector: Selector | None = None,
        field_selector: list[FieldRequirement] | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> ListResult:
        start: tuple[str, str] | None = None
        if continue_token:
            try:
                start = tuple(json.loads(base64.urlsafe_b64decode(continue_token.encode())))  # type: ignore[assignment]
            except ValueError:
                raise ApiError(
                    410,
                    "The provided continue parameter is too old to display a consistent list "
                    "result. You can start a new list without the continue parameter.",
                    "Expired",
                ) from None
        with self.lock:
            buckets = self._data[rt.key]
            rv = str(self._rv)
            namespaces = [namespace] if namespace is not None else sorted(buckets)
            snapshot = [
                (ns, name, bucket[name])
                for ns in namespaces
                if (bucket := buckets.get(ns))
                for name in sorted(bucket)
            ]
        items: list[dict] = []
        last_key: tuple[str, str] | None = None
        remaining = 0
        for ns, name, obj in snapshot:
            if start is not None and (ns, name) <= start:
                continue
            if label_selector and not labels_match(label_selector, obj["metadata"].get("labels")):
                continue
            if field_selector and not all(req.matches(obj) for req in field_selector):
                continue
            if limit and len(items) >= limit:
                remaining += 1
                continue
            items.append(obj)
            last_key = (ns, name)
        token = ""
        if remaining and last_key is not None:
            token = base64.urlsafe_b64encode(json.dumps(list(last_key)).encode()).decode()
        return ListResult(items, rv, token, remaining if remaining else None)

    # -- change notification -----------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        with self.lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with self.lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _emit(self, event: str, rt: ResourceType, obj: dict) -> None:
        self.history.append((int(obj["metadata"]["resourceVersion"]), event, rt, obj))
        for listener in list(self._listeners):
            listener(event, rt, obj)

    # -- low-level storage -------------------------------------------------------------

    def _bump(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _store(self, rt: ResourceType, obj: dict, event: str) -> dict:
        meta = obj["metadata"]
        ns = meta.get("namespace", "") if rt.namespaced else ""
        bucket = self._data[rt.key].setdefault(ns, {})
        old = bucket.get(meta["name"])
        meta["resourceVersion"] = self._bump()
        bucket[meta["name"]] = obj
        old_owners = {
            ref.get("uid") for ref in (old or {}).get("metadata", {}).get("ownerReferences") or []
        }
        new_owners = {ref.get("uid") for ref in meta.get("ownerReferences") or []}
        ref = (rt.key, ns, meta["name"])
        for uid in old_owners - new_owners:
            self._dependents.get(uid, set()).discard(ref)
        for uid in new_owners - old_owners:
            self._dependents.setdefault(uid, set()).add(ref)
        self._emit(event, rt, obj)
        return obj

    def _unstore(self, rt: ResourceType, ns: str, name: str) -> dict | None:
        bucket = self._data[rt.key].get(ns if rt.namespaced else "", {})
        obj = bucket.pop(name, None)
        if obj is None:
            return None
        ref = (rt.key, ns if rt.namespaced else "", name)
        for owner in obj["metadata"].get("ownerReferences") or []:
            self._dependents.get(owner.get("uid"), set()).discard(ref)
        gone = clone(obj)
        gone["metadata"]["resourceVersion"] = self._bump()
        self._emit("DELETED", rt, gone)
        return obj

    # -- create ------------------------------------------------------------------------

    def namespace_exists(self, namespace: str) -> bool:
        return namespace in self._data["/namespaces"].get("", {})

    def create(
        self,
        rt: ResourceType,
        namespace: str,
        body: Any,
        *,
        manager: str | None = None,
        operation: str = "Update",
        dry_run: bool = False,
        internal: bool = False,
    ) -> dict:
        """POST semantics. `internal` writes (the simulated controllers) skip validation and
        hand over `body` (it is stored as is, not copied)."""
        obj = self._prepare_body(rt, namespace, body, copy=not internal)
        meta = obj["metadata"]
        # The manager owns what it sent, not what defaulting adds.
        sent_paths = {p for p, _ in leaf_items(obj, "main")} if manager else set()
        with self.lock:
            if rt.namespaced and not self.namespace_exists(meta["namespace"]):
                raise namespace_not_found(meta["namespace"])
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + random_suffix()
            apply_defaults(rt, obj)
            self._initial_status(rt, obj)
            if not internal:
                check_types(rt, obj)
                validate(rt, obj, None)
            if self.try_get(rt, meta.get("namespace", ""), meta["name"]) is not None:
                raise already_exists(rt, meta["name"])
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            if rt.has_generation:
                meta["generation"] = 1
            if rt.plural == "services":
                self._allocate_service(obj, None)
            if manager:
                entry = ManagedEntry(manager, operation, rt.api_version, meta["creationTimestamp"])
                entry.paths = sent_paths
                meta["managedFields"] = [entry.render()]
            if dry_run:
                meta["resourceVersion"] = ""
                return obj
            stored = self._store(rt, obj, "ADDED")
            if rt.plural == "namespaces" and not internal:
                self._create_default_service_account(meta["name"])
            return stored

    def _prepare_body(
        self, rt: ResourceType, namespace: str, body: Any, *, copy: bool = True
    ) -> dict:
        if not isinstance(body, dict):
            raise bad_request(f"the body of the request is not a {rt.kind} object")
        obj = clone(body) if copy else body
        self._check_type_meta(rt, obj)
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            check_types(rt, obj)
        if rt.namespaced:
            body_ns = meta.get("namespace")
            if body_ns and namespace and body_ns != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on "
                    "the request"
                )
            meta["namespace"] = namespace or body_ns or "default"
        else:
            meta.pop("namespace", None)
        for key in ("uid", "resourceVersion", "creationTimestamp", "generation", "selfLink",
                    "managedFields", "deletionTimestamp", "deletionGracePeriodSeconds"):  # fmt: skip
            meta.pop(key, None)
        return obj

    def _check_type_meta(self, rt: ResourceType, obj: dict, *, required: bool = False) -> None:
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if required and (not api_version or not kind):
            raise bad_request(
                f"Object 'Kind' is missing in '{json.dumps(obj)[:200]}'"
                if not kind
                else "Object 'apiVersion' is missing"
            )
        if api_version and api_version != rt.api_version:
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({rt.api_version})"
            )
        if kind and kind != rt.kind:
            raise bad_request(
                f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})"
            )
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind

    def _initial_status(self, rt: ResourceType, obj: dict) -> None:
        """Status is the controllers' to write; a create starts from what a real server sets."""
        if rt.plural in ("deployments", "replicasets"):
            obj["status"] = {}
        elif rt.plural == "pods":
            obj["status"] = {"phase": "Pending", "qosClass": qos_class(obj.get("spec") or {})}
        elif rt.plural == "services":
            obj["status"] = {"loadBalancer": {}}
        elif rt.plural == "namespaces":
            obj["status"] = {"phase": "Active"}
        elif rt.plural == "persistentvolumeclaims":
            obj["status"] = {"phase": "Pending"}
        elif rt.custom:
            obj.pop("status", None)
        if rt.plural == "pods":
            spec = obj.get("spec") or {}
            spec.setdefault("serviceAccountName", "default")
            spec.setdefault("serviceAccount", spec["serviceAccountName"])
            spec.setdefault("enableServiceLinks", True)
            spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
            spec.setdefault("priority", 0)
            tolerations = spec.setdefault("tolerations", [])
            keys = {t.get("key") for t in tolerations if isinstance(t, dict)}
            for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
                if key not in keys:
                    tolerations.append(
                        {
                            "key": key,
                            "operator": "Exists",
                            "effect": "NoExecute",
                            "tolerationSeconds": 300,
                        }
                    )

    def _allocate_service(self, obj: dict, old: dict | None) -> None:
        spec = obj.setdefault("spec", {})
        old_spec = (old or {}).get("spec") or {}
        if spec.get("type") == "ExternalName":
            return
        if not spec.get("clusterIP"):
            if old_spec.get("clusterIP"):
                spec["clusterIP"] = old_spec["clusterIP"]
            else:
                self._next_ip += 1
                spec["clusterIP"] = f"10.96.{self._next_ip // 250}.{self._next_ip % 250 + 1}"
        spec["clusterIPs"] = [spec["clusterIP"]]
        if spec.get("type") in ("NodePort", "LoadBalancer"):
            old_ports = {p.get("port"): p.get("nodePort") for p in old_spec.get("ports") or []}
            for port in spec.get("ports") or []:
                if not port.get("nodePort"):
                    port["nodePort"] = old_ports.get(port.get("port")) or self._node_port()

    def _node_port(self) -> int:
        self._next_node_port += 1
        return self._next_node_port

    def _create_default_service_account(self, namespace: str) -> None:
        sa = self.registry.lookup("serviceaccounts")
        if self.try_get(sa, namespace, "default") is None:
            self.create(sa, namespace, {"metadata": {"name": "default"}}, internal=True)

    # -- update / patch / apply --------------------------------------------------------

    def replace(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: Any,
        *,
        subresource: str = "",
        manager: str | None = None,
        dry_run: bool = False,
    ) -> dict:
        """PUT semantics: optimistic concurrency on metadata.resourceVersion when it is sent."""
        if not isinstance(body, dict):
            raise bad_request(f"the body of the request is not a {rt.kind} object")
        with self.lock:
            old = self.get(rt, namespace, name)
            new = clone(body)
            self._check_type_meta(rt, new)
            meta = new.setdefault("metadata", {})
            if meta.get("name") and meta["name"] != name:
                raise bad_request(
                    f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
                )
            sent_rv = meta.get("resourceVersion")
            if sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
                raise conflict(rt, name)
            if "managedFields" not in meta:
                meta["managedFields"] = old["metadata"].get("managedFields")
            return self._commit(
                rt, old, new, manager=manager, subresource=subresource, dry_run=dry_run
            )

    def patch(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        patch_type: str,
        patch: Any,
        *,
        subresource: str = "",
        manager: str | None = None,
        force: bool = False,
        dry_run: bool = False,
    ) -> tuple[dict, bool]:
        """PATCH semantics; returns (object, created). Only server-side apply creates."""
        if patch_type == APPLY_PATCH:
            return self.apply(
                rt, namespace, name, patch, manager=manager, force=force,
                subresource=subresource, dry_run=dry_run,
            )  # fmt: skip
        if force:
            raise invalid_options("force", "may not be specified for non-apply patch")
        with self.lock:
            old = self.get(rt, namespace, name)
            new = self._patched(rt, clone(old), patch_type, patch)
            self._check_type_meta(rt, new)
            meta = new.get("metadata")
            if not isinstance(meta, dict):
                raise bad_request("metadata must be an object")
            if meta.get("name") != name:
                raise bad_request(
                    f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
                )
            sent_rv = (
                (patch.get("metadata") or {}).get("resourceVersion")
                if isinstance(patch, dict)
                else None
            )
            if sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
                raise conflict(rt, name)
            obj = self._commit(
                rt, old, new, manager=manager, subresource=subresource, dry_run=dry_run
            )
            return obj, False

    def _patched(self, rt: ResourceType, target: dict, patch_type: str, patch: Any) -> dict:
        if patch_type == MERGE_PATCH:
            if not isinstance(patch, dict):
                raise bad_request("merge patches must be JSON objects")
            return merge_patch(target, patch)
        if patch_type == STRATEGIC_PATCH:
            if rt.custom:
                raise unsupported_patch(custom=True)
            if not isinstance(patch, dict):
                raise bad_request("strategic merge patches must be JSON objects")
            return strategic_merge_patch(target, patch)
        if patch_type == JSON_PATCH:
            if not isinstance(patch, list):
                raise bad_request(
                    "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
                )
            try:
                result = json_patch(target, patch)
            except (JsonPatchError, ValueError, IndexError, TypeError) as exc:
                raise ApiError(
                    422, f"the server rejected our request due to an error in our request: {exc}"
                ) from None
            if not isinstance(result, dict):
                raise bad_request("the patch did not produce an object")
            return result
        raise unsupported_patch(custom=rt.custom)

    def apply(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        config: Any,
        *,
        manager: str | None,
        force: bool = False,
        subresource: str = "",
        dry_run: bool = False,
    ) -> tuple[dict, bool]:
        """Server-side apply: create when missing; the manager owns exactly the fields it sends."""
        if not manager:
            raise invalid_options("fieldManager", "is required for apply patch", required=True)
        if not isinstance(config, dict):
            raise bad_request("apply patches must be a single object")
        config = clone(config)
        self._check_type_meta(rt, config, required=True)
        meta = config.setdefault("metadata", {})
        if meta.get("name") and meta["name"] != name:
            raise bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        meta["name"] = name
        if rt.namespaced and meta.get("namespace") and meta["namespace"] != namespace:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        meta.pop("managedFields", None)
        scope = "status" if subresource == "status" else "main"
        with self.lock:
            old = self.try_get(rt, namespace, name)
            if old is None:
                if subresource:
                    raise not_found(rt, name)
                obj = self.create(
                    rt, namespace, config, manager=manager, operation="Apply", dry_run=dry_run
                )
                return obj, True
            applied = {p for p, _ in leaf_items(config, scope)}
            entries = [
                ManagedEntry.parse(raw) for raw in old["metadata"].get("managedFields") or []
            ]
            own = next(
                (e for e in entries
                 if e.manager == manager and e.operation == "Apply" and e.subresource == subresource),
                None,
            )  # fmt: skip
            new = clone(old)
            others = set().union(*(e.paths for e in entries if e is not own))
            for path in (own.paths if own else set()) - applied:
                if path not in others:
                    delete_path(new, path)
            if scope == "status":
                new["status"] = _apply_merge(new.get("status"), config.get("status") or {})
            else:
                for key, value in config.items():
                    if key != "status":
                        new[key] = _apply_merge(new.get(key), value)
            apply_defaults(rt, new)
            # A conflict is a field another manager owns that this apply would change.
            conflicts: list[tuple[ManagedEntry, Path]] = []
            for entry in entries:
                if entry is own or (entry.subresource == "status") != (scope == "status"):
                    continue
                for path in entry.paths & applied:
                    if get_path(old, path) != get_path(new, path):
                        conflicts.append((entry, path))
            if conflicts and not force:
                raise apply_conflict(rt, name, conflicts)
            for entry, path in conflicts:
                entry.paths.discard(path)
            if own is None:
                own = ManagedEntry(
                    manager, "Apply", rt.api_version, now_rfc3339(), subresource=subresource
                )
                entries.append(own)
            if own.paths != applied:
                own.paths, own.time = applied, now_rfc3339()
            new["metadata"]["managedFields"] = [e.render() for e in entries if e.paths]
            obj = self._commit(rt, old, new, manager=None, subresource=subresource, dry_run=dry_run)
            return obj, False

    def _commit(
        self,
        rt: ResourceType,
        old: dict,
        new: dict,
        *,
        manager: str | None,
        subresource: str,
        dry_run: bool = False,
        validate_object: bool = True,
    ) -> dict:
        """Finish an update of `old` into `new`: isolation, defaults, validation, no-op check."""
        old_meta, meta = old["metadata"], new.setdefault("metadata", {})
        if subresource == "status":
            # A status write changes status only (and never metadata a controller doesn't own).
            status, fields = new.get("status"), meta.get("managedFields", MISSING)
            new = clone(old)
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
            if fields is not MISSING:
                new["metadata"]["managedFields"] = fields
            meta = new["metadata"]
        elif rt.has_status:
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        for key in (
            "name",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        if rt.namespaced:
            meta["namespace"] = old_meta["namespace"]
        else:
            meta.pop("namespace", None)
        meta["resourceVersion"] = old_meta["resourceVersion"]
        apply_defaults(rt, new)
        if rt.plural == "services":
            self._allocate_service(new, old)
        if validate_object:
            check_types(rt, new)
            validate(rt, new, old)
        if rt.has_generation:
            meta["generation"] = old_meta.get("generation", 1) + (
                1 if _spec_changed(old, new) else 0
            )
        if manager:
            meta["managedFields"] = _update_managers(
                rt, old, new, manager, subresource, meta.get("managedFields")
            )
        elif "managedFields" not in meta and "managedFields" in old_meta:
            meta["managedFields"] = old_meta["managedFields"]
        if not meta.get("managedFields"):
            meta.pop("managedFields", None)
        if new == old or dry_run:
            return old if new == old else new
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            # The last finalizer is gone: the pending delete completes now.
            self._remove_cascading(rt, meta.get("namespace", ""), meta["name"], orphan=False)
            return new
        return self._store(rt, new, "MODIFIED")

    # -- internal writes (simulated controllers and test hooks) --------------------------

    def update_internal(
        self, rt: ResourceType, obj: dict, *, expect_rv: str | None = None
    ) -> dict | None:
        """Write `obj` (a modified clone) as a controller would; None if it changed meanwhile."""
        meta = obj["metadata"]
        with self.lock:
            old = self.try_get(rt, meta.get("namespace", ""), meta["name"])
            if old is None:
                return None
            if expect_rv is not None and old["metadata"]["resourceVersion"] != expect_rv:
                return None
            return self._internal_full(rt, old, obj)

    def _internal_full(self, rt: ResourceType, old: dict, obj: dict) -> dict:
        # Controllers write spec and status together. `obj` must be a fresh object (a clone).
        new = obj
        meta = new["metadata"]
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        if rt.has_generation:
            meta["generation"] = old["metadata"].get("generation", 1) + (
                1 if _spec_changed(old, new) else 0
            )
        if new == old:
            return old
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._remove_cascading(rt, meta.get("namespace", ""), meta["name"], orphan=False)
            return new
        return self._store(rt, new, "MODIFIED")

    def put(self, rt: ResourceType, obj: dict) -> dict:
        """Test hook: store `obj` as given (create or overwrite), filling only system metadata."""
        obj = clone(obj)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        meta = obj.setdefault("metadata", {})
        if rt.namespaced:
            meta.setdefault("namespace", "default")
        with self.lock:
            old = self.try_get(rt, meta.get("namespace", ""), meta["name"])
            meta.setdefault("uid", old["metadata"]["uid"] if old else str(uuid.uuid4()))
            meta.setdefault(
                "creationTimestamp", old["metadata"]["creationTimestamp"] if old else now_rfc3339()
            )
            if rt.has_generation:
                meta.setdefault("generation", 1)
            return self._store(rt, obj, "MODIFIED" if old else "ADDED")

    # -- delete ------------------------------------------------------------------------

    def delete(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        *,
        propagation: str | None = None,
        preconditions: dict | None = None,
        dry_run: bool = False,
    ) -> dict:
        """DELETE semantics; returns the response body (Status, or the object for some kinds)."""
        with self.lock:
            obj = self.get(rt, namespace, name)
            meta = obj["metadata"]
            if preconditions:
                if preconditions.get("uid") and preconditions["uid"] != meta["uid"]:
                    raise ApiError(
                        409,
                        f"Precondition failed: UID in precondition: {preconditions['uid']}, UID in "
                        f"object meta: {meta['uid']}",
                        "Conflict",
                    )
                rv = preconditions.get("resourceVersion")
                if rv and rv != meta["resourceVersion"]:
                    raise ApiError(
                        409,
                        f"Precondition failed: ResourceVersion in precondition: {rv}, "
                        f"ResourceVersion in object meta: {meta['resourceVersion']}",
                        "Conflict",
                    )
            if dry_run:
                return (
                    obj
                    if rt.plural in ("pods", "namespaces")
                    else success_status(rt, name, meta["uid"])
                )
            if meta.get("finalizers"):
                if meta.get("deletionTimestamp"):
                    return obj
                pending = clone(obj)
                pending["metadata"]["deletionTimestamp"] = now_rfc3339()
                pending["metadata"]["deletionGracePeriodSeconds"] = 0
                return self._store(rt, pending, "MODIFIED")
            self._remove_cascading(rt, namespace, name, orphan=propagation == "Orphan")
            if rt.plural == "pods":
                gone = clone(obj)
                gone["metadata"]["deletionTimestamp"] = now_rfc3339()
                gone["metadata"]["deletionGracePeriodSeconds"] = 0
                return gone
            if rt.plural == "namespaces":
                gone = clone(obj)
                gone["metadata"]["deletionTimestamp"] = now_rfc3339()
                gone["status"] = {"phase": "Terminating"}
                return gone
            return success_status(rt, name, meta["uid"])

    def delete_internal(self, rt: ResourceType, namespace: str, name: str) -> bool:
        with self.lock:
            if self.try_get(rt, namespace, name) is None:
                return False
            self._remove_cascading(rt, namespace, name, orphan=False)
            return True

    def _remove_cascading(
        self, rt: ResourceType, namespace: str, name: str, *, orphan: bool
    ) -> None:
        obj = self._unstore(rt, namespace, name)
        if obj is None:
            return
        if rt.plural == "namespaces":
            for other in self.registry:
                if other.namespaced:
                    for dep in list(self._data[other.key].get(name, {})):
                        self._unstore(other, name, dep)
                    self._data[other.key].pop(name, None)
            return
        uid = obj["metadata"]["uid"]
        for key, ns, dep_name in sorted(self._dependents.pop(uid, set())):
            dep_rt = next(t for t in self.registry if t.key == key)
            if orphan:
                dependent = self.try_get(dep_rt, ns, dep_name)
                if dependent is not None:
                    freed = clone(dependent)
                    freed["metadata"]["ownerReferences"] = [
                        r
                        for r in freed["metadata"].get("ownerReferences") or []
                        if r.get("uid") != uid
                    ] or None
                    if freed["metadata"]["ownerReferences"] is None:
                        del freed["metadata"]["ownerReferences"]
                    self._store(dep_rt, freed, "MODIFIED")
            else:
                self._remove_cascading(dep_rt, ns, dep_name, orphan=False)

    def delete_collection(
        self,
        rt: ResourceType,
        namespace: str | None,
        label_selector: Selector | None,
        field_selector: list[FieldRequirement] | None,
        *,
        propagation: str | None = None,
        dry_run: bool = False,
    ) -> list[dict]:
        with self.lock:
            found = self.list(rt, namespace, label_selector, field_selector).items
            if not dry_run:
                for obj in found:
                    meta = obj["metadata"]
                    self.delete(
                        rt, meta.get("namespace", ""), meta["name"], propagation=propagation
                    )
            return found

    # -- scale subresource ---------------------------------------------------------------

    def scale_of(self, rt: ResourceType, obj: dict) -> dict:
        meta = obj["metadata"]
        selector = (obj.get("spec") or {}).get("selector")
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": meta["name"],
                "namespace": meta.get("namespace"),
                "uid": meta["uid"],
                "resourceVersion": meta["resourceVersion"],
                "creationTimestamp": meta["creationTimestamp"],
            },
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
            "status": {
                "replicas": (obj.get("status") or {}).get("replicas", 0),
                "selector": selector_to_string(selector),
            },
        }

    def write_scale(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        change: Callable[[dict], dict],
        *,
        manager: str | None,
        dry_run: bool = False,
    ) -> dict:
        """Update spec.replicas through the Scale view; `change` maps old Scale to new Scale."""
        with self.lock:
            old = self.get(rt, namespace, name)
            scale = change(clone(self.scale_of(rt, old)))
            sent_rv = (scale.get("metadata") or {}).get("resourceVersion")
            if sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
                raise conflict(rt, name)
            replicas = (scale.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise invalid(
                    rt,
                    name,
                    [
                        FieldError(
                            "Invalid",
                            "spec.replicas",
                            replicas,
                            "must be greater than or equal to 0",
                        )
                    ],
                )
            new = clone(old)
            new["spec"]["replicas"] = replicas
            obj = self._commit(rt, old, new, manager=manager, subresource="scale", dry_run=dry_run)
            return self.scale_of(rt, obj)

    # -- bulk helpers ----------------------------------------------------------------------

    def clear(self, types: Iterable[ResourceType]) -> None:
        with self.lock:
            for rt in types:
                self._data[rt.key] = {}


def _apply_merge(target: Any, value: Any) -> Any:
    """Merge an applied configuration: maps merge, lists and scalars are atomic, null removes."""
    if not isinstance(value, dict):
        return clone(value)
    result = clone(target) if isinstance(target, dict) else {}
    for key, child in value.items():
        if child is None:
            result.pop(key, None)
        else:
            result[key] = _apply_merge(result.get(key), child)
    return result


def _spec_changed(old: dict, new: dict) -> bool:
    """Generation counts changes to anything but metadata and status (spec, data, ...)."""
    keys = (set(old) | set(new)) - {"metadata", "status", "apiVersion", "kind"}
    return any(old.get(k, MISSING) != new.get(k, MISSING) for k in keys)


def _update_managers(
    rt: ResourceType, old: dict, new: dict, manager: str, subresource: str, raw: list | None
) -> list[dict] | None:
    """Record an Update operation: the updater takes the fields it changed from everyone."""
    scope = "status" if subresource == "status" else "main"
    old_leaves = dict(leaf_items(old, scope))
    new_leaves = dict(leaf_items(new, scope))
    changed = {p for p, v in new_leaves.items() if old_leaves.get(p, MISSING) != v}
    removed = set(old_leaves) - set(new_leaves)
    touched = changed | removed
    if not touched:
        return raw
    entries = [ManagedEntry.parse(r) for r in raw or []]
    own = next(
        (e for e in entries
         if e.manager == manager and e.operation == "Update" and e.subresource == subresource),
        None,
    )  # fmt: skip
    for entry in entries:
        if entry is not own:
            entry.paths = {p for p in entry.paths if not any(overlaps(p, t) for t in touched)}
    if own is None:
        own = ManagedEntry(manager, "Update", rt.api_version, "", subresource=subresource)
        entries.append(own)
    own.paths = {p for p in own.paths if not any(overlaps(p, r) for r in removed)} | changed
    own.time = now_rfc3339()
    return [e.render() for e in entries if e.paths] or None


def apply_conflict(
    rt: ResourceType, name: str, conflicts: list[tuple[ManagedEntry, Path]]
) -> ApiError:
    causes = []
    lines = []
    for entry, path in conflicts:
        where = "." + ".".join(path)
        text = f'conflict with "{entry.manager}"'
        if entry.operation == "Update":
            text += f" using {entry.api_version}"
        lines.append(f"{text}: {where}")
        causes.append({"reason": "FieldManagerConflict", "message": text, "field": where})
    plural = "conflict" if len(conflicts) == 1 else "conflicts"
    message = f"Apply failed with {len(conflicts)} {plural}: " + "\n".join(lines)
    details = {"name": name, "kind": rt.plural, "causes": causes}
    if rt.group:
        details["group"] = rt.group
    return ApiError(409, message, "Conflict", details)


def invalid_options(field_name: str, detail: str, *, required: bool = False) -> ApiError:
    label = "Required value" if required else "Forbidden"
    return ApiError(
        422,
        f'PatchOptions.meta.k8s.io "" is invalid: {field_name}: {label}: {detail}',
        "Invalid",
        {
            "group": "meta.k8s.io",
            "kind": "PatchOptions",
            "causes": [
                {
                    "reason": "FieldValueRequired" if required else "FieldValueForbidden",
                    "message": f"{label}: {detail}",
                    "field": field_name,
                }
            ],
        },
    )


def unsupported_patch(*, custom: bool) -> ApiError:
    accepted = [JSON_PATCH, MERGE_PATCH, APPLY_PATCH]
    if not custom:
        accepted.append(STRATEGIC_PATCH)
    return ApiError(
        415,
        "the body of the request was in an unknown format - accepted media types include: "
        + ", ".join(accepted),
        "UnsupportedMediaType",
    )


def qos_class(pod_spec: dict) -> str:
    containers = [c for c in pod_spec.get("containers") or [] if isinstance(c, dict)]
    requests_any = False
    guaranteed = bool(containers)
    for container in containers:
        resources = container.get("resources") or {}
        requests = dict(resources.get("limits") or {}) | dict(resources.get("requests") or {})
        limits = resources.get("limits") or {}
        if requests or limits:
            requests_any = True
        for name in ("cpu", "memory"):
            if name not in limits or requests.get(name) != limits.get(name):
                guaranteed = False
    if not requests_any:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


__all__ = [
    "APPLY_PATCH",
    "JSON_PATCH",
    "MERGE_PATCH",
    "STRATEGIC_PATCH",
    "ListResult",
    "ObjectStore",
    "random_suffix",
]
