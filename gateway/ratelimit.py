"""Rate limits (organization / user / API key × requests and tokens per minute) in one Redis round trip.

A sliding-window log per (deployment, level, id): a sorted set of request ids scored by the
time Redis saw them, a hash of the tokens each holds and a running token total. One Lua
script expires what fell out of the window, checks every level, and records the request in
all of them only if none refuses: atomic across any number of gateway processes, exact (no
fixed-window burst at minute boundaries), and the clock is Redis's own. Tokens are reserved
from an estimate before the request and settled to the engine's count afterwards.

The same script also checks the cache generations (see cache.py): the shared one and, after
the rate-limit keys, the caller's own (a user generation key and the value cached under), so a
revoked key or a removed member costs no extra round trip to notice.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from dataclasses import dataclass
from decimal import Decimal

from redis.exceptions import NoScriptError

from gateway.usage import cost_of
from gateway.validation import MAX_CHOICES  # gateway.validation refuses n / best_of above it

WINDOW_MS = 60_000
MAX_ESTIMATE = 2**40  # far above any tokens-per-minute limit, exact as a double
LEVELS = ("organization", "user", "api_key")

BUDGET_UNITS = 10**8  # spend counters count cost in 1e-8 of the currency (UsageRecord.cost's places)
BUDGET_EXPIRY_S = 40 * 86_400  # a month's counters outlive the month, then go
# A request's finish counts its cost once however often it runs (a batch resent after a dropped
# connection comes within seconds); the marker stays this long.
COUNTED_EXPIRY_S = 600
# An admitted request holds its estimated cost on its budgets until it finishes, or this long
# (a gateway that stopped mid-request): a longer stream is then charged when it ends, as before.
BUDGET_HOLD_MS = 15 * 60_000
MAX_HOLD_UNITS = 2**53  # a reservation stays exact as the script's doubles

CHECK_SCRIPT = r"""
local gen = redis.call('GET', KEYS[1]) or '0'
if ARGV[1] ~= '' and ARGV[1] ~= gen then return {-1, gen} end
local n = tonumber(ARGV[4])
-- Monthly budgets: the last m keys (spend so far) and the m arguments before the last (limits).
local m = tonumber(ARGV[#ARGV])
local nk = #KEYS - m
local ukey = nil
if nk == n * 3 + 2 then ukey = KEYS[nk] end
if ukey then
  local ugen = redis.call('GET', ukey) or '0'
  if ugen ~= ARGV[n * 2 + 6] then return {-2, ugen} end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[5])
local rid = ARGV[2]
local est = tonumber(ARGV[3])
-- Run twice (a client retry after a dropped connection): the first run's admission stands.
if n > 0 and redis.call('HEXISTS', KEYS[3], rid) == 1 then
  return {1, gen, 0, 0, 0, -1, -1, 0, -1, -1, 0}
end
-- Budgets, before the limits: the seed flag, this request's reservation (its estimated cost in
-- 1e-8 units) and how long a reservation holds (ms).
local bseed, bunits, bhold = '0', 0, 0
if m > 0 then
  bseed, bunits, bhold = ARGV[#ARGV - m - 3], tonumber(ARGV[#ARGV - m - 2]), tonumber(ARGV[#ARGV - m - 1])
end
if m > 0 and bunits > 0 and redis.call('HEXISTS', KEYS[nk + 1], 'r:' .. rid) == 1 then
  return {1, gen, 0, 0, 0, -1, -1, 0, -1, -1, 0}  -- run twice: it holds already (see above)
end
-- A counter (a hash: s spent, k checked against the usage records, h held by admitted requests
-- still running, r:<request id> each one's "units:deadline") that was never checked (Redis
-- restarted and lost the month, or the budget is new) is seeded first (flag before the limits).
-- A budget admits a request only if what it may cost fits beside what is spent and held.
for j = 1, m do
  local bk = KEYS[nk + j]
  local counter = redis.call('HMGET', bk, 's', 'k', 'h', 'x')
  if not counter[2] and bseed == '1' then return {-3, gen, j} end
  local spent, held = tonumber(counter[1] or '0'), tonumber(counter[3] or '0')
  local limit = tonumber(ARGV[#ARGV - m + j - 1])
  if spent >= limit then return {0, gen, j, 3, -2, 0} end
  if spent + bunits > limit then return {0, gen, j, 3, -4, limit - spent} end
  -- A request that costs nothing (an unpriced deployment) is refused only by a used-up budget.
  local over = bunits > 0 and spent + held + bunits > limit
  if over and now - tonumber(counter[4] or '0') >= 1000 then
    -- Reservations past their deadline (a gateway that stopped mid-request) are let go first:
    -- looked for at most once a second per counter (x: when), not by every refused request.
    redis.call('HSET', bk, 'x', now)
    local fields, freed = redis.call('HGETALL', bk), 0
    for i = 1, #fields, 2 do
      if string.sub(fields[i], 1, 2) == 'r:' then
        local units, deadline = string.match(fields[i + 1], '^(%d+):(%d+)$')
        if tonumber(deadline) <= now then
          freed = freed + tonumber(units)
          redis.call('HDEL', bk, fields[i])
        end
      end
    end
    if freed > 0 then held = redis.call('HINCRBY', bk, 'h', -freed) end
  end
  if over and spent + held + bunits > limit then return {0, gen, j, 3, -3, limit - spent} end
end
local function hsum(hk, members)
  local sum = 0
  for s = 1, #members, 1000 do
    local chunk = {}
    for j = s, math.min(s + 999, #members) do chunk[#chunk + 1] = members[j] end
    local vals = redis.call('HMGET', hk, unpack(chunk))
    for _, v in ipairs(vals) do if v then sum = sum + tonumber(v) end end
    redis.call('HDEL', hk, unpack(chunk))
  end
  return sum
end
local blocked_level, blocked_kind, retry = 0, 0, 0
local lim_req, rem_req, reset_req = -1, -1, 0
local lim_tok, rem_tok, reset_tok = -1, -1, 0
local counts, totals = {}, {}
for i = 1, n do
  local zk, hk, tk = KEYS[(i - 1) * 3 + 2], KEYS[(i - 1) * 3 + 3], KEYS[(i - 1) * 3 + 4]
  local rpm, tpm = tonumber(ARGV[(i - 1) * 2 + 6]), tonumber(ARGV[(i - 1) * 2 + 7])
  local expired = redis.call('ZRANGEBYSCORE', zk, '-inf', now - window)
  if #expired > 0 then
    local freed = hsum(hk, expired)
    redis.call('ZREMRANGEBYSCORE', zk, '-inf', now - window)
    if freed > 0 then redis.call('DECRBY', tk, freed) end
  end
  local count = redis.call('ZCARD', zk)
  local total = tonumber(redis.call('GET', tk) or '0')
  counts[i], totals[i] = count, total
  if rpm >= 0 then
    local oldest = redis.call('ZRANGE', zk, 0, 0, 'WITHSCORES')
    local reset = 0
    if oldest[2] then reset = tonumber(oldest[2]) + window - now end
    if rem_req < 0 or rpm - count < rem_req then lim_req, rem_req, reset_req = rpm, rpm - count, reset end
    if count >= rpm and blocked_level == 0 then blocked_level, blocked_kind, retry = i, 1, reset end
  end
  if tpm >= 0 then
    local reset = 0
    if total + est > tpm then
      if est > tpm then
        reset = -1
      else
        -- Walk the window from its oldest entry until enough tokens would have expired.
        local entries = redis.call('ZRANGE', zk, 0, -1, 'WITHSCORES')
        local freed = 0
        for j = 1, #entries, 2 do
          freed = freed + tonumber(redis.call('HGET', hk, entries[j]) or '0')
          if total - freed + est <= tpm then reset = tonumber(entries[j + 1]) + window - now; break end
        end
      end
      if blocked_level == 0 then blocked_level, blocked_kind, retry = i, 2, reset end
    end
    if rem_tok < 0 or tpm - total < rem_tok then lim_tok, rem_tok, reset_tok = tpm, tpm - total, reset end
  end
end
if blocked_level > 0 then
  return {0, gen, blocked_level, blocked_kind, retry, lim_req, rem_req, reset_req, lim_tok, rem_tok, reset_tok}
end
for i = 1, n do
  local zk, hk, tk = KEYS[(i - 1) * 3 + 2], KEYS[(i - 1) * 3 + 3], KEYS[(i - 1) * 3 + 4]
  redis.call('ZADD', zk, now, rid)
  redis.call('HSET', hk, rid, est)
  redis.call('INCRBY', tk, est)
  redis.call('PEXPIRE', zk, window * 2)
  redis.call('PEXPIRE', hk, window * 2)
  redis.call('PEXPIRE', tk, window * 2)
end
if bunits > 0 then
  for j = 1, m do
    local bk = KEYS[nk + j]
    if redis.call('HSETNX', bk, 'r:' .. rid, string.format('%d:%d', bunits, now + bhold)) == 1 then
      if redis.call('HINCRBY', bk, 'h', bunits) == bunits and redis.call('TTL', bk) < 0 then
        redis.call('EXPIRE', bk, BUDGET_EXPIRY_S)
      end
    end
  end
end
if rem_req > 0 then rem_req = rem_req - 1 end
if rem_tok >= 0 then rem_tok = math.max(0, rem_tok - est) end
return {1, gen, 0, 0, 0, lim_req, rem_req, reset_req, lim_tok, rem_tok, reset_tok}
""".replace("BUDGET_EXPIRY_S", str(BUDGET_EXPIRY_S))

# After the response, one command: settle every level's reservation to the engine's count
# (refund or charge the difference), let go of the budgets' reservations, add the cost to the
# month's spend and append the usage event to the stream. Running it twice changes nothing but a
# duplicate stream entry, which the writer's unique request_id absorbs.
FINISH_SCRIPT = r"""
local rid, actual, b = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[5])
local hb = tonumber(ARGV[8])
for i = 2, #KEYS - b - hb, 2 do
  local hk, tk = KEYS[i], KEYS[i + 1]
  local old = redis.call('HGET', hk, rid)
  if old and actual then
    redis.call('HSET', hk, rid, actual)
    redis.call('INCRBY', tk, actual - tonumber(old))
  end
end
for j = #KEYS - hb + 1, #KEYS do
  local held = redis.call('HGET', KEYS[j], 'r:' .. rid)
  if held then
    redis.call('HDEL', KEYS[j], 'r:' .. rid)
    redis.call('HINCRBY', KEYS[j], 'h', -tonumber(string.match(held, '^(%d+)')))
  end
end
-- Spend (cost in 1e-8 units) on the monthly budget counters, once per request id; a counter's
-- expiry is set when this creates it.
local units, first = tonumber(ARGV[4]), #KEYS - hb - b + 1
if b > 0 and units > 0 and redis.call('SET', KEYS[first], '1', 'NX', 'EX', tonumber(ARGV[6])) then
  for j = first + 1, #KEYS - hb do
    if redis.call('HINCRBY', KEYS[j], 's', units) == units then
      redis.call('EXPIRE', KEYS[j], tonumber(ARGV[7]))
    end
  end
end
return redis.call('XADD', KEYS[1], '*', 'e', ARGV[3])
"""

# A counter checked against the usage records: the spend it holds or the records' (what Redis
# counted since it lost the month is in both, or not yet in the records), whichever is more.
# Rare (after a Redis restart, or a budget's first request of the month): sent as EVAL.
SEED_SCRIPT = r"""
for i = 1, #KEYS do
  if redis.call('HEXISTS', KEYS[i], 'k') == 0 then
    local held = tonumber(redis.call('HGET', KEYS[i], 's') or '0')
    if tonumber(ARGV[i]) > held then redis.call('HSET', KEYS[i], 's', ARGV[i]) end
    redis.call('HSET', KEYS[i], 'k', '1')
    redis.call('EXPIRE', KEYS[i], tonumber(ARGV[#ARGV]))
  end
end
return #KEYS
"""

SCRIPTS = {"admit": CHECK_SCRIPT, "finish": FINISH_SCRIPT}
SHAS = {name: hashlib.sha1(text.encode()).hexdigest() for name, text in SCRIPTS.items()}


@dataclass(frozen=True)
class Level:
    """One level that has a limit on this deployment: whose counter, and the limits (-1: none)."""

    name: str
    ident: int
    rpm: int
    tpm: int


@dataclass(frozen=True)
class Decision:
    allowed: bool
    stale: bool = False  # the shared generation moved: drop every cached row
    generation: str = ""
    stale_user: bool = False  # the caller's user generation moved: drop that user's keys
    level: str = ""
    kind: str = ""  # requests | tokens
    retry_after_ms: int = 0  # -1: the request alone exceeds the token limit
    limit_requests: int = -1
    remaining_requests: int = -1
    reset_requests_ms: int = 0
    limit_tokens: int = -1
    remaining_tokens: int = -1
    reset_tokens_ms: int = 0
    budget: Budget | None = None  # the budget that refused (kind "budget"); why: retry_after_ms
    budget_left: Decimal = Decimal(0)  # what that budget has left this month (BUDGET_TOO_COSTLY, BUDGET_HELD)
    unseeded: bool = False  # a budget's counter is missing: seed them (seed_budgets), then ask again


# Why a budget refused (Decision.retry_after_ms of kind "budget"): spent; this request may cost
# more than is left; requests in flight hold what is left (retry when they finish).
BUDGET_SPENT, BUDGET_HELD, BUDGET_TOO_COSTLY = -2, -3, -4


@dataclass(frozen=True)
class Budget:
    """A monthly spend limit of one organization, user or API key, in one currency."""

    level: str  # organization | user | api_key
    ident: int | str  # the user level is "<organization>.<user>": a member's budget is per organization
    limit: Decimal
    currency: str = "USD"


def budgets_for(
    *,
    organization_id: int,
    user_id: int,
    api_key_id: int,
    organization: Decimal | int | str | None = None,
    user: Decimal | int | str | None = None,
    api_key: Decimal | int | str | None = None,
    currency: str = "USD",
) -> tuple[Budget, ...]:
    """The budgets that limit anything, from plain numbers (None: no budget at that level)."""
    out = []
    for level, ident, limit in _levels(organization_id, user_id, api_key_id, (organization, user, api_key)):
        if limit is not None and ident:
            out.append(Budget(level, ident, Decimal(str(limit)), currency[:3].upper()))
    return tuple(out)


def _levels(organization_id: int, user_id: int, api_key_id: int, values=(None, None, None)):
    # A user's spend is counted per organization they spend in (their membership's budget).
    member = f"{organization_id}.{user_id}" if organization_id and user_id else ""
    return (
        ("organization", organization_id, values[0]),
        ("user", member, values[1]),
        ("api_key", api_key_id, values[2]),
    )


SPEND_PREFIX = "modeldeck:spend:"


def budget_key(month: str, currency: str, level: str, ident: int | str) -> str:
    # Hashes (s, k); the plain counters before them were named modeldeck:budget:… (left to expire).
    return f"{SPEND_PREFIX}{month}:{currency}:{level}:{ident}"


def spend_keys(month: str, currency: str, *, organization_id: int, user_id: int, api_key_id: int) -> list[str]:
    """The month's spend counters a request adds its cost to (every level it has an id for)."""
    return [
        budget_key(month, currency, level, ident)
        for level, ident, _ in _levels(organization_id, user_id, api_key_id)
        if ident
    ]


def levels_for(
    rate_limits: dict, *, organization_id: int, user_id: int, api_key_id: int
) -> list[Level]:
    """Levels of a spec's rate_limits that limit anything (null means unlimited)."""
    ids = {"organization": organization_id, "user": user_id, "api_key": api_key_id}
    levels = []
    for name in LEVELS:
        conf = (rate_limits or {}).get(name) or {}
        rpm, tpm = conf.get("rpm"), conf.get("tpm")
        if rpm is None and tpm is None:
            continue
        levels.append(
            Level(name, ids[name], -1 if rpm is None else int(rpm), -1 if tpm is None else int(tpm))
        )
    return levels


def _keys(deployment_id: int, level: Level) -> tuple[str, str, str]:
    base = f"modeldeck:rl:{deployment_id}:{level.name}:{level.ident}"
    return f"{base}:log", f"{base}:tokens", f"{base}:total"


# Non-text content parts, in tokens, before the engine counts them (the reservation is settled
# to its count afterwards; this only has to keep a burst of such requests from passing as ~0).
# Images: OpenAI's published vision costs (platform.openai.com/docs/guides/vision, "Calculating
# costs"): 85 tokens at detail "low", and 765 for a 1024×1024 image at "high" or "auto" (85 + 4
# tiles of 512 px × 170), taken for any other image since its size is unknown until decoded.
# Open models' encoders are in that range (LLaVA-1.5: 576 per image).
IMAGE_LOW_DETAIL_TOKENS = 85
IMAGE_TOKENS = 765
# Audio, video, files and any other part: no smaller per-part figure is published, so the same
# as an image (OpenAI's realtime guide counts user audio at 1 token per 100 ms: 765 are 76 s).
MEDIA_PART_TOKENS = 765
IMAGE_PART_TYPES = frozenset({"image_url", "input_image", "image"})
PROMPT_FIELDS = ("tools", "functions", "documents", "chat_template", "chat_template_kwargs")


def _chars_in(value: object) -> int:
    """Characters of every string in a JSON value, keys included (tool definitions, tool calls:
    the engine's template renders them into the prompt), without serialising it again."""
    chars, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            chars += len(item)
        elif isinstance(item, dict):
            chars += sum(len(k) for k in item if isinstance(k, str))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return chars


TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text", "refusal", None})


def _part_estimate(part: dict) -> tuple[int, int]:
    """(characters, tokens) of one chat content part: its strings, plus a fixed figure for an
    image or other media part (decided by its type, whatever else it carries: an image part with
    an empty "text" counted 0)."""
    kind = part.get("type")
    text = part.get("text")
    chars = len(text) if isinstance(text, str) else 0
    if kind == "refusal" and isinstance(part.get("refusal"), str):
        chars += len(part["refusal"])
    if kind in TEXT_PART_TYPES:
        return chars, 0
    if kind in IMAGE_PART_TYPES:
        image = part.get(kind) if isinstance(part.get(kind), dict) else part
        return chars, IMAGE_LOW_DETAIL_TOKENS if image.get("detail") == "low" else IMAGE_TOKENS
    return chars, MEDIA_PART_TOKENS


def prompt_estimate(body: dict) -> int:
    """Prompt tokens before the engine counts them (settled to its count later): characters / 4
    of the text, token ids one each, and a fixed figure per image or other media part.

    Cheap on the hot path: a token-id array counts by its length, nothing is serialised again.
    """
    chars = tokens = 0
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict):
                    c, t = _part_estimate(part)
                    chars, tokens = chars + c, tokens + t
        # Every other field of a message the engine's template may render (tool calls, a
        # reasoning model's reasoning_content, a name): by its strings.
        for field, value in message.items():
            if value and field not in ("role", "content"):
                chars += _chars_in(value)
    # Request fields templates render into the prompt: tool definitions, RAG documents (vLLM's
    # `documents`), a template of the caller's own and its arguments.
    for field in PROMPT_FIELDS:
        if body.get(field):
            chars += _chars_in(body[field])
    for field in ("prompt", "input"):
        value = body.get(field)
        if isinstance(value, str):
            chars += len(value)
        elif isinstance(value, list) and value:
            # gateway.validation admits a list of strings, of token ids, or of token-id lists
            # (one kind per list): token ids count one each, by the list's length.
            if isinstance(value[0], int):
                tokens += len(value)
                continue
            for item in value:
                if isinstance(item, str):
                    chars += len(item)
                elif isinstance(item, list):
                    tokens += len(item)
    return chars // 4 + tokens


def _max_tokens(body: dict) -> int | None:
    value = body.get("max_completion_tokens") or body.get("max_tokens")
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        return None
    return value


def _choices(body: dict) -> int:
    """How many completions the engine writes: n (and best_of, which it writes before choosing),
    each up to max_tokens."""
    most = 1
    for field in ("n", "best_of"):
        value = body.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value > most:
            most = value
    return min(most, MAX_CHOICES)


def estimate_tokens(body: dict) -> int:
    """Tokens to reserve before the engine answers: the prompt's estimate plus max_tokens for
    each completion asked for (n, best_of)."""
    max_tokens = _max_tokens(body)
    if max_tokens is None:
        max_tokens = 0 if "input" in body else 256  # embeddings produce no completion tokens
    # Bounded whatever the body says (gateway.validation refuses larger max_tokens first): the
    # Lua script adds reservations as doubles, and an estimate of 2^63 corrupted the window.
    return max(1, min(prompt_estimate(body) + max_tokens * _choices(body), MAX_ESTIMATE))


# A request without max_tokens to a deployment with a token limit is capped at this many
# completion tokens (and at what the tightest limit leaves after its prompt): the reservation
# is then an upper bound of the completion, so the limit is never passed by more than what the
# prompt estimate missed — never by a whole unbounded reply.
DEFAULT_COMPLETION_CAP = 1024


def reservation(body: dict, route: str, levels: list[Level], *, budgeted: bool = False) -> tuple[int, int | None]:
    """(tokens to reserve, max_tokens the gateway must forward, or None to forward the body as is).

    A caller with a token limit or a priced budget (`budgeted`) gets a completion cap when the
    body has none: the reservation is then an upper bound on what the request may use and cost.
    """
    limits = [level.tpm for level in levels if level.tpm >= 0]
    if not (limits or budgeted) or route == "embeddings" or _max_tokens(body) is not None:
        return estimate_tokens(body), None
    prompt = prompt_estimate(body)
    choices = _choices(body)
    cap = DEFAULT_COMPLETION_CAP
    if limits:
        cap = max(1, min(cap, (min(limits) - prompt) // choices))
    return max(1, min(prompt + cap * choices, MAX_ESTIMATE)), cap


def hold_units(body: dict, estimate: int, input_per_million: Decimal, output_per_million: Decimal) -> int:
    """What an admitted request may cost, in 1e-8 units, held on its budgets until it finishes:
    what its finish would charge (usage.cost_of) for the prompt's estimate and the rest of its
    token reservation (the completions it may write)."""
    if not (input_per_million or output_per_million):
        return 0
    prompt = min(prompt_estimate(body), estimate)
    cost = cost_of(
        prompt_tokens=prompt, completion_tokens=estimate - prompt,
        input_per_million=input_per_million, output_per_million=output_per_million,
    )  # fmt: skip
    return int(cost * BUDGET_UNITS)


class RedisRateLimiter:
    """Admission and finish with redis.asyncio; one instance per gateway process.

    Each is one EVALSHA (one round trip): the scripts are loaded once (SCRIPT LOAD at start, and
    again after a NOSCRIPT, e.g. a restarted Redis), never through redis-py's Script objects,
    which send SCRIPT EXISTS before every pipeline.
    """

    def __init__(self, client, *, fast=None) -> None:
        self.client = client
        self.fast = fast  # gateway/resp.py's connection: the scripts' hot path (None: redis.asyncio)
        # Commands issued in the same event-loop turn leave together in one pipeline (one write,
        # one read), each request still awaiting only its own reply.
        self._batch: list[tuple[str, list, list, asyncio.Future]] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task] = set()  # strong references to the batches in flight

    async def load_scripts(self) -> None:
        for text in SCRIPTS.values():
            await self.client.script_load(text)

    async def _run(self, name: str, keys: list, args: list):
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._batch.append((name, keys, args, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._send_batch)
        return await future

    def _send_batch(self) -> None:
        batch, self._batch, self._scheduled = self._batch, [], False
        task = asyncio.ensure_future(self._execute(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute(self, batch: list) -> None:
        try:
            results = await self._pipeline(batch)
            if any(isinstance(r, NoScriptError) for r in results):
                await self.load_scripts()  # a restarted or flushed Redis: load, run those again
                again = [item for item, r in zip(batch, results, strict=True) if isinstance(r, NoScriptError)]
                retried = iter(await self._pipeline(again))
                results = [next(retried) if isinstance(r, NoScriptError) else r for r in results]
        except BaseException as exc:  # noqa: BLE001 - every waiter gets the failure
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (*_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def aclose(self) -> None:
        if self.fast is not None:
            await self.fast.aclose()

    async def execute(self, commands: list[tuple]) -> list:
        """Plain commands (gateway/load.py's) in one round trip, on the lean connection when there
        is one; the first error reply raises, as a redis-py pipeline does."""
        if self.fast is not None:
            replies = await self.fast.execute(commands)
        else:
            pipe = self.client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            replies = await pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def _pipeline(self, batch: list) -> list:
        if self.fast is not None:
            return await self.fast.execute(
                [("EVALSHA", SHAS[name], len(keys), *keys, *args) for name, keys, args, _ in batch]
            )
        if len(batch) == 1:
            name, keys, args, _ = batch[0]
            try:
                return [await self.client.evalsha(SHAS[name], len(keys), *keys, *args)]
            except NoScriptError as exc:
                return [exc]
        pipe = self.client.pipeline(transaction=False)
        for name, keys, args, _ in batch:
            pipe.execute_command("EVALSHA", SHAS[name], len(keys), *keys, *args)
        return await pipe.execute(raise_on_error=False)

    async def check(
        self,
        *,
        generation_key: str,
        expected_generation: str,
        deployment_id: int,
        levels: list[Level],
        request_id: str,
        estimate: int,
        window_ms: int = WINDOW_MS,
        user_generation_key: str = "",
        expected_user_generation: str = "",
        budgets: tuple[Budget, ...] = (),
        month: str = "",
        seed: bool = True,
        hold: int = 0,
    ) -> Decision:
        """Admit one request or say why not; `hold` is what it may cost (1e-8 units, hold_units),
        held on `budgets` until its finish lets go of it."""
        keys = [generation_key]
        args: list = [expected_generation, request_id, estimate, len(levels), window_ms]
        for level in levels:
            keys.extend(_keys(deployment_id, level))
            args.extend([level.rpm, level.tpm])
        if user_generation_key:
            keys.append(user_generation_key)
            args.append(expected_user_generation)
        if budgets:
            args.extend(["1" if seed else "0", min(hold, MAX_HOLD_UNITS), BUDGET_HOLD_MS])
        for budget in budgets:
            keys.append(budget_key(month, budget.currency, budget.level, budget.ident))
            args.append(int(budget.limit * BUDGET_UNITS))
        args.append(len(budgets))
        raw = await self._run("admit", keys, args)
        status = int(raw[0])
        generation = raw[1].decode() if isinstance(raw[1], bytes) else str(raw[1])
        if status == -1:
            return Decision(allowed=False, stale=True, generation=generation)
        if status == -3:
            return Decision(allowed=False, generation=generation, unseeded=True)
        if status == -2:
            return Decision(allowed=False, stale_user=True)
        if status == 1 and not levels:
            return Decision(allowed=True, generation=generation)
        values = [int(v) for v in raw[2:]]
        blocked_level, blocked_kind, retry = values[0], values[1], values[2]
        if blocked_kind == 3:
            budget = budgets[blocked_level - 1]
            return Decision(
                allowed=False, generation=generation, level=budget.level, kind="budget",
                retry_after_ms=retry, budget=budget, budget_left=Decimal(values[3]) / BUDGET_UNITS,
            )  # fmt: skip
        return Decision(
            allowed=status == 1,
            generation=generation,
            level=levels[blocked_level - 1].name if blocked_level else "",
            kind={1: "requests", 2: "tokens"}.get(blocked_kind, ""),
            retry_after_ms=retry,
            limit_requests=values[3],
            remaining_requests=values[4],
            reset_requests_ms=values[5],
            limit_tokens=values[6],
            remaining_tokens=values[7],
            reset_tokens_ms=values[8],
        )

    async def finish(
        self,
        *,
        stream_key: str,
        event: bytes,
        deployment_id: int,
        levels: list[Level],
        request_id: str,
        actual: int | None,
        cost: Decimal = Decimal(0),
        spend: list[str] = (),  # type: ignore[assignment]
        held: tuple[str, ...] = (),
    ) -> None:
        """Settle the reservation to `actual` tokens (None: leave it), let go of what the request
        held on the `held` budget counters, add `cost` to the `spend` counters and queue the usage
        event: one command."""
        keys = [stream_key]
        if actual is not None:
            for level in levels:
                _, hk, tk = _keys(deployment_id, level)
                keys.extend([hk, tk])
        units = int(cost * BUDGET_UNITS)
        if spend and units > 0:
            keys.append(f"modeldeck:budget:counted:{request_id}")
            keys.extend(spend)
        b = len(keys) - 1 - (2 * len(levels) if actual is not None else 0)
        keys.extend(held)
        args = [
            request_id, "" if actual is None else actual, event, units, b, COUNTED_EXPIRY_S, BUDGET_EXPIRY_S, len(held),
        ]  # fmt: skip
        await self._run("finish", keys, args)

    async def seed_budgets(self, month: str, budgets: tuple[Budget, ...], spent: list[Decimal]) -> None:
        """Check the month's spend counters of `budgets` against `spent` (the usage records'):
        each holds the larger from then on; one another gateway checked first stands."""
        keys = [budget_key(month, b.currency, b.level, b.ident) for b in budgets]
        units = [int(amount * BUDGET_UNITS) for amount in spent]
        await self.execute([("EVAL", SEED_SCRIPT, len(keys), *keys, *units, BUDGET_EXPIRY_S)])


class LocalRateLimiter:
    """Embedded mode (no Redis): the same sliding windows and monthly budgets in this process only.

    Exact within one process, and the embedded mode runs one (`make run`: one uvicorn process
    serves the console and the gateway). With several processes each would count alone, which
    is why production runs with Redis.

    Budgets follow the Redis scripts step for step: a month's spend counter per organization,
    member (`<organization>.<user>`) and key holds cost in 1e-8 units and whether it was checked
    against the usage records; an unchecked one makes `check` answer "unseeded" and the gateway
    seeds it (`seed_budgets`, the larger of the two), a counter at its budget refuses before any
    rate limit, and `count_spend` adds an answered request's cost once per request id. Usage
    records are written at once in this mode, so a restarted process seeds from exact records.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._logs: dict[tuple, dict[str, tuple[float, int]]] = {}
        self._month = ""  # the latest month counted in: a later one drops the counters before it
        # budget_key → [spent (1e-8 units), checked, held, {request id: (held units, deadline ms)},
        # when lapsed holds were last looked for (ms)]
        self._spend: dict[str, list] = {}
        self._counted: dict[str, float] = {}  # request ids whose cost counted → until (monotonic s)

    async def check(
        self,
        *,
        generation_key: str,
        expected_generation: str,
        deployment_id: int,
        levels: list[Level],
        request_id: str,
        estimate: int,
        window_ms: int = WINDOW_MS,
        user_generation_key: str = "",  # embedded mode: gateway.cache's local generations instead
        expected_user_generation: str = "",
        budgets: tuple[Budget, ...] = (),
        month: str = "",
        seed: bool = True,
        hold: int = 0,
    ) -> Decision:
        now = time.monotonic() * 1000
        best: dict = {
            "lim_req": -1,
            "rem_req": -1,
            "reset_req": 0,
            "lim_tok": -1,
            "rem_tok": -1,
            "reset_tok": 0,
        }
        with self._lock:
            if budgets:
                refused = self._check_budgets(budgets, month, seed, hold, now, request_id)
                if refused is not None:
                    return refused
            logs = []
            for level in levels:
                log = self._logs.setdefault((deployment_id, level.name, level.ident), {})
                for rid in [r for r, (ts, _) in log.items() if ts <= now - window_ms]:
                    del log[rid]
                logs.append(log)
            for level, log in zip(levels, logs, strict=True):
                count = len(log)
                total = sum(t for _, t in log.values())
                oldest = min((ts for ts, _ in log.values()), default=now)
                reset = int(oldest + window_ms - now) if log else 0
                if level.rpm >= 0:
                    if best["rem_req"] < 0 or level.rpm - count < best["rem_req"]:
                        best.update(lim_req=level.rpm, rem_req=level.rpm - count, reset_req=reset)
                    if count >= level.rpm:
                        return Decision(
                            False, level=level.name, kind="requests", retry_after_ms=reset
                        )
                if level.tpm >= 0:
                    if best["rem_tok"] < 0 or level.tpm - total < best["rem_tok"]:
                        best.update(lim_tok=level.tpm, rem_tok=level.tpm - total, reset_tok=reset)
                    if total + estimate > level.tpm:
                        retry = -1 if estimate > level.tpm else reset
                        return Decision(
                            False, level=level.name, kind="tokens", retry_after_ms=retry
                        )
            for log in logs:
                log[request_id] = (now, estimate)
            if hold > 0:
                for budget in budgets:
                    counter = self._counter(budget_key(month, budget.currency, budget.level, budget.ident))
                    if request_id not in counter[3]:
                        counter[3][request_id] = (hold, now + BUDGET_HOLD_MS)
                        counter[2] += hold
        return Decision(
            True,
            limit_requests=best["lim_req"],
            remaining_requests=max(-1, best["rem_req"] - 1),
            reset_requests_ms=best["reset_req"],
            limit_tokens=best["lim_tok"],
            remaining_tokens=max(0, best["rem_tok"] - estimate) if best["rem_tok"] >= 0 else -1,
            reset_tokens_ms=best["reset_tok"],
        )

    async def settle(
        self, *, deployment_id: int, levels: list[Level], request_id: str, actual: int
    ) -> None:
        with self._lock:
            for level in levels:
                log = self._logs.get((deployment_id, level.name, level.ident), {})
                if request_id in log:
                    log[request_id] = (log[request_id][0], actual)

    def _counter(self, key: str) -> list:
        return self._spend.setdefault(key, [0, False, 0, {}, 0.0])

    def _check_budgets(
        self, budgets: tuple[Budget, ...], month: str, seed: bool, hold: int, now: float, request_id: str
    ) -> Decision | None:
        """The admission script's budget step (under the lock): None when every budget has room
        for what this request may cost beside what is spent and held."""
        self._turn_month(month)
        for budget in budgets:
            counter = self._spend.get(budget_key(month, budget.currency, budget.level, budget.ident))
            if (counter is None or not counter[1]) and seed:
                return Decision(False, unseeded=True)
            if counter is not None and request_id in counter[3]:
                return None  # asked again: it holds already
            spent, held = (counter[0], counter[2]) if counter else (0, 0)
            limit = int(budget.limit * BUDGET_UNITS)
            why = None
            if spent >= limit:
                why = BUDGET_SPENT
            elif spent + hold > limit:
                why = BUDGET_TOO_COSTLY
            elif hold > 0 and spent + held + hold > limit:  # an unpriced request: only a used-up budget
                # Reservations past their deadline are let go first, looked for at most once a
                # second per counter (as the script does).
                if now - counter[4] >= 1000:
                    counter[4] = now
                    for rid, (units, deadline) in list(counter[3].items()):
                        if deadline <= now:
                            del counter[3][rid]
                            counter[2] -= units
                if spent + counter[2] + hold > limit:
                    why = BUDGET_HELD
            if why is not None:
                return Decision(
                    False, level=budget.level, kind="budget", retry_after_ms=why, budget=budget,
                    budget_left=Decimal(max(0, limit - spent)) / BUDGET_UNITS,
                )  # fmt: skip
        return None

    def release(self, *, request_id: str, held: tuple[str, ...]) -> None:
        """Let go of what a finished request held on its budget counters (once, however often)."""
        with self._lock:
            for key in held:
                counter = self._spend.get(key)
                if counter is not None and request_id in counter[3]:
                    counter[2] -= counter[3].pop(request_id)[0]

    async def seed_budgets(self, month: str, budgets: tuple[Budget, ...], spent: list[Decimal]) -> None:
        """Check the month's spend counters of `budgets` against `spent` (the usage records'):
        each holds the larger from then on (what it counted since is in both, or not yet written)."""
        with self._lock:
            for budget, amount in zip(budgets, spent, strict=True):
                counter = self._counter(budget_key(month, budget.currency, budget.level, budget.ident))
                if not counter[1]:
                    counter[0], counter[1] = max(counter[0], int(amount * BUDGET_UNITS)), True

    def count_spend(self, *, request_id: str, cost: Decimal, spend: list[str]) -> None:
        """Add an answered request's `cost` to the `spend` counters (spend_keys), once per request id."""
        units = int(cost * BUDGET_UNITS)
        if not spend or units <= 0:
            return
        now = time.monotonic()
        with self._lock:
            while self._counted and next(iter(self._counted.values())) < now:
                del self._counted[next(iter(self._counted))]
            if request_id in self._counted:
                return
            self._counted[request_id] = now + COUNTED_EXPIRY_S
            self._turn_month(spend[0][len(SPEND_PREFIX) :].split(":", 1)[0])
            for key in spend:
                self._counter(key)[0] += units

    def _turn_month(self, month: str) -> None:
        """A new month drops the counters of the months before (Redis lets them expire)."""
        if month > self._month:  # "YYYY-MM" sorts as time does
            self._month = month
            current = f"{SPEND_PREFIX}{month}:"
            self._spend = {k: v for k, v in self._spend.items() if k.startswith(current)}
