"""Autoscaling: time to first byte from zero replicas, the gateway's added latency with load
measurement on vs. off, and how many held requests the cold-start queue carried.

Runs against a PostgreSQL database of its own (bench/seed.py: created, then dropped), an empty
Redis database (BENCH_REDIS_URL, default DB 15; flushed before and after), an in-process sandbox
cluster whose pods take `--cold-start` seconds to become Ready, reached through the sandbox's
ingress (only Ready pods answer), the console (gateway + Django) under uvicorn in a thread, and
a thread playing Celery beat (the autoscaler and the status sync every 0.5 s, the default tick
being 2 s):

1. `autoscale ttfb from zero s`: a streamed request to a deployment at zero replicas until its
   first byte, against the configured cold start (median of `--cold-runs`);
2. `autoscale measurement added ms p50` and `... latency ratio on/off`: sequential requests
   through the gateway to a running deployment, with the per-request load measurement
   (gateway/load.py: one pipeline at admit, five commands folded into the usage pipeline at
   the finish) on, then off;
3. `autoscale held requests carried`: `--burst` concurrent requests at zero, how many got their
   200 after the replica came up (the rest would be 503s: loss).

Usage: BENCH_REDIS_URL=redis://127.0.0.1:6379/15 .venv/bin/python bench/autoscale.py [--cold-start 2]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from seed import bench_database  # noqa: E402  (bench/ is not a package)

CHAT = {"model": "qwen", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def setup_django(data_dir: str, database_url: str, redis_url: str) -> None:
    os.environ["REDIS_URL"] = redis_url
    os.environ.setdefault("SECRET_KEY", "modeldeck-bench")  # production mode (Redis) requires one
    os.environ["MODELDECK_DATA_DIR"] = data_dir
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from console.celery import app

    app.conf.task_always_eager = True  # pushes and wakes run in-process, as a worker would


def start_console():
    import uvicorn
    from django.core.asgi import get_asgi_application

    from gateway.app import mount

    app = mount(get_asgi_application())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return app, server, f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold-start", type=float, default=2.0)
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--burst", type=int, default=50)
    args = parser.parse_args()
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
    import redis

    rclient = redis.Redis.from_url(redis_url)
    if rclient.dbsize():
        sys.exit(f"{redis_url} holds keys; give an empty database in BENCH_REDIS_URL")
    try:
        with tempfile.TemporaryDirectory(prefix="modeldeck-bench-") as data_dir, bench_database("autoscale") as url:
            setup_django(data_dir, url, redis_url)
            run(args)
    finally:
        rclient.flushdb()


def run(args) -> None:
    import httpx
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection

    from catalog.models import CatalogModel, ProfileBundle
    from deployments.autoscale import autoscale_all
    from deployments.models import ComputePool, DeploymentScale, PoolExposure, PoolKind
    from deployments.services import deployment_create, pool_test_connection
    from deployments.tasks import sync_status
    from projects.keys import api_key_create
    from projects.models import Membership, Organization, Role
    from projects.services import project_create
    from sandbox.engine import SimulatedEngine, run_engine_in_thread
    from sandbox.kubelet import SandboxCluster

    settings.MODELDECK_AUTOSCALE_WINDOW_SECONDS = 2
    settings.MODELDECK_GATEWAY_HOLD_QUEUE = max(100, args.burst)
    engine_url, _ = run_engine_in_thread(engine=SimulatedEngine())
    cluster = SandboxCluster(ready_delay=args.cold_start, tick=0.05, engine_url=engine_url)
    cluster.start()
    # The in-process cluster counts as the sandbox this ModelDeck started (as `make run` does).
    settings.SANDBOX_POOLS_ENABLED = True
    settings.SANDBOX_KUBE_URLS = [cluster.url.rstrip("/")]
    user = get_user_model().objects.create(username="bench")
    org = Organization.objects.create(name="Bench", slug="bench", gpu_quota=100)
    Membership.objects.create(user=user, organization=org, role=Role.ADMIN)
    project = project_create(user=None, organization=org, name="Bench", slug="bench", gpu_quota=100)
    bundle = ProfileBundle.objects.create(organization=org, name="vllm", engine="vllm", image="vllm/vllm-openai:v0.8.5",
                                          labels={ProfileBundle.ENGINE_LABEL: "vllm"})  # fmt: skip
    model = CatalogModel.objects.create(organization=org, name="qwen", source="huggingface",
                                        repo_id="Qwen/Qwen2.5-0.5B-Instruct")  # fmt: skip
    pool = ComputePool.objects.create(
        organization=org, name="edge", kind=PoolKind.SANDBOX, api_url=cluster.url, engine_label="vllm",
        exposure=PoolExposure.INGRESS, exposure_host="models.bench.test", exposure_address=cluster.network.url,
    )  # fmt: skip
    pool_test_connection(user=None, pool=pool)
    # In-cluster sandbox pools reach the engine straight (no ingress hop): the latency compared
    # in part 2 is the gateway's own, not the sandbox network's.
    settings.SANDBOX_ENGINE_URL = engine_url
    direct = ComputePool.objects.create(organization=org, name="direct", kind=PoolKind.SANDBOX,
                                        api_url=cluster.url, engine_label="vllm")  # fmt: skip
    _, secret = api_key_create(user=user, organization=org, name="bench")
    headers = {"authorization": f"Bearer {secret}"}
    deployment = deployment_create(
        user=user, project=project, model=model, pool=pool, name="qwen", bundle=bundle,
        spec={"served_model_name": "qwen", "resources": {"cpu": "1", "memory": "2Gi", "gpus": 1},
              "replicas": {"min": 0, "max": 1},
              "autoscaling": {"metric": "concurrency", "target": 4, "scale_down_delay_seconds": 0,
                              "scale_to_zero_after_seconds": 1, "cold_start_hold_seconds": 120}},
    )  # fmt: skip
    # An autoscaled deployment that never leaves one replica (min 1, max 1): the gateway measures
    # load only for autoscaled deployments, and this one stays up whether the measurement (which
    # the autoscaler's idle clock reads) is on or off.
    deployment_create(
        user=user, project=project, model=model, pool=direct, name="fixed", bundle=bundle,
        spec={"served_model_name": "fixed", "resources": {"cpu": "1", "memory": "2Gi", "gpus": 1},
              "replicas": {"min": 1, "max": 1},
              "autoscaling": {"enabled": True, "metric": "concurrency", "target": 4}},
    )  # fmt: skip
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            autoscale_all()
            sync_status()
            stop.wait(0.5)
        connection.close()

    threading.Thread(target=beat, daemon=True).start()
    app, server, base = start_console()

    def at_zero() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            scale = DeploymentScale.objects.filter(deployment=deployment).first()
            if scale and scale.desired == 0 and scale.ready == 0 and scale.pods == 0:
                time.sleep(0.6)  # the gateway has the published zero
                return
            time.sleep(0.1)
        raise RuntimeError("the deployment did not reach zero")

    try:
        # 1. Time to first byte from zero.
        ttfb = []
        with httpx.Client(timeout=180) as client:
            for _ in range(args.cold_runs):
                at_zero()
                started = time.perf_counter()
                with client.stream("POST", base + "/chat/completions", json={**CHAT, "stream": True},
                                   headers=headers) as response:  # fmt: skip
                    assert response.status_code == 200, response.status_code
                    for index, _chunk in enumerate(response.iter_bytes()):
                        if index == 0:
                            ttfb.append(time.perf_counter() - started)
        print(f"autoscale ttfb from zero s: median {statistics.median(ttfb):.2f} (runs {', '.join(f'{t:.2f}' for t in ttfb)}) "
              f"against a configured cold start of {args.cold_start:.2f} s")

        # 2. Added latency, measurement on vs off, alternating rounds (a fixed-size deployment).
        def sequential(n: int) -> list[float]:
            out = []
            with httpx.Client(timeout=60) as client:
                for _ in range(n):
                    started = time.perf_counter()
                    response = client.post(base + "/chat/completions", json={**CHAT, "model": "fixed"},
                                           headers=headers)  # fmt: skip
                    out.append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 200, response.text
            return out

        sequential(20)  # warm: up from zero, caches filled
        results = {}
        for _round in range(4):
            for measure in (True, False):
                app.gateway.measure_load = measure
                results.setdefault(measure, []).extend(sequential(args.requests // 4))
        app.gateway.measure_load = True
        on, off = statistics.median(results[True]), statistics.median(results[False])
        print(f"autoscale measurement added ms p50: {on - off:.3f} (gateway p50 {on:.2f} ms on, {off:.2f} ms off)")
        print(f"autoscale latency ratio on/off p50: {on / off:.3f}")

        # 3. Held requests carried through a cold start.
        at_zero()
        carried_before = app.gateway.holds.carried

        def call(_: int) -> int:
            return httpx.post(base + "/chat/completions", json=CHAT, headers=headers, timeout=180).status_code

        with ThreadPoolExecutor(args.burst) as executor:
            statuses = list(executor.map(call, range(args.burst)))
        ok = statuses.count(200)
        print(f"autoscale held requests carried: {ok}/{args.burst} got 200 after the cold start "
              f"({app.gateway.holds.carried - carried_before} released from the hold queue), "
              f"{args.burst - ok} lost")
    finally:
        stop.set()
        server.should_exit = True
        time.sleep(0.5)
        cluster.stop()


if __name__ == "__main__":
    main()
