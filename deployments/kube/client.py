"""Connecting to a compute pool's Kubernetes API and classifying what goes wrong there."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import logging
import os
import re
import socket
import ssl
import tempfile
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import urllib3
from django.conf import settings
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from deployments.kube.kubeconfig import KubeconfigRefused, ReducedKubeconfig, reduce_kubeconfig
from deployments.kube.network import pinned_public_server, sandbox_url_refusal

if TYPE_CHECKING:
    from deployments.models import ComputePool

log = logging.getLogger(__name__)

FIELD_MANAGER = "modeldeck"
# (connect, read) seconds for every call: a hung API server must not hold a Celery worker, and
# the status sync of one dead pool must not delay the others by much.
REQUEST_TIMEOUT = (3.0, 20.0)
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"


class KubeError(Exception):
    """A Kubernetes call failed; `message` is in words a user can act on."""

    permanent = False

    def __init__(
        self, message: str, *, status: int | None = None, kind: str = "", reason: str = ""
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.kind = kind
        self.reason = reason


class PermanentKubeError(KubeError):
    """Retrying can't help (400, 401, 403, 404, 422): the spec or the credentials must change."""

    permanent = True


class TransientKubeError(KubeError):
    """Worth retrying (connection refused, timeouts, 409, 429, 5xx)."""


class PoolUnreachable(TransientKubeError):
    """The API server could not be reached at all."""


# Field paths from a 422's `details.causes` (e.g. spec.template.spec.containers[0].image): the
# only part of a remote answer ever shown, and only when it looks like a field path.
_FIELD_PATH = re.compile(r"^[A-Za-z0-9_.\[\]/-]{1,120}$")


def _invalid_fields(exc: ApiException) -> list[str]:
    try:
        causes = (json.loads(exc.body or "").get("details") or {}).get("causes") or []
        fields = [str(c.get("field") or "") for c in causes if isinstance(c, dict)]
    except (ValueError, AttributeError, TypeError):
        return []
    return [f for f in dict.fromkeys(fields) if _FIELD_PATH.match(f)][:3]


def _status_details_kind(exc: ApiException) -> str:
    try:
        return str((json.loads(exc.body or "").get("details") or {}).get("kind") or "")
    except (ValueError, AttributeError):
        return ""


