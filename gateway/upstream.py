"""Where the gateway sends a deployment's requests, and the shared upstream connection pools."""

from __future__ import annotations

import functools
import ipaddress
import socket
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from django.conf import settings

from deployments.kube.network import is_public_address
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
            # An organization's own cluster: the engines' pool calls it at public addresses only,
            # resolved when it connects (DeploymentInfo.public_only, gateway/h1.py), not here.
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
    """An upstream answered 3xx (or another status no caller is handed, is_passed_on). Never followed: a tenant's public URL could send the gateway on to
    loopback or a metadata address and hand that answer back (external_url_refusal checks only
    the URL the tenant typed). Neither the target nor the body is kept, so neither can leak."""

    def __init__(self, status: int) -> None:
        super().__init__(f"upstream answered HTTP {status}, which is never passed on")
        self.status = status


def is_redirect(status: int) -> bool:
    return 300 <= status < 400


def is_passed_on(status: int) -> bool:
    """A final answer the gateway hands to its caller: 2xx, 4xx, 5xx. Never a 3xx (a redirect it
    does not follow), a 1xx (101 Switching Protocols would turn the caller's connection over to
    the upstream) or a status beyond 599 (no HTTP status; the ASGI server can't send it)."""
    return 200 <= status < 300 or 400 <= status < 600


async def _refuse_redirects(request: aiohttp.ClientRequest, handler) -> aiohttp.ClientResponse:
    """The session's middleware: every call, whatever its allow_redirects, stops at a 3xx (the
    connection is dropped unread) and raises UpstreamRedirect, which callers take as an
    upstream failure like any other aiohttp.ClientError."""
    response = await handler(request)
    if not is_passed_on(response.status):  # a 3xx, and the statuses no caller may be handed
        response.close()
        raise UpstreamRedirect(response.status)
    return response


class PrivateAddressRefused(aiohttp.ClientOSError):
    """A tenant's host name resolved (at connect time) only to addresses ModelDeck doesn't call
    for tenants, or the URL is such an address. Never connected to. An OSError, so aiohttp wraps
    it when the resolver raises it (ClientConnectorDNSError, `private_address_refusal` finds it),
    and a ClientError, so every caller takes it as an upstream failure."""

    def __init__(self, host: str, addresses: list[str], *, literal: bool = False) -> None:
        self.host, self.addresses = host, addresses
        shown = ", ".join(addresses[:3])
        what = f"{host} is a private address" if literal else f"{host} resolved to a private address ({shown})"
        super().__init__(f"{what}; ModelDeck only calls public addresses for external endpoints")


def private_address_refusal(exc: BaseException | None) -> PrivateAddressRefused | None:
    """The PrivateAddressRefused behind an aiohttp error (raised as is or wrapped), or None."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, PrivateAddressRefused):
            return exc
        exc = getattr(exc, "os_error", None) or exc.__cause__ or exc.__context__
        seen += 1
    return None


def _public_only() -> bool:
    # Read per connection, not cached: on-prem installs and tests turn the operator setting on.
    return not settings.EXTERNAL_PRIVATE_ADDRESSES_ALLOWED


class PublicOnlyResolver(AbstractResolver):
    """DNS rebinding: external_url_refusal resolves a tenant's host when the URL is saved and the
    routing table loads, but the connection resolves it again, and the tenant's DNS may answer
    127.0.0.1 or 169.254.169.254 by then (or the name didn't resolve at all at check time). This
    resolver sits where aiohttp connects: every address deployments.kube.network's rule refuses
    is dropped, and with none left the connection is never made. The connector's DNS cache
    (ttl_dns_cache) keeps what this returns, so the hot path pays nothing more."""

    def __init__(self, resolver: AbstractResolver | None = None) -> None:
        self._resolver = resolver or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        if not _public_only():
            return results
        public = [result for result in results if is_public_address(result["host"])]
        if not public:
            raise PrivateAddressRefused(host, sorted({result["host"] for result in results}))
        return public

    async def close(self) -> None:
        await self._resolver.close()


@functools.lru_cache(maxsize=4096)
def _is_private_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False  # a name: the resolver decides
    return not is_public_address(host)


async def _refuse_private_literals(request: aiohttp.ClientRequest, handler) -> aiohttp.ClientResponse:
    """aiohttp connects to an IP-literal URL without asking the resolver: the same rule, here."""
    host = request.url.raw_host or ""
    if _public_only() and _is_private_literal(host):
        raise PrivateAddressRefused(host, [host], literal=True)
    return await handler(request)


def make_session(
    *, read_timeout: float = READ_TIMEOUT, public_only: bool = False
) -> aiohttp.ClientSession:
    """The pool every request of one gateway process shares (keep-alive to each engine).

    public_only: the session for URLs a tenant typed (external endpoints, their health check):
    it connects only to public addresses (PublicOnlyResolver) unless the operator allows private
    ones (MODELDECK_EXTERNAL_PRIVATE_ADDRESSES). Engines' sessions don't: their addresses are the
    platform's (cluster Services, the sandbox on loopback).

    aiohttp rather than httpx: on the same engine and concurrency, bench/gateway.py measures
    aiohttp's pool at several times httpx.AsyncClient's requests/s (httpcore's async pool
    contends on its locks under concurrency). Must be created inside the running loop.
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=MAX_CONNECTIONS, limit_per_host=0, keepalive_timeout=30, ttl_dns_cache=60,
            resolver=PublicOnlyResolver() if public_only else None,
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
        middlewares=(_refuse_private_literals, _refuse_redirects) if public_only else (_refuse_redirects,),
    )


def make_pool(*, read_timeout: float = READ_TIMEOUT) -> UpstreamPool:
    """The pool for the engines' requests, streamed or not (gateway/h1.py: a fraction of
    aiohttp's CPU per request); external endpoints and TorchServe keep the aiohttp session.
    Must be created inside the running loop."""
    return UpstreamPool(
        connect_timeout=CONNECT_TIMEOUT, read_timeout=read_timeout, max_connections=MAX_CONNECTIONS,
        address_allowed=is_public_address,  # for an organization's cluster (public_only requests)
    )
