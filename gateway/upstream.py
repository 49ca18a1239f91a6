"""Where the gateway sends a deployment's requests, and the shared upstream connection pools."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from django.conf import settings

from deployments.models import ModelDeployment, PoolExposure
from deployments.renderers import SERVICE_PORT
from deployments.renderers.exposure import host_for
from gateway.h1 import UpstreamPool

# Generation can take minutes; what matters is how long the engine stays silent.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 300.0
MAX_CONNECTIONS = 1000


@dataclass(frozen=True)
class Upstream:
    """How to reach one deployment's engine from where the gateway runs."""

    base: str  # URL connected to, without /v1
    host: str = ""  # Host header (and TLS server name) when `base` is an address, not the host


def upstream_for(deployment: ModelDeployment) -> Upstream:
    """The pool's exposure decides: in-cluster Service DNS, or the deployment's Ingress /
    HTTPRoute host (renderers.exposure.host_for), optionally through a fixed address."""
    pool = deployment.pool
    namespace = deployment.project.namespace()
    if pool.exposure in (PoolExposure.INGRESS, PoolExposure.GATEWAY_API) and pool.exposure_host:
        host = host_for(deployment.name, namespace, pool.exposure_host)
        if pool.exposure_address:
            return Upstream(pool.exposure_address.rstrip("/"), host)
        # Ingress terminates TLS when the pool names a certificate; a Gateway's listener decides
        # for itself, so an https Gateway is given as exposure_address https://...
        scheme = "https" if pool.exposure == PoolExposure.INGRESS and pool.tls_secret else "http"
        return Upstream(f"{scheme}://{host}")
    if pool.is_sandbox:
        # The simulated engine answers for every sandbox deployment, whatever the model name.
        return Upstream(settings.SANDBOX_ENGINE_URL.rstrip("/"))
    # The Service is named after the deployment, in the project's namespace (renderers.object_names).
    return Upstream(f"http://{deployment.name}.{namespace}.svc.cluster.local:{SERVICE_PORT}")


def upstream_base(deployment: ModelDeployment) -> str:
    """Base URL (without /v1) of the engine serving the deployment."""
    return upstream_for(deployment).base


class UpstreamRedirect(aiohttp.ClientError):
    """An upstream answered 3xx. Never followed: a tenant's public URL could send the gateway on to
    loopback or a metadata address and hand that answer back (external_url_refusal checks only
    the URL the tenant typed). Neither the target nor the body is kept, so neither can leak."""

    def __init__(self, status: int) -> None:
        super().__init__(f"upstream answered HTTP {status} (a redirect)")
        self.status = status


def is_redirect(status: int) -> bool:
    return 300 <= status < 400


async def _refuse_redirects(request: aiohttp.ClientRequest, handler) -> aiohttp.ClientResponse:
    """The session's middleware: every call, whatever its allow_redirects, stops at a 3xx (the
    connection is dropped unread) and raises UpstreamRedirect, which callers take as an
    upstream failure like any other aiohttp.ClientError."""
    response = await handler(request)
    if is_redirect(response.status):
        response.close()
        raise UpstreamRedirect(response.status)
    return response


def make_session(*, read_timeout: float = READ_TIMEOUT) -> aiohttp.ClientSession:
    """The pool every request of one gateway process shares (keep-alive to each engine).

    aiohttp rather than httpx: on the same engine and concurrency, bench/gateway.py measures
    aiohttp's pool at several times httpx.AsyncClient's requests/s (httpcore's async pool
    contends on its locks under concurrency). Must be created inside the running loop.
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=MAX_CONNECTIONS, limit_per_host=0, keepalive_timeout=30, ttl_dns_cache=60
        ),
        timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=CONNECT_TIMEOUT, sock_read=read_timeout
        ),
        # Engines are inside the cluster or on loopback: never route them through a proxy.
        trust_env=False,
        # One session serves every tenant: a cookie one engine sets must never reach another
        # (and keeping none saves the jar's work on every request).
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent",),
        # Redirects are never followed, on any call through this session (UpstreamRedirect).
        middlewares=(_refuse_redirects,),
    )


def make_pool(*, read_timeout: float = READ_TIMEOUT) -> UpstreamPool:
    """The pool for the engines' requests, streamed or not (gateway/h1.py: a fraction of
    aiohttp's CPU per request); external endpoints and TorchServe keep the aiohttp session.
    Must be created inside the running loop."""
    return UpstreamPool(
        connect_timeout=CONNECT_TIMEOUT, read_timeout=read_timeout, max_connections=MAX_CONNECTIONS
    )
