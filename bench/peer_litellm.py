"""CPU per request of the ModelDeck gateway and of the LiteLLM proxy, side by side, same engine.

Optional peer bench (not part of `make bench`). It needs the LiteLLM proxy installed in a
virtual environment of its own, apart from ModelDeck's (their dependencies conflict), e.g.:

    uv venv var/litellm-venv && uv pip install --python var/litellm-venv/bin/python 'litellm[proxy]'

(`LITELLM_VENV` names another one.) Without it the script says so and exits 0.

Starts the simulated engine, the console (gateway with a key, access check, three-level limits
and metering on, as bench/gateway.py sets it up) and the LiteLLM proxy (one worker, a master
key only, the engine as an OpenAI-compatible model) on 127.0.0.1, then runs interleaved rounds
(ModelDeck, LiteLLM, ModelDeck, ...) of concurrent requests, so load on the machine falls on
both alike, and counts the CPU seconds each server process tree used during its own rounds.
Ends with:

    modeldeck cpu ms per request: <value>
    litellm cpu ms per request: <value>
    modeldeck/litellm cpu ratio: <value>

Usage: REDIS_URL=redis://127.0.0.1:6379/7 .venv/bin/python bench/peer_litellm.py [--rounds 4] [--requests 500]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MASTER_KEY = "sk-modeldeck-bench"


def _gateway_bench():
    # bench/gateway.py would shadow the product's `gateway` package as a plain import.
    spec = importlib.util.spec_from_file_location("gateway_bench", ROOT / "bench" / "gateway.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def litellm_binary() -> Path | None:
    venv = Path(os.environ.get("LITELLM_VENV", ROOT / "var" / "litellm-venv"))
    binary = venv / "bin" / "litellm"
    return binary if binary.exists() else None


def free_ports(n: int) -> list[int]:
    """n distinct free ports (held open together while chosen, so no two are the same)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tree_cpu_seconds(pid: int, cpu_seconds) -> float:
    """CPU seconds of a process and all its descendants (workers a server may fork)."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            total += cpu_seconds(current)
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                pending.extend(int(c) for c in children)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=500, help="requests per round")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    binary = litellm_binary()
    if binary is None:
        print(
            "peer_litellm skipped: no LiteLLM proxy found at "
            f"{os.environ.get('LITELLM_VENV', ROOT / 'var' / 'litellm-venv')}/bin/litellm. Install it in a "
            "separate virtual environment: uv venv var/litellm-venv && "
            "uv pip install --python var/litellm-venv/bin/python 'litellm[proxy]' (or set LITELLM_VENV)."
        )
        return
    sys.path.insert(0, str(ROOT / "bench"))
    from seed import bench_database

    with bench_database("peer") as database_url:
        run(args, binary, database_url, os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/7"))


def run(args: argparse.Namespace, binary: Path, database_url: str, redis_url: str) -> None:
    import redis

    gb = _gateway_bench()
    if redis.Redis.from_url(redis_url).dbsize():
        raise SystemExit(f"{redis_url} holds keys: pass an empty Redis database as REDIS_URL.")
    tmp = Path(tempfile.mkdtemp(prefix="modeldeck-peer-"))
    engine_port, gateway_port, litellm_port = free_ports(3)
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
    secret = gb.setup_data(env)
    config = tmp / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {gb.MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{gb.MODEL}\n"
        f"      api_base: {engine_url}/v1\n"
        "      api_key: none\n"
        "general_settings:\n"
        f"  master_key: {MASTER_KEY}\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
    )
    uvicorn = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--log-level", "warning",
               "--no-access-log"]  # fmt: skip
    litellm_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    litellm_env["LITELLM_LOG"] = "ERROR"
    procs = {
        "engine": subprocess.Popen([*uvicorn, "--port", str(engine_port), "--factory",
                                    "sandbox.engine:SimulatedEngine"], env=env, cwd=ROOT),  # fmt: skip
        "modeldeck": subprocess.Popen([*uvicorn, "--port", str(gateway_port), "console.asgi:application"],
                                      env=env, cwd=ROOT),  # fmt: skip
        "litellm": subprocess.Popen(
            [str(binary), "--config", str(config), "--host", "127.0.0.1", "--port", str(litellm_port),
             "--num_workers", "1"],
            env=litellm_env, cwd=tmp, stdout=subprocess.DEVNULL,
        ),  # fmt: skip
    }
    try:
        gb.wait_for(engine_url + "/health")
        gb.wait_for(f"http://127.0.0.1:{gateway_port}/healthz")
        gb.wait_for(f"http://127.0.0.1:{litellm_port}/health/liveliness", timeout=180)
        for name, proc in procs.items():
            if proc.poll() is not None:  # e.g. its port was taken meanwhile: another server answered
                raise SystemExit(f"{name} exited with {proc.returncode}; run the bench again")
        targets = {
            "modeldeck": (f"http://127.0.0.1:{gateway_port}/v1/chat/completions",
                          {"authorization": f"Bearer {secret}"}),
            "litellm": (f"http://127.0.0.1:{litellm_port}/v1/chat/completions",
                        {"authorization": f"Bearer {MASTER_KEY}"}),
        }  # fmt: skip
        cpu = {name: 0.0 for name in targets}
        count = {name: 0 for name in targets}
        rps = {name: [] for name in targets}
        print(f"peer bench: {args.rounds} interleaved rounds of {args.requests} requests at concurrency "
              f"{args.concurrency}, {os.cpu_count()} CPUs")  # fmt: skip
        for n in range(args.rounds):
            for name, (url, headers) in targets.items():
                before = tree_cpu_seconds(procs[name].pid, gb.cpu_seconds)
                latencies, wall, _ = asyncio.run(gb.run_load(url, headers, args.requests, args.concurrency))
                cpu[name] += tree_cpu_seconds(procs[name].pid, gb.cpu_seconds) - before
                # run_load's warm-up requests are counted as well (they used CPU too).
                count[name] += len(latencies) + min(args.concurrency, 20)
                rps[name].append(len(latencies) / wall)
                print(f"  round {n + 1} {name:<10} {len(latencies) / wall:8.0f} req/s   "
                      f"p50 {sorted(latencies)[len(latencies) // 2]:7.2f} ms")  # fmt: skip
        ms = {name: cpu[name] * 1000 / count[name] for name in targets}
        print(f"modeldeck cpu ms per request: {ms['modeldeck']:.2f}")
        print(f"litellm cpu ms per request: {ms['litellm']:.2f}")
        print(f"modeldeck/litellm cpu ratio: {ms['modeldeck'] / ms['litellm']:.3f}")
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        redis.Redis.from_url(redis_url).flushdb()  # empty when we started: only this run's keys


if __name__ == "__main__":
    main()
