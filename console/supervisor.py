"""Keeps `make run`'s processes up: one that exits is started again after a pause, the others go on.

A process that exits is started again after 1 s, then 2, 4, 8… (at most 30 s) while it keeps
exiting; exits older than the window (120 s) are forgotten. One that exits `limit` (5) times
within the window would only keep failing (a taken port, a broken install), so the supervisor
stops everything and says which process and how it last exited. The web server is treated like
the others: it is restarted, and pages are unreachable only while it starts again. SIGINT (Ctrl-C)
and SIGTERM stop every process, each given 10 s to finish before it is killed: first the ones that
use the others (web, worker, beat), then the services they call (`start(..., service=True)`: the
sandbox, the offline Hub), so a task the worker finishes on its way out still reaches them (it
used to find the sandbox's Kubernetes API gone and log "ModelDeployment list failed").

Each process runs in a process group of its own, so a signal to `make run`'s group (Ctrl-C, or
`kill -TERM -- -<pgid>`) reaches the supervisor only, which stops the processes one by one: the
Celery worker then finishes its pool's tasks and stops them itself (a signal to the whole group
reached its pool processes too, which died mid-task and were logged as errors). Each also gets
SIGTERM if the supervisor dies (PR_SET_PDEATHSIG), so killing the supervisor orphans nothing.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the supervisor dies (Linux; elsewhere nothing)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class GaveUp(Exception):
    """A process kept exiting; the message says which and how."""


@dataclass
class Child:
    name: str
    command: list[str]
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    exits: deque[float] = field(default_factory=deque)  # monotonic times, within the window
    restart_at: float | None = None  # a restart is due then
    service: bool = False  # called by the others: stopped after them

    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class Supervisor:
    def __init__(
        self,
        *,
        env: dict[str, str],
        log: Callable[[str], None],
        first_delay: float = 1.0,
        max_delay: float = 30.0,
        limit: int = 5,
        window: float = 120.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.env = env
        self.log = log
        self.first_delay, self.max_delay = first_delay, max_delay
        self.limit, self.window = limit, window
        self.stop_timeout = stop_timeout
        self.children: list[Child] = []
        self.stop_signal: int | None = None

    def start(self, name: str, command: list[str], *, service: bool = False) -> Child:
        child = Child(name=name, command=command, service=service)
        self.children.append(child)
        self._spawn(child)
        return child

    def _spawn(self, child: Child) -> None:
        child.restart_at = None
        child.started_at = time.monotonic()
        # A group of its own (see the module's docstring); the supervisor is single-threaded, so a
        # preexec_fn is safe here.
        child.process = subprocess.Popen(child.command, env=self.env, process_group=0,
                                         preexec_fn=_die_with_parent)  # fmt: skip

    def check(self) -> None:
        """One pass: note the processes that exited, restart those whose pause is over.
        Raises GaveUp when one exited `limit` times within the window."""
        now = time.monotonic()
        for child in self.children:
            if self.stop_signal is not None:
                return
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self._spawn(child)
                    self.log(f"{child.name} started again (pid {child.pid()})")
                continue
            code = child.process.poll() if child.process is not None else None
            if code is None:
                continue
            try:  # what it left behind in its group (a killed Celery worker's pool) goes with it
                os.killpg(child.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            child.exits.append(now)
            while child.exits and child.exits[0] < now - self.window:
                child.exits.popleft()
            ran = now - child.started_at
            if len(child.exits) >= self.limit:
                raise GaveUp(
                    f"{child.name} has exited {len(child.exits)} times within {self.window:.0f} s "
                    f"(last: {describe_exit(code)} after {ran:.0f} s); stopping ModelDeck, "
                    "its log above says why."
                )
            delay = min(self.max_delay, self.first_delay * 2 ** (len(child.exits) - 1))
            child.restart_at = now + delay
            self.log(
                f"{child.name} {describe_exit(code)} after {ran:.0f} s; starting it again in {delay:g} s "
                f"(exit {len(child.exits)} of {self.limit - 1} allowed within {self.window:.0f} s)"
            )

    def stop(self) -> None:
        """Terminate the running processes, newest first, the services after the others have
        exited; kill any still alive after the timeout."""
        for service in (False, True):
            self._stop([child for child in reversed(self.children) if child.service is service])

    def _stop(self, children: list[Child]) -> None:
        running = [child for child in children if child.process is not None and child.process.poll() is None]
        for child in running:
            child.process.terminate()
        deadline = time.monotonic() + self.stop_timeout
        for child in running:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.log(f"{child.name} did not stop within {self.stop_timeout:g} s; killing it")
                try:
                    os.killpg(child.process.pid, signal.SIGKILL)  # and its own children (a pool)
                except ProcessLookupError:
                    pass
                child.process.wait()

    def run(self, tick: float = 0.5) -> int:
        """Supervise until SIGINT/SIGTERM (exit status 0) or a process keeps exiting (1)."""

        def on_signal(signum: int, _frame) -> None:
            # Only a flag: the loop stops between two passes, never half way through a restart.
            self.stop_signal = signum

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while self.stop_signal is None:
                self.check()
                time.sleep(tick)
            self.log(f"{signal.Signals(self.stop_signal).name}: stopping every process")
            return 0
        except GaveUp as exc:
            self.log(str(exc))
            return 1
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
