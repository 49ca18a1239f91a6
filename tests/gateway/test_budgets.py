"""Monthly budgets end to end: stored through the services, loaded with the key, enforced by two
gateways from the same metering, shown on the usage page, audited."""

from __future__ import annotations

import openai
import pytest

from gateway.tasks import flush_usage
from projects.models import APIKey, Membership
from projects.services import api_key_budget_set, member_budget_set, organization_budget_set
from sharing.models import AuditEntry
from tests.conftest import login
from tests.gateway.conftest import make_deployment, make_key, start_console

pytestmark = pytest.mark.django_db(transaction=True)

# 1 prompt + 4 completion tokens at $1,000 per million each way: $0.005 a request.
CHAT = {"model": "llama-chat", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
PRICING = {"currency": "USD", "input_per_million": "1000", "output_per_million": "1000"}


def call(server, secret: str):
    client = openai.OpenAI(api_key=secret, base_url=server.base_url, max_retries=0)
    return client.chat.completions.create(**CHAT)


def test_a_few_cents_budget_stops_a_key_across_two_gateways(tenants, gateways, engine, pinned_budget_month):
    make_deployment(tenants.project, "llama", served_model_name="llama-chat", pricing=PRICING)
    secret = make_key(tenants.member, tenants.org)
    key = APIKey.objects.get(user=tenants.member)
    # Both gateways have the key cached before any budget exists (spend so far: 1 cent).
    for server in gateways:
        assert call(server, secret).usage.total_tokens == 5

    # The owner sets 2 cents on their key; the admin 2.5 cents on the organization. Each change
    # reaches both gateways on commit, although they hold the key in their caches.
    api_key_budget_set(user=tenants.member, key=key, amount="0.02")
    organization_budget_set(user=tenants.owner, organization=tenants.org, amount="0.025")
    outcomes = []
    for i in range(6):
        try:
            call(gateways[i % 2], secret)
            outcomes.append(200)
        except openai.RateLimitError as exc:
            outcomes.append(429)
            error = exc.body
            assert error["type"] == "insufficient_quota"
            assert error["code"] == "budget_api_key_exceeded"
            assert "API key's monthly budget of 0.02 USD is used up" in error["message"]
    assert outcomes == [200, 200, 429, 429, 429, 429]  # 2 + 2 requests = 0.02 spent

    # The usage page: the key's budget used up (error), the organization's at 80 % (warning).
    flush_usage()
    page = login(tenants.member).get("/hub/usage/").content.decode()
    assert 'data-level="bad"' in page and "Key test key" in page
    assert "0.02 / 0.02 USD (100%)" in page
    assert "0.02 / 0.025 USD (80%)" in page and "80% of this budget is spent." in page
    budgets_page = login(tenants.member).get("/hub/budgets/").content.decode()
    assert '<span class="badge bad">100%</span>' in budgets_page  # the key's row
    assert 'data-level="warn"' in budgets_page and "80% of this budget is spent." in budgets_page

    # Clearing the key's budget lets it spend up to the organization's: one more request, then
    # the organization's budget stops it.
    api_key_budget_set(user=tenants.member, key=key, amount="")
    assert call(gateways[0], secret).usage.total_tokens == 5
    with pytest.raises(openai.RateLimitError) as info:
        call(gateways[1], secret)
    assert info.value.body["code"] == "budget_organization_exceeded"

    changes = AuditEntry.objects.filter(action="budget_change").order_by("pk")
    assert [(e.actor_id, e.diff.get("monthly_budget")) for e in changes] == [
        (tenants.member.pk, [None, "0.0200"]),
        (tenants.owner.pk, [None, "0.0250"]),
        (tenants.member.pk, ["0.0200", None]),
    ]


def test_a_member_budget_counts_only_their_spend_in_that_organization(tenants, gateways, engine, pinned_budget_month):
    make_deployment(tenants.project, "llama", served_model_name="llama-chat", pricing=PRICING)
    mine = make_key(tenants.member, tenants.org, name="mine")
    theirs = make_key(tenants.owner, tenants.org, name="theirs")
    membership = Membership.objects.get(user=tenants.member, organization=tenants.org)
    member_budget_set(user=tenants.owner, membership=membership, amount="0.005")
    call(gateways[0], mine)
    with pytest.raises(openai.RateLimitError) as info:
        call(gateways[1], mine)
    assert info.value.body["code"] == "budget_user_exceeded"
    assert call(gateways[1], theirs).usage.total_tokens == 5  # the admin has no budget


def test_the_budget_month_is_the_utc_calendar_month_in_the_gateway_and_the_pages(monkeypatch):
    """The gateway's Redis counters (gateway.app._month) and the pages' month-to-date spend
    (gateway.reports.month_start) turn over together, at midnight UTC on the 1st: also on
    Dec 31 → Jan 1, and for a time given in another zone (the tests that spend pin the month)."""
    from datetime import UTC, datetime, timedelta, timezone

    from gateway import app, reports

    last_instant = datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    new_year = datetime(2027, 1, 1, tzinfo=UTC)
    assert reports.month_start(last_instant) == datetime(2026, 12, 1, tzinfo=UTC)
    assert reports.month_start(new_year) == new_year
    paris = timezone(timedelta(hours=1))  # 00:30 on Jan 1 in Paris is still December in UTC
    assert reports.month_start(datetime(2027, 1, 1, 0, 30, tzinfo=paris)) == datetime(2026, 12, 1, tzinfo=UTC)

    # The gateway formats the month once and keeps it, but not a microsecond past its end, nor
    # when the clock is set back into the month before.
    monkeypatch.setattr(app, "_month_cache", ["", 0.0, 0.0])
    for at, month in ((last_instant, "2026-12"), (new_year, "2027-01"), (new_year + timedelta(days=3), "2027-01"),
                      (last_instant, "2026-12")):  # fmt: skip
        assert app._month(at.timestamp()) == month == reports.month_start(at).strftime("%Y-%m")


def test_a_budget_holds_when_redis_loses_its_counters(tenants, gateways, engine, pinned_budget_month, _clean_redis):
    """Redis without persistence restarts mid-month: the counters are gone, the usage records are
    not. The next admission checks the counter against the records, so the month's spend still
    counts (before, the budget started again from zero)."""
    make_deployment(tenants.project, "llama", served_model_name="llama-chat", pricing=PRICING)
    secret = make_key(tenants.member, tenants.org)
    key = APIKey.objects.get(user=tenants.member)
    api_key_budget_set(user=tenants.member, key=key, amount="0.015")  # three requests
    for server in gateways:
        call(server, secret)
    assert flush_usage() == 2  # 0.01 spent, in the database
    _clean_redis.flushdb()  # the restart: counters, generations, scripts, the usage stream

    assert call(gateways[0], secret).usage.total_tokens == 5  # 0.015: the third request
    for server in gateways:
        with pytest.raises(openai.RateLimitError) as info:
            call(server, secret)
        assert info.value.body["code"] == "budget_api_key_exceeded"


def test_a_budget_set_after_spend_redis_never_counted_starts_from_the_records(tenants, gateway, engine, pinned_budget_month, _clean_redis):
    """Spend this month that only the usage records hold (metered before a Redis restart) counts
    at every level: the organization, the member in it, the key; spend in another currency or
    another month does not."""
    from datetime import timedelta
    from decimal import Decimal

    from django.utils import timezone

    from gateway.models import UsageRecord

    deployment = make_deployment(tenants.project, "llama", served_model_name="llama-chat", pricing=PRICING)
    secret = make_key(tenants.member, tenants.org)
    key = APIKey.objects.get(user=tenants.member)

    def spent(amount: str, *, currency="USD", when=None, **who) -> None:
        UsageRecord.objects.create(
            request_id=f"r{UsageRecord.objects.count()}", deployment=deployment, organization=tenants.org,
            route="chat.completions", status_code=200, latency_ms=1.0, cost=Decimal(amount), currency=currency,
            created_at=when or timezone.now(), **who,
        )  # fmt: skip

    spent("0.009", user=tenants.member, api_key_id=key.pk)
    spent("5", currency="EUR", user=tenants.member, api_key_id=key.pk)
    spent("5", user=tenants.member, api_key_id=key.pk, when=pinned_budget_month - timedelta(seconds=1))
    membership = Membership.objects.get(user=tenants.member, organization=tenants.org)
    for setter in (
        lambda a: api_key_budget_set(user=tenants.member, key=key, amount=a),
        lambda a: member_budget_set(user=tenants.owner, membership=membership, amount=a),
        lambda a: organization_budget_set(user=tenants.owner, organization=tenants.org, amount=a),
    ):
        setter("0.014")
        call(gateway, secret)  # 0.009 + 0.005: exactly the budget
        with pytest.raises(openai.RateLimitError) as info:
            call(gateway, secret)
        assert "is used up" in info.value.body["message"]
        setter("")
        spent("-0.005", user=tenants.member, api_key_id=key.pk)  # back to 0.009 for the next level
        flush_usage()
        _clean_redis.flushdb()  # no counter left: the next level's starts from the records


def test_unreadable_usage_records_fail_a_budgeted_request_closed(tenants, gateway, engine, pinned_budget_month):
    from django.db import DatabaseError

    make_deployment(tenants.project, "llama", served_model_name="llama-chat", pricing=PRICING)
    secret = make_key(tenants.member, tenants.org)
    theirs = make_key(tenants.owner, tenants.org, name="theirs")
    api_key_budget_set(user=tenants.member, key=APIKey.objects.get(user=tenants.member), amount="1")

    async def unreadable(budgets, month):
        raise DatabaseError("the database is down")

    gateway.app.gateway._load_month_spend = unreadable
    with pytest.raises(openai.InternalServerError) as info:
        call(gateway, secret)
    assert info.value.status_code == 503 and info.value.body["code"] == "budget_unavailable"
    assert call(gateway, theirs).usage.total_tokens == 5  # no budget: nothing to read


# ---- the embedded mode (`make run`: no Redis, one gateway process) --------------------------


@pytest.fixture(params=["redis", "embedded"])
def either_gateway(request, engine, transactional_db, settings, tmp_path):
    """One gateway with Redis (RedisRateLimiter) and one in the embedded mode (LocalRateLimiter):
    a test using it asserts that both enforce budgets alike."""
    if request.param == "embedded":
        settings.REDIS_URL = None
        settings.MODELDECK_DATA_DIR = tmp_path
    server = start_console()
    yield server
    server.stop()


def test_a_used_up_budget_refuses_the_next_request_with_or_without_redis(tenants, either_gateway, engine, pinned_budget_month):
    """The embedded mode (make run) enforces budgets as the Redis path does, with the same 429:
    before, its limiter ignored them although the Budgets page says they are enforced."""
    make_deployment(tenants.project, "llama", served_model_name="llama-chat", pricing=PRICING)
    secret = make_key(tenants.member, tenants.org)
    api_key_budget_set(user=tenants.member, key=APIKey.objects.get(user=tenants.member), amount="0.015")
    outcomes, errors = [], []
    for _ in range(5):
        try:
            call(either_gateway, secret)
            outcomes.append(200)
        except openai.RateLimitError as exc:
            outcomes.append(exc.status_code)
            errors.append(exc.body)
    assert outcomes == [200, 200, 200, 429, 429]  # 3 × 0.005 = 0.015 spent
    assert errors[0] == {
        "message": "The API key's monthly budget of 0.015 USD is used up; requests to `llama-chat` "
        "resume when the budget is raised or next month begins.",
        "type": "insufficient_quota",
        "param": None,
        "code": "budget_api_key_exceeded",
    }
    assert engine.requests and len(engine.requests) == 3  # refused requests never reached it
    # Raising the budget lets the key spend again at once.
    api_key_budget_set(user=tenants.member, key=APIKey.objects.get(user=tenants.member), amount="0.02")
    assert call(either_gateway, secret).usage.total_tokens == 5
    with pytest.raises(openai.RateLimitError):
        call(either_gateway, secret)


@pytest.mark.parametrize("level", ["api_key", "user", "organization"])
def test_embedded_budgets_start_from_the_usage_records_and_survive_a_restart(tenants, engine, pinned_budget_month, settings, tmp_path, level):
    """The embedded gateway's counters start from the month's usage records (only this month's,
    in the budget's currency), at every level, and a restarted gateway process starts from them
    again: usage is written at once in this mode, so nothing spent is forgotten."""
    from datetime import timedelta
    from decimal import Decimal

    from django.utils import timezone

    from gateway.models import UsageRecord

    settings.REDIS_URL = None
    settings.MODELDECK_DATA_DIR = tmp_path
    deployment = make_deployment(tenants.project, "llama", served_model_name="llama-chat", pricing=PRICING)
    secret = make_key(tenants.member, tenants.org)
    key = APIKey.objects.get(user=tenants.member)

    def spent(amount: str, *, currency="USD", when=None) -> None:
        UsageRecord.objects.create(
            request_id=f"r{UsageRecord.objects.count()}", deployment=deployment, organization=tenants.org,
            user=tenants.member, api_key_id=key.pk, route="chat.completions", status_code=200,
            latency_ms=1.0, cost=Decimal(amount), currency=currency, created_at=when or timezone.now(),
        )  # fmt: skip

    spent("0.009")
    spent("5", currency="EUR")
    spent("5", when=pinned_budget_month - timedelta(seconds=1))
    membership = Membership.objects.get(user=tenants.member, organization=tenants.org)
    {
        "api_key": lambda: api_key_budget_set(user=tenants.member, key=key, amount="0.015"),
        "user": lambda: member_budget_set(user=tenants.owner, membership=membership, amount="0.015"),
        "organization": lambda: organization_budget_set(user=tenants.owner, organization=tenants.org, amount="0.015"),
    }[level]()  # fmt: skip
    server = start_console()
    try:
        call(server, secret)  # 0.009 + 0.005 = 0.014: one more fits
        with pytest.raises(openai.RateLimitError) as info:
            call(server, secret)  # it may cost 0.005: more than the 0.001 left
        assert info.value.body["code"] == f"budget_{level}_exceeded"
        assert "more than the 0.001 USD left" in info.value.body["message"]
    finally:
        server.stop()
    restarted = start_console()
    try:
        with pytest.raises(openai.RateLimitError) as info:
            call(restarted, secret)
        assert info.value.body["code"] == f"budget_{level}_exceeded"
    finally:
        restarted.stop()


def test_the_embedded_limiter_counts_a_cost_once_per_request_and_each_month_apart():
    """LocalRateLimiter's counters as the Redis scripts keep them: seeded before the first check
    of a month, a request's cost added once however often its finish runs, a new month apart."""
    import asyncio
    import concurrent.futures
    from decimal import Decimal

    from gateway.ratelimit import LocalRateLimiter, budgets_for, spend_keys

    budgets = budgets_for(organization_id=1, user_id=2, api_key_id=3, api_key="0.01")
    limiter = LocalRateLimiter()

    def check(month: str, seed: bool = True):
        return limiter.check(
            generation_key="", expected_generation="", deployment_id=1, levels=[], request_id="r",
            estimate=1, budgets=budgets, month=month, seed=seed,
        )  # fmt: skip

    async def run() -> None:
        assert (await check("2026-11")).unseeded
        assert (await check("2026-11", seed=False)).allowed  # the ask after a seed: as in Redis
        await limiter.seed_budgets("2026-11", budgets, [Decimal("0.006")])
        keys = spend_keys("2026-11", "USD", organization_id=1, user_id=2, api_key_id=3)
        for _ in range(2):  # the same request's finish twice: counted once
            limiter.count_spend(request_id="r1", cost=Decimal("0.003"), spend=keys)
        assert (await check("2026-11")).allowed  # 0.009
        limiter.count_spend(request_id="r2", cost=Decimal("0.001"), spend=keys)
        refused = await check("2026-11")  # 0.010: used up
        assert (refused.allowed, refused.kind, refused.level, refused.budget) == (False, "budget", "api_key", budgets[0])
        assert (await check("2026-12")).unseeded  # December starts from its own records
        await limiter.seed_budgets("2026-12", budgets, [Decimal(0)])
        assert (await check("2026-12")).allowed

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:  # a fresh loop (Playwright holds one)
        pool.submit(asyncio.run, run()).result()


# ---- what a request may cost is held on its budgets from admission to finish ------------------


def test_concurrent_requests_never_spend_past_a_budget_with_or_without_redis(tenants, either_gateway, engine, pinned_budget_month):
    """30 requests at once against a budget worth 10 of them: each holds what it may cost while it
    runs, so exactly 10 are served and the month's spend is the budget, never more. Before, every
    request was checked against what was spent when it arrived (nothing yet) and all 30 were served:
    3× the budget."""
    import concurrent.futures

    import httpx

    make_deployment(tenants.project, "llama", served_model_name="llama-chat", pricing=PRICING)
    secret = make_key(tenants.member, tenants.org)
    key = APIKey.objects.get(user=tenants.member)
    api_key_budget_set(user=tenants.member, key=key, amount="0.05")  # 10 × 0.005

    def one(_):
        return httpx.post(
            either_gateway.base_url + "/chat/completions", json=CHAT, timeout=60,
            headers={"authorization": f"Bearer {secret}", "x-sandbox-latency-ms": "400"},
        )  # fmt: skip

    with concurrent.futures.ThreadPoolExecutor(max_workers=30) as pool:
        responses = list(pool.map(one, range(30)))
    codes = [r.status_code for r in responses]
    assert codes.count(200) == 10 and codes.count(429) == 20, codes
    refusals = [r.json()["error"] for r in responses if r.status_code == 429]
    assert {e["type"] for e in refusals} == {"insufficient_quota"}
    assert {e["code"] for e in refusals} == {"budget_api_key_exceeded"}
    held = [r for r in responses if r.status_code == 429 and "still running hold" in r.json()["error"]["message"]]
    assert held and all(r.headers["retry-after"] == "1" for r in held)  # they may retry: held, not spent
    assert len(engine.requests) == 10
    flush_usage()
    from decimal import Decimal

    from django.db.models import Sum

    from gateway.models import UsageRecord

    assert UsageRecord.objects.filter(api_key_id=key.pk).aggregate(s=Sum("cost"))["s"] == Decimal("0.05")
    with pytest.raises(openai.RateLimitError) as info:  # afterwards: spent, not held
        call(either_gateway, secret)
    assert "is used up" in info.value.body["message"]


def test_a_request_that_may_cost_more_than_a_budget_has_left_is_refused_before_the_engine(tenants, gateway, engine, pinned_budget_month):
    """One request asking for 2,000 completion tokens at $1,000 per million may cost 2.001 USD:
    against a 0.05 budget it is refused in words before the engine sees it (before, it was served
    and charged 40× the budget). The same prompt asking for 4 tokens is served."""
    make_deployment(tenants.project, "llama", served_model_name="llama-chat", pricing=PRICING)
    secret = make_key(tenants.member, tenants.org)
    organization_budget_set(user=tenants.owner, organization=tenants.org, amount="0.05")
    client = openai.OpenAI(api_key=secret, base_url=gateway.base_url, max_retries=0)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(**{**CHAT, "max_tokens": 2000}, extra_headers={"x-sandbox-completion-tokens": "2000"})
    assert info.value.body == {
        "message": "This request to `llama-chat` may cost up to 2.001 USD (its prompt and the completion it may "
        "write), more than the 0.05 USD left of the organization's monthly budget of 0.05 USD; lower max_tokens "
        "or shorten the prompt.",
        "type": "insufficient_quota",
        "param": None,
        "code": "budget_organization_exceeded",
    }
    assert "retry-after" not in info.value.response.headers  # waiting would not help
    assert not engine.requests
    assert client.chat.completions.create(**CHAT).usage.total_tokens == 5

    # The official client, retrying 429s by default, asks once: the answer says not to retry.
    retrying = openai.OpenAI(api_key=secret, base_url=gateway.base_url, max_retries=2)
    with pytest.raises(openai.RateLimitError):
        retrying.chat.completions.create(**{**CHAT, "max_tokens": 2000})
    flush_usage()
    from gateway.models import UsageRecord

    assert UsageRecord.objects.filter(status_code=429).count() == 2  # one each time, no retries


def test_a_budgeted_request_without_max_tokens_is_capped_so_its_cost_is_bounded(tenants, gateway, engine, pinned_budget_month):
    """With a budget on a priced deployment the completion of a request without max_tokens is
    capped (1,024 tokens, as with a token limit), so what it may cost is known when it is
    admitted; without a budget the body goes to the engine as sent."""
    import httpx

    make_deployment(tenants.project, "llama", served_model_name="llama-chat", pricing=PRICING)
    secret = make_key(tenants.member, tenants.org)
    body = {"model": "llama-chat", "messages": [{"role": "user", "content": "hello"}]}
    headers = {"authorization": f"Bearer {secret}", "x-sandbox-completion-tokens": "1500"}
    response = httpx.post(gateway.base_url + "/chat/completions", json=body, headers=headers, timeout=30)
    assert response.status_code == 200 and "max_tokens" not in engine.requests[-1].body

    api_key_budget_set(user=tenants.member, key=APIKey.objects.get(user=tenants.member), amount="5")
    response = httpx.post(gateway.base_url + "/chat/completions", json=body, headers=headers, timeout=30)
    assert response.status_code == 200
    assert engine.requests[-1].body["max_tokens"] == 1024
    assert response.json()["usage"]["completion_tokens"] == 1024


def test_a_failed_request_lets_go_of_what_it_held(tenants, gateway, engine, pinned_budget_month):
    """An engine error costs nothing and gives back what the request held: the budget of one
    request serves the next one, then is spent."""
    make_deployment(tenants.project, "llama", served_model_name="llama-chat", pricing=PRICING)
    secret = make_key(tenants.member, tenants.org)
    api_key_budget_set(user=tenants.member, key=APIKey.objects.get(user=tenants.member), amount="0.005")
    client = openai.OpenAI(api_key=secret, base_url=gateway.base_url, max_retries=0)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(**CHAT, extra_headers={"x-sandbox-status": "500"})
    assert call(gateway, secret).usage.total_tokens == 5
    with pytest.raises(openai.RateLimitError) as info:
        call(gateway, secret)
    assert "is used up" in info.value.body["message"]


@pytest.mark.parametrize("kind", ["redis", "embedded"])
def test_a_reservation_is_let_go_by_its_finish_or_after_its_deadline(kind, monkeypatch, settings):
    """The limiters alone: a request's hold is given back when it finishes, once however often the
    finish runs, and a hold whose request never finished (a gateway stopped mid-request) is let go
    after BUDGET_HOLD_MS, so a crash does not keep a budget blocked (found by the first refusal
    after it lapses, at most once a second per counter)."""
    import time
    from decimal import Decimal

    from gateway import ratelimit
    from gateway.cache import async_redis
    from gateway.ratelimit import (
        BUDGET_HELD,
        BUDGET_TOO_COSTLY,
        LocalRateLimiter,
        RedisRateLimiter,
        budget_key,
        budgets_for,
        spend_keys,
    )
    from tests.gateway.conftest import run_coroutine

    monkeypatch.setattr(ratelimit, "BUDGET_HOLD_MS", 300)
    budgets = budgets_for(organization_id=1, user_id=2, api_key_id=3, api_key="0.01")
    held = tuple(budget_key("2026-11", b.currency, b.level, b.ident) for b in budgets)
    spend = spend_keys("2026-11", "USD", organization_id=1, user_id=2, api_key_id=3)
    unit = Decimal("0.006")  # more than half the budget: one at a time
    hold = int(unit * ratelimit.BUDGET_UNITS)

    async def run() -> None:
        client = async_redis(settings.REDIS_URL) if kind == "redis" else None
        limiter = RedisRateLimiter(client) if client else LocalRateLimiter()

        async def check(rid: str, amount: int = hold):
            return await limiter.check(
                generation_key="modeldeck:test:gen", expected_generation="", deployment_id=1, levels=[],
                request_id=rid, estimate=1, budgets=budgets, month="2026-11", seed=False, hold=amount,
            )  # fmt: skip

        async def finish(rid: str, cost: Decimal):
            if client:
                await limiter.finish(stream_key="modeldeck:test:stream", event=b"{}", deployment_id=1, levels=[],
                                     request_id=rid, actual=None, cost=cost, spend=spend, held=held)  # fmt: skip
            else:
                limiter.release(request_id=rid, held=held)
                limiter.count_spend(request_id=rid, cost=cost, spend=spend)

        try:
            await limiter.seed_budgets("2026-11", budgets, [Decimal(0)])
            assert (await check("r1")).allowed
            refused = await check("r2")
            assert (refused.allowed, refused.retry_after_ms, refused.budget_left) == (False, BUDGET_HELD, Decimal("0.01"))
            assert (await check("r1")).allowed  # the same request asked again holds once
            for _ in range(2):
                await finish("r1", Decimal("0.001"))  # it cost less than it held
            assert (await check("r3")).allowed  # 0.001 spent + 0.006 held ≤ 0.01
            refused = await check("r4")
            assert refused.retry_after_ms == BUDGET_HELD
            assert (await check("free", amount=0)).allowed  # an unpriced request holds nothing
            # r3 never finishes: its hold lapses after 0.3 s, and lapsed holds are looked for at
            # most once a second per counter (the last look was r2's refusal).
            time.sleep(1.1)
            assert (await check("r4")).allowed
            refused = await check("r5", amount=hold * 2)  # 0.012 > the 0.009 left
            assert (refused.retry_after_ms, refused.budget_left) == (BUDGET_TOO_COSTLY, Decimal("0.009"))
        finally:
            if client:
                await client.aclose()

    run_coroutine(run)
