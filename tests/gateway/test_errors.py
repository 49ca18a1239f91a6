"""Every gateway refusal: status code and an OpenAI-shaped body the official client understands."""

from __future__ import annotations

from datetime import timedelta

import httpx
import openai
import pytest
from django.utils import timezone

from deployments.models import DeploymentState, ModelDeployment
from gateway import app as gateway_app
from gateway.cache import invalidate
from projects.keys import api_key_revoke
from projects.models import APIKey
from tests.gateway.conftest import make_deployment, make_key, start_console

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = {"model": "llama-chat", "messages": [{"role": "user", "content": "hi"}]}


def assert_openai_error(
    response: httpx.Response, status: int, type_: str, code: str | None
) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == type_ and error["code"] == code
    assert error["message"]
    return error


@pytest.fixture
def deployment(tenants, gateway):
    return make_deployment(tenants.project, "llama", served_model_name="llama-chat")


def post(
    gateway, secret: str | None, body: dict = CHAT, path: str = "/chat/completions", **headers
) -> httpx.Response:
    if secret is not None:
        headers["authorization"] = f"Bearer {secret}"
    return httpx.post(gateway.base_url + path, json=body, headers=headers, timeout=30)


def test_missing_and_wrong_keys_get_401(gateway, deployment):
    assert_openai_error(post(gateway, None), 401, "invalid_request_error", "invalid_api_key")
    assert_openai_error(
        post(gateway, "mdk_" + "x" * 40), 401, "invalid_request_error", "invalid_api_key"
    )
    assert_openai_error(
        post(gateway, "sk-not-ours"), 401, "invalid_request_error", "invalid_api_key"
    )


