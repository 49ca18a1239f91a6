"""A simulated OpenAI-compatible inference engine (raw ASGI, no framework) for the sandbox pool.

It answers like vLLM's OpenAI server: chat and text completions (streamed as SSE or not),
embeddings, models, health. Replies and token counts are deterministic so tests can predict
`usage` exactly:

- tokens are `\\w+` runs and single punctuation characters (`count_tokens`);
- chat: prompt_tokens = tokens of every message's text content; the natural reply is
  `"You said: " + <last user message>`;
- completions: prompt_tokens = tokens of the prompt; the natural reply is
  `"You said: " + <prompt>`; max_tokens defaults to 16 as in OpenAI/vLLM;
- `max_tokens` / `max_completion_tokens` cap the reply (finish_reason "length");
  `min_tokens` or `ignore_eos: true` pad it with lorem ipsum (one token per word);
- embeddings: unit vectors (384 dims by default) derived from a hash of each input.

Latency: `latency_ms` before the first token and `token_ms` between tokens (constructor, or
env SANDBOX_ENGINE_LATENCY_MS / SANDBOX_ENGINE_TOKEN_MS). Request headers for tests:
`x-sandbox-latency-ms`, `x-sandbox-token-ms`, `x-sandbox-status: <code>` (answer that error),
`x-sandbox-completion-tokens: <n>` (reply exactly n tokens), `x-sandbox-fail-after-tokens: <n>`
(drop the connection after n streamed tokens), `x-sandbox-max-model-len: <n>`.

Load: with `concurrency_ms` (constructor, env SANDBOX_ENGINE_CONCURRENCY_MS, or header
`x-sandbox-concurrency-ms`) the wait before the first token grows by that much for every other
request the replica is serving: latency + concurrency_ms × (requests per replica − 1). Requests
per replica is what the sandbox network measured for the Service (`x-sandbox-replica-load`:
in-flight requests over Ready pods), else this engine's own running count (one replica). So a
deployment's latency rises with its load and falls when the autoscaler adds replicas.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import socket
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

TOKEN_RE = re.compile(r"\w+|[^\w\s]")
LOREM = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut "
    "labore et dolore magna aliqua"
).split()
CHAT_ROLES = ("system", "user", "assistant", "tool", "function", "developer")
COMPLETION_DEFAULT_MAX_TOKENS = 16

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


TORCHSERVE_LABELS = ("tabby", "tiger_cat", "egyptian_cat", "lynx", "persian_cat")


def torchserve_scores(body: bytes) -> dict[str, float]:
    """What the sandbox's TorchServe answers to a prediction: top-5 class scores, as TorchServe's
    image_classifier handler returns them, derived from the body's sha256 and summing to 1."""
    digest = hashlib.sha256(body).digest()
    weights = [digest[i] + 1 for i in range(len(TORCHSERVE_LABELS))]
    total = sum(weights)
    pairs = sorted(zip(TORCHSERVE_LABELS, weights, strict=True), key=lambda p: -p[1])
    return {label: round(w / total, 6) for label, w in pairs}


def count_tokens(text: str) -> int:
    """The engine's tokenizer: words (`\\w+`) and single punctuation characters."""
    return len(TOKEN_RE.findall(text))


def _pieces(text: str) -> list[str]:
    """Split text into one piece per token, each with the whitespace before it."""
    pieces, end = [], 0
    for match in TOKEN_RE.finditer(text):
        pieces.append(text[end : match.end()])
        end = match.end()
    return pieces


def embed(text: str, dims: int = 384) -> list[float]:
    """A deterministic unit vector for `text`."""
    raw = hashlib.shake_256(text.encode()).digest(dims * 2)
    values = [v / 32767.5 - 1.0 for v in struct.unpack(f"<{dims}H", raw)]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [v / norm for v in values]


