"""The sandbox cluster's data plane on one loopback port: an ingress controller and Service DNS.

A request is routed by its Host header, the way a real cluster would route it:
- `<service>.<namespace>.svc[.cluster.local]`: straight to that Service, as a pod inside the
  cluster would call it (what the engines' credential and NetworkPolicy are for);
- an Ingress rule's host (networking.k8s.io/v1, longest matching path) or an HTTPRoute's
  hostname (gateway.networking.k8s.io/v1): to the backend Service, as an ingress controller or
  Gateway would.
Then Service selector → a Ready pod → the container behind the Service's targetPort, which
checks its credential the way the real program does (below), and the request goes on to the
simulated engine. Unknown hosts answer 404 and Services without Ready pods 503, like
ingress-nginx's default backend.

Credentials, as the real programs check them (renderers/exposure.py has the sources):
- vLLM (`vllm serve` / a vllm image): `--api-key` or env VLLM_API_KEY; only /v1 paths;
- TGI / TEI images: `--api-key` or env API_KEY;
- nginx started with a generated config: the config's `listen` port and its
  `if ($http_authorization != "Bearer ${VAR}")` check, VAR read from the container's env.
Env values from `secretKeyRef` are read from the stored Secret. NetworkPolicies are not enforced.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sandbox.apimachinery import labels_match, selector_from_label_selector

if TYPE_CHECKING:
    from sandbox.kubeapi import KubeEmulator

_SERVICE_HOST = re.compile(r"^([a-z0-9-]+)\.([a-z0-9-]+)\.svc(\.cluster\.local)?$")
_NGINX_LISTEN = re.compile(r"\blisten\s+(\d+)\s*;")
_NGINX_BEARER = re.compile(r'"Bearer \$\{(\w+)\}"')
_HOP_HEADERS = {"host", "authorization", "connection", "keep-alive", "transfer-encoding", "content-length"}


class Refused(Exception):
    def __init__(self, status: int, body: dict | str) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


class ClusterNetwork:
    """Routes HTTP by Host to Services and their Ready pods, then to the simulated engine."""

    def __init__(self, emulator: KubeEmulator, *, engine_url: str | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:  # fmt: skip
        self.emulator = emulator
        self.store = emulator.store
        self.engine_url = engine_url
        self.host = host
        self.port = port
        self.requests: list[dict[str, Any]] = []  # what reached an engine: host, path, service
        self._lock = threading.Lock()
        self._turns: dict[tuple[str, str], int] = {}
        self._in_flight: dict[tuple[str, str], int] = {}
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> str:
        network = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def _serve(self) -> None:
                try:
                    network._handle(self)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         name=f"sandbox-network:{self.port}", daemon=True).start()  # fmt: skip
        return self.url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    # -- routing -----------------------------------------------------------------------

    def _objects(self, kind: str, namespace: str | None = None) -> list[dict]:
        try:
            rt = self.emulator.registry.lookup(kind)
        except KeyError:
            return []
        return self.store.objects(rt, namespace) if namespace else self.store.objects(rt)

    def resolve(self, host: str, path: str) -> tuple[str, str, int | str]:
        """(namespace, service, service port) for a Host and path, or Refused(404)."""
        match = _SERVICE_HOST.match(host)
        if match:
            return match.group(2), match.group(1), 80
        best: tuple[int, tuple[str, str, int | str]] | None = None
        for ingress in self._objects("ingresses"):
            ns = ingress["metadata"]["namespace"]
            for rule in (ingress.get("spec") or {}).get("rules") or []:
                if rule.get("host") != host:
                    continue
                for p in (rule.get("http") or {}).get("paths") or []:
                    prefix = p.get("path") or "/"
                    exact = p.get("pathType") == "Exact"
                    if (exact and path != prefix) or not path.startswith(prefix.rstrip("/") or "/"):
                        continue
                    service = (p.get("backend") or {}).get("service") or {}
                    port = (service.get("port") or {}).get("number") or (service.get("port") or {}).get("name")
                    if best is None or len(prefix) > best[0]:
                        best = (len(prefix), (ns, service.get("name", ""), port))
        if best is not None:
            return best[1]
        for route in self._objects("httproutes"):
            spec = route.get("spec") or {}
            if host not in (spec.get("hostnames") or []):
                continue
            for rule in spec.get("rules") or []:
                for ref in rule.get("backendRefs") or []:
                    return route["metadata"]["namespace"], ref.get("name", ""), ref.get("port", 80)
        raise Refused(404, "default backend - 404")

    def endpoint(self, namespace: str, service_name: str, port: int | str) -> tuple[dict, dict, int | str]:
        """A Ready pod behind the Service and the container serving its targetPort."""
        found = self.endpoints(namespace, service_name, port)
        return found[0][0], found[0][1], found[0][2]

    def endpoints(self, namespace: str, service_name: str, port: int | str) -> list[tuple[dict, dict, int | str]]:
        """Every Ready pod behind the Service with its container, or Refused(503) when none."""
        found: list[tuple[dict, dict, int | str]] = []
        service = self.store.try_get(self.emulator.registry.lookup("services"), namespace, service_name)
        if service is None:
            raise Refused(503, "503 Service Temporarily Unavailable")
        spec = service.get("spec") or {}
        target: int | str = port
        for sp in spec.get("ports") or []:
            if sp.get("port") == port or sp.get("name") == port:
                target = sp.get("targetPort", sp.get("port"))
                break
        if not spec.get("selector"):
            raise Refused(503, "503 Service Temporarily Unavailable")
        selector = selector_from_label_selector({"matchLabels": spec.get("selector") or {}})
        for pod in self._objects("pods", namespace):
            if pod["metadata"].get("deletionTimestamp") or not labels_match(selector, pod["metadata"].get("labels")):
                continue
            ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in (pod.get("status") or {}).get("conditions") or [])  # fmt: skip
            if not ready:
                continue
            container = self._container_for(pod, target)
            if container is not None:
                found.append((pod, container, target))
        if not found:
            raise Refused(503, "503 Service Temporarily Unavailable")
        return found

    @staticmethod
    def _container_for(pod: dict, target: int | str) -> dict | None:
        containers = (pod.get("spec") or {}).get("containers") or []
        for c in containers:
            for p in c.get("ports") or []:
                if p.get("name") == target or p.get("containerPort") == target:
                    return c
        for c in containers:  # nginx listens where its config says, declared or not
            listen = _NGINX_LISTEN.search(" ".join(c.get("command") or []) + " ".join(c.get("args") or []))
            if listen and int(listen.group(1)) == target:
                return c
        return None

    # -- credentials -------------------------------------------------------------------

    def _env(self, pod: dict, container: dict, name: str) -> str | None:
        for env in container.get("env") or []:
            if env.get("name") != name:
                continue
            if "value" in env:
                return str(env["value"])
            ref = (env.get("valueFrom") or {}).get("secretKeyRef") or {}
            secret = self.store.try_get(self.emulator.registry.lookup("secrets"),
                                        pod["metadata"]["namespace"], ref.get("name", ""))  # fmt: skip
            data = (secret or {}).get("data") or {}
            if ref.get("key") in data:
                return base64.b64decode(data[ref["key"]]).decode()
            string_data = (secret or {}).get("stringData") or {}
            return string_data.get(ref.get("key"))
        return None

    def required_key(self, pod: dict, container: dict) -> str | None:
        """The Bearer token the container's program demands, or None if it demands none."""
        command = [*(container.get("command") or []), *(container.get("args") or [])]
        script = " ".join(command)
        if "nginx" in script and _NGINX_LISTEN.search(script):
            bearer = _NGINX_BEARER.search(script)
            return self._env(pod, container, bearer.group(1)) if bearer else None
        for i, arg in enumerate(command):
            if arg == "--api-key" and i + 1 < len(command):
                return command[i + 1]
            if arg.startswith("--api-key="):
                return arg.split("=", 1)[1]
        image = container.get("image", "")
        if "vllm" in image or command[:2] == ["vllm", "serve"]:
            return self._env(pod, container, "VLLM_API_KEY")
        if "text-generation-inference" in image or "text-embeddings-inference" in image:
            return self._env(pod, container, "API_KEY")
        return None

    # -- HTTP --------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        host = (handler.headers.get("Host") or "").split(":")[0].lower()
        path = urlsplit(handler.path).path
        try:
            namespace, service, port = self.resolve(host, path)
            ready = self.endpoints(namespace, service, port)
            # Round robin over the Ready pods, and the load each one carries (the engine's latency).
            with self._lock:
                turn = self._turns.get((namespace, service), 0)
                self._turns[(namespace, service)] = turn + 1
                in_flight = self._in_flight.get((namespace, service), 0) + 1
            pod, container, _ = ready[turn % len(ready)]
            key = self.required_key(pod, container)
            if key and path.startswith("/v1") and handler.headers.get("Authorization") != f"Bearer {key}":
                raise Refused(401, {"error": "Unauthorized"})
            if not self.engine_url:
                raise Refused(502, "502 Bad Gateway: no engine behind the sandbox network")
            self.requests.append({"host": host, "path": path, "namespace": namespace, "service": service,
                                  "pod": pod["metadata"]["name"]})  # fmt: skip
            with self._lock:
                self._in_flight[(namespace, service)] = self._in_flight.get((namespace, service), 0) + 1
            try:
                self._forward(handler, body, replica_load=in_flight / len(ready))
            finally:
                with self._lock:
                    self._in_flight[(namespace, service)] -= 1
        except Refused as refused:
            data = refused.body if isinstance(refused.body, bytes) else (
                json.dumps(refused.body).encode() if isinstance(refused.body, dict) else refused.body.encode()
            )
            handler.send_response(refused.status)
            handler.send_header("Content-Type", "application/json" if isinstance(refused.body, dict) else "text/plain")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)

    def _forward(self, handler: BaseHTTPRequestHandler, body: bytes, *, replica_load: float = 1.0) -> None:
        target = urlsplit(self.engine_url or "")
        conn = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=300)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_HEADERS}
            headers["Content-Length"] = str(len(body))
            headers["x-sandbox-replica-load"] = f"{replica_load:.3f}"
            conn.request(handler.command, handler.path, body=body, headers=headers)
            response = conn.getresponse()
            handler.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in _HOP_HEADERS:
                    handler.send_header(key, value)
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            while True:
                chunk = response.read1(65536)
                if not chunk:
                    break
                handler.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                handler.wfile.flush()
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        except (OSError, http.client.HTTPException):
            handler.close_connection = True
        finally:
            conn.close()