def test_the_official_client_raises_authentication_error(gateway, deployment):
    client = openai.OpenAI(api_key="mdk_" + "y" * 40, base_url=gateway.base_url, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(**CHAT)
    assert info.value.status_code == 401


def test_revoked_key_is_refused_on_the_next_request_by_every_gateway(
    tenants, deployment, gateway, engine
):
    second = start_console()
    try:
        secret = make_key(tenants.member, tenants.org)
        for server in (gateway, second):  # both gateways have the key cached now
            assert post(server, secret).status_code == 200
        api_key_revoke(user=tenants.member, key=APIKey.objects.get())
        for server in (gateway, second):
            error = assert_openai_error(
                post(server, secret), 401, "invalid_request_error", "invalid_api_key"
            )
            assert "revoked" in error["message"]
    finally:
        second.stop()


def test_expired_key_is_refused(tenants, deployment, gateway):
    secret = make_key(tenants.member, tenants.org, expires_at=timezone.now() + timedelta(hours=1))
    assert post(gateway, secret).status_code == 200
    APIKey.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    gateway.app.gateway.cache.keys.clear()  # the cached row would also expire by its own date
    error = assert_openai_error(
        post(gateway, secret), 401, "invalid_request_error", "invalid_api_key"
    )
    assert "expired" in error["message"]


def test_expiry_is_enforced_from_the_cached_key_too(tenants, deployment, gateway, monkeypatch):
    secret = make_key(tenants.member, tenants.org, expires_at=timezone.now() + timedelta(hours=1))
    assert post(gateway, secret).status_code == 200  # the key is cached now
    app = gateway.app.gateway
    loads = []
    load_key = app._load_key

    async def counting_key(digest):
        loads.append(digest)
        return await load_key(digest)

    # The gateway's clock moves past the expiry (a real 1.5 s expiry raced a slow first request).
    real = gateway_app.datetime

    class TwoHoursLater(real):
        @classmethod
        def now(cls, tz=None):
            return real.now(tz) + timedelta(hours=2)

    monkeypatch.setattr(app, "_load_key", counting_key)
    monkeypatch.setattr(gateway_app, "datetime", TwoHoursLater)
    error = assert_openai_error(
        post(gateway, secret), 401, "invalid_request_error", "invalid_api_key"
    )
    assert "expired" in error["message"] and loads == []  # refused from the cached row


def test_unknown_model_is_404_and_never_reveals_other_organizations(tenants, deployment, gateway):
    make_deployment(tenants.other_project, "globex-llm", served_model_name="globex-secret")
    secret = make_key(tenants.member, tenants.org)
    unknown = assert_openai_error(
        post(gateway, secret, {**CHAT, "model": "nope"}),
        404,
        "invalid_request_error",
        "model_not_found",
    )
    foreign = assert_openai_error(
        post(gateway, secret, {**CHAT, "model": "globex-secret"}),
        404,
        "invalid_request_error",
        "model_not_found",
    )
    # Same words for a name that doesn't exist and one that exists elsewhere.
    assert foreign["message"].replace("globex-secret", "X") == unknown["message"].replace(
        "nope", "X"
    )


def test_another_organizations_key_gets_404_on_this_organizations_deployment(
    tenants, deployment, gateway
):
    secret = make_key(tenants.outsider, tenants.other_org)
    assert_openai_error(post(gateway, secret), 404, "invalid_request_error", "model_not_found")
    client = openai.OpenAI(api_key=secret, base_url=gateway.base_url, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(**CHAT)
    assert [m.id for m in client.models.list()] == []


def test_key_limited_to_other_deployments_is_refused(tenants, deployment, gateway):
    other = make_deployment(tenants.project, "other", served_model_name="other-model")
    secret = make_key(tenants.member, tenants.org, deployments=[other])
    assert post(gateway, secret, {**CHAT, "model": "other-model"}).status_code == 200
    assert_openai_error(post(gateway, secret), 403, "permission_error", "model_not_allowed")


def test_deactivated_deployment_is_409_saying_why(tenants, deployment, gateway):
    secret = make_key(tenants.member, tenants.org)
    assert post(gateway, secret).status_code == 200
    ModelDeployment.objects.filter(pk=deployment.pk).update(state=DeploymentState.DEACTIVATED)
    invalidate()  # what deployments.services does on commit of every state change
    error = assert_openai_error(
        post(gateway, secret), 409, "invalid_request_error", "deployment_deactivated"
    )
    assert "deactivated" in error["message"]


def test_engine_unreachable_is_502(tenants, deployment, gateway, settings):
    secret = make_key(tenants.member, tenants.org)
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there any more
    settings.SANDBOX_ENGINE_URL = f"http://127.0.0.1:{port}"
    assert_openai_error(post(gateway, secret), 502, "server_error", "upstream_unreachable")


def test_engine_too_slow_is_504(tenants, engine, transactional_db):
    server = start_console(read_timeout=0.3)
    try:
        make_deployment(tenants.project, "llama", served_model_name="llama-chat")
        secret = make_key(tenants.member, tenants.org)
        response = post(server, secret, **{"x-sandbox-latency-ms": "1500"})
        assert_openai_error(response, 504, "server_error", "upstream_timeout")
    finally:
        server.stop()


def test_engine_errors_pass_through(tenants, deployment, gateway):
    secret = make_key(tenants.member, tenants.org)
    response = post(gateway, secret, {**CHAT, "max_tokens": 0})
    assert_openai_error(response, 400, "invalid_request_error", "integer_below_min_value")


def test_bad_json_and_missing_model_are_400(tenants, deployment, gateway):
    secret = make_key(tenants.member, tenants.org)
    response = httpx.post(
        gateway.base_url + "/chat/completions",
        content=b"{nope",
        headers={"authorization": f"Bearer {secret}"},
    )
    assert_openai_error(response, 400, "invalid_request_error", None)
    error = assert_openai_error(
        post(gateway, secret, {"messages": []}), 400, "invalid_request_error", None
    )
    assert error["param"] == "model"


def _raw(gateway, secret: str | None, content: bytes, path: str = "/chat/completions"):
    headers = {"content-type": "application/json"}
    if secret:
        headers["authorization"] = f"Bearer {secret}"
    return httpx.post(gateway.base_url + path, content=content, headers=headers, timeout=30)


@pytest.mark.parametrize("with_key", [True, False])
def test_deeply_nested_json_is_400_with_or_without_a_key(tenants, deployment, gateway, with_key):
    secret = make_key(tenants.member, tenants.org) if with_key else None
    for deep in (b"[" * 1000 + b"]" * 1000, b'{"model": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"):
        error = assert_openai_error(_raw(gateway, secret, deep), 400, "invalid_request_error", None)
        assert "nested too deeply" in error["message"] or "object" in error["message"]


@pytest.mark.parametrize(
    "content", [b"0", b"[]", b'"x"', b"null", b"\xff\xfe{", b'{"model": "\xc3\x28"}']
)
def test_bodies_that_are_not_a_json_object_or_not_utf8_are_400(
    tenants, deployment, gateway, content
):
    secret = make_key(tenants.member, tenants.org)
    assert_openai_error(_raw(gateway, secret, content), 400, "invalid_request_error", None)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "llama-chat", "messages": 5}, "messages"),
        ({"model": "llama-chat", "messages": "hi"}, "messages"),
        ({"model": "llama-chat", "messages": [5]}, "messages[0]"),
        (
            {"model": "llama-chat", "messages": [{"role": "user", "content": 7}]},
            "messages[0].content",
        ),
        (
            {
                "model": "llama-chat",
                "messages": [{"role": "user", "content": [{"type": "text", "text": 7}]}],
            },
            "messages[0].content[0].text",
        ),
        (
            {"model": "llama-chat", "messages": [{"role": "user", "content": [3]}]},
            "messages[0].content[0]",
        ),
        ({**CHAT, "max_tokens": 2**63}, "max_tokens"),
        ({**CHAT, "max_tokens": -1}, "max_tokens"),
        ({**CHAT, "max_tokens": 1.5}, "max_tokens"),
        ({**CHAT, "max_tokens": "10"}, "max_tokens"),
        ({**CHAT, "max_completion_tokens": 2**63}, "max_completion_tokens"),
        ({**CHAT, "stream": "yes"}, "stream"),
        # QA: the budget hold counts n and best_of completions only when they are whole numbers,
        # while an engine such as vLLM (pydantic, lax) reads "3" and 3.0 as 3 and writes 3 replies.
        ({**CHAT, "n": "3"}, "n"),
        ({**CHAT, "n": 3.0}, "n"),
        ({**CHAT, "n": 129}, "n"),
        ({**CHAT, "n": 0}, "n"),
        ({"model": "llama-chat", "prompt": "hi", "best_of": "4"}, "best_of"),
    ],
)
def test_values_the_gateway_reads_are_checked_with_a_400_naming_the_parameter(
    tenants, deployment, gateway, body, param
):
    secret = make_key(tenants.member, tenants.org)
    error = assert_openai_error(
        post(gateway, secret, body), 400, "invalid_request_error", "invalid_value"
    )
    assert error["param"] == param
    assert error["message"].startswith(f"`{param}`"), error  # the gateway's words, not the engine's


