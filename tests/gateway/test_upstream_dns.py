"""DNS rebinding: an external endpoint's host is checked when its URL is saved and when the
routing table loads, but the connection resolves it again, and a tenant's DNS can answer a public
address to the check and 127.0.0.1 or 169.254.169.254 to the connection (or nothing to the check:
names that didn't resolve were let through). The sessions for tenants' URLs drop every address
the public-address rule refuses when they connect (gateway/upstream.py PublicOnlyResolver) and
check IP-literal URLs there too: a 502 in words, and the private server never gets a request."""

from __future__ import annotations

import socket
import time

import aiohttp
import aiohttp.connector
import pytest
import redis
from aiohttp.resolver import ThreadedResolver
from django.conf import settings as django_settings

from deployments.kube import network
from deployments.models import ComputePool, ModelDeployment, PoolExposure, PoolKind, PoolManager
from gateway import h1, upstream
from gateway.cache import invalidate
from gateway.models import UsageRecord
from gateway.tasks import check_external_endpoints, flush_usage
from gateway.upstream import (
    PrivateAddressRefused,
    PublicOnlyResolver,
    make_session,
    private_address_refusal,
)
from sandbox.engine import run_engine_in_thread
from tests.gateway.conftest import make_deployment, make_key, run_coroutine
from tests.gateway.test_upstream_redirects import SECRET_BODY, Private, _chat, _external

pytestmark = pytest.mark.django_db(transaction=True)

PUBLIC = "93.184.216.34"  # a global address (never connected to here: the tests are offline)
MESSAGE = "ModelDeck only calls public addresses for external endpoints"


@pytest.fixture
def private():
    """What the rebound name reaches: the admin port on loopback, a metadata service."""
    server = Private()
    url, stop = run_engine_in_thread(engine=server)
    server.port = int(url.rsplit(":", 1)[1])
    yield server
    stop()


@pytest.fixture
def rebinding_dns(monkeypatch, settings):
    """The tenant's DNS: the check-time lookups (external_url_refusal, the routing table's load)
    are told its names are public; the connection's lookups get `answers`: aiohttp's resolver
    (the gateway runs on uvloop, whose getaddrinfo is not Python's) and socket.getaddrinfo."""
    settings.EXTERNAL_PRIVATE_ADDRESSES_ALLOWED = False
    answers: dict[str, str] = {}
    real_check, real_getaddrinfo = network.non_public_addresses, socket.getaddrinfo

    def check(host: str, port: int | None) -> list[str]:
        return [] if host in answers else real_check(host, port)

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002 - socket's names
        if host in answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], int(port or 0)))]
        return real_getaddrinfo(host, port, family, type, proto, flags)

    class TenantResolver(ThreadedResolver):
        async def resolve(self, host, port=0, family=socket.AF_INET):
            if host in answers:
                return [{"hostname": host, "host": answers[host], "port": port, "family": socket.AF_INET,
                         "proto": 0, "flags": 0}]  # fmt: skip
            return await super().resolve(host, port, family)

    async def lookup(loop, host, port):  # the engines' pool (gateway/h1.py)
        return [answers[host]] if host in answers else await real_lookup(loop, host, port)

    real_lookup = h1.lookup
    monkeypatch.setattr(h1, "lookup", lookup)
    monkeypatch.setattr(network, "non_public_addresses", check)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(aiohttp.connector, "DefaultResolver", TenantResolver)  # the connector's default
    monkeypatch.setattr(upstream, "DefaultResolver", TenantResolver)  # what PublicOnlyResolver wraps
    return answers


def _open_breaker_reset(deployment_id: int) -> None:
    """The create-time health check (refused too) opened the breaker; reset it so the request
    goes to the external URL and meets the gateway's own connect-time refusal."""
    redis.Redis.from_url(django_settings.REDIS_URL).delete(f"gw:ext:{deployment_id}:cb", f"gw:ext:{deployment_id}:probe")


