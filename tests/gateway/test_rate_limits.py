"""Rate limits are exact under concurrency across two gateway processes, at every level alone and together."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from gateway.models import UsageRecord
from gateway.ratelimit import (
    IMAGE_LOW_DETAIL_TOKENS,
    IMAGE_TOKENS,
    MEDIA_PART_TOKENS,
    prompt_estimate,
)
from gateway.tasks import flush_usage
from projects.models import APIKey
from tests.factories import MembershipFactory, UserFactory
from tests.gateway.conftest import make_deployment, make_key

pytestmark = pytest.mark.django_db(transaction=True)

# "hello" with max_tokens 4: the gateway reserves 5//4 + 4 = 5 tokens and the engine reports
# 1 prompt + 4 completion = 5, so settling never frees tokens mid-test and counts stay exact.
CHAT = {"model": "llama-chat", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
TOKENS_PER_REQUEST = 5


def run_in_fresh_loop(coro):
    """asyncio.run in its own thread: a session-wide Playwright browser keeps a loop running in
    the main thread, where asyncio.run would refuse to start."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def fire(gateways, secrets: list[str], count: int) -> list[httpx.Response]:
    """`count` concurrent requests, spread over both gateways and the given keys."""

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            calls = [
                client.post(
                    gateways[i % len(gateways)].base_url + "/chat/completions",
                    json=CHAT,
                    headers={"authorization": f"Bearer {secrets[i % len(secrets)]}"},
                )
                for i in range(count)
            ]
            return await asyncio.gather(*calls)

    return run_in_fresh_loop(run())


def statuses(responses) -> dict[int, int]:
    out: dict[int, int] = {}
    for r in responses:
        out[r.status_code] = out.get(r.status_code, 0) + 1
    return out


def limits(**levels) -> dict:
    return {name: {"rpm": None, "tpm": None, **conf} for name, conf in levels.items()}


@pytest.mark.parametrize("n", [3, 7])
def test_rpm_lets_exactly_n_of_5n_concurrent_requests_through_two_gateways(
    tenants, gateways, engine, n
):
    make_deployment(
        tenants.project,
        "llama",
        served_model_name="llama-chat",
        rate_limits=limits(api_key={"rpm": n}),
    )
    secret = make_key(tenants.member, tenants.org)
    responses = fire(gateways, [secret], 5 * n)
    assert statuses(responses) == {200: n, 429: 4 * n}
    assert len(engine.requests) == n  # refused requests never reached the engine
    refused = next(r for r in responses if r.status_code == 429)
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_api_key_requests"
    assert "API key limit on requests per minute" in error["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-limit-requests"] == str(n)
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    ok = next(r for r in responses if r.status_code == 200)
    assert ok.headers["x-ratelimit-limit-requests"] == str(n)


def test_tpm_lets_exactly_the_requests_that_fit_through(tenants, gateways, engine):
    n = 4
    make_deployment(
        tenants.project,
        "llama",
        served_model_name="llama-chat",
        rate_limits=limits(api_key={"tpm": n * TOKENS_PER_REQUEST}),
    )
    secret = make_key(tenants.member, tenants.org)
    responses = fire(gateways, [secret], 5 * n)
    assert statuses(responses) == {200: n, 429: 4 * n}
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limit_api_key_tokens"
    assert refused.headers["x-ratelimit-limit-tokens"] == str(n * TOKENS_PER_REQUEST)
    # The reservation was settled to what the engine reported.
    assert (
        sum(r.json()["usage"]["total_tokens"] for r in responses if r.status_code == 200)
        == n * TOKENS_PER_REQUEST
    )


def test_tokens_settle_to_the_real_count(tenants, gateway, engine):
    # Reserve 5 + 200 = 205 per request, use 5: after settling, many more fit than reservations suggest.
    make_deployment(
        tenants.project,
        "llama",
        served_model_name="llama-chat",
        rate_limits=limits(api_key={"tpm": 250}),
    )
    secret = make_key(tenants.member, tenants.org)
    body = {**CHAT, "max_tokens": 200}
    for _ in range(10):
        response = httpx.post(
            gateway.base_url + "/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {secret}"},
        )
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["total_tokens"] == 1 + 4  # "You said: hello"