class EngineError(Exception):
    """An OpenAI-shaped error response."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _missing(param: str) -> EngineError:
    return EngineError(
        400,
        f"Missing required parameter: '{param}'.",
        param=param,
        code="missing_required_parameter",
    )


def _invalid(param: str, message: str, code: str = "invalid_value") -> EngineError:
    return EngineError(400, message, param=param, code=code)


@dataclass
class RecordedRequest:
    """What the engine received (the gateway's tests assert on what it forwarded)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    received_at: float = field(default_factory=time.time)  # the pods' logs show it (runtime.pod_log)


@dataclass
class _Generation:
    pieces: list[str]  # one per generated token
    finish_reason: str
    echo: str = ""  # the prompt, for completions with `echo` (not generated, not counted)

    @property
    def text(self) -> str:
        return self.echo + "".join(self.pieces)

    def stream_pieces(self) -> list[str]:
        if self.echo and self.pieces:
            return [self.echo + self.pieces[0], *self.pieces[1:]]
        return [self.echo] if self.echo else list(self.pieces)


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of milliseconds, got {raw!r}") from None


class SimulatedEngine:
    """The ASGI app. Any model name is accepted and echoed unless `strict_models`."""

    def __init__(
        self,
        *,
        models: Iterable[str] = (),
        latency_ms: float | None = None,
        token_ms: float | None = None,
        max_model_len: int = 32768,
        concurrency_ms: float | None = None,
        embedding_dims: int = 384,
        strict_models: bool = False,
        record: int = 200,
    ) -> None:
        env_models = [
            m for m in os.environ.get("SANDBOX_ENGINE_MODELS", "").split(",") if m.strip()
        ]
        self.latency_ms = (
            latency_ms if latency_ms is not None else _env_float("SANDBOX_ENGINE_LATENCY_MS", 0)
        )
        self.token_ms = (
            token_ms if token_ms is not None else _env_float("SANDBOX_ENGINE_TOKEN_MS", 0)
        )
        self.max_model_len = max_model_len
        self.concurrency_ms = (
            concurrency_ms if concurrency_ms is not None else _env_float("SANDBOX_ENGINE_CONCURRENCY_MS", 0)
        )
        self.embedding_dims = embedding_dims
        self.strict_models = strict_models
        self.created = int(time.time())
        self.models: dict[str, int] = {m.strip(): self.created for m in [*models, *env_models]}
        self.requests: deque[RecordedRequest] = deque(maxlen=record)
        self.request_count = 0
        self.running = 0
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0

    # -- ASGI --------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        method, path = scope["method"], scope["path"]
        try:
            await self._route(method, path, headers, receive, send)
        except EngineError as err:
            await _send_json(send, err.status, err.body)

    async def _route(
        self, method: str, path: str, headers: dict[str, str], receive: Receive, send: Send
    ) -> None:
        if path in ("/health", "/healthz", "/ping"):
            return await _send_json(send, 200, {"status": "ok"})
        if path in ("/v1/health/ready", "/v1/health/live"):
            return await _send_json(
                send, 200, {"object": "health.response", "message": "Service is ready."}
            )
        if path == "/metrics":
            return await _send(send, 200, self._metrics().encode(), b"text/plain; version=0.0.4")
        if path == "/v1/models" and method == "GET":
            return await _send_json(send, 200, {"object": "list", "data": self._model_cards()})
        if path.startswith("/v1/models/") and method == "GET":
            name = path[len("/v1/models/") :]
            card = next((c for c in self._model_cards() if c["id"] == name), None)
            if card is None:
                raise EngineError(404, f"The model `{name}` does not exist.", type_="NotFoundError",
                                  param="model", code="model_not_found")  # fmt: skip
            return await _send_json(send, 200, card)
        if path.startswith(("/predictions/", "/explanations/")):
            return await self._torchserve(method, path, headers, receive, send)
        handlers = {
            "/v1/chat/completions": self._chat,
            "/v1/completions": self._completions,
            "/v1/embeddings": self._embeddings,
        }
        handler = handlers.get(path)
        if handler is None:
            raise EngineError(404, f"Not Found: {path}", type_="NotFoundError", code="not_found")
        if method != "POST":
            raise EngineError(405, "Method Not Allowed", type_="invalid_request_error")
        raw = await _read_body(receive)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = _INVALID_JSON
        self.request_count += 1
        self.requests.append(
            RecordedRequest(method, path, headers, body if body is not _INVALID_JSON else raw)
        )
        forced = headers.get("x-sandbox-status")
        if forced and forced.isdigit() and int(forced) >= 400:
            raise _forced_error(int(forced))
        if body is _INVALID_JSON or not isinstance(body, dict):
            raise EngineError(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means you "
                "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
                "but what was sent was not valid JSON.)",
                code="invalid_json",
            )
        self.running += 1
        try:
            await handler(body, headers, receive, send)
        finally:
            self.running -= 1

    async def _torchserve(
        self, method: str, path: str, headers: dict[str, str], receive: Receive, send: Send
    ) -> None:
        """TorchServe's inference API (https://pytorch.org/serve/inference_api.html): any body
        (an image, JSON, text) in, the handler's JSON out. Deterministic: the scores are derived
        from the sha256 of the body, so a test can predict them (`torchserve_scores`)."""
        kind, _, name = path.strip("/").partition("/")
        if method != "POST":
            raise EngineError(405, "Method Not Allowed", type_="MethodNotAllowedException")
        if not name or "/" in name.rstrip("/"):
            raise EngineError(404, f"Model not found: {name}", type_="ModelNotFoundException")
        raw = await _read_body(receive)
        self.request_count += 1
        self.requests.append(RecordedRequest(method, path, headers, raw))
        forced = headers.get("x-sandbox-status")
        if forced and forced.isdigit() and int(forced) >= 400:
            raise _forced_error(int(forced))
        scores = torchserve_scores(raw)
        if kind == "explanations":
            return await _send_json(
                send, 200, [{"attributions": [round(v - 0.5, 6) for v in scores.values()]}]
            )
        return await _send_json(send, 200, scores)

    # -- helpers -----------------------------------------------------------------------

    def _model_cards(self) -> list[dict]:
        return [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "modeldeck-sandbox",
                "root": name,
                "parent": None,
                "max_model_len": self.max_model_len,
            }
            for name, created in self.models.items()
        ]

    def _model(self, body: dict) -> str:
        model = body.get("model")
        if model is None or model == "":
            raise _missing("model")
        if not isinstance(model, str):
            raise _invalid("model", "Invalid type for 'model': expected a string.", "invalid_type")
        if model not in self.models:
            if self.strict_models:
                raise EngineError(404, f"The model `{model}` does not exist.", type_="NotFoundError",
                                  param="model", code="model_not_found")  # fmt: skip
            self.models[model] = int(time.time())
        return model

    def _timing(self, headers: dict[str, str]) -> tuple[float, float]:
        latency, token, per_request = self.latency_ms, self.token_ms, self.concurrency_ms
        try:
            if "x-sandbox-latency-ms" in headers:
                latency = float(headers["x-sandbox-latency-ms"])
            if "x-sandbox-token-ms" in headers:
                token = float(headers["x-sandbox-token-ms"])
            if "x-sandbox-concurrency-ms" in headers:
                per_request = float(headers["x-sandbox-concurrency-ms"])
            load = float(headers.get("x-sandbox-replica-load") or self.running)
        except ValueError:
            raise _invalid(
                "headers", "x-sandbox-latency-ms / x-sandbox-token-ms / x-sandbox-concurrency-ms must be numbers"
            ) from None
        latency += max(per_request, 0.0) * max(load - 1.0, 0.0)
        return max(latency, 0.0) / 1000, max(token, 0.0) / 1000

    def _sampling(self, body: dict, *, completion: bool) -> dict:
        """Validate the sampling parameters the way the OpenAI API does; return the settled ones."""
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        name = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
        if max_tokens is not None:
            if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
                raise _invalid(
                    name, f"Invalid type for '{name}': expected an integer.", "invalid_type"
                )
            if max_tokens < 1:
                raise _invalid(
                    name,
                    f"Invalid '{name}': integer below minimum value. Expected a value >= 1, but got "
                    f"{max_tokens} instead.",
                    "integer_below_min_value",
                )
        elif completion:
            max_tokens = COMPLETION_DEFAULT_MAX_TOKENS
        for key, low, high in (("temperature", 0, 2), ("top_p", 0, 1), ("presence_penalty", -2, 2),
                               ("frequency_penalty", -2, 2)):  # fmt: skip
            value = body.get(key)
            if value is None:
                continue
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise _invalid(key, f"Invalid type for '{key}': expected a number.", "invalid_type")
            if not low <= value <= high:
                raise _invalid(
                    key,
                    f"Invalid '{key}': decimal {'above maximum' if value > high else 'below minimum'} "
                    f"value. Expected a value {'<=' if value > high else '>='} "
                    f"{high if value > high else low}, but got {value} instead.",
                    "decimal_above_max_value" if value > high else "decimal_below_min_value",
                )
        n = body.get("n", 1)
        if n is None:
            n = 1
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128:
            raise _invalid(
                "n", "Invalid 'n': expected an integer between 1 and 128.", "invalid_value"
            )
        stream = body.get("stream", False)
        if stream is not None and not isinstance(stream, bool):
            raise _invalid(
                "stream", "Invalid type for 'stream': expected a boolean.", "invalid_type"
            )
        stop = body.get("stop")
        if isinstance(stop, str):
            stop = [stop]
        if stop is not None and (
            not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop)
        ):
            raise _invalid(
                "stop", "Invalid 'stop': expected a string or an array of at most 4 strings."
            )
        min_tokens = body.get("min_tokens", 0) or 0
        if not isinstance(min_tokens, int) or min_tokens < 0:
            raise _invalid("min_tokens", "Invalid 'min_tokens': expected a non-negative integer.")
        stream_options = body.get("stream_options")
        if stream_options is not None and not stream:
            raise _invalid(
                "stream_options",
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            )
        include_usage = (
            bool((stream_options or {}).get("include_usage"))
            if isinstance(stream_options, dict)
            else False
        )
        return {
            "max_tokens": max_tokens,
            "n": n,
            "stream": bool(stream),
            "stop": stop or [],
            "min_tokens": min_tokens,
            "ignore_eos": bool(body.get("ignore_eos")),
            "include_usage": include_usage,
        }

    def _check_context(self, headers: dict[str, str], prompt_tokens: int, max_tokens: int | None,
                       what: str) -> None:  # fmt: skip
        limit = self.max_model_len
        if headers.get("x-sandbox-max-model-len", "").isdigit():
            limit = int(headers["x-sandbox-max-model-len"])
        requested = prompt_tokens + (max_tokens or 0)
        if requested > limit or prompt_tokens >= limit:
            raise EngineError(
                400,
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{requested} tokens ({prompt_tokens} in the {what}, {max_tokens or 0} in the "
                "completion). Please reduce the length of the messages or completion.",
                param="messages" if what == "messages" else "prompt",
                code="context_length_exceeded",
            )

    def _generate(self, natural: str, sampling: dict, headers: dict[str, str]) -> _Generation:
        pieces = _pieces(natural)
        forced = headers.get("x-sandbox-completion-tokens", "")
        target = len(pieces)
        if forced.isdigit():
            target = int(forced)
            pieces = pieces[:target]
        max_tokens = sampling["max_tokens"]
        if sampling["ignore_eos"] and max_tokens:
            target = max(target, max_tokens)
        target = max(target, sampling["min_tokens"])
        i = 0
        while len(pieces) < target:
            pieces.append(("" if not pieces else " ") + LOREM[i % len(LOREM)])
            i += 1
        finish = "stop"
        if max_tokens is not None and len(pieces) > max_tokens:
            pieces, finish = pieces[:max_tokens], "length"
        if sampling["stop"]:
            text = "".join(pieces)
            cut = min((text.find(s) for s in sampling["stop"] if s and s in text), default=-1)
            if cut >= 0:
                pieces, finish = _pieces(text[:cut]), "stop"
        return _Generation(pieces, finish)

    # -- endpoints ---------------------------------------------------------------------

    async def _chat(
        self, body: dict, headers: dict[str, str], receive: Receive, send: Send
    ) -> None:
        model = self._model(body)
        messages = body.get("messages")
        if messages is None:
            raise _missing("messages")
        if not isinstance(messages, list):
            raise _invalid(
                "messages", "Invalid type for 'messages': expected an array.", "invalid_type"
            )
        if not messages:
            raise _invalid(
                "messages",
                "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
                "empty_array",
            )
        prompt_tokens, last_user = 0, ""
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise _invalid(
                    f"messages[{i}]",
                    f"Invalid type for 'messages[{i}]': expected an object.",
                    "invalid_type",
                )
            role = message.get("role")
            if role is None:
                raise _missing(f"messages[{i}].role")
            if role not in CHAT_ROLES:
                raise _invalid(
                    f"messages[{i}].role",
                    f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', "
                    "'function', 'tool', and 'developer'.",
                )
            text = _content_text(message.get("content"), i, role, message)
            prompt_tokens += count_tokens(text)
            if role == "user":
                last_user = text
        sampling = self._sampling(body, completion=False)
        self._check_context(headers, prompt_tokens, sampling["max_tokens"], "messages")
        natural = f"You said: {last_user}" if last_user.strip() else " ".join(LOREM)
        generations = [self._generate(natural, sampling, headers) for _ in range(sampling["n"])]
        await self._respond(
            "chat.completion", model, prompt_tokens, generations, sampling, headers, receive, send
        )

    async def _completions(
        self, body: dict, headers: dict[str, str], receive: Receive, send: Send
    ) -> None:
        model = self._model(body)
        prompt = body.get("prompt")
        if prompt is None:
            raise _missing("prompt")
        prompts: list[tuple[str, int]]
        if isinstance(prompt, str):
            prompts = [(prompt, count_tokens(prompt))]
        elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            prompts = [(p, count_tokens(p)) for p in prompt]
        elif (
            isinstance(prompt, list)
            and prompt
            and all(isinstance(p, int) and not isinstance(p, bool) for p in prompt)
        ):
            prompts = [(" ".join(map(str, prompt)), len(prompt))]
        elif (
            isinstance(prompt, list)
            and prompt
            and all(isinstance(p, list) and all(isinstance(t, int) for t in p) for p in prompt)
        ):
            prompts = [(" ".join(map(str, p)), len(p)) for p in prompt]
        else:
            raise _invalid(
                "prompt",
                "Invalid 'prompt': expected a string, an array of strings, or token arrays.",
            )
        sampling = self._sampling(body, completion=True)
        prompt_tokens = sum(tokens for _, tokens in prompts)
        for _, tokens in prompts:
            self._check_context(headers, tokens, sampling["max_tokens"], "prompt")
        generations = []
        for text, _ in prompts:
            natural = f"You said: {text}" if text.strip() else " ".join(LOREM)
            for _ in range(sampling["n"]):
                generation = self._generate(natural, sampling, headers)
                if body.get("echo"):
                    generation.echo = text
                generations.append(generation)
        await self._respond(
            "text_completion", model, prompt_tokens, generations, sampling, headers, receive, send
        )

    async def _respond(
        self,
        kind: str,
        model: str,
        prompt_tokens: int,
        generations: list[_Generation],
        sampling: dict,
        headers: dict[str, str],
        receive: Receive,
        send: Send,
    ) -> None:
        latency, per_token = self._timing(headers)
        completion_tokens = sum(len(g.pieces) for g in generations)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        self.prompt_tokens_total += prompt_tokens
        self.generation_tokens_total += completion_tokens
        prefix = "chatcmpl" if kind == "chat.completion" else "cmpl"
        response_id = f"{prefix}-{uuid.uuid4().hex}"
        created = int(time.time())
        fail_after = headers.get("x-sandbox-fail-after-tokens", "")
        fail_after_n = int(fail_after) if fail_after.isdigit() else None
        if not sampling["stream"]:
            longest = max((len(g.pieces) for g in generations), default=0)
            await asyncio.sleep(latency + per_token * longest)
            if fail_after_n is not None:
                raise EngineError(500, "The sandbox engine crashed while generating (x-sandbox-fail-after-tokens).",
                                  type_="InternalServerError", code="engine_crashed")  # fmt: skip
            if kind == "chat.completion":
                choices = [
                    {
                        "index": i,
                        "message": {
                            "role": "assistant",
                            "content": g.text,
                            "refusal": None,
                            "tool_calls": [],
                        },
                        "logprobs": None,
                        "finish_reason": g.finish_reason,
                    }
                    for i, g in enumerate(generations)
                ]
            else:
                choices = [
                    {"index": i, "text": g.text, "logprobs": None, "finish_reason": g.finish_reason}
                    for i, g in enumerate(generations)
                ]
            await _send_json(send, 200, {
                "id": response_id, "object": kind, "created": created, "model": model,
                "system_fingerprint": "fp_sandbox", "choices": choices, "usage": usage,
            })  # fmt: skip
            return
        await self._stream(kind, response_id, created, model, generations, usage, sampling,
                           latency, per_token, fail_after_n, receive, send)  # fmt: skip

    async def _stream(
        self,
        kind: str,
        response_id: str,
        created: int,
        model: str,
        generations: list[_Generation],
        usage: dict,
        sampling: dict,
        latency: float,
        per_token: float,
        fail_after: int | None,
        receive: Receive,
        send: Send,
    ) -> None:
        disconnected = asyncio.Event()

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    disconnected.set()
                    return

        watcher = asyncio.create_task(watch())
        chunk_object = "chat.completion.chunk" if kind == "chat.completion" else "text_completion"
        include_usage = sampling["include_usage"]

        def chunk(choices: list[dict], with_usage: dict | None = None) -> bytes:
            payload: dict = {"id": response_id, "object": chunk_object, "created": created,
                             "model": model, "system_fingerprint": "fp_sandbox", "choices": choices}  # fmt: skip
            if include_usage:
                payload["usage"] = with_usage
            return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"

        def choice(index: int, piece: str | None, finish: str | None, first: bool = False) -> dict:
            if kind == "chat.completion":
                delta: dict = {}
                if first:
                    delta = {"role": "assistant", "content": ""}
                elif piece is not None:
                    delta = {"content": piece}
                return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {"index": index, "text": piece or "", "logprobs": None, "finish_reason": finish}

        try:
            await send({
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream; charset=utf-8"),
                            (b"cache-control", b"no-cache"), (b"x-request-id", response_id.encode())],
            })  # fmt: skip
            if latency:
                await asyncio.sleep(latency)
            if kind == "chat.completion":
                first = b"".join(
                    chunk([choice(i, None, None, first=True)]) for i in range(len(generations))
                )
                await send({"type": "http.response.body", "body": first, "more_body": True})
            streams = [g.stream_pieces() for g in generations]
            longest = max((len(p) for p in streams), default=0)
            sent = 0
            for step in range(longest):
                if disconnected.is_set():
                    return
                if fail_after is not None and sent >= fail_after:
                    # Simulate an engine that dies mid-stream: returning without finishing the
                    # response makes the server drop the connection (the client sees it cut).
                    return
                if step and per_token:
                    await asyncio.sleep(per_token)
                data = b"".join(
                    chunk([choice(i, pieces[step], None)])
                    for i, pieces in enumerate(streams)
                    if step < len(pieces)
                )
                await send({"type": "http.response.body", "body": data, "more_body": True})
                sent += 1
            tail = b"".join(
                chunk([choice(i, None, g.finish_reason)]) for i, g in enumerate(generations)
            )
            if include_usage:
                tail += chunk([], usage)
            tail += b"data: [DONE]\n\n"
            await send({"type": "http.response.body", "body": tail, "more_body": False})
        finally:
            watcher.cancel()

    async def _embeddings(
        self, body: dict, headers: dict[str, str], receive: Receive, send: Send
    ) -> None:
        model = self._model(body)
        raw = body.get("input")
        if raw is None:
            raise _missing("input")
        inputs: list[tuple[str, int]]
        if isinstance(raw, str):
            inputs = [(raw, count_tokens(raw))]
        elif isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
            inputs = [(x, count_tokens(x)) for x in raw]
        elif (
            isinstance(raw, list)
            and raw
            and all(isinstance(x, int) and not isinstance(x, bool) for x in raw)
        ):
            inputs = [(json.dumps(raw), len(raw))]
        elif isinstance(raw, list) and raw and all(isinstance(x, list) and x for x in raw):
            inputs = [(json.dumps(x), len(x)) for x in raw]
        else:
            raise _invalid(
                "input",
                "Invalid 'input': expected a non-empty string, array of strings, or token arrays.",
            )
        if any(text == "" for text, _ in inputs):
            raise _invalid("input", "Invalid 'input': input cannot be an empty string.")
        encoding = body.get("encoding_format", "float") or "float"
        if encoding not in ("float", "base64"):
            raise _invalid(
                "encoding_format",
                f"Invalid value: '{encoding}'. Supported values are: 'float' and 'base64'.",
            )
        dims = body.get("dimensions") or self.embedding_dims
        if not isinstance(dims, int) or not 1 <= dims <= self.embedding_dims:
            raise _invalid(
                "dimensions",
                f"Invalid 'dimensions': expected an integer between 1 and {self.embedding_dims}.",
            )
        for _, tokens in inputs:
            self._check_context(headers, tokens, 0, "input")
        latency, _ = self._timing(headers)
        if latency:
            await asyncio.sleep(latency)
        data = []
        for i, (text, _) in enumerate(inputs):
            vector = embed(text, self.embedding_dims)[:dims]
            if dims != self.embedding_dims:
                norm = sum(v * v for v in vector) ** 0.5 or 1.0
                vector = [v / norm for v in vector]
            value: Any = vector
            if encoding == "base64":
                value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": value})
        tokens = sum(t for _, t in inputs)
        self.prompt_tokens_total += tokens
        await _send_json(send, 200, {
            "object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens},
        })  # fmt: skip

    def _metrics(self) -> str:
        return (
            "# HELP vllm:num_requests_running Number of requests currently running.\n"
            "# TYPE vllm:num_requests_running gauge\n"
            f"vllm:num_requests_running {self.running}\n"
            "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.\n"
            "# TYPE vllm:prompt_tokens_total counter\n"
            f"vllm:prompt_tokens_total {self.prompt_tokens_total}\n"
            "# HELP vllm:generation_tokens_total Number of generation tokens processed.\n"
            "# TYPE vllm:generation_tokens_total counter\n"
            f"vllm:generation_tokens_total {self.generation_tokens_total}\n"
            "# HELP sandbox_engine_requests_total Requests received.\n"
            "# TYPE sandbox_engine_requests_total counter\n"
            f"sandbox_engine_requests_total {self.request_count}\n"
        )