@pytest.mark.parametrize("stream", [False, True])
def test_a_name_rebound_to_loopback_is_a_502_in_words_and_never_called(tenants, gateway, private, rebinding_dns, stream):
    rebinding_dns["rebind.example"] = "127.0.0.1"
    deployment = _external(tenants, "onprem", f"http://rebind.example:{private.port}/v1",
                           options={"failure_threshold": 10})  # fmt: skip
    _open_breaker_reset(deployment.pk)

    response = _chat(gateway, make_key(tenants.member, tenants.org), "onprem", stream=stream)
    assert response.status_code == 502, response.text
    assert SECRET_BODY not in response.text
    error = response.json()["error"]
    assert (error["code"], error["type"]) == ("upstream_private_address", "server_error"), error
    assert f"rebind.example resolved to a private address (127.0.0.1); {MESSAGE}" in error["message"]
    assert private.hits == []  # neither the request nor the create-time health check reached it

    flush_usage()
    assert UsageRecord.objects.get(deployment=deployment).status_code == 502


def test_a_rebound_external_endpoint_overflows_without_calling_the_private_address(
    tenants, gateway, private, rebinding_dns, engine
):
    rebinding_dns["rebind.example"] = "127.0.0.1"
    make_deployment(tenants.project, "burst", served_model_name="burst-chat")
    deployment = _external(tenants, "onprem", f"http://rebind.example:{private.port}/v1", overflow="burst",
                           options={"failure_threshold": 10})  # fmt: skip
    _open_breaker_reset(deployment.pk)
    response = _chat(gateway, make_key(tenants.member, tenants.org), "onprem")
    # The overflow is a managed engine on loopback (the sandbox): the platform's address, allowed.
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "You said: hi"
    assert len(engine.requests) == 1 and private.hits == []


def test_the_health_check_refuses_a_rebound_name_and_never_calls_it(tenants, private, rebinding_dns):
    rebinding_dns["rebind.example"] = "127.0.0.1"
    deployment = _external(tenants, "onprem", f"http://rebind.example:{private.port}/v1")
    assert check_external_endpoints() == {"checked": 1, "healthy": 0}
    deployment.refresh_from_db()
    assert deployment.health == "unhealthy"
    assert deployment.health_detail == f"rebind.example resolved to a private address (127.0.0.1); {MESSAGE}"
    assert private.hits == []


def test_the_operator_setting_lets_a_private_name_through(tenants, gateway, private, rebinding_dns, settings):
    """On-prem installs (and the rest of the tests) call local servers: nothing is refused."""
    rebinding_dns["onprem.internal"] = "127.0.0.1"
    settings.EXTERNAL_PRIVATE_ADDRESSES_ALLOWED = True
    _external(tenants, "onprem", f"http://onprem.internal:{private.port}/v1")
    response = _chat(gateway, make_key(tenants.member, tenants.org), "onprem")
    assert response.status_code == 200 and SECRET_BODY in response.text


# ---- the session, directly ---------------------------------------------------------------------


def _get(url: str) -> int:
    async def call() -> int:
        async with make_session(public_only=True) as session:
            async with session.get(url, allow_redirects=False) as response:
                return response.status

    return run_coroutine(call)


def _refusal(url: str) -> str:
    """The words of the refusal a call to `url` meets (raised as is for an IP literal, inside
    aiohttp's ClientConnectorDNSError for a name)."""
    with pytest.raises(aiohttp.ClientError) as raised:
        _get(url)
    refused = private_address_refusal(raised.value)
    assert refused is not None, raised.value
    return str(refused)


@pytest.mark.parametrize(
    "host, shown",
    [("127.0.0.1", "127.0.0.1"), ("[::1]", "::1"), ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
     ("localhost", "127.0.0.1")],  # fmt: skip
)
def test_the_session_never_connects_to_a_loopback_url(private, settings, host, shown):
    settings.EXTERNAL_PRIVATE_ADDRESSES_ALLOWED = False
    words = _refusal(f"http://{host}:{private.port}/v1/models")
    assert MESSAGE in words and shown in words
    assert private.hits == []


