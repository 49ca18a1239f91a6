"""Upstream redirects are never followed: a tenant's "public" endpoint that answers 3xx towards a
private address (loopback, a cloud metadata service) gets the caller a 502 in words, and neither
the private server's body nor the redirect's target reaches the caller. Non-streaming and
streaming chat, the overflow, managed engines, TorchServe and the health check."""

from __future__ import annotations

import socket
import threading

import pytest
import redis
import requests
from django.conf import settings as django_settings

from catalog.models import CatalogModel
from deployments.external import external_deployment_create
from deployments.models import ModelDeployment
from gateway.models import UsageRecord
from gateway.tasks import check_external_endpoints, flush_usage
from gateway.upstream import UpstreamRedirect, make_session
from sandbox.engine import run_engine_in_thread
from tests.gateway.conftest import make_deployment, make_key, run_coroutine

pytestmark = pytest.mark.django_db(transaction=True)

SECRET_BODY = "ami-id: i-0123 iam/security-credentials: AKIA-SECRET-7f3a"


class Private:
    """What a redirect would reach: a metadata service, the admin port on loopback."""

    def __init__(self) -> None:
        self.hits: list[str] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        self.hits.append(f"{scope['method']} {scope['path']}")
        await _answer(send, 200, SECRET_BODY.encode(), b"text/plain")