def _unreachable_words(exc: BaseException) -> str:
    """Fixed words for a failed connection, from the exception chain (never its text: an
    error string can carry what the other side said)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 8:
        seen.append(current)
        reason = getattr(current, "reason", None)
        current = reason if isinstance(reason, BaseException) else (current.__cause__ or current.__context__)
    for err in seen:
        if isinstance(err, urllib3.exceptions.NameResolutionError) or isinstance(err, socket.gaierror):
            return "the host name of its API server could not be resolved"
        if isinstance(err, (ssl.SSLError, urllib3.exceptions.SSLError)):
            return ("the TLS handshake failed or the server's certificate was not trusted; include "
                    "certificate-authority-data for the cluster")  # fmt: skip
        if isinstance(err, (TimeoutError, socket.timeout, urllib3.exceptions.TimeoutError)):
            return "its API server did not answer in time (timed out)"
        if isinstance(err, ConnectionRefusedError):
            return "nothing answered at its API server address (connection refused)"
        if isinstance(err, (ConnectionResetError, urllib3.exceptions.ProtocolError)):
            return "the connection was closed before the API server answered"
    return "the connection to its API server failed"


def classify(exc: BaseException, *, kind: str = "", action: str = "") -> KubeError:
    """Turn a client exception into a permanent or transient KubeError in fixed words.

    The words never quote the remote answer's body or an exception's text: a pool's address is
    tenant input, and whatever answers there (another service of the network, a file read by a
    loader) must not come back through ModelDeck. The status code and our own names
    (`kind`, `action`) are all that is shown; the full answer goes to the server log.
    """
    if isinstance(exc, KubeError):
        return exc
    what = kind or "the object"
    doing = action or "the request"
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        if status:
            log.info("kubernetes answered %s for %s %s", status, doing, what,
                     extra={"kube_status": status, "kube_body": (exc.body or "")[:2000]})  # fmt: skip
        if status == 401:
            return PermanentKubeError(
                "The cluster refused the credentials (HTTP 401): check the kubeconfig's token or "
                "client certificate; it may have expired.",
                status=status, kind=kind, reason="Unauthorized",
            )  # fmt: skip
        if status == 403:
            return PermanentKubeError(
                f"The cluster did not allow {doing} on {what} (HTTP 403): the pool's identity needs "
                "RBAC rights for it. Check the compute pool's credentials and RBAC.",
                status=status, kind=kind, reason="Forbidden",
            )  # fmt: skip
        if status == 404 and _status_details_kind(exc) == "namespaces":
            # The namespace went away between our check and the write: the next push recreates it.
            return TransientKubeError(
                f"Kubernetes: the namespace of the {what} is gone (HTTP 404). Retrying.",
                status=status, kind=kind, reason="NotFound",
            )  # fmt: skip
        if status == 404:
            return PermanentKubeError(
                f"Kubernetes has no {what} there (HTTP 404): is this address a Kubernetes API "
                "server, and does the cluster serve that kind?",
                status=status, kind=kind, reason="NotFound",
            )  # fmt: skip
        if status in (400, 422):
            fields = _invalid_fields(exc)
            at = f" at {', '.join(fields)}" if fields else ""
            return PermanentKubeError(
                f"Kubernetes refused the {what} as invalid (HTTP {status}){at}. Fix the spec and "
                "update the deployment.",
                status=status, kind=kind, reason="Invalid" if status == 422 else "BadRequest",
            )  # fmt: skip
        if status == 0:
            return PoolUnreachable(
                f"The Kubernetes API could not be reached: {_unreachable_words(exc)}.", kind=kind
            )
        if status == 409:
            return TransientKubeError(
                f"Kubernetes reported a conflict on the {what} (HTTP 409). Retrying.",
                status=status, kind=kind, reason="Conflict",
            )  # fmt: skip
        if status == 429:
            return TransientKubeError(
                "The cluster asked ModelDeck to slow down (HTTP 429). Retrying.",
                status=status, kind=kind, reason="TooManyRequests",
            )  # fmt: skip
        return TransientKubeError(
            f"The cluster's API server answered HTTP {status} for {doing} on {what}. Retrying.",
            status=status, kind=kind, reason="ServerError",
        )  # fmt: skip
    if isinstance(exc, (urllib3.exceptions.HTTPError, OSError, TimeoutError)):
        return PoolUnreachable(
            f"The Kubernetes API could not be reached: {_unreachable_words(exc)}.", kind=kind
        )
    if isinstance(exc, ValueError):  # a 200 whose body is not JSON
        return PermanentKubeError(
            "Something answered at the pool's address, but not like a Kubernetes API server.",
            kind=kind, reason="NotKubernetes",
        )  # fmt: skip
    log.warning("unexpected error talking to kubernetes", exc_info=exc)
    return TransientKubeError(
        "Unexpected error talking to Kubernetes; the server log has the details.", kind=kind
    )


@dataclass
class Kube:
    """The typed API groups of one pool, sharing one connection pool."""

    api_client: k8s.ApiClient
    core: k8s.CoreV1Api
    apps: k8s.AppsV1Api
    version: k8s.VersionApi

    @property
    def networking(self) -> k8s.NetworkingV1Api:
        return k8s.NetworkingV1Api(self.api_client)

    @property
    def batch(self) -> k8s.BatchV1Api:
        return k8s.BatchV1Api(self.api_client)

    @property
    def custom(self) -> k8s.CustomObjectsApi:
        return k8s.CustomObjectsApi(self.api_client)

    @property
    def apis(self) -> k8s.ApisApi:
        return k8s.ApisApi(self.api_client)

    def close(self) -> None:
        self.api_client.close()

    def __enter__(self) -> Kube:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_secret_dir: str | None = None
_secret_lock = threading.Lock()


def _secret_file(data: bytes) -> str:
    """A private file holding a client certificate or key: Python's ssl module loads those only
    from a path. The content is ours (decoded from the reduced kubeconfig), never a tenant's path;
    one 0700 directory per process, one 0600 file per content."""
    global _secret_dir
    with _secret_lock:
        if _secret_dir is None or not os.path.isdir(_secret_dir):
            _secret_dir = tempfile.mkdtemp(prefix="modeldeck-kube-")
        path = os.path.join(_secret_dir, hashlib.sha256(data).hexdigest())
        if not os.path.exists(path):
            fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(path + ".tmp", path)
        return path


def pool_kubeconfig(pool: ComputePool) -> ReducedKubeconfig:
    """The pool's kubeconfig reduced (rows stored before reduction existed are reduced here
    too, so they can't run or read anything either); PermanentKubeError names a refused field."""
    try:
        return reduce_kubeconfig(pool.kubeconfig or "")
    except KubeconfigRefused as err:
        raise PermanentKubeError(
            f"The compute pool's kubeconfig can't be used: {err.text()} "
            "Replace it on the pool's page.",
            reason="KubeconfigRefused",
        ) from None


