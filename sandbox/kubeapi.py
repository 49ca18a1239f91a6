"""A local Kubernetes API server for the sandbox compute pool: the real HTTP API, in memory.

The console's driver uses the official `kubernetes` client against it exactly as against a real
cluster: same paths, verbs, status codes, `Status` error bodies, server-side apply, selectors,
watches. Tests reach inside through hooks: request counters, fault injection, an outage switch
and direct object access.
"""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import yaml

from sandbox.apimachinery import (
    ApiError,
    bad_request,
    clone,
    json_patch,
    labels_match,
    merge_patch,
    parse_field_selector,
    parse_label_selector,
    strategic_merge_patch,
)
from sandbox.resources import KUBE_VERSION, Registry, ResourceType
from sandbox.store import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_PATCH,
    ObjectStore,
    unsupported_patch,
)

PATCH_TYPES = (APPLY_PATCH, MERGE_PATCH, STRATEGIC_PATCH, JSON_PATCH)
BOOTSTRAP_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
CONTROL_PREFIX = "/_emulator"


@dataclass
class Response:
    code: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RequestRecord:
    """One entry of the bounded log of recent requests."""

    time: float
    method: str
    path: str
    query: str
    status: int
    verb: str
    resource: str
    namespace: str
    name: str
    duration_ms: float
    user_agent: str
    content_type: str


@dataclass
class _Fault:
    remaining: int
    status: int
    verb: str | None
    resource: str | None
    message: str


@dataclass
class _Route:
    """What a request addresses, in the audit log's words."""

    verb: str = "get"
    rt: ResourceType | None = None
    namespace: str | None = None
    name: str = ""
    subresource: str = ""

    @property
    def resource(self) -> str:
        if self.rt is None:
            return ""
        return f"{self.rt.plural}/{self.subresource}" if self.subresource else self.rt.plural


class _Watch:
    """A watch answered as a stream of JSON lines by the HTTP handler."""

    def __init__(self, initial: list[tuple[str, dict]], events: queue.Queue, deadline: float,
                 cleanup: Callable[[], None]) -> None:  # fmt: skip
        self.initial = initial
        self.events = events
        self.deadline = deadline
        self.cleanup = cleanup


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1", "yes")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], emulator: KubeEmulator) -> None:
        self.emulator = emulator
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sandbox-kube-apiserver/1.30"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle's algorithm and
        # delayed ACKs add ~40 ms to every keep-alive request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # the emulator keeps its own bounded log

    def _serve(self) -> None:
        try:
            self.server.emulator._serve(self)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


