"""Usage metering: the cost of a request and the event the gateway queues in Redis for the writer.

Events go to a Redis Stream (USAGE_STREAM_KEY) in the same command that settles the request's
token reservation, before the client sees the answer. A consumer group (USAGE_GROUP) reads them
(gateway.tasks.flush_usage), writes UsageRecords and acknowledges each entry only after the
database commit; entries a dead consumer read but never acknowledged are claimed (XAUTOCLAIM)
by the next one after CLAIM_IDLE_MS. No loss needs Redis persistence: AOF with
`appendfsync everysec` (README, "Usage metering").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal

USAGE_STREAM_KEY = "modeldeck:gateway:usage-stream"
USAGE_GROUP = "usage-writers"
CLAIM_IDLE_MS = 30_000  # a consumer that holds entries this long without acknowledging is dead
# Before the stream: events waited in this list. flush_usage still drains it (upgrades).
USAGE_LIST_KEY = "modeldeck:gateway:usage"
MILLION = Decimal(1_000_000)
COST_QUANTUM = Decimal("0.00000001")  # UsageRecord.cost has 8 decimal places


def cost_of(
    *,
    prompt_tokens: int,
    completion_tokens: int,
    input_per_million: Decimal,
    output_per_million: Decimal,
) -> Decimal:
    """tokens × price per 1M, exact in Decimal and quantized to the column's precision."""
    cost = (
        Decimal(prompt_tokens) * input_per_million + Decimal(completion_tokens) * output_per_million
    ) / MILLION
    return cost.quantize(COST_QUANTUM)


def price(value) -> Decimal:
    try:
        return Decimal(str(value if value not in (None, "") else "0"))
    except ArithmeticError:
        return Decimal(0)


@dataclass
class UsageEvent:
    """One gateway request, as buffered (JSON) until flush_usage writes it as a UsageRecord."""

    request_id: str
    deployment_id: int | None
    deployment_name: str
    organization_id: int
    user_id: int | None
    api_key_id: int | None
    api_key_prefix: str
    route: str
    status_code: int
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    ttft_ms: float | None
    stream: bool
    cost: str
    currency: str
    created_at: str  # ISO 8601, UTC
    revision_id: int | None = None  # the serving revision (older buffered events lack it)
    served_by: str = ""  # an external deployment's: "external" or "overflow"

    def dumps(self) -> bytes:
        # vars(), not dataclasses.asdict: no deep copy on the hot path (the fields are flat).
        return json.dumps(vars(self), separators=(",", ":")).encode()


def usage_from_body(payload: dict) -> tuple[int, int]:
    """(prompt, completion) tokens from an OpenAI-shaped `usage` object; zeros when absent."""
    usage = payload.get("usage") if isinstance(payload, dict) else None
    if not isinstance(usage, dict):
        return 0, 0
    return _token_count(usage.get("prompt_tokens")), _token_count(usage.get("completion_tokens"))


MAX_TOKEN_COUNT = 2**31 - 1  # what a UsageRecord's PositiveIntegerField holds


def _token_count(value: object) -> int:
    """A count as the engine reported it, if it is one a record can hold; else 0. Not trusted:
    an external endpoint is the tenant's own server ([1], Infinity, -5 or 3e9 once raised after
    the answer, or failed every usage flush after it on PostgreSQL)."""
    if isinstance(value, float) and value.is_integer():  # 12.0 from a JSON encoder that writes floats
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKEN_COUNT:
        return 0
    return value


_decoder = json.JSONDecoder()


def usage_from_bytes(content: bytes) -> tuple[int, int]:
    """Usage of a whole JSON response without parsing it all (embeddings can be megabytes).

    Engines put `usage` last; decode just that object, falling back to a full parse.
    """
    at = content.rfind(b'"usage"')
    if at >= 0:
        colon = content.find(b":", at)
        try:
            obj, _ = _decoder.raw_decode(content[colon + 1 :].decode().lstrip())
            return usage_from_body({"usage": obj})
        except (ValueError, UnicodeDecodeError):
            pass
    try:
        return usage_from_body(json.loads(content))
    except ValueError:
        return 0, 0