def test_the_session_refuses_the_metadata_address_without_trying_to_connect(settings, rebinding_dns):
    settings.EXTERNAL_PRIVATE_ADDRESSES_ALLOWED = False
    rebinding_dns["metadata.rebind.example"] = "169.254.169.254"
    for url in ("http://169.254.169.254/latest/meta-data/", "http://metadata.rebind.example/latest/meta-data/"):
        started = time.monotonic()
        assert "169.254.169.254" in _refusal(url)
        assert time.monotonic() - started < 1  # no connection attempt (it would wait out a time-out)


def test_the_session_calls_a_loopback_url_when_the_operator_allows_it(private, settings):
    settings.EXTERNAL_PRIVATE_ADDRESSES_ALLOWED = True
    assert _get(f"http://127.0.0.1:{private.port}/v1/models") == 200
    assert private.hits == ["GET /v1/models"]


class _Answers:
    """A resolver answering fixed addresses: what the system resolver would have said."""

    def __init__(self, *hosts: str) -> None:
        self.hosts = hosts

    async def resolve(self, host, port=0, family=socket.AF_INET):
        return [{"hostname": host, "host": h, "port": port, "family": family, "proto": 0, "flags": 0}
                for h in self.hosts]  # fmt: skip

    async def close(self) -> None:
        pass


def _resolve(*answers: str) -> list[str]:
    async def run() -> list[str]:
        resolver = PublicOnlyResolver(_Answers(*answers))
        return [result["host"] for result in await resolver.resolve("llm.example", 443)]

    return run_coroutine(run)


def test_the_resolver_passes_public_addresses_and_drops_private_ones(settings):
    settings.EXTERNAL_PRIVATE_ADDRESSES_ALLOWED = False
    assert _resolve(PUBLIC) == [PUBLIC]
    assert _resolve("10.0.0.7", PUBLIC, "169.254.169.254") == [PUBLIC]  # the public one only
    with pytest.raises(PrivateAddressRefused) as refused:
        _resolve("10.0.0.7", "fd00::1")
    assert str(refused.value) == f"llm.example resolved to a private address (10.0.0.7, fd00::1); {MESSAGE}"
    settings.EXTERNAL_PRIVATE_ADDRESSES_ALLOWED = True
    assert _resolve("10.0.0.7", PUBLIC) == ["10.0.0.7", PUBLIC]


def test_the_external_session_keeps_the_dns_cache():
    async def run():
        async with make_session(public_only=True) as session:
            return session.connector

    connector = run_coroutine(run)
    assert connector.use_dns_cache and isinstance(connector._resolver, PublicOnlyResolver)


# ---- a compute pool's exposure host: typed by an organization's admin ---------------------------


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("address", ["http://127.0.0.1:{port}", "http://lb.rebind.example:{port}"])
def test_an_organizations_exposure_address_is_called_only_at_a_public_address(
    tenants, gateway, private, rebinding_dns, address, stream
):
    """Where organizations bring their own cluster (MODELDECK_ORG_ADMINS_MAY_ADD_POOLS), their
    admin types the pool's exposure host and address, where the gateway sends the engines'
    requests: the engines' pool resolves it when it connects and calls public addresses only
    (a check when the table loads would resolve the name once more than the connection does)."""
    rebinding_dns["lb.rebind.example"] = "127.0.0.1"
    pool = ComputePool.objects.create(
        organization=tenants.org, name="byo", kind=PoolKind.KUBECONFIG, engine_label="vllm",
        managed_by=PoolManager.ORGANIZATION, exposure=PoolExposure.INGRESS, exposure_host="models.example",
        exposure_address=address.format(port=private.port),
    )  # fmt: skip
    deployment = make_deployment(tenants.project, "chat")
    ModelDeployment.objects.filter(pk=deployment.pk).update(pool=pool)
    key = make_key(tenants.member, tenants.org)

    response = _chat(gateway, key, "chat", stream=stream)
    assert response.status_code == 502, response.text
    assert SECRET_BODY not in response.text
    error = response.json()["error"]
    assert error["code"] == "upstream_private_address", error
    assert "resolved only to 127.0.0.1; ModelDeck only calls public addresses" in error["message"]
    assert private.hits == []

    # A platform operator allowed private addresses for this pool: its own network is called.
    # (At its literal address: the loop's own connect resolves names past this test's fake DNS.)
    ComputePool.objects.filter(pk=pool.pk).update(
        private_addresses_allowed=True, exposure_address=f"http://127.0.0.1:{private.port}"
    )
    invalidate()
    deadline = time.monotonic() + 10
    while not private.hits and time.monotonic() < deadline:
        _chat(gateway, key, "chat", stream=stream)
    assert private.hits, "the allowed pool's address was never called"


