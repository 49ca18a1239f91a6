"""Gateway overhead on loopback: latency (p50/p99) and requests/s direct to the engine vs through the gateway.

Starts the simulated engine and the console (console.asgi: gateway + Django) as two uvicorn
subprocesses on 127.0.0.1, with a PostgreSQL database of its own (bench/seed.py: created, then
dropped) and an empty Redis database (REDIS_URL, default DB 7; refused when it holds keys, and
flushed at the end, when it holds only this run's),
creates one organization, a Running sandbox deployment and an API key, then runs bounded loops:

1. sequential requests (concurrency 1): added latency per request;
2. concurrent requests: throughput of each path and the ratio; then again with the gateway in
   one process per core (uvicorn --workers N: WEB_CONCURRENCY, or N web pods, in production),
   which shows whether more gateway processes help on a machine the load generator, engine and
   Redis share;
3. streams: time to first token (TTFT) direct vs through the gateway, and the gateway's CPU per
   streamed request at the concurrency of 2;
4. the upstream pools: httpx.AsyncClient vs aiohttp vs gateway/h1.py against the engine (why the
   gateway sends the engines' requests, streamed or not, through gateway/h1.py).

It ends with the lines compared run to run: `gateway throughput ratio c32` (gateway req/s ÷
direct req/s at concurrency 32), `gateway cpu ms per request` (CPU seconds the gateway process
used during the concurrent run, from /proc, per request) and `gateway added p50 ms c1`.

The concurrent runs are interleaved (direct, gateway, direct, gateway, ...; --rounds) and the
ratio is the median of the rounds' ratios, so a neighbour's load on a shared machine weighs on
both sides of a ratio rather than on one run.

Usage: REDIS_URL=redis://127.0.0.1:6379/7 .venv/bin/python bench/gateway.py [--requests 2000] [--concurrency 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = "bench-chat"
BODY = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Benchmark the gateway please"}],
    "max_tokens": 8,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout: float = 30) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * p
    low = int(k)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (k - low)


async def run_load(
    url: str, headers: dict, total: int, concurrency: int, *, stream: bool = False
) -> tuple[list[float], float, list[float]]:
    """(latencies ms, wall seconds, ttft ms) of `total` requests with `concurrency` in flight.

    The load generator uses aiohttp: httpx's async pool would be the bottleneck (see section 4).
    """
    import aiohttp

    latencies: list[float] = []
    ttfts: list[float] = []
    body = {**BODY, "stream": True} if stream else BODY
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        remaining = total

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                t0 = time.perf_counter()
                async with session.post(url, json=body, headers=headers) as response:
                    assert response.status == 200, await response.text()
                    if stream:
                        first = True
                        async for _ in response.content.iter_any():
                            if first:
                                ttfts.append((time.perf_counter() - t0) * 1000)
                                first = False
                    else:
                        await response.read()
                latencies.append((time.perf_counter() - t0) * 1000)

        # Warm the connections (and the gateway's caches) outside the measurement.
        for _ in range(min(concurrency, 20)):
            async with session.post(url, json=BODY, headers=headers) as response:
                await response.read()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return latencies, wall, ttfts


async def upstream_clients(engine_url: str, total: int, concurrency: int) -> dict[str, float]:
    """Requests/s of httpx.AsyncClient vs aiohttp.ClientSession vs gateway.h1.UpstreamPool, all
    pooled, same engine."""
    import aiohttp
    import httpx

    sys.path.insert(0, str(ROOT))
    from gateway.h1 import UpstreamPool  # the checkout's module; no Django needed

    url = engine_url + "/v1/chat/completions"
    results = {}
    sem = asyncio.Semaphore(concurrency)

    async with httpx.AsyncClient(
        limits=httpx.Limits(max_connections=concurrency), trust_env=False
    ) as client:

        async def one_httpx() -> None:
            async with sem:
                r = await client.post(url, json=BODY)
                r.raise_for_status()

        await asyncio.gather(*(one_httpx() for _ in range(50)))
        t0 = time.perf_counter()
        await asyncio.gather(*(one_httpx() for _ in range(total)))
        results["httpx"] = total / (time.perf_counter() - t0)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def one_aiohttp() -> None:
            async with sem:
                async with session.post(url, json=BODY) as r:
                    r.raise_for_status()
                    await r.read()

        await asyncio.gather(*(one_aiohttp() for _ in range(50)))
        t0 = time.perf_counter()
        await asyncio.gather(*(one_aiohttp() for _ in range(total)))
        results["aiohttp"] = total / (time.perf_counter() - t0)

    pool = UpstreamPool(connect_timeout=5, read_timeout=300)
    payload = json.dumps(BODY).encode()

    async def one_h1() -> None:
        async with sem:
            r = await pool.post(url, payload, {"content-type": "application/json"})
            assert r.status == 200, r.status

    await asyncio.gather(*(one_h1() for _ in range(50)))
    t0 = time.perf_counter()
    await asyncio.gather(*(one_h1() for _ in range(total)))
    results["gateway.h1"] = total / (time.perf_counter() - t0)
    await pool.aclose()
    return results


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its children (uvicorn --workers: the master and its workers)."""
    total = cpu_seconds(pid)
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            total += cpu_seconds(int(child))
        except FileNotFoundError:  # a worker that just ended
            pass
    return total