def test_request_larger_than_the_token_limit_is_refused_with_a_clear_message(tenants, gateway):
    make_deployment(
        tenants.project,
        "llama",
        served_model_name="llama-chat",
        rate_limits=limits(user={"tpm": 10}),
    )
    secret = make_key(tenants.member, tenants.org)
    response = httpx.post(
        gateway.base_url + "/chat/completions",
        json={**CHAT, "max_tokens": 100},
        headers={"authorization": f"Bearer {secret}"},
    )
    assert response.status_code == 429
    assert "lower max_tokens" in response.json()["error"]["message"]


def test_organization_level_counts_every_user_and_key(tenants, gateways, engine):
    make_deployment(
        tenants.project,
        "llama",
        served_model_name="llama-chat",
        rate_limits=limits(organization={"rpm": 4}),
    )
    secrets = [make_key(tenants.member, tenants.org), make_key(tenants.owner, tenants.org)]
    responses = fire(gateways, secrets, 20)
    assert statuses(responses) == {200: 4, 429: 16}
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 429} == {
        "rate_limit_organization_requests"
    }


def test_user_level_counts_all_of_a_users_keys_but_not_other_users(tenants, gateways, engine):
    make_deployment(
        tenants.project,
        "llama",
        served_model_name="llama-chat",
        rate_limits=limits(user={"rpm": 3}),
    )
    member_keys = [
        make_key(tenants.member, tenants.org, "a"),
        make_key(tenants.member, tenants.org, "b"),
    ]
    assert statuses(fire(gateways, member_keys, 15)) == {200: 3, 429: 12}
    owner_key = make_key(tenants.owner, tenants.org)
    assert statuses(fire(gateways, [owner_key], 15)) == {200: 3, 429: 12}


def test_api_key_level_gives_each_key_its_own_budget(tenants, gateways, engine):
    make_deployment(
        tenants.project,
        "llama",
        served_model_name="llama-chat",
        rate_limits=limits(api_key={"rpm": 2}),
    )
    first, second = (
        make_key(tenants.member, tenants.org, "a"),
        make_key(tenants.member, tenants.org, "b"),
    )
    assert statuses(fire(gateways, [first], 10)) == {200: 2, 429: 8}
    assert statuses(fire(gateways, [second], 10)) == {200: 2, 429: 8}


def test_all_levels_together_the_tightest_one_wins(tenants, gateways, engine):
    make_deployment(
        tenants.project,
        "llama",
        served_model_name="llama-chat",
        rate_limits=limits(organization={"rpm": 6}, user={"rpm": 4}, api_key={"rpm": 3}),
    )
    alice_1, alice_2 = (
        make_key(tenants.member, tenants.org, "1"),
        make_key(tenants.member, tenants.org, "2"),
    )
    bob = UserFactory(username="bob")
    MembershipFactory(user=bob, organization=tenants.org)
    bob_key = make_key(bob, tenants.org)
    assert statuses(fire(gateways, [alice_1], 15)) == {200: 3, 429: 12}  # key limit
    second = fire(gateways, [alice_2], 15)
    assert statuses(second) == {200: 1, 429: 14}  # user limit: 4 - 3
    assert {r.json()["error"]["code"] for r in second if r.status_code == 429} == {
        "rate_limit_user_requests"
    }
    third = fire(gateways, [bob_key], 15)
    assert statuses(third) == {200: 2, 429: 13}  # organization limit: 6 - 4
    assert {r.json()["error"]["code"] for r in third if r.status_code == 429} == {
        "rate_limit_organization_requests"
    }
    assert len(engine.requests) == 6


def test_rate_limited_requests_are_metered_as_429(tenants, gateway):
    make_deployment(
        tenants.project,
        "llama",
        served_model_name="llama-chat",
        rate_limits=limits(api_key={"rpm": 1}),
    )
    secret = make_key(tenants.member, tenants.org)
    fire([gateway], [secret], 3)
    flush_usage()
    assert sorted(UsageRecord.objects.values_list("status_code", flat=True)) == [200, 429, 429]


