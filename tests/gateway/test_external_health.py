"""External endpoints' health check in the embedded mode (no Redis, `make run`): the Celery task
records each endpoint's verdict on its deployment, and a gateway in another process (as under
console/supervisor.py) stops sending requests to an endpoint the check found dead."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import openai
import pytest
from django.utils import timezone

from catalog.models import CatalogModel
from deployments.external import external_deployment_create
from deployments.models import ModelDeployment
from gateway import cache
from gateway.tasks import check_external_endpoints
from tests.gateway.conftest import make_deployment, make_key
from tests.gateway.test_external_overflow import SECRET, OnPrem, _json
from tests.gateway.test_usage_stream import ROOT, _database_url, _free_port

pytestmark = pytest.mark.django_db(transaction=True)


class FlakyOnPrem(OnPrem):
    """OnPrem whose health endpoint (GET …/models) can answer a status of its own while chat
    completions still work: requests that reach it are counted, whatever the check says."""

    def __init__(self) -> None:
        super().__init__()
        self.models_status: int | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].endswith("/models") and self.models_status:
            return await _json(send, self.models_status, {"error": {"message": "down"}})
        return await super().__call__(scope, receive, send)


@pytest.fixture
def embedded(settings, tmp_path):
    """The embedded mode's settings in this process (the Celery worker's, under `make run`)."""
    settings.REDIS_URL = None
    settings.MODELDECK_DATA_DIR = tmp_path
    settings.EXTERNAL_PRIVATE_ADDRESSES_ALLOWED = True  # the operator setting: local servers
    return tmp_path


@pytest.fixture
def flaky():
    from sandbox.engine import run_engine_in_thread

    server = FlakyOnPrem()
    url, stop = run_engine_in_thread(engine=server)
    yield server, url
    stop()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


def _external(tenants, name: str, url: str, **kwargs) -> ModelDeployment:
    model, _ = CatalogModel.objects.get_or_create(organization=tenants.org, name="onprem-llama",
                                                  defaults={"source": "huggingface", "repo_id": "acme/onprem"})  # fmt: skip
    return external_deployment_create(user=tenants.owner, project=tenants.project, model=model, name=name,
                                      url=url, **kwargs)  # fmt: skip


def test_the_check_records_health_without_redis(tenants, embedded, flaky):
    server, url = flaky
    live = _external(tenants, "live", url + "/v1", credential=SECRET)
    dead = _external(tenants, "dead", f"http://127.0.0.1:{_closed_port()}/v1")
    assert live.health == dead.health == "unknown"

    assert check_external_endpoints() == {"checked": 2, "healthy": 1}
    live.refresh_from_db()
    dead.refresh_from_db()
    assert (live.health, live.health_detail) == ("healthy", "answered HTTP 200")
    assert (dead.health, dead.health_detail) == ("unhealthy", "connection refused")
    # Worded once: not "The endpoint answers: answered HTTP 200."
    assert live.events.get(reason="EndpointReachable").message == "The endpoint answers (HTTP 200)."
    assert dead.health_checked_at and timezone.now() - dead.health_checked_at < timezone.timedelta(seconds=30)
    event = dead.events.get(reason="EndpointUnreachable")
    assert event.type == "Warning" and event.message == "The endpoint is unreachable: connection refused."
    assert dead.state == "running"  # the lifecycle state is not the health

    # A steady state: the check's time moves, nothing else; the gateways are not told.
    generation = (embedded / cache.EMBEDDED_GENERATION_FILE).read_text()
    first = dead.health_checked_at
    check_external_endpoints()
    dead.refresh_from_db()
    assert dead.health_checked_at > first and dead.events.filter(reason="EndpointUnreachable").count() == 1
    assert (embedded / cache.EMBEDDED_GENERATION_FILE).read_text() == generation

    # The live one stops answering its health check: a change, which the gateways are told of.
    server.models_status = 503
    assert check_external_endpoints() == {"checked": 2, "healthy": 0}
    live.refresh_from_db()
    assert (live.health, live.health_detail) == ("unhealthy", "answered HTTP 503")
    assert (embedded / cache.EMBEDDED_GENERATION_FILE).read_text() != generation


def test_the_check_keeps_refusing_private_addresses(tenants, embedded, flaky, settings):
    server, url = flaky
    row = _external(tenants, "live", url + "/v1", credential=SECRET)
    settings.EXTERNAL_PRIVATE_ADDRESSES_ALLOWED = False  # the operator takes the permission back
    assert check_external_endpoints() == {"checked": 1, "healthy": 0}
    row.refresh_from_db()
    assert row.health == "unhealthy" and "loopback" in row.health_detail
    assert server.hits == [] and not server.engine.requests  # never called


@pytest.mark.django_db  # not a transaction test: the commit is the captured callbacks'
def test_a_changed_url_is_checked_at_once(tenants, embedded, flaky, django_capture_on_commit_callbacks):
    from deployments.external import external_deployment_update

    server, url = flaky
    row = _external(tenants, "live", f"http://127.0.0.1:{_closed_port()}/v1")
    check_external_endpoints()
    row.refresh_from_db()
    assert row.health == "unhealthy"
    # A change that keeps the URL asks for no check: the verdict stays.
    with django_capture_on_commit_callbacks(execute=True):
        external_deployment_update(user=tenants.owner, deployment=row, description="moved soon")
    row.refresh_from_db()
    assert row.health == "unhealthy" and row.health_detail == "connection refused"

    with django_capture_on_commit_callbacks(execute=False) as queued:
        row = external_deployment_update(user=tenants.owner, deployment=row, url=url + "/v1", credential=SECRET)
    row.refresh_from_db()
    # Saved: the old verdict is gone (it was about the old URL); nothing is checked before the commit.
    assert (row.health, row.health_detail, row.health_checked_at) == ("unknown", "", None)
    for callback in queued:  # the commit: the check of this one deployment runs (Celery, eager here)
        callback()
    row.refresh_from_db()
    assert (row.health, row.health_detail) == ("healthy", "answered HTTP 200") and row.health_checked_at


@pytest.mark.django_db  # not a transaction test: the commit is the captured callbacks'
def test_a_new_endpoint_is_checked_at_once(tenants, embedded, flaky, django_capture_on_commit_callbacks):
    server, url = flaky
    with django_capture_on_commit_callbacks(execute=False) as queued:
        row = _external(tenants, "live", url + "/v1", credential=SECRET)
    row.refresh_from_db()
    assert row.health == "unknown" and not row.health_checked_at  # nothing probed before the commit
    for callback in queued:  # the commit: its first verdict comes now, not at the next round
        callback()
    row.refresh_from_db()
    assert (row.health, row.health_detail) == ("healthy", "answered HTTP 200") and row.health_checked_at


class SilentServer:
    """An endpoint that accepts connections and never answers: a probe waits out its time-out."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def silent_servers():
    servers: list[SilentServer] = []

    def start(count: int) -> list[SilentServer]:
        servers.extend(SilentServer() for _ in range(count))
        return servers[-count:]

    yield start
    for server in servers:
        server.close()