def scaled_out(
    args: argparse.Namespace, env: dict, uvicorn: list, engine_url: str, auth: dict, direct: str
) -> tuple[float, float, int]:
    """The concurrent run again with the gateway in one process per core (uvicorn --workers N;
    WEB_CONCURRENCY=N in production, or N web pods): (median ratio, gateway CPU ms per request
    over all its processes, N)."""
    workers = os.cpu_count() or 1
    port = free_port()
    proc = subprocess.Popen(
        [*uvicorn, "--workers", str(workers), "--port", str(port), "console.asgi:application"],
        env=env,
        cwd=ROOT,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/healthz")
        through = f"http://127.0.0.1:{port}/v1/chat/completions"
        print(
            f"\nConcurrent with the gateway in {workers} processes (uvicorn --workers {workers}; "
            f"{args.rounds} rounds, interleaved):"
        )
        ratios, cpu = [], 0.0
        for _ in range(args.rounds):
            d_lat, d_wall, _ = asyncio.run(run_load(direct, {}, args.requests, args.concurrency))
            before = tree_cpu_seconds(proc.pid)
            g_lat, g_wall, _ = asyncio.run(run_load(through, auth, args.requests, args.concurrency))
            cpu += tree_cpu_seconds(proc.pid) - before
            ratios.append((len(g_lat) / g_wall) / (len(d_lat) / d_wall))
        ratio = statistics.median(ratios)
        cpu_ms = cpu * 1000 / (args.rounds * (args.requests + min(args.concurrency, 20)))
        print(
            f"  throughput ratio       {ratio:.2f} (gateway / direct; rounds {', '.join(f'{r:.2f}' for r in ratios)})"
        )
        print(f"  gateway CPU            {cpu_ms:.2f} ms per request (all {workers} processes)")
        return ratio, cpu_ms, workers
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def setup_data(env: dict) -> str:
    """Migrate the throwaway database and create org, sandbox deployment and key; returns the secret."""
    code = f"""
import django, os
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0, interactive=False)
from django.contrib.auth import get_user_model
from django.utils import timezone
from projects.models import Organization, Membership
from projects.services import project_create
from catalog.models import CatalogModel, ProfileBundle
from deployments.models import ComputePool, ModelDeployment, Revision
from projects.keys import api_key_create
from tests.gateway.conftest import make_spec
user = get_user_model().objects.create_user("bench")
org = Organization.objects.create(name="Bench", slug="bench")
Membership.objects.create(user=user, organization=org, role="admin")
project = project_create(user=None, organization=org, name="Bench", slug="bench")
model = CatalogModel.objects.create(organization=org, name="bench", source="huggingface", repo_id="bench/bench")
bundle = ProfileBundle.objects.create(organization=org, name="bench-vllm", engine="vllm", image="public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.8.5")
pool = ComputePool.objects.create(organization=org, name="sandbox", kind="sandbox", engine_label="vllm")
d = ModelDeployment.objects.create(project=project, model=model, bundle=bundle, pool=pool, name="bench", state="running")
# Limits high enough never to refuse, so the rate-limit script runs at its full cost (3 levels).
limits = {{lvl: {{"rpm": 10_000_000, "tpm": 10_000_000_000}} for lvl in ("organization", "user", "api_key")}}
r = Revision.objects.create(deployment=d, number=1, spec=make_spec("{MODEL}", rate_limits=limits,
    pricing={{"currency": "USD", "input_per_million": "0.50", "output_per_million": "1.50"}}))
d.current_revision = d.serving_revision = r
d.save()
print(api_key_create(user=user, organization=org, name="bench")[1])
"""
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    if out.returncode:
        raise SystemExit(out.stderr)
    return out.stdout.strip().splitlines()[-1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc/<pid>/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process (the load generator), user + system."""
    times = os.times()
    return times.user + times.system


def redis_cpu_seconds(url: str) -> float:
    """CPU seconds the Redis server has used (INFO cpu): what the scripts cost it."""
    import redis

    info = redis.Redis.from_url(url).info("cpu")
    return info["used_cpu_sys"] + info["used_cpu_user"]


def row(name: str, lat: list[float], wall: float) -> str:
    return (
        f"  {name:<22} p50 {statistics.median(lat):7.2f} ms   p99 {percentile(lat, 0.99):7.2f} ms   "
        f"{len(lat) / wall:8.0f} req/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--sequential", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/7")
    sys.path.insert(0, str(ROOT / "bench"))
    from seed import bench_database

    with bench_database("gateway") as database_url:
        run(args, redis_url, database_url)


def run(args: argparse.Namespace, redis_url: str, database_url: str) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="modeldeck-bench-"))
    engine_port, gateway_port = free_port(), free_port()
    engine_url = f"http://127.0.0.1:{engine_port}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "console.settings",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": "modeldeck-bench",
        "MODELDECK_DATA_DIR": str(tmp),
        "MODELDECK_SANDBOX_ENGINE_URL": engine_url,
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    import redis

    if redis.Redis.from_url(redis_url).dbsize():
        raise SystemExit(
            f"{redis_url} holds keys: the bench only uses (and at the end flushes) an empty Redis "
            "database. Pass another with REDIS_URL=redis://127.0.0.1:6379/N."
        )
    secret = setup_data(env)
    uvicorn = [
        sys.executable,
        "-m",
        "uvicorn",
        "--host",
        "127.0.0.1",
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    procs = [
        subprocess.Popen(
            [
                *uvicorn,
                "--port",
                str(engine_port),
                "--factory",
                "sandbox.engine:SimulatedEngine",
            ],
            env=env,
            cwd=ROOT,
        ),
        subprocess.Popen(
            [*uvicorn, "--port", str(gateway_port), "console.asgi:application"], env=env, cwd=ROOT
        ),
    ]
    try:
        wait_for(engine_url + "/health")
        wait_for(f"http://127.0.0.1:{gateway_port}/healthz")
        direct = engine_url + "/v1/chat/completions"
        through = f"http://127.0.0.1:{gateway_port}/v1/chat/completions"
        auth = {"authorization": f"Bearer {secret}"}
        print(
            f"ModelDeck gateway bench — loopback, {os.cpu_count()} CPUs, engine with zero simulated latency"
        )
        print(
            f"\nSequential ({args.sequential} requests, concurrency 1; {args.rounds} rounds interleaved):"
        )
        d_lat, g_lat, added = [], [], []
        d_wall = g_wall = 0.0
        for _ in range(args.rounds):
            d, dw, _ = asyncio.run(run_load(direct, {}, args.sequential // args.rounds, 1))
            g, gw, _ = asyncio.run(run_load(through, auth, args.sequential // args.rounds, 1))
            added.append(statistics.median(g) - statistics.median(d))
            d_lat, g_lat, d_wall, g_wall = d_lat + d, g_lat + g, d_wall + dw, g_wall + gw
        print(row("direct (engine)", d_lat, d_wall))
        print(row("through gateway", g_lat, g_wall))
        added_p50_c1 = statistics.median(added)  # the median of the rounds' added p50s
        print(
            f"  added latency          p50 {added_p50_c1:+7.2f} ms   "
            f"p99 {percentile(g_lat, 0.99) - percentile(d_lat, 0.99):+7.2f} ms"
        )
        print(
            f"\nConcurrent ({args.requests} requests, concurrency {args.concurrency}; "
            f"{args.rounds} rounds, direct and gateway interleaved):"
        )
        # Interleaved rounds, the median of their ratios: a neighbour's load on this shared machine
        # then weighs on both sides of a ratio instead of on one run.
        warm = min(args.concurrency, 20)  # run_load's warm-up requests count in the CPU too
        ratios, d_all, g_all, d_walls, g_walls = [], [], [], 0.0, 0.0
        engine_cpu = gateway_cpu = redis_cpu = client_cpu = g_engine_cpu = 0.0
        for _ in range(args.rounds):
            engine_before = cpu_seconds(procs[0].pid)
            d_lat, d_wall, _ = asyncio.run(run_load(direct, {}, args.requests, args.concurrency))
            engine_cpu += cpu_seconds(procs[0].pid) - engine_before
            cpu_before, redis_before = cpu_seconds(procs[1].pid), redis_cpu_seconds(redis_url)
            engine_before, client_before = cpu_seconds(procs[0].pid), own_cpu_seconds()
            g_lat, g_wall, _ = asyncio.run(run_load(through, auth, args.requests, args.concurrency))
            gateway_cpu += cpu_seconds(procs[1].pid) - cpu_before
            redis_cpu += redis_cpu_seconds(redis_url) - redis_before
            client_cpu += own_cpu_seconds() - client_before
            g_engine_cpu += cpu_seconds(procs[0].pid) - engine_before
            ratios.append((len(g_lat) / g_wall) / (len(d_lat) / d_wall))
            d_all += d_lat
            g_all += g_lat
            d_walls += d_wall
            g_walls += g_wall
        per_run = args.rounds * (args.requests + warm)
        ratio = statistics.median(ratios)
        cpu_ms = gateway_cpu * 1000 / per_run
        print(row("direct (engine)", d_all, d_walls))
        print(row("through gateway", g_all, g_walls))
        print(
            f"  throughput ratio       {ratio:.2f} (gateway / direct; rounds {', '.join(f'{r:.2f}' for r in ratios)})"
        )
        print(f"  gateway CPU            {cpu_ms:.2f} ms per request")
        # When all are CPU-bound on this machine's cores the ratio tends to
        # (engine + client) CPU ÷ (engine + client + gateway + Redis) CPU.
        print(
            f"  engine CPU             {engine_cpu * 1000 / per_run:.2f} ms per request (direct runs)"
        )
        print(
            f"  Redis CPU              {redis_cpu * 1000 / per_run:.2f} ms per request (gateway runs)"
        )
        # Every process of a gateway run shares this machine's cores: their CPU per request bounds
        # the gateway's requests/s whatever the gateway does with its own share.
        total = (gateway_cpu + redis_cpu + client_cpu + g_engine_cpu) * 1000 / per_run
        cores = os.cpu_count() or 1
        print(
            f"  all processes          {total:.2f} ms CPU per request through the gateway "
            f"(client {client_cpu * 1000 / per_run:.2f}, engine {g_engine_cpu * 1000 / per_run:.2f}); "
            f"at most {cores * 1000 / total:.0f} req/s on {cores} cores"
        )
        multi_ratio, multi_cpu_ms, workers = scaled_out(args, env, uvicorn, engine_url, auth, direct)
        print(f"\nStreams ({args.sequential} requests, concurrency 1):")
        _, _, d_ttft = asyncio.run(run_load(direct, {}, args.sequential, 1, stream=True))
        _, _, g_ttft = asyncio.run(run_load(through, auth, args.sequential, 1, stream=True))
        print(
            f"  TTFT direct            p50 {statistics.median(d_ttft):7.2f} ms   p99 {percentile(d_ttft, 0.99):7.2f} ms"
        )
        print(
            f"  TTFT through gateway   p50 {statistics.median(g_ttft):7.2f} ms   p99 {percentile(g_ttft, 0.99):7.2f} ms"
        )
        print(
            f"  TTFT added             p50 {statistics.median(g_ttft) - statistics.median(d_ttft):+7.2f} ms"
        )
        print(f"\nStreams ({args.requests} requests, concurrency {args.concurrency}):")
        cpu_before = cpu_seconds(procs[1].pid)
        s_lat, s_wall, _ = asyncio.run(
            run_load(through, auth, args.requests, args.concurrency, stream=True)
        )
        stream_cpu_ms = (cpu_seconds(procs[1].pid) - cpu_before) * 1000 / (args.requests + warm)
        print(row("through gateway", s_lat, s_wall))
        print(f"  gateway CPU            {stream_cpu_ms:.2f} ms per streamed request")
        print(
            f"\nUpstream pool, {args.requests} requests at concurrency {args.concurrency} straight to the engine:"
        )
        for name, rps in asyncio.run(
            upstream_clients(engine_url, args.requests, args.concurrency)
        ).items():
            print(f"  {name:<22} {rps:8.0f} req/s")
        pending = redis.Redis.from_url(redis_url).xlen("modeldeck:gateway:usage-stream")
        print(f"\nUsage events queued in the Redis stream for flush_usage: {pending}")
        print(f"\ngateway throughput ratio c{args.concurrency}: {ratio:.2f}")
        print(f"gateway cpu ms per request: {cpu_ms:.2f}")
        print(f"gateway added p50 ms c1: {added_p50_c1:.2f}")
        print(f"gateway throughput ratio c{args.concurrency} with {workers} processes: {multi_ratio:.2f}")
        print(f"gateway cpu ms per request with {workers} processes: {multi_cpu_ms:.2f}")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)
        redis.Redis.from_url(redis_url).flushdb()  # empty when we started: only this run's keys


if __name__ == "__main__":
    main()
