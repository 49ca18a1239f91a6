"""Run the whole console in the foreground: web (ASGI), Celery worker and beat, and the sandbox.

A process that exits is started again, and the others keep running (console/supervisor.py);
Ctrl-C stops all of them. This is what `make run` calls after migrating.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
import threading
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from console.supervisor import Supervisor
from deployments.demo import sandbox_pools_follow, sandbox_pools_test


def _url_port(url: str) -> int:
    return int(url.rsplit(":", 1)[-1].split("/")[0])


def _free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _any_free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def web_port_taken(host: str, port: int) -> bool:
    """Whether something already listens there. SO_REUSEADDR as uvicorn binds: a port only held
    by connections closing (TIME_WAIT) after an earlier run is not taken."""
    family, kind, proto, _name, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError:
            return True
    return False


def helper_port(host: str, wanted: int, taken: set[int]) -> int:
    """The helper's port derived from MODELDECK_PORT (settings.HELPER_PORTS) when it is free, else
    any free one: a second instance, or another program on that port, never makes it collide."""
    port = wanted if wanted not in taken and _free(host, wanted) else _any_free_port(host)
    while port in taken:
        port = _any_free_port(host)
    taken.add(port)
    return port


class Command(BaseCommand):
    help = "Start web, worker, beat and the sandbox compute pool together, restarting any that exits; Ctrl-C stops them all."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=settings.MODELDECK_PORT)
        parser.add_argument("--no-sandbox", action="store_true", help="Do not start the sandbox compute pool.")

    def handle(self, *args, host: str, port: int, no_sandbox: bool, **options) -> None:
        if web_port_taken(host, port):
            # Else the web server would fail, be started again and fail until the supervisor gives up.
            raise CommandError(
                f"Port {port} on {host} is in use (another `make run`, or another program); "
                "stop it, or set MODELDECK_PORT to a free port."
            )
        python = sys.executable
        env = os.environ.copy()
        env.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
        env["PYTHONUNBUFFERED"] = "1"
        logs = Path(settings.MODELDECK_DATA_DIR) / "logs"
        logs.mkdir(parents=True, exist_ok=True)

        commands: list[tuple[str, list[str]]] = []
        sandbox_url = ""
        loopback = "127.0.0.1"
        taken = {port}
        if not no_sandbox and importlib.util.find_spec("sandbox.__main__"):
            kube_port = helper_port(loopback, _url_port(settings.SANDBOX_KUBE_URL), taken)
            engine_port = helper_port(loopback, _url_port(settings.SANDBOX_ENGINE_URL), taken)
            kube_url, engine_url = f"http://{loopback}:{kube_port}", f"http://{loopback}:{engine_port}"
            env["MODELDECK_SANDBOX_KUBE_URL"], env["MODELDECK_SANDBOX_ENGINE_URL"] = kube_url, engine_url
            if kube_url != settings.SANDBOX_KUBE_URL:
                self.stdout.write(f"port {_url_port(settings.SANDBOX_KUBE_URL)} is taken: the sandbox's "
                                  f"Kubernetes API listens on {kube_port}")  # fmt: skip
            sandbox_url = kube_url
            settings.SANDBOX_KUBE_URL = kube_url  # this process tests the pools at it (sandbox_pools_test)
            if sandbox_pools_follow(kube_url):
                self.stdout.write(f"sandbox compute pools now point at {kube_url}")
            commands.append((
                "sandbox",
                [python, "-m", "sandbox", "--kube-port", str(kube_port), "--engine-port", str(engine_port),
                 # e.g. nim-operator,kserve,gateway-api: the sandbox serves those operators' CRDs;
                 # ModelDeck's own ModelDeployment CRD is there by default (its controller).
                 "--crds", os.environ.get("MODELDECK_SANDBOX_CRDS", "modeldeck")],
            ))  # fmt: skip
        if settings.EMBEDDED and "MODELDECK_HF_ENDPOINT" not in os.environ and importlib.util.find_spec("sandbox.offline_hub"):
            # No network is assumed in the embedded demo: serve the recorded Hub snapshot through
            # the same client code. Set MODELDECK_HF_ENDPOINT=https://huggingface.co to use the live Hub.
            hub_port = helper_port(loopback, settings.HELPER_PORTS["hub"], taken)
            env["MODELDECK_HF_ENDPOINT"] = f"http://{loopback}:{hub_port}"
            commands.append(("offline-hub", [python, "-m", "sandbox.offline_hub", "--port", str(hub_port)]))
            if importlib.util.find_spec("sandbox.offline_ngc") and "MODELDECK_NGC_API_URL" not in os.environ:
                ngc_port = helper_port(loopback, settings.HELPER_PORTS["ngc"], taken)
                env["MODELDECK_NGC_API_URL"] = f"http://{loopback}:{ngc_port}"
                commands.append(("offline-ngc", [python, "-m", "sandbox.offline_ngc", "--port", str(ngc_port)]))
        commands += [
            ("web", [python, "-m", "uvicorn", "console.asgi:application", "--host", host, "--port", str(port),
                     "--no-access-log", "--lifespan", "off"]),
            # WARNING: the periodic sync and flush would otherwise log twice every 5 seconds.
            # Threads, not Celery's default process pool: a foreground run stops on Ctrl-C in
            # about 1 s instead of 3-4 s (billiard's pool threads each wait out a 1 s sleep), and
            # starts one process fewer per slot. Production's worker (deploy/kubernetes) keeps
            # the process pool.
            ("worker", [python, "-m", "celery", "-A", "console", "worker", "--loglevel", "WARNING",
                        "--concurrency", "2", "--pool", "threads", "--without-gossip", "--without-mingle",
                        "-n", "worker@%h"]),
            ("beat", [python, "-m", "celery", "-A", "console", "beat", "--loglevel", "WARNING",
                      "--schedule", str(Path(settings.MODELDECK_DATA_DIR) / "celerybeat-schedule")]),
        ]

        def log(line: str) -> None:
            self.stderr.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} run_console: {line}")

        supervisor = Supervisor(env=env, log=log)
        for name, cmd in commands:
            self.stdout.write(f"starting {name}: {' '.join(cmd[1:])}")
            service = name in {"sandbox", "offline-hub", "offline-ngc"}
            supervisor.start(name, cmd, service=service)  # the services stop after web and worker
            if service:
                time.sleep(0.5)

        if sandbox_url:
            # The first look at Compute Pools: the sandbox Connected with its GPUs counted.
            threading.Thread(target=sandbox_pools_test, args=(sandbox_url,), daemon=True,
                             name="sandbox-pool-test").start()  # fmt: skip

        url = f"http://{host}:{port}/"
        login = "admin / " + (settings.MODELDECK_ADMIN_PASSWORD or "(password not set)")
        self.stdout.write(self.style.SUCCESS(
            f"\nModelDeck is starting on {url}\n  sign in: {login}\n  API:     {url}api/v1/  (schema: {url}api/schema/)\n"
            f"  health:  {url}healthz\nPress Ctrl-C to stop everything.\n"
        ))
        # A process that exits is started again (console/supervisor.py); one that keeps exiting
        # stops the run with the reason.
        code = supervisor.run()
        if code:
            raise SystemExit(code)