def test_embedded_mode_limiter_is_exact_in_one_process():
    """Without Redis (embedded mode) the same sliding windows run in-process."""
    from gateway.ratelimit import Level, LocalRateLimiter

    limiter = LocalRateLimiter()
    levels = [Level("user", 1, 3, -1), Level("api_key", 9, -1, 50)]

    async def run() -> list[bool]:
        results = []
        for i in range(6):
            decision = await limiter.check(
                generation_key="",
                expected_generation="",
                deployment_id=1,
                levels=levels,
                request_id=f"r{i}",
                estimate=20,
            )
            results.append(decision.allowed)
        return results

    # tpm 50 admits two requests of 20 tokens; rpm 3 would admit three.
    assert run_in_fresh_loop(run()) == [True, True, False, False, False, False]


def test_token_limit_is_never_passed_by_more_than_one_requests_max_tokens(tenants, gateways, engine):
    """The overshoot case: 2,000 tokens/min, requests without max_tokens whose replies are long
    (600 tokens). Reserving prompt + a default 256 let 7 run at once and used 4,200 tokens; the
    gateway now forwards a completion cap and reserves it, then settles to the engine's count."""
    from gateway.ratelimit import DEFAULT_COMPLETION_CAP

    tpm = 2000
    make_deployment(
        tenants.project, "llama", served_model_name="llama-chat",
        rate_limits=limits(api_key={"tpm": tpm}),
    )  # fmt: skip
    secret = make_key(tenants.member, tenants.org)
    body = {"model": "llama-chat", "messages": [{"role": "user", "content": "write a long story"}]}

    async def burst() -> list[httpx.Response]:
        headers = {
            "authorization": f"Bearer {secret}",
            "x-sandbox-completion-tokens": "600",
            "x-sandbox-latency-ms": "100",
        }
        async with httpx.AsyncClient(timeout=30, headers=headers) as client:
            return await asyncio.gather(*(
                client.post(gateways[i % 2].base_url + "/chat/completions", json=body)
                for i in range(20)
            ))  # fmt: skip

    used = 0
    for _ in range(4):  # bursts, each after the previous one settled
        responses = run_in_fresh_loop(burst())
        assert set(statuses(responses)) <= {200, 429}
        used += sum(r.json()["usage"]["total_tokens"] for r in responses if r.status_code == 200)
    assert 0 < used <= tpm + DEFAULT_COMPLETION_CAP, used
    # The cap went to the engine (the body had none); the reply was not cut below it.
    forwarded = [r.body for r in engine.requests]
    assert all(b["max_tokens"] <= DEFAULT_COMPLETION_CAP for b in forwarded)


def test_without_a_token_limit_the_body_goes_to_the_engine_as_sent(tenants, gateway, engine):
    make_deployment(
        tenants.project, "llama", served_model_name="llama-chat",
        rate_limits=limits(api_key={"rpm": 100}),
    )  # fmt: skip
    secret = make_key(tenants.member, tenants.org)
    response = httpx.post(
        gateway.base_url + "/chat/completions",
        json={"model": "llama-chat", "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {secret}", "x-sandbox-completion-tokens": "1500"},
        timeout=30,
    )
    assert response.status_code == 200
    assert response.json()["usage"]["completion_tokens"] == 1500
    assert "max_tokens" not in engine.requests[-1].body


