"""`make run`'s helper servers: ports follow MODELDECK_PORT, and a taken one is replaced by a free one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from console.management.commands.run_console import helper_port, web_port_taken


def test_helper_ports_follow_modeldeck_port():
    env = {**os.environ, "MODELDECK_PORT": "9100", "DJANGO_SETTINGS_MODULE": "console.settings"}
    for name in ("MODELDECK_SANDBOX_KUBE_URL", "MODELDECK_SANDBOX_ENGINE_URL"):
        env.pop(name, None)
    out = subprocess.run(
        [sys.executable, "-c", "from django.conf import settings as s; "
         "print(s.HELPER_PORTS['hub'], s.SANDBOX_KUBE_URL, s.SANDBOX_ENGINE_URL, s.HELPER_PORTS['ngc'])"],
        env=env, capture_output=True, text=True, check=True, timeout=60,
    ).stdout.split()  # fmt: skip
    assert out == ["9192", "http://127.0.0.1:9193", "http://127.0.0.1:9194", "9195"]


def test_a_taken_helper_port_is_replaced_by_a_free_one():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken_port = busy.getsockname()[1]
        taken: set[int] = set()
        chosen = helper_port("127.0.0.1", taken_port, taken)
        assert chosen != taken_port and chosen in taken
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", chosen))  # really free
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    assert helper_port("127.0.0.1", port, set()) == port  # the derived one when it is free
    assert helper_port("127.0.0.1", port, {port}) != port  # never twice the same port in one run


@pytest.mark.django_db
def test_sandbox_pools_follow_the_sandbox_make_run_started(tenants):
    from deployments.demo import sandbox_pools_follow
    from deployments.models import ComputePool, PoolKind

    old = ComputePool.objects.create(organization=tenants.org, name="sandbox", kind=PoolKind.SANDBOX,
                                     api_url="http://127.0.0.1:39375", engine_label="vllm")  # fmt: skip
    other = ComputePool.objects.create(organization=tenants.org, name="gpu", kind=PoolKind.KUBECONFIG,
                                       api_url="https://10.0.0.1:6443", engine_label="vllm")  # fmt: skip
    assert sandbox_pools_follow("http://127.0.0.1:18493") == 1
    old.refresh_from_db()
    other.refresh_from_db()
    assert old.api_url == "http://127.0.0.1:18493" and other.api_url == "https://10.0.0.1:6443"
    assert sandbox_pools_follow("http://127.0.0.1:18493") == 0


def test_a_port_left_in_time_wait_by_an_earlier_run_is_not_taken():
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn's listener
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server side closes first: its port goes to TIME_WAIT
        client.close()
    assert not web_port_taken("127.0.0.1", port)


def test_make_run_refuses_a_web_port_something_listens_on():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert web_port_taken("127.0.0.1", port)
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "console.settings"}
        result = subprocess.run(
            [sys.executable, "manage.py", "run_console", "--no-sandbox", "--port", str(port)],
            env=env, capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2],
        )  # fmt: skip
    assert result.returncode == 1
    assert f"Port {port} on 127.0.0.1 is in use" in result.stderr
    assert "starting" not in result.stdout  # nothing was started


@pytest.mark.django_db(transaction=True)  # it closes its connection, as a thread of its own must
def test_make_run_tests_the_untested_sandbox_pool_once_its_sandbox_answers(tenants):
    """A new user's first look at Compute Pools said "Not tested yet" and "GPUs —" for the sandbox
    make run had just started; run_console now tests it once the sandbox answers."""
    from deployments.demo import sandbox_pools_test
    from deployments.models import ComputePool, PoolKind
    from sandbox.kubelet import SandboxCluster

    cluster = SandboxCluster(ready_delay=0.3, tick=0.05)
    cluster.start()
    try:
        pool = ComputePool.objects.create(organization=tenants.org, name="sandbox", kind=PoolKind.SANDBOX,
                                          api_url=cluster.url, engine_label="vllm")  # fmt: skip
        assert sandbox_pools_test(cluster.url, wait_seconds=5) == 1
        pool.refresh_from_db()
        assert pool.reachable and pool.last_check["ok"] and pool.last_checked_at is not None
        assert sum(node.get("gpus", 0) for node in pool.last_check["nodes"]) == 8, pool.last_check
        assert sandbox_pools_test(cluster.url, wait_seconds=5) == 0  # tested once, not at every start
    finally:
        cluster.stop()
    assert sandbox_pools_test("http://127.0.0.1:9", wait_seconds=0.5) == 0  # never answered: nothing