_INVALID_JSON = object()


def _content_text(content: Any, index: int, role: str, message: dict) -> str:
    if content is None:
        if role == "assistant" and (message.get("tool_calls") or message.get("function_call")):
            return ""
        raise _missing(f"messages[{index}].content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or "type" not in part:
                raise _invalid(
                    f"messages[{index}].content[{j}]",
                    "Invalid content part: expected an object with a 'type'.",
                )
            if part["type"] == "text":
                texts.append(str(part.get("text", "")))
        return " ".join(texts)
    raise _invalid(
        f"messages[{index}].content",
        f"Invalid type for 'messages[{index}].content': expected a string or an array.",
        "invalid_type",
    )


def _forced_error(status: int) -> EngineError:
    kinds = {
        400: ("invalid_request_error", "bad_request"),
        401: ("authentication_error", "invalid_api_key"),
        404: ("NotFoundError", "not_found"),
        429: ("rate_limit_exceeded", "rate_limit_exceeded"),
        500: ("InternalServerError", "internal_error"),
        503: ("ServiceUnavailableError", "service_unavailable"),
    }
    type_, code = kinds.get(status, ("server_error", "sandbox_forced_error"))
    return EngineError(
        status, f"Sandbox engine forced error {status} (x-sandbox-status).", type_=type_, code=code
    )


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def _send(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": body})


async def _send_json(send: Send, status: int, payload: Any) -> None:
    await _send(
        send, status, json.dumps(payload, separators=(",", ":")).encode(), b"application/json"
    )


def run_engine_in_thread(
    port: int = 0,
    host: str = "127.0.0.1",
    *,
    engine: SimulatedEngine | None = None,
    **engine_options: Any,
) -> tuple[str, Callable[[], None]]:
    """Serve a SimulatedEngine with uvicorn in a daemon thread; returns (base URL, stop)."""
    import uvicorn

    app = engine or SimulatedEngine(**engine_options)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="sandbox-engine", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the sandbox engine did not start")
        time.sleep(0.01)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()

    return f"http://{host}:{sock.getsockname()[1]}", stop


# `uvicorn sandbox.engine:app --port 8091` serves an engine on its own (in its own
# process, e.g. for benchmarks); configure it with the SANDBOX_ENGINE_* environment variables.
app = SimulatedEngine()