class Redirector:
    """The tenant's public endpoint: answers its health check, redirects everything else (the
    health check too when `models_redirect`) to the private server, same path."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.status = 302
        self.models_redirect = False
        self.hits: list[str] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        self.hits.append(scope["path"])
        if scope["path"].endswith("/models") and not self.models_redirect:
            return await _answer(send, 200, b'{"object": "list", "data": []}')
        await _answer(send, self.status, b"moved", b"text/plain",
                      [(b"location", (self.target + scope["path"]).encode())])  # fmt: skip


async def _answer(send, status: int, body: bytes, content_type: bytes = b"application/json", headers=()):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), *headers]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def private():
    server = Private()
    url, stop = run_engine_in_thread(engine=server)
    yield server, url
    stop()


@pytest.fixture
def redirector(private, settings):
    settings.EXTERNAL_PRIVATE_ADDRESSES_ALLOWED = True  # the "public" endpoint is a local server
    server = Redirector(private[1])
    url, stop = run_engine_in_thread(engine=server)
    yield server, url
    stop()


def _external(tenants, name: str, url: str, **kwargs) -> ModelDeployment:
    model, _ = CatalogModel.objects.get_or_create(organization=tenants.org, name="onprem-llama",
                                                  defaults={"source": "huggingface", "repo_id": "acme/onprem"})  # fmt: skip
    return external_deployment_create(user=tenants.owner, project=tenants.project, model=model, name=name,
                                      url=url, **kwargs)  # fmt: skip


def _chat(gateway, key: str, model: str, *, stream: bool = False) -> requests.Response:
    return requests.post(
        f"{gateway.url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=20,
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream},
    )  # fmt: skip


def _assert_refused(response: requests.Response, status: int, private) -> None:
    assert response.status_code == 502, response.text
    assert SECRET_BODY not in response.text and "moved" not in response.text
    assert "location" not in {name.lower() for name in response.headers}
    assert private.url_text not in response.text  # nor where the redirect pointed
    error = response.json()["error"]
    assert error["code"] == "upstream_redirect" and error["type"] == "server_error"
    assert f"answered with a redirect ({status})" in error["message"]
    assert "does not follow upstream redirects" in error["message"]
    assert private.hits == []


@pytest.fixture
def caught(private):
    server, url = private
    server.url_text = url.split("//", 1)[1]  # host:port, as it would appear in a message
    return server


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_an_external_endpoints_redirect_is_a_502_and_never_followed(tenants, gateway, redirector, caught, status):
    server, url = redirector
    server.status = status
    deployment = _external(tenants, "onprem", url + "/v1", options={"failure_threshold": 10})
    key = make_key(tenants.member, tenants.org)

    response = _chat(gateway, key, "onprem")
    _assert_refused(response, status, caught)
    assert "Point the endpoint at its final URL." in response.json()["error"]["message"]
    assert server.hits[-1] == "/v1/chat/completions"  # it was asked, once, and no further

    flush_usage()
    record = UsageRecord.objects.get(deployment=deployment)
    assert (record.status_code, record.prompt_tokens, record.completion_tokens) == (502, 0, 0)


def test_an_external_streams_redirect_is_a_502_and_never_followed(tenants, gateway, redirector, caught):
    server, url = redirector
    server.status = 307  # keeps the method and body: the most faithful replay
    deployment = _external(tenants, "onprem", url + "/v1", options={"failure_threshold": 10})
    response = _chat(gateway, make_key(tenants.member, tenants.org), "onprem", stream=True)
    _assert_refused(response, 307, caught)
    flush_usage()
    assert UsageRecord.objects.get(deployment=deployment).status_code == 502


def test_a_redirecting_external_endpoint_overflows(tenants, gateway, redirector, caught, engine):
    server, url = redirector
    make_deployment(tenants.project, "burst", served_model_name="burst-chat")
    _external(tenants, "onprem", url + "/v1", overflow="burst", options={"failure_threshold": 10})
    # A redirect is an upstream failure like a 5xx: the overflow deployment answers instead.
    response = _chat(gateway, make_key(tenants.member, tenants.org), "onprem")
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "You said: hi"
    assert SECRET_BODY not in response.text
    assert len(engine.requests) == 1 and caught.hits == []


def test_a_redirecting_overflow_deployment_is_a_502_streamed_or_not(tenants, gateway, redirector, caught, settings):
    server, url = redirector
    settings.SANDBOX_ENGINE_URL = url  # the overflow deployment's own engine redirects too
    make_deployment(tenants.project, "burst", served_model_name="burst-chat")
    external = _external(tenants, "onprem", url + "/v1", overflow="burst", options={"max_concurrency": 1})
    # The external endpoint is at its threshold (another process's request): streams overflow too.
    redis.Redis.from_url(django_settings.REDIS_URL).set(f"gw:ext:{external.pk}:inflight", 1)
    key = make_key(tenants.member, tenants.org)
    for stream in (False, True):
        _assert_refused(_chat(gateway, key, "onprem", stream=stream), 302, caught)
    assert server.hits == ["/v1/models", "/v1/chat/completions", "/v1/chat/completions"]  # the overflow's, twice


def test_a_managed_engines_redirect_is_a_502_streamed_or_not(tenants, gateway, redirector, caught, settings):
    server, url = redirector
    settings.SANDBOX_ENGINE_URL = url  # the sandbox pool's engine
    deployment = make_deployment(tenants.project, "chat")
    key = make_key(tenants.member, tenants.org)
    for stream in (False, True):
        response = _chat(gateway, key, "chat", stream=stream)
        _assert_refused(response, 302, caught)
        assert "final URL" not in response.json()["error"]["message"]  # nothing for the caller to point
    flush_usage()
    assert list(UsageRecord.objects.filter(deployment=deployment).values_list("status_code", flat=True)) == [502, 502]


def test_a_torchserve_redirect_is_a_502(tenants, gateway, redirector, caught, settings):
    server, url = redirector
    settings.SANDBOX_ENGINE_URL = url
    deployment = make_deployment(tenants.project, "resnet")
    revision = deployment.current_revision
    revision.spec = {**revision.spec, "engine": "torchserve"}
    revision.save(update_fields=["spec"])
    response = requests.post(f"{gateway.url}/v1/deployments/resnet/predictions", data=b"\x89PNG cat", timeout=20,
                             headers={"Authorization": f"Bearer {make_key(tenants.member, tenants.org)}"})  # fmt: skip
    _assert_refused(response, 302, caught)
    assert server.hits == ["/predictions/resnet"]


def test_the_health_check_does_not_follow_a_redirect(tenants, redirector, caught):
    server, url = redirector
    deployment = _external(tenants, "onprem", url + "/v1")
    deployment.refresh_from_db()
    assert deployment.health == "healthy"  # checked on create: its /models answers 200

    server.models_redirect = True
    assert check_external_endpoints() == {"checked": 1, "healthy": 0}
    deployment.refresh_from_db()
    assert deployment.health == "unhealthy"
    assert deployment.health_detail.startswith("answered with a redirect (HTTP 302) to another address")
    assert caught.url_text not in deployment.health_detail
    assert caught.hits == []


def test_the_upstream_session_refuses_redirects_even_when_a_call_asks_to_follow(redirector, caught):
    """Enforced by the session, so a call written later that forgets allow_redirects=False is safe."""
    server, url = redirector

    async def call() -> None:
        session = make_session()
        try:
            async with session.get(url + "/v1/anything", allow_redirects=True) as response:
                await response.read()
        finally:
            await session.close()

    with pytest.raises(UpstreamRedirect) as refused:
        run_coroutine(call)
    assert refused.value.status == 302 and caught.url_text not in str(refused.value)
    assert caught.hits == []


# ---- statuses that are no answer to pass on (security review) ----------------------------------
# A 101 Switching Protocols reached the caller as a final 101 and the health check called the
# endpoint healthy; a status beyond 599 crashed the ASGI server's send (KeyError) and dropped the
# caller's connection. (The health check asks /models and never follows or passes on either.)

ODD_ANSWERS = {
    "101": b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n" + SECRET_BODY.encode(),
    "199": b"HTTP/1.1 199 Weird\r\ncontent-length: 6\r\n\r\nSECRET",
    "600": b"HTTP/1.1 600 Weird\r\ncontent-length: 6\r\n\r\nSECRET",
    "http10_302": b"HTTP/1.0 302 Found\r\nlocation: http://169.254.169.254/\r\n\r\nSECRET",
}


def _raw_server(answer: bytes):
    """An upstream that answers its health check 200 and every other request with `answer`."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    hits: list[bytes] = []

    def run() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                data = conn.recv(65536)
                hits.append(data.split(b"\r\n", 1)[0])
                if data.startswith(b"GET /v1/models"):
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 27\r\n\r\n"
                                 b'{"object":"list","data":[]}')  # fmt: skip
                else:
                    conn.sendall(answer)

    threading.Thread(target=run, daemon=True).start()
    return server, server.getsockname()[1], hits


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("kind", list(ODD_ANSWERS))
def test_an_upstream_status_that_is_no_answer_is_a_502_in_words(tenants, gateway, settings, kind, stream):
    settings.EXTERNAL_PRIVATE_ADDRESSES_ALLOWED = True
    server, port, hits = _raw_server(ODD_ANSWERS[kind])
    try:
        _external(tenants, "onprem", f"http://127.0.0.1:{port}/v1", options={"failure_threshold": 10})
        response = _chat(gateway, make_key(tenants.member, tenants.org), "onprem", stream=stream)
        assert response.status_code == 502, (response.status_code, response.text[:200])
        assert "SECRET" not in response.text and "location" not in {k.lower() for k in response.headers}
        # (A 199 is informational: the client waits for a final answer the upstream never sends.)
        expected = {"101": "upstream_bad_status", "199": "upstream_unreachable", "600": "upstream_bad_status",
                    "http10_302": "upstream_redirect"}[kind]  # fmt: skip
        assert response.json()["error"]["code"] == expected, response.json()
        assert any(hit.startswith(b"POST") for hit in hits)
    finally:
        server.close()