def test_a_monthly_budget_stops_a_key_across_two_gateways(tenants, gateways, engine, pinned_budget_month):
    """Budgets (plain numbers in, gateway.ratelimit.budgets_for): spend is counted in Redis from
    the same metering as usage, so both gateways refuse once it passes the limit."""
    import dataclasses

    from gateway.ratelimit import budgets_for

    pricing = {"currency": "USD", "input_per_million": "1000", "output_per_million": "1000"}
    make_deployment(tenants.project, "llama", served_model_name="llama-chat", pricing=pricing)
    secret = make_key(tenants.member, tenants.org)
    key_id = APIKey.objects.get(user=tenants.member).pk
    # Each request costs 5 tokens × $1,000 per million = $0.005; a budget of 2 cents on the key.
    budgets = budgets_for(
        organization_id=tenants.org.pk, user_id=tenants.member.pk, api_key_id=key_id,
        api_key="0.02", user="5", currency="USD",
    )  # fmt: skip
    for server in gateways:  # what the lookup will attach to the key once budgets are stored
        app = server.app.gateway
        original = app._load_key

        async def with_budgets(digest, original=original):
            info = await original(digest)
            return dataclasses.replace(info, budgets=budgets) if info is not None else None

        app._load_key = with_budgets
    codes = []
    for i in range(8):
        response = httpx.post(
            gateways[i % 2].base_url + "/chat/completions",
            json=CHAT,
            headers={"authorization": f"Bearer {secret}"},
        )
        codes.append(response.status_code)
        if response.status_code == 429:
            error = response.json()["error"]
            assert error["type"] == "insufficient_quota"
            assert error["code"] == "budget_api_key_exceeded"
            assert "0.02 USD" in error["message"]
    assert codes == [200, 200, 200, 200, 429, 429, 429, 429]
    flush_usage()
    assert sorted(UsageRecord.objects.values_list("status_code", flat=True)) == [200] * 4 + [429] * 4


# A prompt the character count missed: token ids, token-id lists, images and audio in chat
# content parts. Each is far above 1,000 tokens, which the estimate used to put at about 0.
BIG_PROMPTS = {
    "completions, token ids": ("completions", {"prompt": list(range(5000)), "max_tokens": 16}),
    "completions, token-id lists": ("completions", {"prompt": [[7] * 2500, [9] * 2500], "max_tokens": 16}),
    "embeddings, token ids": ("embeddings", {"input": list(range(5000))}),
    "embeddings, token-id lists": ("embeddings", {"input": [[7] * 2500, [9] * 2500]}),
    "chat, image parts": ("chat/completions", {"max_tokens": 16, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what differs?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/b.png", "detail": "high"}},
    ]}]}),  # fmt: skip
    "chat, audio parts": ("chat/completions", {"max_tokens": 16, "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
    ]}]}),  # fmt: skip
}


@pytest.mark.parametrize("case", list(BIG_PROMPTS))
def test_a_prompt_without_much_text_is_counted_against_the_token_limit(tenants, gateway, engine, case):
    """The TPM bypass: a prompt given as token ids or media parts was estimated at ~0 tokens, so
    it passed a 1,000 tokens-per-minute limit however large it was. Now it is refused before the
    engine sees it, like any prompt over the limit."""
    make_deployment(
        tenants.project, "llama", served_model_name="llama-chat",
        rate_limits=limits(api_key={"tpm": 1000}),
    )  # fmt: skip
    secret = make_key(tenants.member, tenants.org)
    path, body = BIG_PROMPTS[case]
    response = httpx.post(
        f"{gateway.base_url}/{path}",
        json={"model": "llama-chat", **body},
        headers={"authorization": f"Bearer {secret}"},
        timeout=30,
    )
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "rate_limit_api_key_tokens"
    assert "more than the API key limit of 1000 tokens per minute" in error["message"]
    assert response.headers["x-should-retry"] == "false"  # it never fits: the clients don't retry
    assert not engine.requests  # refused before the engine


def test_a_burst_of_token_id_prompts_gets_only_what_the_token_limit_holds(tenants, gateways, engine):
    """Ten concurrent completions of 2,000 token ids each against 5,000 tokens a minute: two fit.
    Estimated at ~16 tokens each, all ten went through (20,000 tokens) before any was settled."""
    make_deployment(
        tenants.project, "llama", served_model_name="llama-chat",
        rate_limits=limits(api_key={"tpm": 5000}),
    )  # fmt: skip
    secret = make_key(tenants.member, tenants.org)
    body = {"model": "llama-chat", "prompt": [42] * 2000, "max_tokens": 16}

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30, headers={"authorization": f"Bearer {secret}"}) as client:
            return await asyncio.gather(*(
                client.post(gateways[i % 2].base_url + "/completions", json=body) for i in range(10)
            ))  # fmt: skip

    responses = run_in_fresh_loop(burst())
    assert statuses(responses) == {200: 2, 429: 8}
    assert sum(r.json()["usage"]["prompt_tokens"] for r in responses if r.status_code == 200) == 4000