def configuration_from(reduced: ReducedKubeconfig) -> k8s.Configuration:
    """A client configuration built in memory from a reduced kubeconfig (no loader involved)."""
    cfg = k8s.Configuration()
    cfg.host = reduced.server
    cfg.verify_ssl = not reduced.insecure_skip_tls_verify
    if reduced.certificate_authority_data:
        cfg.ca_cert_data = base64.b64decode(reduced.certificate_authority_data).decode("ascii", "replace")
    if reduced.tls_server_name:
        cfg.tls_server_name = reduced.tls_server_name
    if reduced.token:
        cfg.api_key = {"authorization": f"Bearer {reduced.token}"}
    if reduced.client_certificate_data:
        cfg.cert_file = _secret_file(base64.b64decode(reduced.client_certificate_data))
        cfg.key_file = _secret_file(base64.b64decode(reduced.client_key_data))
    return cfg


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def configuration_for(pool: ComputePool) -> k8s.Configuration:
    if pool.kind == "sandbox":
        refusal = sandbox_url_refusal(pool.api_url)
        if refusal:
            raise PermanentKubeError(f"The sandbox pool can't be used: {refusal}", reason="SandboxRefused")
        cfg = k8s.Configuration()
        cfg.host = (pool.api_url or settings.SANDBOX_KUBE_URL).rstrip("/")
    elif pool.kind == "in_cluster":
        # The operator's own service account, from this machine's environment: not tenant data.
        cfg = k8s.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=cfg)
        except Exception:
            raise PermanentKubeError(
                "In-cluster access needs ModelDeck to run inside the cluster with a mounted service "
                "account token.", reason="InClusterUnavailable",
            ) from None  # fmt: skip
    elif pool.kind == "kubeconfig":
        reduced = pool_kubeconfig(pool)
        cfg = configuration_from(reduced)
        if pool.needs_public_address():
            # Called at the address this lookup checked (not a second lookup at connect time,
            # which a tenant's DNS could answer with 127.0.0.1); TLS still names the host.
            pinned, refusal = pinned_public_server(reduced.server)
            if refusal:
                raise PermanentKubeError(
                    f"The compute pool's API server {refusal}", reason="AddressRefused"
                )
            cfg.host = pinned.rstrip("/")
            if not cfg.tls_server_name and not _is_address(reduced.host):
                cfg.tls_server_name = reduced.host
    else:
        raise PermanentKubeError(f"Unknown compute pool kind {pool.kind!r}.")
    # Retries are ours (Celery, bounded); urllib3's own would multiply the wait on a dead pool.
    cfg.retries = 0
    return cfg


def client_for(pool: ComputePool) -> k8s.ApiClient:
    """An ApiClient for the pool: reduced kubeconfig (encrypted field), in-cluster, or the sandbox."""
    try:
        cfg = configuration_for(pool)
    except KubeError:
        raise
    except Exception:  # the in-cluster loader raises ConfigException, OSError...
        log.warning("compute pool connection settings unusable", exc_info=True, extra={"pool": pool.pk})
        raise PermanentKubeError(
            "The compute pool's connection settings can't be used; the server log has the details."
        ) from None
    api_client = k8s.ApiClient(cfg)
    api_client.user_agent = "modeldeck"
    return api_client


def kube_for(pool: ComputePool) -> Kube:
    api_client = client_for(pool)
    return Kube(
        api_client, k8s.CoreV1Api(api_client), k8s.AppsV1Api(api_client), k8s.VersionApi(api_client)
    )


def raw(call: Any, *args: Any, kind: str = "", action: str = "", **kwargs: Any) -> dict[str, Any]:
    """Make a typed client call and return the JSON body as a dict (no model objects: lists
    of a thousand Deployments are parsed far faster this way)."""
    try:
        response = call(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        try:
            data = response.data
        finally:
            response.release_conn()  # back to the pool: a sync cycle reuses one connection
        return json.loads(data) if data else {}
    except Exception as exc:
        raise classify(exc, kind=kind, action=action) from exc
