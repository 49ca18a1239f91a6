"""External deployments through the gateway: an on-prem OpenAI-shaped server (a local one on a free
port; loopback allowed by the operator setting) that starts failing sends the next requests to
the overflow deployment, with 0 failed requests for the official openai client."""

from __future__ import annotations

import json

import openai
import pytest
import redis
from django.conf import settings
from django.core.exceptions import ValidationError

from catalog.models import CatalogModel
from deployments.external import external_deployment_create, external_url_refusal
from gateway.models import UsageRecord
from gateway.tasks import flush_usage
from sandbox.engine import SimulatedEngine, run_engine_in_thread
from tests.conftest import login
from tests.gateway.conftest import make_deployment, make_key

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "onprem-secret-1234"


class OnPrem:
    """An OpenAI-compatible server of the tenant's own: answers with the simulated engine while
    `mode` is "ok"; "500" / "429" answer that status; it checks its own bearer key."""

    def __init__(self) -> None:
        self.engine = SimulatedEngine()
        self.mode = "ok"
        self.hits: list[str] = []  # the model names it was asked for

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.engine(scope, receive, send)
        headers = dict(scope["headers"])
        if scope["path"].endswith("/models") or headers.get(b"authorization") != f"Bearer {SECRET}".encode():
            if scope["path"].endswith("/models") and headers.get(b"authorization") == f"Bearer {SECRET}".encode():
                return await self.engine(scope, receive, send)
            return await _json(send, 401, {"error": {"message": "bad key"}})
        self.hits.append(scope["path"])
        if self.mode != "ok":
            return await _json(send, int(self.mode), {"error": {"message": f"on-prem {self.mode}"}})
        return await self.engine(scope, receive, send)


async def _json(send, status, payload):
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json")]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def onprem(settings):
    settings.EXTERNAL_PRIVATE_ADDRESSES_ALLOWED = True  # the operator setting: a local server
    server = OnPrem()
    url, stop = run_engine_in_thread(engine=server)
    yield server, url
    stop()


@pytest.fixture
def external(tenants, gateway, onprem, engine):
    server, url = onprem
    managed = make_deployment(tenants.project, "burst", served_model_name="burst-chat")
    model = CatalogModel.objects.create(organization=tenants.org, name="onprem-llama", source="huggingface",
                                        repo_id="acme/onprem")  # fmt: skip
    deployment = external_deployment_create(
        user=tenants.owner, project=tenants.project, model=model, name="onprem", url=url + "/v1",
        credential=SECRET, overflow="burst", served_model_name="llama-onprem",
        options={"timeout_s": 5, "failure_threshold": 2, "cooldown_s": 60},
    )  # fmt: skip
    client = openai.OpenAI(api_key=make_key(tenants.member, tenants.org), base_url=gateway.base_url, max_retries=0)
    return deployment, managed, client, server


def tenants_owner(deployment):
    return deployment.created_by


def _ask(client, n: int, start: int = 0) -> list[str]:
    replies = []
    for i in range(start, start + n):
        reply = client.chat.completions.create(
            model="llama-onprem", messages=[{"role": "user", "content": f"question {i}"}]
        )
        replies.append(reply.choices[0].message.content)
    return replies


def test_failing_external_endpoint_overflows_with_no_failed_request(external, engine):
    deployment, managed, client, server = external
    assert _ask(client, 3) == [f"You said: question {i}" for i in range(3)]
    assert len(server.hits) == 3 and not engine.requests  # the on-prem server answered, with its key

    server.mode = "500"  # it starts failing
    replies = _ask(client, 10, start=3)
    assert replies == [f"You said: question {i}" for i in range(3, 13)]  # 0 failed requests
    # Two failures open the breaker (failure_threshold 2): the rest never try the on-prem server.
    assert len(server.hits) == 3 + 2
    assert len(engine.requests) == 10
    assert {r.body["model"] for r in engine.requests} == {"burst-chat"}  # the overflow's own name

    breaker = redis.Redis.from_url(settings.REDIS_URL).hgetall(f"gw:ext:{deployment.pk}:cb")
    assert int(breaker[b"fails"]) == 2 and int(breaker[b"open_until"]) > 0

    flush_usage()
    rows = UsageRecord.objects.filter(deployment=deployment)
    assert rows.count() == 13 and set(rows.values_list("status_code", flat=True)) == {200}
    assert rows.filter(served_by="external").count() == 3
    assert rows.filter(served_by="overflow").count() == 10
    # The deployment page shows the split.
    page = login(tenants_owner(deployment)).get(deployment.get_absolute_url()).content.decode()
    assert '<tr data-served-by="external"><td>External endpoint</td><td class="num">3</td>' in page
    assert '<tr data-served-by="overflow"><td>Overflow deployment</td><td class="num">10</td>' in page
    assert 'id="breaker-state">open' in page


def test_429_and_unreachable_go_to_the_overflow(external, engine, onprem):
    deployment, managed, client, server = external
    server.mode = "429"
    assert _ask(client, 1) == ["You said: question 0"]
    assert len(server.hits) == 1 and len(engine.requests) == 1


