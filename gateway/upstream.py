"""Where the gateway sends a deployment's requests, and the one shared upstream connection pool."""

from __future__ import annotations

import aiohttp
from django.conf import settings

from deployments.models import ModelDeployment
from deployments.renderers import SERVICE_PORT

# Generation can take minutes; what matters is how long the engine stays silent.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 300.0
MAX_CONNECTIONS = 1000


def upstream_base(deployment: ModelDeployment) -> str:
    """Base URL (without /v1) of the engine serving the deployment."""
    if deployment.pool.is_sandbox:
        # The simulated engine answers for every sandbox deployment, whatever the model name.
        return settings.SANDBOX_ENGINE_URL.rstrip("/")
    # The Service is named after the deployment, in the project's namespace (renderers.object_names).
    namespace = deployment.project.namespace()
    return f"http://{deployment.name}.{namespace}.svc.cluster.local:{SERVICE_PORT}"


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
        skip_auto_headers=("User-Agent",),
    )