def _count_probes_at_once(monkeypatch) -> list[int]:
    """Wrap the health check's probe: the returned list's one item is the most probes that ran
    at the same time (set it back to 0 between rounds)."""
    from gateway import overflow  # noqa: PLC0415 - patched per test

    probe, running, peak = overflow.probe, [0], [0]
    lock = threading.Lock()

    def counted_probe(url: str, credential: str) -> tuple[bool, str]:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            return probe(url, credential)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(overflow, "probe", counted_probe)
    return peak


def test_a_round_of_dead_endpoints_takes_about_one_time_out(tenants, embedded, flaky, silent_servers, monkeypatch):
    from gateway import overflow, tasks

    timeout = 1.0
    monkeypatch.setattr(overflow, "HEALTH_TIMEOUT_S", timeout)
    peak = _count_probes_at_once(monkeypatch)
    _, live_url = flaky
    dead = [_external(tenants, f"dead-{i}", s.url) for i, s in enumerate(silent_servers(tasks.HEALTH_CHECK_THREADS - 1))]
    live = _external(tenants, "live", live_url + "/v1", credential=SECRET)

    started = time.monotonic()
    assert check_external_endpoints() == {"checked": len(dead) + 1, "healthy": 1}
    elapsed = time.monotonic() - started
    # One after another they would take 7 time-outs; at once, about one.
    assert elapsed < 2 * timeout, f"a round of {len(dead) + 1} took {elapsed:.1f} s"
    assert peak[0] == tasks.HEALTH_CHECK_THREADS
    for row in dead:
        row.refresh_from_db()
        assert (row.health, row.health_detail) == ("unhealthy", "no answer within 1 s")
    live.refresh_from_db()
    assert live.health == "healthy"

    # The pool is bounded: more endpoints than threads wait for a free one.
    dead += [_external(tenants, f"more-{i}", s.url) for i, s in enumerate(silent_servers(4))]
    peak[0] = 0
    assert check_external_endpoints() == {"checked": len(dead) + 1, "healthy": 1}
    assert peak[0] == tasks.HEALTH_CHECK_THREADS


def test_more_dead_endpoints_get_more_threads_so_a_round_keeps_within_two_time_outs(
    tenants, embedded, silent_servers, monkeypatch
):
    from gateway import overflow, tasks

    monkeypatch.setattr(overflow, "HEALTH_TIMEOUT_S", 0.5)
    # As 8 and 64 threads, scaled down: 2 at least, one per 2 endpoints, 5 at most.
    monkeypatch.setattr(tasks, "HEALTH_CHECK_THREADS", 2)
    monkeypatch.setattr(tasks, "HEALTH_CHECK_MAX_THREADS", 5)
    peak = _count_probes_at_once(monkeypatch)
    dead = [_external(tenants, f"dead-{i}", s.url) for i, s in enumerate(silent_servers(8))]
    assert check_external_endpoints() == {"checked": 8, "healthy": 0}
    assert peak[0] == 4  # one thread per 2: the round takes two time-outs, not four
    dead += [_external(tenants, f"more-{i}", s.url) for i, s in enumerate(silent_servers(4))]
    peak[0] = 0
    assert check_external_endpoints() == {"checked": 12, "healthy": 0}
    assert peak[0] == 5  # the cap