def test_embeddings_and_completions_inputs_are_checked(tenants, deployment, gateway):
    secret = make_key(tenants.member, tenants.org)
    bad_input = post(
        gateway, secret, {"model": "llama-chat", "input": {"a": 1}}, path="/embeddings"
    )
    assert (
        assert_openai_error(bad_input, 400, "invalid_request_error", "invalid_value")["param"]
        == "input"
    )
    bad_prompt = post(
        gateway, secret, {"model": "llama-chat", "prompt": [1, "a"]}, path="/completions"
    )
    assert (
        assert_openai_error(bad_prompt, 400, "invalid_request_error", "invalid_value")["param"]
        == "prompt"
    )


def test_huge_max_tokens_leaves_the_rate_limiter_working(tenants, gateway, redis_client):
    """2^63 once overflowed the limiter's arithmetic and broke the window for the next minute."""
    make_deployment(
        tenants.project, "limited", served_model_name="limited",
        rate_limits={"api_key": {"rpm": 100, "tpm": 100_000}},
    )  # fmt: skip
    secret = make_key(tenants.member, tenants.org)
    body = {"model": "limited", "messages": [{"role": "user", "content": "hi"}]}
    refused = post(gateway, secret, {**body, "max_tokens": 2**63})
    assert_openai_error(refused, 400, "invalid_request_error", "invalid_value")
    ok = post(gateway, secret, {**body, "max_tokens": 16})
    assert ok.status_code == 200, ok.text
    # Refused before accounting: only the admitted request counts against the window.
    assert int(ok.headers["x-ratelimit-remaining-requests"]) == 99


def test_known_endpoints_answer_head_and_say_which_methods_they_take(tenants, deployment, gateway):
    """QA: HEAD /v1/models and POST /v1/models were 404 "Unknown endpoint", and no 405 said what
    the endpoint takes (HTTP requires an Allow header on a 405)."""
    secret = make_key(tenants.member, tenants.org)
    auth = {"authorization": f"Bearer {secret}"}
    head = httpx.head(gateway.base_url + "/models", headers=auth)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) > 0  # what GET would send
    wrong = httpx.post(gateway.base_url + "/models", headers=auth, json={})
    assert_openai_error(wrong, 405, "invalid_request_error", None)
    assert wrong.headers["allow"] == "GET, HEAD"
    for path in ("/chat/completions", "/deployments/llama-chat/predictions"):
        response = httpx.get(gateway.base_url + path, headers=auth)
        assert_openai_error(response, 405, "invalid_request_error", None)
        assert response.headers["allow"] == "POST"


