"""The simulated engine answers like an OpenAI-compatible server, predictably."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from sandbox.engine import SimulatedEngine, count_tokens, embed, run_engine_in_thread


@pytest.fixture(scope="module")
def engine() -> Iterator[tuple[str, SimulatedEngine]]:
    app = SimulatedEngine(models=["sandbox/listed-model"])
    url, stop = run_engine_in_thread(engine=app)
    yield url, app
    stop()


@pytest.fixture(scope="module")
def http(engine: tuple[str, SimulatedEngine]) -> Iterator[httpx.Client]:
    # One client for the module: building an httpx client (its TLS context) costs ~0.1 s.
    with httpx.Client(base_url=engine[0]) as http_client:
        yield http_client


@pytest.fixture(scope="module")
def oai(engine: tuple[str, SimulatedEngine]) -> openai.OpenAI:
    return openai.OpenAI(base_url=engine[0] + "/v1", api_key="sk-sandbox", max_retries=0)


def chat_body(text: str = "Hello there, engine!", **extra) -> dict:
    return {
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def sse_events(response: httpx.Response) -> list[tuple[float, str]]:
    """(arrival time, data) for every SSE event of a streamed response."""
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            events.append((time.perf_counter(), line[len("data: ") :]))
    return events


def test_chat_completion_usage_is_predictable(http: httpx.Client) -> None:
    response = http.post("/v1/chat/completions", json=chat_body())
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    message = body["choices"][0]["message"]
    assert message == {
        "role": "assistant",
        "content": "You said: Hello there, engine!",
        "refusal": None,
        "tool_calls": [],
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    # "Hello there , engine !" is 5 tokens; the reply adds "You said :".
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 8, "total_tokens": 13}
    assert count_tokens("You said: Hello there, engine!") == 8


def test_openai_client_chat(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(
        model="qwen2.5-7b",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Ping"}],
    )
    assert completion.choices[0].message.content == "You said: Ping"
    assert completion.usage.prompt_tokens == 4 and completion.usage.completion_tokens == 4


def test_max_tokens_caps_the_reply(http: httpx.Client) -> None:
    body = http.post("/v1/chat/completions", json=chat_body(max_tokens=2)).json()
    assert body["choices"][0]["message"]["content"] == "You said"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 2


def test_ignore_eos_generates_exactly_max_tokens(http: httpx.Client) -> None:
    body = http.post(
        "/v1/chat/completions", json=chat_body("Hi", max_tokens=40, ignore_eos=True)
    ).json()
    assert body["usage"]["completion_tokens"] == 40
    assert count_tokens(body["choices"][0]["message"]["content"]) == 40


def test_stream_chunks_arrive_one_by_one_with_usage_last(http: httpx.Client) -> None:
    request = chat_body(stream=True, stream_options={"include_usage": True})
    with http.stream(
        "POST", "/v1/chat/completions", json=request, headers={"x-sandbox-token-ms": "25"}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]][1:-1]
    assert "".join(content) == "You said: Hello there, engine!" and len(content) == 8
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 8, "total_tokens": 13}
    assert all(c["usage"] is None for c in chunks[:-1])
    # Tokens were sent separately, not buffered into one write.
    token_times = [t for (t, data) in events[1:9]]
    assert token_times[-1] - token_times[0] >= 0.1


def test_stream_without_include_usage_has_no_usage(http: httpx.Client) -> None:
    with http.stream("POST", "/v1/chat/completions", json=chat_body(stream=True)) as response:
        events = sse_events(response)
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert all("usage" not in c for c in chunks) and all(c["choices"] for c in chunks)


def test_openai_client_streams(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="qwen2.5-7b",
        messages=[{"role": "user", "content": "Stream me"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "You said: Stream me"
    assert chunks[-1].usage.completion_tokens == 5 and chunks[-1].usage.prompt_tokens == 2


def test_text_completions(http: httpx.Client, oai: openai.OpenAI) -> None:
    body = http.post("/v1/completions", json={"model": "gpt2", "prompt": "Once upon a time"}).json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "You said: Once upon a time"
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 7, "total_tokens": 11}
    default_cap = oai.completions.create(model="gpt2", prompt=" ".join(["word"] * 30))
    assert default_cap.usage.completion_tokens == 16  # OpenAI's default max_tokens
    assert default_cap.choices[0].finish_reason == "length"
    streamed = list(oai.completions.create(model="gpt2", prompt="Hi", stream=True))
    assert "".join(c.choices[0].text for c in streamed) == "You said: Hi"


def test_embeddings_are_deterministic_unit_vectors(http: httpx.Client, oai: openai.OpenAI) -> None:
    body = http.post(
        "/v1/embeddings",
        json={"model": "bge-small", "input": ["hello world", "hello world", "other"]},
    ).json()
    vectors = [d["embedding"] for d in body["data"]]
    assert [len(v) for v in vectors] == [384, 384, 384]
    assert vectors[0] == vectors[1] != vectors[2]
    assert math.isclose(math.fsum(x * x for x in vectors[0]), 1.0, rel_tol=1e-9)
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 0, "total_tokens": 5}
    # The openai client asks for base64 by default and decodes it.
    result = oai.embeddings.create(model="bge-small", input="hello world")
    assert result.data[0].embedding == pytest.approx(embed("hello world"), abs=1e-6)
    short = oai.embeddings.create(model="bge-small", input="hello world", dimensions=64)
    assert len(short.data[0].embedding) == 64


def test_models_lists_configured_and_requested_models(
    http: httpx.Client, oai: openai.OpenAI
) -> None:
    http.post("/v1/chat/completions", json=chat_body())
    ids = {m.id for m in oai.models.list()}
    assert {"sandbox/listed-model", "meta-llama/Llama-3.1-8B-Instruct"} <= ids


@pytest.mark.parametrize(
    ("path", "payload", "param"),
    [
        ("/v1/chat/completions", {"model": "m"}, "messages"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}, "model"),
        (
            "/v1/chat/completions",
            {"model": "m", "messages": [{"role": "robot", "content": "x"}]},
            "messages[0].role",
        ),
        ("/v1/chat/completions", {"model": "m", "messages": []}, "messages"),
        ("/v1/chat/completions", chat_body(max_tokens=0), "max_tokens"),
        ("/v1/chat/completions", chat_body(temperature=3), "temperature"),
        ("/v1/completions", {"model": "m"}, "prompt"),
        ("/v1/embeddings", {"model": "m", "input": ""}, "input"),
    ],
)
def test_bad_requests_get_openai_errors(
    http: httpx.Client, path: str, payload: dict, param: str
) -> None:
    response = http.post(path, json=payload)
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_invalid_json_and_context_length(http: httpx.Client, oai: openai.OpenAI) -> None:
    response = http.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "one two three"}], max_tokens=10,
            extra_headers={"x-sandbox-max-model-len": "8"},
        )  # fmt: skip
    assert err.value.code == "context_length_exceeded"


def test_headers_inject_latency_and_errors(http: httpx.Client, oai: openai.OpenAI) -> None:
    started = time.perf_counter()
    http.post("/v1/chat/completions", json=chat_body(), headers={"x-sandbox-latency-ms": "150"})
    assert time.perf_counter() - started >= 0.15
    response = http.post(
        "/v1/chat/completions", json=chat_body(), headers={"x-sandbox-status": "503"}
    )
    assert response.status_code == 503 and "error" in response.json()
    with pytest.raises(openai.RateLimitError):
        oai.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-sandbox-status": "429"},
        )
    forced = http.post(
        "/v1/chat/completions", json=chat_body(), headers={"x-sandbox-completion-tokens": "3"}
    )
    assert forced.json()["usage"]["completion_tokens"] == 3


def test_fail_after_tokens_drops_the_stream(http: httpx.Client) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        with http.stream(
            "POST", "/v1/chat/completions", json=chat_body(stream=True),
            headers={"x-sandbox-fail-after-tokens": "2"},
        ) as response:  # fmt: skip
            sse_events(response)


def test_health_and_recorded_requests(
    engine: tuple[str, SimulatedEngine], http: httpx.Client
) -> None:
    app = engine[1]
    assert http.get("/health").status_code == 200
    assert http.get("/v1/health/ready").json()["message"] == "Service is ready."
    http.post("/v1/chat/completions", json=chat_body(), headers={"x-modeldeck-deployment": "42"})
    assert app.requests[-1].headers["x-modeldeck-deployment"] == "42"
    assert app.requests[-1].body["messages"][0]["content"] == "Hello there, engine!"
    assert "vllm:generation_tokens_total" in http.get("/metrics").text


def test_latency_grows_with_the_requests_each_replica_serves(http: httpx.Client) -> None:
    def took(load: str) -> float:
        started = time.perf_counter()
        response = http.post("/v1/chat/completions", json=chat_body(), headers={
            "x-sandbox-concurrency-ms": "100", "x-sandbox-replica-load": load})  # fmt: skip
        assert response.status_code == 200
        return time.perf_counter() - started

    alone, crowded = took("1"), took("4")  # 4 requests per replica: 3 × 100 ms more

    assert alone < 0.25 <= crowded
    bad = http.post("/v1/chat/completions", json=chat_body(), headers={"x-sandbox-concurrency-ms": "lots"})
    assert bad.status_code == 400