def test_an_endpoint_trickling_its_answer_is_cut_at_the_time_out_in_all(monkeypatch, settings):
    """httpx's time-outs are per read: a header line sent a byte at a time, each byte within the
    time-out, held a probe (and one of the check's threads) as long as it kept sending."""
    from gateway import overflow

    monkeypatch.setattr(overflow, "HEALTH_TIMEOUT_S", 0.6)
    settings.EXTERNAL_PRIVATE_ADDRESSES_ALLOWED = True  # the operator setting: a local server
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = sock.accept()
        with conn:
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 400:
                if stop.wait(0.05):
                    return
                conn.sendall(bytes([byte]))

    threading.Thread(target=trickle, daemon=True).start()
    try:
        started = time.monotonic()
        assert overflow.probe(f"http://127.0.0.1:{sock.getsockname()[1]}/v1", "") == (False, "no answer within 0.6 s")
        assert time.monotonic() - started < 1.5  # the trickle goes on for 20 s
    finally:
        stop.set()
        sock.close()


def _start_embedded_gateway(engine_url: str, data_dir) -> tuple[subprocess.Popen, str]:
    """console.asgi in a process of its own without Redis: the web process of `make run`."""
    import httpx

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update({
        "DJANGO_SETTINGS_MODULE": "console.settings", "DATABASE_URL": _database_url(),
        "SECRET_KEY": "modeldeck-test", "MODELDECK_DATA_DIR": str(data_dir),
        "MODELDECK_SANDBOX_ENGINE_URL": engine_url, "MODELDECK_EXTERNAL_PRIVATE_ADDRESSES": "1",
        "PYTHONPATH": str(ROOT),
    })  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "console.asgi:application", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--no-access-log"],
        env=env, cwd=ROOT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(url + "/healthz", timeout=1)
            return proc, url
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the gateway process did not start") from None
            time.sleep(0.1)


def _ask(client, model: str) -> str:
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    return reply.choices[0].message.content


def test_embedded_gateway_stops_sending_to_an_endpoint_the_check_found_dead(
    tenants, embedded, flaky, engine, engine_server
):
    server, url = flaky
    make_deployment(tenants.project, "burst", served_model_name="burst-chat")
    # A breaker that real failures alone would open only after 50: here the check decides.
    options = {"timeout_s": 5, "failure_threshold": 50, "cooldown_s": 60}
    _external(tenants, "onprem", url + "/v1", credential=SECRET, overflow="burst",
              served_model_name="llama-onprem", options=options)  # fmt: skip
    _external(tenants, "solo", url + "/v1", credential=SECRET, served_model_name="solo", options=options)
    proc, gateway_url = _start_embedded_gateway(engine_server[1], embedded)
    try:
        client = openai.OpenAI(api_key=make_key(tenants.member, tenants.org), base_url=gateway_url + "/v1",
                               max_retries=0)  # fmt: skip
        assert check_external_endpoints() == {"checked": 2, "healthy": 2}
        assert _ask(client, "llama-onprem") == "You said: hi" and _ask(client, "solo") == "You said: hi"
        assert len(server.hits) == 2 and not engine.requests  # the on-prem server answered both

        # Its health endpoint fails: the check, in this process, finds it dead. Its chat
        # completions would still answer, so any request sent there would be counted.
        server.models_status = 503
        assert check_external_endpoints() == {"checked": 2, "healthy": 0}
        time.sleep(cache.EMBEDDED_GENERATION_POLL_S + 0.2)  # the gateway reads the change at most once a second
        assert [_ask(client, "llama-onprem") for _ in range(5)] == ["You said: hi"] * 5
        assert len(server.hits) == 2  # not one more request to the dead endpoint
        assert len(engine.requests) == 5 and {r.body["model"] for r in engine.requests} == {"burst-chat"}
        with pytest.raises(openai.APIStatusError) as refused:  # no overflow: a clear 503, not a hang
            _ask(client, "solo")
        assert refused.value.status_code == 503 and refused.value.code == "external_unavailable"
        assert "(its health check: answered HTTP 503)" in refused.value.message
        assert len(server.hits) == 2

        # It answers its health check again: the next check closes the breaker.
        server.models_status = None
        assert check_external_endpoints() == {"checked": 2, "healthy": 2}
        time.sleep(cache.EMBEDDED_GENERATION_POLL_S + 0.2)
        assert _ask(client, "llama-onprem") == "You said: hi"
        assert len(server.hits) == 3 and len(engine.requests) == 5
    finally:
        proc.kill()
        proc.wait(timeout=10)