def test_the_prompt_estimate_counts_token_ids_media_parts_and_tools():
    assert prompt_estimate({"prompt": "hello world!"}) == 3  # characters / 4, as before
    assert prompt_estimate({"prompt": ["abcd", "efgh"]}) == 2
    assert prompt_estimate({"prompt": [1, 2, 3]}) == 3
    assert prompt_estimate({"input": [[1, 2], [3, 4, 5]]}) == 5
    assert prompt_estimate({"prompt": []}) == 0
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    low = {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}}
    audio = {"type": "input_audio", "input_audio": {"data": "UklGRg==" * 1000, "format": "wav"}}
    text = {"type": "text", "text": "abcd" * 10}
    messages = [{"role": "user", "content": [text, image, low, audio]}]
    assert prompt_estimate({"messages": messages}) == 10 + IMAGE_TOKENS + IMAGE_LOW_DETAIL_TOKENS + MEDIA_PART_TOKENS
    # Tool definitions and earlier tool calls are rendered into the prompt: their strings count.
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "description": "x" * 394}}}
    asked = {"messages": [{"role": "user", "content": "hi"}]}
    assert prompt_estimate({**asked, "tools": [tool]}) >= prompt_estimate(asked) + 100
    assert prompt_estimate({**asked, "functions": [tool["function"]]}) >= prompt_estimate(asked) + 100
    call = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "y" * 400}},
    ]}  # fmt: skip
    assert prompt_estimate({"messages": [call]}) >= 100


# ---- shapes whose size the estimate missed (security review) -----------------------------------
# Image parts carrying an empty "text", an assistant turn's reasoning_content, vLLM's RAG
# `documents`, and n / best_of completions of max_tokens each were counted as ~nothing.

BIG = "lorem " * 8000  # 48,000 characters: ~12,000 tokens by the gateway's own chars/4 rule
IMG = {"url": "https://example.com/huge.png", "detail": "high"}
CASES = {
    # Images count 765 each, unless the part also carries an empty `text` key: then 0.
    "image parts with an empty text key": ("chat/completions", {"max_tokens": 16, "messages": [{"role": "user", "content": [
        {"type": "image_url", "text": "", "image_url": IMG} for _ in range(40)]}]}),
    # vLLM chat templates (Qwen3, DeepSeek-R1, ...) render an assistant turn's reasoning_content.
    "reasoning_content in history": ("chat/completions", {"max_tokens": 16, "messages": [
        {"role": "assistant", "content": "", "reasoning_content": BIG}, {"role": "user", "content": "go on"}]}),
    # vLLM ChatCompletionRequest.documents: RAG templates (Command-R, Granite) put them in the prompt.
    "documents": ("chat/completions", {"max_tokens": 16, "messages": [{"role": "user", "content": "hi"}],
                                      "documents": [{"title": "t", "text": BIG}]}),
    # n choices of max_tokens each: reserved once.
    "n=64": ("chat/completions", {"max_tokens": 500, "n": 64, "messages": [{"role": "user", "content": "hi"}]}),
    "best_of/n on completions": ("completions", {"max_tokens": 500, "n": 20, "best_of": 20, "prompt": "hi"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_shapes_that_hid_their_size_are_refused_by_a_small_token_limit(tenants, gateway, engine, case):
    make_deployment(tenants.project, "llama", served_model_name="llama-chat",
                    rate_limits=limits(api_key={"tpm": 1000}))
    path, body = CASES[case]
    response = httpx.post(f"{gateway.base_url}/{path}", json={"model": "llama-chat", **body},
                          headers={"authorization": f"Bearer {make_key(tenants.member, tenants.org)}"}, timeout=30)
    forwarded = engine.requests[-1] if engine.requests else None
    assert response.status_code == 429, (response.status_code, str(forwarded)[:200])
    assert not engine.requests  # refused before the engine