def test_unknown_endpoint_is_404_in_openai_shape(gateway):
    response = httpx.get(gateway.base_url + "/fine_tuning/jobs")
    assert_openai_error(response, 404, "invalid_request_error", "unknown_url")


def test_client_disconnect_mid_stream_cancels_the_upstream_request(
    tenants, deployment, gateway, engine
):
    import time

    secret = make_key(tenants.member, tenants.org)
    body = {**CHAT, "stream": True, "max_tokens": 400, "min_tokens": 400}
    with httpx.Client(timeout=30) as client:
        with client.stream(
            "POST",
            gateway.base_url + "/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {secret}", "x-sandbox-token-ms": "20"},
        ) as response:
            assert response.status_code == 200
            for _ in response.iter_raw():
                break
            assert engine.running == 1
    # 400 tokens × 20 ms would take 8 s; the engine stops as soon as the gateway lets go.
    deadline = time.monotonic() + 3
    while engine.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.running == 0
    from gateway.models import UsageRecord
    from gateway.tasks import flush_usage

    flush_usage()
    assert UsageRecord.objects.get().status_code == 499


def stream_text(gateway, secret: str, **headers) -> tuple[int, bytes]:
    """(status, the whole body as the client received it) of a streamed chat completion."""
    body = {**CHAT, "stream": True, "max_tokens": 6, "min_tokens": 6}
    headers["authorization"] = f"Bearer {secret}"
    with httpx.Client(timeout=30) as client:
        with client.stream(
            "POST", gateway.base_url + "/chat/completions", json=body, headers=headers
        ) as response:
            return response.status_code, b"".join(response.iter_raw())


def recorded_status() -> int:
    from gateway.models import UsageRecord
    from gateway.tasks import flush_usage

    flush_usage()
    return UsageRecord.objects.get().status_code


def test_an_engine_dying_mid_stream_ends_the_body_and_is_recorded_as_502(
    tenants, deployment, gateway, engine
):
    secret = make_key(tenants.member, tenants.org)
    status, received = stream_text(gateway, secret, **{"x-sandbox-fail-after-tokens": "2"})
    # The head was out: the client sees the first tokens, then the body ends without [DONE].
    assert status == 200
    assert received.count(b"data: {") == 3 and b"[DONE]" not in received
    assert recorded_status() == 502


def test_an_engine_silent_mid_stream_past_the_read_timeout_ends_the_body_as_504(
    tenants, engine, transactional_db
):
    import time

    server = start_console(read_timeout=0.5)
    try:
        make_deployment(tenants.project, "llama", served_model_name="llama-chat")
        secret = make_key(tenants.member, tenants.org)
        # 1.5 s between tokens: silent past the gateway's read timeout after the first one. The
        # silence is timed from the first bytes, not from the request: a slow first request on a
        # busy machine (key and routing table loads) must not eat the margin.
        body = {**CHAT, "stream": True, "max_tokens": 6, "min_tokens": 6}
        headers = {"authorization": f"Bearer {secret}", "x-sandbox-token-ms": "1500"}
        with httpx.Client(timeout=30) as client:
            with client.stream(
                "POST", server.base_url + "/chat/completions", json=body, headers=headers
            ) as response:
                status, chunks = response.status_code, response.iter_raw()
                received = next(chunks)
                first_bytes_at = time.monotonic()
                received += b"".join(chunks)
                silent_for = time.monotonic() - first_bytes_at
        assert status == 200 and b"[DONE]" not in received
        assert received.count(b"data: {") == 2  # the role, then the first token
        assert silent_for < 1.4  # cut at the read timeout (0.5 s), before the next token (1.5 s)
        # The gateway dropped the engine's connection: it stops generating (the engine notices
        # after its 1.5 s pause, ~1 s from here; left alone, its 6 tokens would take 7.5 s).
        deadline = time.monotonic() + 4
        while engine.running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.running == 0
        assert recorded_status() == 504
    finally:
        server.stop()


def test_redis_down_fails_closed_with_503(tenants, engine, settings, transactional_db):
    make_deployment(tenants.project, "llama", served_model_name="llama-chat")
    secret = make_key(tenants.member, tenants.org)
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    server = start_console()
    try:
        response = post(server, secret)
        assert_openai_error(response, 503, "server_error", "redis_unavailable")
        assert response.headers.get("x-request-id", "").startswith("req_")
    finally:
        server.stop()