def test_concurrency_threshold_sends_the_excess_to_the_overflow(external, engine):
    deployment, managed, client, server = external
    # Two requests already on the on-prem server (another gateway process counted them).
    r = redis.Redis.from_url(settings.REDIS_URL)
    from deployments.external import external_deployment_update

    external_deployment_update(user=None, deployment=deployment, options={"max_concurrency": 2})
    r.set(f"gw:ext:{deployment.pk}:inflight", 2)
    assert _ask(client, 2) == ["You said: question 0", "You said: question 1"]
    assert not server.hits and len(engine.requests) == 2
    r.set(f"gw:ext:{deployment.pk}:inflight", 0)
    assert _ask(client, 1) == ["You said: question 0"]
    assert len(server.hits) == 1


def test_without_overflow_the_callers_see_the_external_error(tenants, gateway, onprem, engine):
    server, url = onprem
    model = CatalogModel.objects.create(organization=tenants.org, name="m", source="huggingface", repo_id="a/b")
    external_deployment_create(user=tenants.owner, project=tenants.project, model=model, name="solo",
                               url=url, credential=SECRET)  # fmt: skip
    client = openai.OpenAI(api_key=make_key(tenants.member, tenants.org), base_url=gateway.base_url, max_retries=0)
    server.mode = "500"
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="solo", messages=[{"role": "user", "content": "hi"}])


@pytest.mark.parametrize(
    "url, words",
    [
        ("http://127.0.0.1:8000/v1", "loopback"),
        ("http://169.254.169.254/latest", "link-local"),
        ("http://10.0.0.5/v1", "private"),
        ("file:///etc/passwd", "Only http"),
        ("https://user:pw@example.com/v1", "API key field"),
        ("gopher://example.com", "Only http"),
    ],
)
def test_tenant_urls_are_checked_like_pool_servers(settings, url, words):
    settings.EXTERNAL_PRIVATE_ADDRESSES_ALLOWED = False
    assert words in external_url_refusal(url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/v1", "http://10.0.0.5/v1"])
def test_a_private_url_refusal_names_the_setting_that_allows_it(settings, url):
    settings.EXTERNAL_PRIVATE_ADDRESSES_ALLOWED = False
    assert "MODELDECK_EXTERNAL_PRIVATE_ADDRESSES=true" in external_url_refusal(url)


def test_a_refused_url_is_a_field_error_and_overflow_is_scoped(tenants, settings):
    settings.EXTERNAL_PRIVATE_ADDRESSES_ALLOWED = False
    model = CatalogModel.objects.create(organization=tenants.org, name="m", source="huggingface", repo_id="a/b")
    other = make_deployment(tenants.other_project, "theirs")
    with pytest.raises(ValidationError) as info:
        external_deployment_create(user=tenants.owner, project=tenants.project, model=model, name="x",
                                   url="http://127.0.0.1/v1", overflow=other.pk)  # fmt: skip
    assert set(info.value.message_dict) == {"external_url", "overflow"}


def test_the_health_check_opens_and_closes_the_shared_breaker(external, engine):
    from gateway.tasks import check_external_endpoints

    deployment, managed, client, server = external
    key = f"gw:ext:{deployment.pk}:cb"
    r = redis.Redis.from_url(settings.REDIS_URL)
    server.mode = "500"  # /v1/models with the right key still answers: the server is up
    assert check_external_endpoints() == {"checked": 1, "healthy": 1}
    assert not r.exists(key)

    server.engine, saved = None, server.engine  # now it crashes on every call
    try:
        result = check_external_endpoints()
    finally:
        server.engine = saved
    assert result == {"checked": 1, "healthy": 0} and r.hget(key, "open_until")
    server.mode = "ok"
    assert _ask(client, 1) == ["You said: question 0"]
    assert not server.hits and len(engine.requests) == 1  # breaker open: the overflow answered

    assert check_external_endpoints() == {"checked": 1, "healthy": 1}
    assert not r.exists(key)
    assert _ask(client, 1) == ["You said: question 0"] and len(server.hits) == 1


def test_an_external_deployments_limits_and_pricing_are_enforced_and_metered(tenants, gateway, onprem, engine):
    from decimal import Decimal

    server, url = onprem
    model = CatalogModel.objects.create(organization=tenants.org, name="m", source="huggingface", repo_id="a/b")
    deployment = external_deployment_create(
        user=tenants.owner, project=tenants.project, model=model, name="priced", url=url, credential=SECRET,
        rate_limits={"api_key": {"rpm": 2}}, pricing={"input_per_million": "100", "output_per_million": "300"},
    )  # fmt: skip
    client = openai.OpenAI(api_key=make_key(tenants.member, tenants.org), base_url=gateway.base_url, max_retries=0)

    def ask():
        return client.chat.completions.create(model="priced", messages=[{"role": "user", "content": "hi there"}])

    assert ask().choices[0].message.content == "You said: hi there"
    ask()
    with pytest.raises(openai.RateLimitError) as refused:
        ask()
    assert "api_key" in str(refused.value) or "API key" in str(refused.value)
    assert len(server.hits) == 2  # the third never reached the endpoint

    flush_usage()
    rows = UsageRecord.objects.filter(deployment=deployment, status_code=200)
    assert rows.count() == 2
    for row in rows:
        assert row.prompt_tokens > 0 and row.completion_tokens > 0
        expected = (row.prompt_tokens * Decimal(100) + row.completion_tokens * Decimal(300)) / Decimal(10**6)
        assert row.cost == expected and row.cost > 0
