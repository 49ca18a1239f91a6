"""Parse and check an inference request body before anything is counted or proxied.

Only what the gateway itself reads is checked here (model, messages, prompt/input, max_tokens,
stream); everything else passes through for the engine to judge. Each refusal is an
OpenAI-shaped 400 naming the parameter, like OpenAI's own `invalid_request_error`s.
"""

from __future__ import annotations

import json

from gateway.errors import GatewayError

# Larger than any context window served today, small enough that a token reservation can never
# overflow the rate limiter's arithmetic (Lua numbers are doubles; 2^63 lost precision and
# poisoned the window for a minute).
MAX_TOKENS_LIMIT = 2**31 - 1
MAX_CHOICES = 128  # n / best_of: OpenAI's own bound, and what the gateway's holds count up to


def _invalid(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(
        400, message, "invalid_request_error", param=param, code="invalid_value" if param else None
    )


class _RepeatedKey(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """An object whose keys are all different. The body usually goes to the engine as it came:
    with a key written twice, the gateway (Python keeps the last) and an engine that keeps the
    first or refuses (serde) would read different models, limits or token caps."""
    body = dict(pairs)
    if len(body) != len(pairs):
        seen: set[str] = set()
        raise _RepeatedKey(next(name for name, _ in pairs if name in seen or seen.add(name)))
    return body


def parse_body(raw: bytes) -> dict:
    """The request's JSON object, or a 400 saying what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid("The request body is not valid UTF-8.") from None
    try:
        body = json.loads(text, object_pairs_hook=_unique_keys)  # ~2.5 µs more for a short chat
    except _RepeatedKey as exc:
        raise _invalid(
            f"The request body names `{exc.name[:60]}` twice in one object; each key may appear "
            "once (RFC 8259 §4: what a reader makes of a repeated key is not defined)."
        ) from None
    except RecursionError:
        # Python's parser gives up near its recursion limit (~1000 levels): not a server fault.
        raise _invalid("The request body is nested too deeply.") from None
    except ValueError:
        raise _invalid("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise _invalid("The request body must be a JSON object.")
    return body


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_body(body: dict, route: str) -> None:
    """Refuse the values the gateway would trip over (or that would skew its accounting)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise GatewayError(
            400, "You must provide a model parameter.", "invalid_request_error", param="model"
        )
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is None:
            continue
        # 0 passes: the engine answers it with its own 400 (its rules, its message).
        if not _is_int(value) or not 0 <= value <= MAX_TOKENS_LIMIT:
            raise _invalid(
                f"`{name}` must be a whole number between 0 and {MAX_TOKENS_LIMIT}; got {json.dumps(value)[:40]}.",
                name,
            )
    for name in ("n", "best_of"):
        value = body.get(name)
        # Whole numbers only: the token and budget holds count this many completions
        # (ratelimit._choices), and an engine such as vLLM reads "3" or 3.0 as 3 all the same.
        if value is not None and (not _is_int(value) or not 1 <= value <= MAX_CHOICES):
            raise _invalid(
                f"`{name}` must be a whole number between 1 and {MAX_CHOICES}; got {json.dumps(value)[:40]}.",
                name,
            )
    if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
        raise _invalid("`stream` must be true or false.", "stream")
    if route == "chat.completions":
        _check_messages(body.get("messages"))
    elif route == "completions":
        _check_text_or_list(body.get("prompt"), "prompt", required=False)
    elif route == "embeddings":
        _check_text_or_list(body.get("input"), "input", required=True)


def _check_messages(messages: object) -> None:
    if not isinstance(messages, list) or not messages:
        raise _invalid("`messages` must be a non-empty array of message objects.", "messages")
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _invalid(f"`{where}` must be an object with `role` and `content`.", where)
        if not isinstance(message.get("role"), str):
            raise _invalid(f"`{where}.role` must be a string.", f"{where}.role")
        content = message.get("content")
        if content is None or isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise _invalid(
                f"`{where}.content` must be a string or an array of content parts.",
                f"{where}.content",
            )
        for j, part in enumerate(content):
            part_where = f"{where}.content[{j}]"
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise _invalid(f"`{part_where}` must be an object with a `type`.", part_where)
            if "text" in part and not isinstance(part["text"], str):
                raise _invalid(f"`{part_where}.text` must be a string.", f"{part_where}.text")


def _check_text_or_list(value: object, name: str, *, required: bool) -> None:
    """A string, an array of strings, or token ids (an array of integers, or of such arrays)."""
    if value is None:
        if required:
            raise _invalid(f"You must provide `{name}`.", name)
        return
    if isinstance(value, str):
        return
    if isinstance(value, list) and (
        all(isinstance(v, str) for v in value)
        or all(_is_int(v) for v in value)
        or all(isinstance(v, list) and all(_is_int(t) for t in v) for v in value)
    ):
        return
    raise _invalid(
        f"`{name}` must be a string, an array of strings, or an array of token ids.", name
    )