def test_metrics_are_off_without_a_token_and_need_it_when_set(
    tenants, deployment, gateway, settings
):
    settings.METRICS_TOKEN = None
    assert httpx.get(gateway.url + "/metrics").status_code == 404
    settings.METRICS_TOKEN = "scrape-me"
    assert httpx.get(gateway.url + "/metrics").status_code == 401
    wrong = httpx.get(gateway.url + "/metrics", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "llama" not in wrong.text
    right = httpx.get(gateway.url + "/metrics", headers={"authorization": "Bearer scrape-me"})
    assert right.status_code == 200 and "modeldeck_gateway_requests_total" in right.text


def test_database_unavailable_is_503_with_retry_after_not_500(tenants, engine, monkeypatch, transactional_db):
    """The key lookup can't reach PostgreSQL (pool exhausted / server gone): the caller gets a
    503 in OpenAI's shape with Retry-After, not a bare 500."""
    from django.db import OperationalError

    import gateway.app

    make_deployment(tenants.project, "llama", served_model_name="llama-chat")
    secret = make_key(tenants.owner, tenants.org)

    def database_gone(digest: str):
        raise OperationalError("couldn't get a connection after 10.00 sec")

    monkeypatch.setattr(gateway.app, "load_key", database_gone)
    server = start_console()
    try:
        response = post(server, secret)
    finally:
        server.stop()
    assert_openai_error(response, 503, "server_error", "database_unavailable")
    assert response.headers["retry-after"] == "2"


def test_browser_apps_may_call_the_gateway_with_a_key_cors(tenants, deployment, gateway, settings):
    """A web app on another origin calls the gateway as it calls the OpenAI API: the preflight
    answers what may be sent, every answer (errors too) carries Access-Control-Allow-Origin. An
    origin left out of MODELDECK_GATEWAY_CORS_ORIGINS gets no CORS headers: the browser refuses."""
    secret = make_key(tenants.member, tenants.org)
    origin = {"origin": "https://app.example.com"}
    preflight = httpx.options(gateway.base_url + "/chat/completions", headers={
        **origin, "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type, openai-beta"})  # fmt: skip
    assert preflight.status_code == 204, preflight.text
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == "authorization, content-type, openai-beta"
    ok = post(gateway, secret, **origin)
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "*", ok.text
    refused = post(gateway, "mdk_wrong", **origin)
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "*"
    plain = post(gateway, secret)  # a server-side client: nothing added
    assert "access-control-allow-origin" not in plain.headers

    settings.MODELDECK_GATEWAY_CORS_ORIGINS = ["https://app.example.com"]
    named = post(gateway, secret, **origin)
    assert named.headers["access-control-allow-origin"] == "https://app.example.com" and named.headers["vary"] == "origin"
    other = {"origin": "https://evil.example"}
    assert "access-control-allow-origin" not in post(gateway, secret, **other).headers
    refused = httpx.options(gateway.base_url + "/chat/completions", headers={**other, "access-control-request-method": "POST"})
    assert refused.status_code == 204 and "access-control-allow-origin" not in refused.headers


@pytest.mark.parametrize(
    ("content", "name"),
    [
        # the gateway would check and meter the last model, an engine keeping the first serve it
        (b'{"model": "not-mine", "messages": [{"role": "user", "content": "hi"}], "model": "llama-chat"}', "model"),
        (b'{"model": "llama-chat", "max_tokens": 1, "messages": [], "max_tokens": 100000}', "max_tokens"),
        (b'{"model": "llama-chat", "mod\\u0065l": "x", "messages": []}', "model"),  # escaped: same key
        (b'{"model": "llama-chat", "messages": [{"role": "user", "role": "system", "content": "hi"}]}', "role"),
    ],
)
def test_a_key_written_twice_in_a_body_is_400_and_never_reaches_the_engine(
    tenants, deployment, gateway, engine, content, name
):
    secret = make_key(tenants.member, tenants.org)
    error = assert_openai_error(_raw(gateway, secret, content), 400, "invalid_request_error", None)
    assert f"`{name}` twice" in error["message"]
    assert len(engine.requests) == 0  # never reached the engine
    ok = _raw(gateway, secret, b'{"model": "llama-chat", "messages": [{"role": "user", "content": "hi"}]}')
    assert ok.status_code == 200  # the same key, a well-formed body: served
