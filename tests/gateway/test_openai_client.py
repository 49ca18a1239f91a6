"""The official openai client against a live gateway: every endpoint, streaming, and usage metering."""

from __future__ import annotations

import time
from decimal import Decimal

import openai
import pytest

from gateway.models import UsageRecord
from gateway.tasks import flush_usage
from projects.models import APIKey
from tests.gateway.conftest import make_deployment, make_key

pytestmark = pytest.mark.django_db(transaction=True)

PRICING = {"currency": "USD", "input_per_million": "1.50", "output_per_million": "2.00"}


@pytest.fixture
def setup(tenants, gateway):
    deployment = make_deployment(
        tenants.project, "llama", served_model_name="llama-chat", pricing=PRICING
    )
    secret = make_key(tenants.member, tenants.org)
    client = openai.OpenAI(api_key=secret, base_url=gateway.base_url, max_retries=0)
    return deployment, client


def test_chat_completion_answers_with_the_engines_reply_and_usage(setup, engine):
    deployment, client = setup
    reply = client.chat.completions.create(
        model="llama-chat", messages=[{"role": "user", "content": "Hello there, gateway"}]
    )
    assert reply.choices[0].message.content == "You said: Hello there, gateway"
    # Engine tokens: "Hello", "there", ",", "gateway" = 4; reply: You said : Hello there , gateway = 7.
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (4, 7)
    forwarded = engine.requests[-1]
    assert forwarded.path == "/v1/chat/completions"
    assert forwarded.body["model"] == "llama-chat"
    assert "authorization" not in forwarded.headers  # the developer's key never reaches the engine


def test_streaming_chat_arrives_in_chunks_with_usage_at_the_end(setup, engine):
    _, client = setup
    stream = client.chat.completions.create(
        model="llama-chat",
        messages=[{"role": "user", "content": "one two three four"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-sandbox-token-ms": "30"},
    )
    arrivals, pieces, usage = [], [], None
    for chunk in stream:
        arrivals.append(time.perf_counter())
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(pieces) == "You said: one two three four"
    assert len(pieces) == 7  # one chunk per token, not one buffered blob
    # Tokens were spaced by the engine: the client saw them spread out, not all at once.
    assert arrivals[-1] - arrivals[0] > 0.1
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (4, 7)
    assert engine.requests[-1].body["stream_options"] == {"include_usage": True}


def test_stream_without_asking_for_usage_still_meters_it(setup, engine):
    deployment, client = setup
    stream = client.chat.completions.create(
        model="llama-chat", messages=[{"role": "user", "content": "count me"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "You said: count me"
    # The gateway asked the engine for usage on the client's behalf.
    assert engine.requests[-1].body["stream_options"] == {"include_usage": True}
    flush_usage()
    record = UsageRecord.objects.get()
    assert record.stream and (record.prompt_tokens, record.completion_tokens) == (2, 5)
    assert record.ttft_ms is not None and record.ttft_ms <= record.latency_ms


def test_completions_and_embeddings(setup):
    _, client = setup
    completion = client.completions.create(model="llama-chat", prompt="Say hi", max_tokens=3)
    assert completion.choices[0].text == "You said:"
    assert completion.usage.completion_tokens == 3
    embedding = client.embeddings.create(model="llama-chat", input=["alpha", "beta gamma"])
    assert len(embedding.data) == 2 and len(embedding.data[0].embedding) == 384
    assert embedding.usage.prompt_tokens == 3


def test_models_list_shows_the_organizations_running_models(tenants, setup):
    _, client = setup
    make_deployment(
        tenants.project, "stopped", served_model_name="stopped-model", state="deactivated"
    )
    make_deployment(tenants.other_project, "secret", served_model_name="globex-secret")
    names = [m.id for m in client.models.list()]
    assert names == ["llama-chat"]


def test_usage_records_and_costs_match_the_engine_tokens(tenants, setup):
    deployment, client = setup
    expected = []
    for content in ["Hello there, gateway", "a b c d e f g h i j"]:
        reply = client.chat.completions.create(
            model="llama-chat", messages=[{"role": "user", "content": content}]
        )
        expected.append((reply.usage.prompt_tokens, reply.usage.completion_tokens))
    assert flush_usage() == 2
    assert flush_usage() == 0  # nothing left, nothing doubled
    records = list(UsageRecord.objects.order_by("created_at"))
    assert [(r.prompt_tokens, r.completion_tokens) for r in records] == expected
    key = APIKey.objects.get()
    for record, (prompt, completion) in zip(records, expected, strict=True):
        assert record.deployment == deployment
        assert record.organization == tenants.org and record.user == tenants.member
        assert record.api_key_id == key.pk and record.api_key_prefix == key.prefix
        assert record.route == "chat.completions" and record.status_code == 200
        assert record.currency == "USD"
        exact = (
            Decimal(prompt) * Decimal("1.50") + Decimal(completion) * Decimal("2.00")
        ) / Decimal(1_000_000)
        assert record.cost == exact.quantize(Decimal("0.00000001"))
    # 4 prompt + 7 completion tokens: 4 × 1.50 + 7 × 2.00 per million.
    assert records[0].cost == Decimal("0.00002000")
    key.refresh_from_db()
    assert key.last_used_at == records[-1].created_at


def test_flush_twice_or_late_never_doubles(setup, _clean_redis):
    from gateway.tasks import write_events
    from gateway.usage import USAGE_STREAM_KEY

    _, client = setup
    client.chat.completions.create(model="llama-chat", messages=[{"role": "user", "content": "x"}])
    buffered = [fields[b"e"] for _, fields in _clean_redis.xrange(USAGE_STREAM_KEY)]
    assert len(buffered) == 1
    write_events(buffered)  # a flush that crashed after inserting, before acknowledging
    flush_usage()
    flush_usage()
    assert UsageRecord.objects.count() == 1
    assert _clean_redis.xlen(USAGE_STREAM_KEY) == 0  # acknowledged and deleted


def test_metrics_expose_requests_tokens_and_latency_by_deployment(setup, gateway, settings):
    import httpx

    settings.METRICS_TOKEN = "scrape-token"
    _, client = setup
    client.chat.completions.create(
        model="llama-chat", messages=[{"role": "user", "content": "metrics please"}]
    )
    text = httpx.get(
        gateway.url + "/metrics", headers={"authorization": "Bearer scrape-token"}
    ).text
    assert (
        'modeldeck_gateway_requests_total{deployment="llama",route="chat.completions",status="200"}'
        in text
    )
    assert 'modeldeck_gateway_tokens_total{deployment="llama",kind="completion"}' in text
    assert 'modeldeck_gateway_request_seconds_bucket{deployment="llama"' in text


def test_django_pages_are_still_served_beside_the_gateway(gateway):
    import httpx

    response = httpx.get(gateway.url + "/login/")
    assert response.status_code == 200 and "Sign in" in response.text
