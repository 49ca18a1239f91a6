"""Connecting to a compute pool's Kubernetes API and classifying what goes wrong there."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import urllib3
import yaml
from django.conf import settings
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

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


def _status_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
        return str(body.get("message") or exc.reason or "")
    except (ValueError, AttributeError):
        return str(exc.reason or exc.body or "")


def _status_details_kind(exc: ApiException) -> str:
    try:
        return str((json.loads(exc.body or "").get("details") or {}).get("kind") or "")
    except (ValueError, AttributeError):
        return ""


def classify(exc: BaseException, *, kind: str = "", action: str = "") -> KubeError:
    """Turn a client exception into a permanent or transient KubeError."""
    if isinstance(exc, KubeError):
        return exc
    what = kind or "the object"
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        message = _status_message(exc)
        if status in (401, 403):
            return PermanentKubeError(
                f"Kubernetes did not allow {action or 'the request'} on {what} ({status}): {message}. "
                "Check the compute pool's credentials and RBAC.",
                status=status, kind=kind, reason="Forbidden",
            )  # fmt: skip
        if status == 404 and _status_details_kind(exc) == "namespaces":
            # The namespace went away between our check and the write: the next push recreates it.
            return TransientKubeError(
                f"Kubernetes: {message}. Retrying.", status=status, kind=kind, reason="NotFound"
            )
        if status in (400, 404, 422):
            return PermanentKubeError(
                f"Kubernetes refused the {what}: {message}. Fix the spec and update the deployment.",
                status=status, kind=kind, reason="Invalid" if status == 422 else "BadRequest",
            )  # fmt: skip
        if status == 0:
            return PoolUnreachable(
                f"The Kubernetes API could not be reached: {exc.reason}", kind=kind
            )
        return TransientKubeError(
            f"Kubernetes answered {status} for {what}: {message}. Retrying.", status=status, kind=kind,
            reason="Conflict" if status == 409 else "ServerError",
        )  # fmt: skip
    if isinstance(exc, (urllib3.exceptions.HTTPError, OSError, TimeoutError)):
        reason = getattr(exc, "reason", None) or exc
        return PoolUnreachable(f"The Kubernetes API could not be reached: {reason}", kind=kind)
    return TransientKubeError(f"Unexpected error talking to Kubernetes: {exc}", kind=kind)


@dataclass
class Kube:
    """The typed API groups of one pool, sharing one connection pool."""

    api_client: k8s.ApiClient
    core: k8s.CoreV1Api
    apps: k8s.AppsV1Api
    version: k8s.VersionApi

    def close(self) -> None:
        self.api_client.close()

    def __enter__(self) -> Kube:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def configuration_for(pool: ComputePool) -> k8s.Configuration:
    cfg = k8s.Configuration()
    if pool.kind == "sandbox":
        cfg.host = (pool.api_url or settings.SANDBOX_KUBE_URL).rstrip("/")
    elif pool.kind == "in_cluster":
        k8s_config.load_incluster_config(client_configuration=cfg)
    else:
        try:
            data = yaml.safe_load(pool.kubeconfig or "")
        except yaml.YAMLError as exc:
            raise PermanentKubeError(
                f"The compute pool's kubeconfig is not valid YAML: {exc}"
            ) from None
        if not isinstance(data, dict):
            raise PermanentKubeError(
                "The compute pool has no kubeconfig; paste one on the pool's page."
            )
        # Certificates inside the kubeconfig are written to temporary files by the loader.
        k8s_config.load_kube_config_from_dict(
            data,
            client_configuration=cfg,
            persist_config=False,
            temp_file_path=tempfile.gettempdir(),
        )
    # Retries are ours (Celery, bounded); urllib3's own would multiply the wait on a dead pool.
    cfg.retries = 0
    return cfg


def client_for(pool: ComputePool) -> k8s.ApiClient:
    """An ApiClient for the pool: kubeconfig (encrypted field), in-cluster, or the sandbox URL."""
    try:
        cfg = configuration_for(pool)
    except KubeError:
        raise
    except Exception as exc:  # the loaders raise ConfigException, ValueError, OSError...
        raise PermanentKubeError(
            f"The compute pool's connection settings can't be used: {exc}"
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