class KubeEmulator:
    """An in-memory Kubernetes API server on a local port (HTTP, no auth unless `token`).

    crds: which custom resources the cluster "has" (`nimservices`, `nimcaches`,
    `inferenceservices`); they appear in discovery only then.
    token: when set, requests must carry `Authorization: Bearer <token>` (else 401).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        crds: Iterable[str] = (),
        token: str | None = None,
        log_size: int = 500,
    ) -> None:
        self.host = host
        self.port = port
        self.token = token
        self.registry = Registry(crds)
        self.store = ObjectStore(self.registry)
        self.request_log: deque[RequestRecord] = deque(maxlen=log_size)
        self.pod_log_provider: Callable[[dict, str, bool], str] | None = None
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._counts_lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._latency = 0.0
        self._write_listeners: list[Callable[[], None]] = []
        self._json_cache: dict[tuple[str, str, str], tuple[dict, bytes]] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._down = False
        self._stopping = threading.Event()
        self._bootstrap()

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> str:
        """Serve in a daemon thread; returns the base URL."""
        self._stopping.clear()
        self._listen()
        return self.url

    def stop(self) -> None:
        self._stopping.set()
        self._close_server()

    def __enter__(self) -> KubeEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _listen(self) -> None:
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"kube-emulator:{self.port}",
            daemon=True,
        )
        self._thread.start()

    def _close_server(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        # Keep-alive connections would otherwise keep being served by their threads.
        with server.connections_lock:
            connections = list(server.connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                conn.close()
            except OSError:
                pass

    def set_down(self, down: bool = True) -> None:
        """Simulate an outage: stop listening (connection refused) and drop open connections.

        Coming back up listens on the same port again; the stored objects are kept.
        """
        if down and not self._down:
            self._down = True
            self._close_server()
        elif not down and self._down:
            self._down = False
            self._listen()

    def set_down_for(self, seconds: float) -> None:
        """An outage of `seconds` (from now), then back up by itself."""
        self.set_down(True)
        timer = threading.Timer(seconds, self.set_down, args=(False,))
        timer.daemon = True
        timer.start()

    @property
    def is_down(self) -> bool:
        return self._down

    # -- test hooks --------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        *,
        verb: str | None = None,
        resource: str | None = None,
        message: str | None = None,
    ) -> None:
        """The next `n` matching API requests answer `status` with a Status body."""
        with self._counts_lock:
            self._faults.append(
                _Fault(n, status, verb, resource, message or "sandbox fault injection")
            )

    def clear_faults(self) -> None:
        with self._counts_lock:
            self._faults.clear()

    def set_latency(self, seconds: float) -> None:
        """Delay every API request by `seconds` (to exercise client timeouts)."""
        self._latency = max(0.0, seconds)

    def count(
        self, verb: str | None = None, resource: str | None = None, namespace: str | None = None
    ) -> int:
        """Requests seen since the last reset, filtered by audit verb (get, list, watch,
        create, update, patch, delete, deletecollection), resource (`deployments`,
        `deployments/status`, or a non-resource path such as `/version`) and namespace."""
        with self._counts_lock:
            return sum(
                n
                for (v, r, ns), n in self._counts.items()
                if (verb is None or v == verb)
                and (resource is None or r == resource)
                and (namespace is None or ns == namespace)
            )

    def counts(self) -> list[dict]:
        with self._counts_lock:
            return [
                {"verb": v, "resource": r, "namespace": ns, "count": n}
                for (v, r, ns), n in sorted(self._counts.items())
            ]

    def reset_counts(self) -> None:
        with self._counts_lock:
            self._counts.clear()
        self.request_log.clear()

    def stats(self) -> dict:
        return {
            "total": self.count(),
            "counts": self.counts(),
            "objects": {rt.plural: self.store.count(rt) for rt in self.registry},
            "resourceVersion": self.store.resource_version,
        }

    def get_object(self, kind: str, namespace: str | None, name: str) -> dict | None:
        """A copy of a stored object (kind may be `Deployment`, `deployments`, ...)."""
        rt = self.registry.lookup(kind)
        obj = self.store.try_get(rt, namespace or "", name)
        return clone(obj) if obj is not None else None

    def list_objects(
        self, kind: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict]:
        rt = self.registry.lookup(kind)
        result = self.store.list(rt, namespace, parse_label_selector(label_selector))
        return [clone(obj) for obj in result.items]

    def put_object(self, obj: dict) -> dict:
        """Store an object as given (create or overwrite; no validation); returns a copy."""
        rt = self.registry.lookup(obj["kind"])
        return clone(self.store.put(rt, obj))

    def delete_object(self, kind: str, namespace: str | None, name: str) -> bool:
        return self.store.delete_internal(self.registry.lookup(kind), namespace or "", name)

    def add_write_listener(self, listener: Callable[[], None]) -> None:
        """Called after every successful write through the API (the kubelet wakes on it)."""
        self._write_listeners.append(listener)

    def kubeconfig(self, path: str | None = None, *, context: str = "sandbox") -> str:
        """A kubeconfig pointing at this emulator (written to `path` when given)."""
        user: dict = {"token": self.token} if self.token else {}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "users": [{"name": context, "user": user}],
            "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
            "current-context": context,
        }
        text = yaml.safe_dump(config, sort_keys=False)
        if path:
            with open(path, "w") as fh:
                fh.write(text)
        return text

    # -- bootstrap ---------------------------------------------------------------------

    def _bootstrap(self) -> None:
        ns_rt = self.registry.lookup("namespaces")
        sa_rt = self.registry.lookup("serviceaccounts")
        for name in BOOTSTRAP_NAMESPACES:
            self.store.put(
                ns_rt,
                {
                    "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
                    "spec": {"finalizers": ["kubernetes"]},
                    "status": {"phase": "Active"},
                },
            )
            self.store.put(sa_rt, {"metadata": {"name": "default", "namespace": name}})
        self.store.put(
            self.registry.lookup("services"),
            {
                "metadata": {
                    "name": "kubernetes",
                    "namespace": "default",
                    "labels": {"component": "apiserver", "provider": "kubernetes"},
                },
                "spec": {
                    "type": "ClusterIP",
                    "clusterIP": "10.96.0.1",
                    "clusterIPs": ["10.96.0.1"],
                    "ports": [
                        {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}
                    ],
                    "sessionAffinity": "None",
                },
                "status": {"loadBalancer": {}},
            },
        )
        crd_rt = self.registry.lookup("customresourcedefinitions")
        for crd in self.registry.crd_objects():
            self.store.put(crd_rt, crd)

    # -- HTTP --------------------------------------------------------------------------

    def _serve(self, handler: _Handler) -> None:
        started = time.perf_counter()
        method = handler.command
        parts = urlsplit(handler.path)
        path = parts.path.rstrip("/") or "/"
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        body = self._read_body(handler)
        route = _Route()
        if path.startswith(CONTROL_PREFIX):
            response: Response | _Watch = self._control(method, path, body)
        else:
            if self._latency:
                time.sleep(self._latency)
            try:
                route = self._route(method, path, query)
                self._authorize(handler, path)
                self._inject_fault(route, path)
                response = self._handle(method, route, query, handler, body)
            except ApiError as err:
                response = Response(err.code, _json(err.status()), headers=err.headers)
            except Exception as exc:  # a bug in the emulator must still answer like a server
                err = ApiError(500, f"Internal error occurred: {type(exc).__name__}: {exc}")
                response = Response(500, _json(err.status()))
            self._record(handler, method, path, parts.query, route, response, started)
        if isinstance(response, _Watch):
            self._stream_watch(handler, response)
        else:
            self._send(handler, response)

    @staticmethod
    def _read_body(handler: _Handler) -> bytes:
        length = handler.headers.get("Content-Length")
        if length:
            return handler.rfile.read(int(length))
        if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    handler.rfile.readline()
                    break
                chunks.append(handler.rfile.read(size))
                handler.rfile.readline()
            return b"".join(chunks)
        return b""

    @staticmethod
    def _send(handler: _Handler, response: Response) -> None:
        handler.send_response(response.code)
        handler.send_header("Content-Type", response.content_type)
        handler.send_header("Content-Length", str(len(response.body)))
        handler.send_header("Cache-Control", "no-cache, private")
        for key, value in response.headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(response.body)

    def _record(
        self,
        handler: _Handler,
        method: str,
        path: str,
        query: str,
        route: _Route,
        response: Response | _Watch,
        started: float,
    ) -> None:
        resource = route.resource if route.rt else path
        namespace = route.namespace or ""
        status = response.code if isinstance(response, Response) else 200
        with self._counts_lock:
            self._counts[(route.verb, resource, namespace)] += 1
        self.request_log.append(
            RequestRecord(
                time=time.time(),
                method=method,
                path=path,
                query=query,
                status=status,
                verb=route.verb,
                resource=resource,
                namespace=namespace,
                name=route.name,
                duration_ms=(time.perf_counter() - started) * 1000,
                user_agent=handler.headers.get("User-Agent", ""),
                content_type=handler.headers.get("Content-Type", ""),
            )
        )

    def _authorize(self, handler: _Handler, path: str) -> None:
        if not self.token or path in ("/healthz", "/readyz", "/livez", "/version"):
            return
        if handler.headers.get("Authorization", "") != f"Bearer {self.token}":
            raise ApiError(401, "Unauthorized", "Unauthorized")

    def _inject_fault(self, route: _Route, path: str) -> None:
        with self._counts_lock:
            for fault in self._faults:
                if fault.verb and fault.verb != route.verb:
                    continue
                if fault.resource and fault.resource not in (route.resource, path):
                    continue
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                headers = {"Retry-After": "1"} if fault.status == 429 else {}
                message = fault.message
                if fault.status == 500:
                    message = f"Internal error occurred: {fault.message}"
                raise ApiError(fault.status, message, headers=headers)

    # -- control endpoints (for processes that can't call the hooks) ----------------------

    def _control(self, method: str, path: str, body: bytes) -> Response:
        if path == f"{CONTROL_PREFIX}/stats" and method == "GET":
            return Response(200, _json(self.stats()))
        if path == f"{CONTROL_PREFIX}/reset" and method == "POST":
            self.reset_counts()
            return Response(200, _json({"reset": True}))
        if path == f"{CONTROL_PREFIX}/fail" and method == "POST":
            options = json.loads(body or b"{}")
            self.fail_next(
                int(options.get("count", 1)),
                int(options.get("status", 500)),
                verb=options.get("verb"),
                resource=options.get("resource"),
            )
            return Response(200, _json({"armed": True}))
        if path == f"{CONTROL_PREFIX}/outage" and method == "POST":
            # Answer first, then go down: the caller gets its reply.
            seconds = float(json.loads(body or b"{}").get("seconds", 5))
            threading.Timer(0.05, self.set_down_for, args=(seconds,)).start()
            return Response(200, _json({"down_for": seconds}))
        if path == f"{CONTROL_PREFIX}/latency" and method == "POST":
            self.set_latency(float(json.loads(body or b"{}").get("seconds", 0)))
            return Response(200, _json({"latency": self._latency}))
        return Response(404, _json({"error": "unknown emulator control endpoint"}))

    # -- routing -----------------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict[str, str]) -> _Route:
        parts = [p for p in path.split("/") if p]
        if not parts or parts[0] not in ("api", "apis"):
            return _Route()
        if parts[0] == "api":
            group, version, rest = "", parts[1] if len(parts) > 1 else "", parts[2:]
            if len(parts) < 2:
                return _Route()
        else:
            if len(parts) < 3:
                return _Route()
            group, version, rest = parts[1], parts[2], parts[3:]
        if not rest:
            return _Route()
        route = _Route()
        if rest[0] == "namespaces" and len(rest) >= 3:
            rt = self.registry.by_path(group, version, rest[2])
            if rt is not None and rt.namespaced:
                route.rt, route.namespace = rt, rest[1]
                tail = rest[3:]
            elif group == "" and len(rest) == 3:
                # /api/v1/namespaces/{name}/{subresource}
                route.rt = self.registry.lookup("namespaces")
                route.name, route.subresource = rest[1], rest[2]
                tail = None
            else:
                raise self._not_found_path()
        else:
            rt = self.registry.by_path(group, version, rest[0])
            if rt is None:
                raise self._not_found_path()
            route.rt = rt
            tail = rest[1:]
            if tail and rt.namespaced:
                raise self._not_found_path()
        if tail is not None:
            if len(tail) > 2:
                raise self._not_found_path()
            route.name = tail[0] if tail else ""
            route.subresource = tail[1] if len(tail) > 1 else ""
        assert route.rt is not None
        if route.subresource and route.subresource not in route.rt.subresources:
            raise self._not_found_path()
        collection = not route.name
        route.verb = {
            "GET": "watch"
            if collection and _truthy(query.get("watch"))
            else ("list" if collection else "get"),
            "HEAD": "get",
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "deletecollection" if collection else "delete",
        }.get(method, method.lower())
        return route

    @staticmethod
    def _not_found_path() -> ApiError:
        return ApiError(404, "the server could not find the requested resource", "NotFound", {})

    # -- handlers ----------------------------------------------------------------------

    def _handle(
        self, method: str, route: _Route, query: dict[str, str], handler: _Handler, body: bytes
    ) -> Response | _Watch:
        if route.rt is None:
            return self._non_resource(method, handler)
        rt = route.rt
        if route.verb not in rt.verbs and not route.subresource:
            raise ApiError(
                405,
                f'{route.verb} is not supported on resources of kind "{rt.group_resource}"',
                "MethodNotAllowed",
            )
        ns = route.namespace or ""
        dry_run = "dryRun" in query
        if dry_run and query["dryRun"] != "All":
            raise bad_request(f'Invalid dry run value "{query["dryRun"]}": supported values: "All"')
        manager = query.get("fieldManager") or None
        if manager is None and method in ("POST", "PUT", "PATCH"):
            # Like the real server: the manager is the user agent's first word.
            agent = handler.headers.get("User-Agent", "")
            manager = agent.split("/")[0][:128] or None
        if manager and len(manager) > 128:
            raise ApiError(422, "fieldManager: Too long: must have at most 128 bytes", "Invalid")
        store = self.store

        if route.subresource == "log":
            return self._pod_log(rt, ns, route.name, query)
        if route.subresource == "scale":
            return self._scale(method, rt, ns, route.name, query, handler, body, manager, dry_run)

        if method in ("GET", "HEAD"):
            if route.name:
                return Response(200, _json(store.get(rt, ns, route.name)))
            labels = parse_label_selector(query.get("labelSelector"))
            fields = parse_field_selector(query.get("fieldSelector"), rt)
            if route.verb == "watch":
                return self._start_watch(rt, route.namespace, labels, fields, query)
            limit = int(query["limit"]) if query.get("limit", "").isdigit() else None
            result = store.list(rt, route.namespace, labels, fields, limit, query.get("continue"))
            return Response(200, self._list_body(rt, result))

        if method == "POST":
            if route.name:
                raise ApiError(405, "POST is not supported on a named resource", "MethodNotAllowed")
            obj = store.create(
                rt, ns, self._decode(body, handler), manager=manager, dry_run=dry_run
            )
            self._wrote(dry_run)
            return Response(201, _json(obj))

        if method == "PUT":
            if not route.name:
                raise ApiError(405, "PUT is not supported on a collection", "MethodNotAllowed")
            obj = store.replace(
                rt, ns, route.name, self._decode(body, handler),
                subresource=route.subresource, manager=manager, dry_run=dry_run,
            )  # fmt: skip
            self._wrote(dry_run)
            return Response(200, _json(obj))

        if method == "PATCH":
            if not route.name:
                raise ApiError(405, "PATCH is not supported on a collection", "MethodNotAllowed")
            patch_type = self._patch_type(handler, rt)
            patch = self._decode(body, handler, yaml_ok=patch_type == APPLY_PATCH)
            force = _truthy(query.get("force")) if "force" in query else False
            if patch_type != APPLY_PATCH and "force" in query:
                force = True  # reported as the real "may not be specified" error
            obj, created = store.patch(
                rt, ns, route.name, patch_type, patch, subresource=route.subresource,
                manager=query.get("fieldManager") or (manager if patch_type != APPLY_PATCH else None),
                force=force, dry_run=dry_run,
            )  # fmt: skip
            self._wrote(dry_run)
            return Response(201 if created else 200, _json(obj))

        if method == "DELETE":
            options = self._delete_options(body, query)
            if route.name:
                result = store.delete(
                    rt, ns, route.name,
                    propagation=options.get("propagationPolicy"),
                    preconditions=options.get("preconditions"),
                    dry_run=dry_run,
                )  # fmt: skip
                self._wrote(dry_run)
                return Response(200, _json(result))
            labels = parse_label_selector(query.get("labelSelector"))
            fields = parse_field_selector(query.get("fieldSelector"), rt)
            deleted = store.delete_collection(
                rt, route.namespace, labels, fields,
                propagation=options.get("propagationPolicy"), dry_run=dry_run,
            )  # fmt: skip
            self._wrote(dry_run)
            return Response(
                200,
                _json(
                    {
                        "kind": f"{rt.kind}List",
                        "apiVersion": rt.api_version,
                        "metadata": {"resourceVersion": store.resource_version},
                        "items": deleted,
                    }
                ),
            )
        raise ApiError(405, f"{method} is not supported", "MethodNotAllowed")

    def _wrote(self, dry_run: bool) -> None:
        if not dry_run:
            for listener in self._write_listeners:
                listener()

    def _list_body(self, rt: ResourceType, result: Any) -> bytes:
        metadata: dict = {"resourceVersion": result.resource_version}
        if result.continue_token:
            metadata["continue"] = result.continue_token
            metadata["remainingItemCount"] = result.remaining
        head = _json({"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": metadata})
        items = b",".join(self._item_json(rt, obj) for obj in result.items)
        return head[:-1] + b',"items":[' + items + b"]}"

    def _item_json(self, rt: ResourceType, obj: dict) -> bytes:
        """An object's JSON as a list item, cached per resourceVersion (objects are immutable)."""
        meta = obj["metadata"]
        key = (rt.key, meta.get("namespace", ""), meta["name"])
        cached = self._json_cache.get(key)
        if cached is not None and cached[0] is obj:
            return cached[1]
        # Typed lists of built-in kinds carry no kind/apiVersion per item (CR lists do).
        item = (
            obj
            if rt.custom
            else {k: v for k, v in obj.items() if k != "kind" and k != "apiVersion"}
        )
        data = _json(item)
        if len(self._json_cache) > 200_000:
            self._json_cache.clear()
        self._json_cache[key] = (obj, data)
        return data

    def _patch_type(self, handler: _Handler, rt: ResourceType) -> str:
        content_type = handler.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type not in PATCH_TYPES:
            raise unsupported_patch(custom=rt.custom)
        return content_type

    @staticmethod
    def _decode(body: bytes, handler: _Handler, *, yaml_ok: bool = False) -> Any:
        if not body.strip():
            raise bad_request("the body of the request is empty")
        content_type = handler.headers.get("Content-Type", "").lower()
        try:
            return json.loads(body)
        except ValueError as exc:
            if yaml_ok or "yaml" in content_type:
                try:
                    return yaml.safe_load(body)
                except yaml.YAMLError as yexc:
                    raise bad_request(f"error converting YAML to JSON: {yexc}") from None
            raise bad_request(f"couldn't get version/kind; json parse error: {exc}") from None

    @staticmethod
    def _delete_options(body: bytes, query: dict[str, str]) -> dict:
        options: dict = {}
        if body.strip():
            try:
                options = json.loads(body)
            except ValueError:
                raise bad_request("invalid DeleteOptions body") from None
            if not isinstance(options, dict):
                raise bad_request("invalid DeleteOptions body")
        if query.get("propagationPolicy"):
            options["propagationPolicy"] = query["propagationPolicy"]
        policy = options.get("propagationPolicy")
        if policy not in (None, "Orphan", "Background", "Foreground"):
            raise ApiError(
                422,
                f'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported value: '
                f'"{policy}": supported values: "Foreground", "Background", "Orphan", "nil"',
                "Invalid",
            )
        return options

    def _non_resource(self, method: str, handler: _Handler) -> Response:
        path = urlsplit(handler.path).path.rstrip("/") or "/"
        if method not in ("GET", "HEAD"):
            raise ApiError(405, f"{method} is not supported on {path}", "MethodNotAllowed")
        if path in ("/healthz", "/readyz", "/livez"):
            return Response(200, b"ok", "text/plain; charset=utf-8")
        if path == "/version":
            return Response(200, _json(KUBE_VERSION))
        if path == "/api":
            return Response(200, _json(self.registry.api_versions(f"{self.host}:{self.port}")))
        if path == "/apis":
            return Response(200, _json(self.registry.api_group_list()))
        parts = [p for p in path.split("/") if p]
        document: dict | None = None
        if parts == ["api", "v1"]:
            document = self.registry.resource_list("", "v1")
        elif len(parts) == 2 and parts[0] == "apis":
            document = self.registry.api_group(parts[1])
        elif len(parts) == 3 and parts[0] == "apis":
            document = self.registry.resource_list(parts[1], parts[2])
        if document is None:
            raise self._not_found_path()
        return Response(200, _json(document))

    def _pod_log(self, rt: ResourceType, ns: str, name: str, query: dict[str, str]) -> Response:
        pod = self.store.get(rt, ns, name)
        containers = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
        container = query.get("container") or (containers[0] if len(containers) == 1 else "")
        if not container:
            raise bad_request(
                f"a container name must be specified for pod {name}, choose one of: {containers}"
            )
        if container not in containers:
            raise bad_request(f"container {container} is not valid for pod {name}")
        statuses = {s["name"]: s for s in (pod.get("status") or {}).get("containerStatuses") or []}
        state = (statuses.get(container) or {}).get("state") or {}
        previous = _truthy(query.get("previous"))
        if not previous and "waiting" in state and not statuses[container].get("lastState"):
            reason = state["waiting"].get("reason", "ContainerCreating")
            raise bad_request(
                f'container "{container}" in pod "{name}" is waiting to start: {reason}'
            )
        if container not in statuses:
            raise bad_request(
                f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating'
            )
        text = self.pod_log_provider(pod, container, previous) if self.pod_log_provider else ""
        tail = query.get("tailLines")
        if tail and tail.isdigit():
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-int(tail) :]) if int(tail) else ""
        return Response(200, text.encode(), "text/plain")

    def _scale(
        self,
        method: str,
        rt: ResourceType,
        ns: str,
        name: str,
        query: dict[str, str],
        handler: _Handler,
        body: bytes,
        manager: str | None,
        dry_run: bool,
    ) -> Response:
        if method == "GET":
            return Response(200, _json(self.store.scale_of(rt, self.store.get(rt, ns, name))))
        if method == "PUT":
            sent = self._decode(body, handler)
            scale = self.store.write_scale(
                rt, ns, name, lambda _old: sent, manager=manager, dry_run=dry_run
            )
        elif method == "PATCH":
            patch_type = self._patch_type(handler, rt)
            patch = self._decode(body, handler, yaml_ok=True)

            def change(old: dict) -> dict:
                if patch_type == JSON_PATCH:
                    return json_patch(old, patch)
                if patch_type == STRATEGIC_PATCH:
                    return strategic_merge_patch(old, patch)
                return merge_patch(old, patch)

            scale = self.store.write_scale(rt, ns, name, change, manager=manager, dry_run=dry_run)
        else:
            raise ApiError(405, f"{method} is not supported on scale", "MethodNotAllowed")
        self._wrote(dry_run)
        return Response(200, _json(scale))

    # -- watch -------------------------------------------------------------------------

    def _start_watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        labels: Any,
        fields: Any,
        query: dict[str, str],
    ) -> _Watch:
        events: queue.Queue = queue.Queue()

        def matches(obj: dict) -> bool:
            meta = obj["metadata"]
            if namespace is not None and meta.get("namespace") != namespace:
                return False
            if labels and not labels_match(labels, meta.get("labels")):
                return False
            return not fields or all(f.matches(obj) for f in fields)

        def listener(event: str, event_rt: ResourceType, obj: dict) -> None:
            if event_rt is rt and matches(obj):
                events.put((event, obj))

        timeout = query.get("timeoutSeconds", "")
        deadline = time.monotonic() + (int(timeout) if timeout.isdigit() else 1800)
        since = query.get("resourceVersion", "")
        with self.store.lock:
            if since in ("", "0"):
                initial = [
                    ("ADDED", obj) for obj in self.store.list(rt, namespace, labels, fields).items
                ]
            else:
                if not since.isdigit():
                    raise bad_request(f"invalid resource version: {since}")
                oldest = self.store.history[0][0] if self.store.history else self.store._rv + 1
                if int(since) < oldest - 1 and int(since) < self.store._rv:
                    raise ApiError(410, f"too old resource version: {since} ({oldest})", "Expired")
                initial = [
                    (event, obj)
                    for rv, event, event_rt, obj in self.store.history
                    if rv > int(since) and event_rt is rt and matches(obj)
                ]
            self.store.add_listener(listener)
        return _Watch(initial, events, deadline, lambda: self.store.remove_listener(listener))

    def _stream_watch(self, handler: _Handler, watch: _Watch) -> None:
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Transfer-Encoding", "chunked")
            handler.send_header("Cache-Control", "no-cache, private")
            handler.end_headers()

            def write(event: str, obj: dict) -> None:
                line = _json({"type": event, "object": obj}) + b"\n"
                handler.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                handler.wfile.flush()

            for event, obj in watch.initial:
                write(event, obj)
            while not self._stopping.is_set() and self._server is not None:
                remaining = watch.deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    event, obj = watch.events.get(timeout=min(remaining, 0.25))
                except queue.Empty:
                    continue
                write(event, obj)
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        except OSError:
            handler.close_connection = True
        finally:
            watch.cleanup()


__all__ = ["KubeEmulator", "RequestRecord", "Response"]