def test_the_engines_pool_keeps_public_only_connections_apart():
    """A connection made to a platform engine is never reused for an organization's address."""
    from gateway.h1 import _prepare  # noqa: PLC0415 - the pool's key, a private helper

    platform, _ = _prepare("http://10.0.0.5:80/v1/chat/completions", b"{}", {}, None, False)
    tenant, _ = _prepare("http://10.0.0.5:80/v1/chat/completions", b"{}", {}, None, True)
    assert platform != tenant


# ---- an external deployment's overflow onto an organization's own cluster (security review) ----
# The overflow request kept the external deployment's public_only (False), and its stream went
# through the platform's aiohttp session: the organization's exposure address was called at
# loopback and its answer handed back.


def _org_pool(tenants, port):
    # An organization admin's own cluster. exposure_address passed the save-time lookup (public);
    # the name now resolves to loopback (DNS rebinding) - "localhost" stands for it here. Without
    # exposure_address, exposure_host is never resolved at save at all (a wildcard DNS name such
    # as <x>.127.0.0.1.nip.io needs no rebinding; port 80/443 then).
    return ComputePool.objects.create(
        organization=tenants.org, name="byo", kind=PoolKind.KUBECONFIG, engine_label="vllm",
        managed_by=PoolManager.ORGANIZATION, exposure=PoolExposure.INGRESS, exposure_host="models.example",
        exposure_address=f"http://localhost:{port}",
    )


@pytest.mark.parametrize("stream", [False, True])
def test_a_direct_call_to_an_organizations_cluster_at_loopback_is_refused(tenants, gateway, private, settings, stream):
    settings.EXTERNAL_PRIVATE_ADDRESSES_ALLOWED = False
    pool = _org_pool(tenants, private.port)
    burst = make_deployment(tenants.project, "burst", served_model_name="burst-chat")
    ModelDeployment.objects.filter(pk=burst.pk).update(pool=pool)
    invalidate()
    response = _chat(gateway, make_key(tenants.member, tenants.org), "burst-chat", stream=stream)
    assert response.status_code == 502 and private.hits == []


@pytest.mark.parametrize("stream", [False, True])
def test_overflow_to_an_organizations_cluster_is_called_only_at_public_addresses(
    tenants, gateway, private, settings, stream
):
    settings.EXTERNAL_PRIVATE_ADDRESSES_ALLOWED = False
    pool = _org_pool(tenants, private.port)
    burst = make_deployment(tenants.project, "burst", served_model_name="burst-chat")
    ModelDeployment.objects.filter(pk=burst.pk).update(pool=pool)
    # The external endpoint: any URL; held at its concurrency threshold so every request overflows.
    external = _external(tenants, "onprem", "https://api.openai.example/v1", overflow="burst",
                         options={"max_concurrency": 1})
    redis.Redis.from_url(django_settings.REDIS_URL).set(f"gw:ext:{external.pk}:inflight", 1)
    invalidate()

    response = _chat(gateway, make_key(tenants.member, tenants.org), "onprem", stream=stream)
    assert private.hits == [], f"loopback reached: {private.hits} -> {response.status_code} {response.text[:120]}"
    assert SECRET_BODY not in response.text
    assert response.status_code == 502
