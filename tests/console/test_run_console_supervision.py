"""`make run` supervises its processes (console/supervisor.py): one that exits is started again
and the others keep running; one that keeps exiting stops the run; SIGTERM stops every process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from console.supervisor import GaveUp, Supervisor

ROOT = Path(__file__).resolve().parents[2]
SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has exited all the same.
    return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"


def _until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def supervisor():
    lines: list[str] = []
    supervisor = Supervisor(
        env=dict(os.environ), log=lines.append, first_delay=0.2, limit=3, window=60
    )
    supervisor.lines = lines
    yield supervisor
    supervisor.stop()


def test_a_killed_worker_is_started_again_and_web_keeps_running(supervisor):
    web = supervisor.start("web", SLEEPER)
    worker = supervisor.start("worker", SLEEPER)
    web_pid, old_worker_pid = web.pid(), worker.pid()
    os.kill(old_worker_pid, signal.SIGKILL)

    def restarted() -> bool:
        supervisor.check()
        return worker.pid() != old_worker_pid

    _until(restarted)
    assert _alive(worker.pid()) and not _alive(old_worker_pid)
    assert web.pid() == web_pid and _alive(web_pid)
    assert supervisor.lines == [
        "worker was killed by SIGKILL after 0 s; starting it again in 0.2 s (exit 1 of 2 allowed within 60 s)",
        f"worker started again (pid {worker.pid()})",
    ]
    supervisor.stop()
    assert not _alive(web_pid) and not _alive(worker.pid())


def test_the_pause_before_a_restart_doubles_while_it_keeps_exiting(supervisor):
    worker = supervisor.start("worker", [sys.executable, "-c", "raise SystemExit(3)"])
    starts = [time.monotonic()]
    seen_pids = {worker.pid()}

    def started_again() -> bool:
        supervisor.check()
        if worker.pid() not in seen_pids:
            seen_pids.add(worker.pid())
            starts.append(time.monotonic())
        return len(starts) == 3

    _until(started_again)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert 0.2 <= gaps[0] < 0.4 + 0.3 and 0.4 <= gaps[1] < 0.8 + 0.3
    assert "starting it again in 0.4 s (exit 2 of 2 allowed within 60 s)" in supervisor.lines[-2]


def test_a_process_that_keeps_exiting_stops_the_run_with_the_reason(supervisor):
    web = supervisor.start("web", SLEEPER)
    supervisor.start("worker", [sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(GaveUp) as gave_up:
        deadline = time.monotonic() + 15  # 0.2 + 0.4 s of pauses, and three Python start-ups
        while time.monotonic() < deadline:
            supervisor.check()
            time.sleep(0.02)
    assert str(gave_up.value) == (
        "worker has exited 3 times within 60 s (last: exited with code 3 after 0 s); "
        "stopping ModelDeck, its log above says why."
    )
    assert _alive(web.pid())  # the caller stops the rest (run() does, in its finally)
    supervisor.stop()
    assert not _alive(web.pid())


RUN = """
import os, sys
from console.supervisor import Supervisor
supervisor = Supervisor(env=dict(os.environ), log=lambda line: print(line, flush=True), first_delay=0.1)
children = [supervisor.start(name, [sys.executable, "-c", "import time; time.sleep(120)"]) for name in ("web", "worker")]
print(*[child.pid() for child in children], flush=True)
sys.exit(supervisor.run(tick=0.05))
"""


def test_sigterm_stops_every_process_even_after_a_restart():
    run = subprocess.Popen([sys.executable, "-c", RUN], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        web_pid, worker_pid = map(int, run.stdout.readline().split())
        os.kill(worker_pid, signal.SIGKILL)
        assert run.stdout.readline().startswith("worker was killed by SIGKILL")
        restarted = run.stdout.readline()
        assert restarted.startswith("worker started again (pid ")
        new_worker_pid = int(restarted.rsplit(" ", 1)[1].rstrip(")\n"))
        assert _alive(web_pid) and _alive(new_worker_pid)
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=15) == 0
        assert run.stdout.read() == "SIGTERM: stopping every process\n"
        assert not _alive(web_pid) and not _alive(new_worker_pid)
    finally:
        if run.poll() is None:
            run.kill()


def test_a_process_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path):
    lines: list[str] = []
    supervisor = Supervisor(env=dict(os.environ), log=lines.append, stop_timeout=0.5)
    ready = tmp_path / "ready"
    stubborn = supervisor.start("sandbox", [
        sys.executable, "-c",
        "import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "pathlib.Path(sys.argv[1]).touch(); time.sleep(120)", str(ready),
    ])  # fmt: skip
    _until(ready.exists)
    started = time.monotonic()
    supervisor.stop()
    assert time.monotonic() - started < 5
    assert not _alive(stubborn.pid())
    assert lines == ["sandbox did not stop within 0.5 s; killing it"]


# A child that counts the SIGTERMs it gets (one line each in its file), then exits after 0.3 s,
# and, with an argument, starts a grandchild of its own first (as the Celery worker its pool).
COUNTER = """
import os, signal, subprocess, sys, time
# Unbuffered: a SIGTERM landing while "ready" is being written must not make the handler's own
# write a reentrant call on a buffered file (RuntimeError; seen once in CI).
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
def say(text):
    os.write(fd, text.encode())
def on_term(signum, frame):
    say("TERM\\n")
    time.sleep(0.3)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
if len(sys.argv) > 2:
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    open(sys.argv[2], "w").write(str(grandchild.pid))
say("ready\\n")
time.sleep(120)
"""

RUN_COUNTERS = """
import os, sys
from console.supervisor import Supervisor
supervisor = Supervisor(env=dict(os.environ), log=lambda line: print(line, flush=True), first_delay=0.1)
children = [supervisor.start(name, [sys.executable, "-c", sys.argv[1], sys.argv[2] + name, sys.argv[2] + name + ".pid"])
            for name in ("web", "worker")]
print(*[child.pid() for child in children], flush=True)
sys.exit(supervisor.run(tick=0.05))
"""


def _start_counters(tmp_path: Path) -> tuple[subprocess.Popen, list[int], list[Path]]:
    # A session of its own, as `setsid make run`: the group a `kill -- -<pgid>` signals.
    run = subprocess.Popen([sys.executable, "-c", RUN_COUNTERS, COUNTER, f"{tmp_path}/"], cwd=ROOT,
                           stdout=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    pids = list(map(int, run.stdout.readline().split()))
    files = [tmp_path / name for name in ("web", "worker")]
    _until(lambda: all(f.exists() and "ready" in f.read_text() for f in files))
    return run, pids, files


def test_a_signal_to_the_whole_group_reaches_each_process_once_through_the_supervisor(tmp_path):
    run, pids, files = _start_counters(tmp_path)
    grandchildren = [int((tmp_path / f"{name}.pid").read_text()) for name in ("web", "worker")]
    try:
        os.killpg(run.pid, signal.SIGTERM)  # `kill -TERM -- -<pgid>` of `make run`
        assert run.wait(timeout=15) == 0
        # One SIGTERM each, the supervisor's: not the group's as well (which reached a Celery
        # worker's pool processes directly, killing them mid-task).
        assert [f.read_text().splitlines() for f in files] == [["ready", "TERM"]] * 2
        assert not any(_alive(pid) for pid in pids)
    finally:
        for pid in grandchildren:  # this test's children don't stop their own (Celery does)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if run.poll() is None:
            run.kill()


def test_a_killed_supervisor_takes_its_processes_with_it(tmp_path):
    run, pids, files = _start_counters(tmp_path)
    grandchildren = [int((tmp_path / f"{name}.pid").read_text()) for name in ("web", "worker")]
    try:
        run.kill()  # SIGKILL: no stop() runs
        run.wait(timeout=5)
        _until(lambda: not any(_alive(pid) for pid in pids))  # PR_SET_PDEATHSIG: SIGTERM each
        assert [f.read_text().splitlines() for f in files] == [["ready", "TERM"]] * 2
    finally:
        for pid in [*pids, *grandchildren]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_what_a_killed_process_left_in_its_group_goes_with_it(supervisor, tmp_path):
    out = tmp_path / "worker"
    worker = supervisor.start("worker", [sys.executable, "-c", COUNTER, str(out), str(tmp_path / "pool.pid")])
    _until(lambda: out.exists() and "ready" in out.read_text())
    pool = int((tmp_path / "pool.pid").read_text())
    os.kill(worker.pid(), signal.SIGKILL)  # the worker dies; its pool process would be orphaned
    _until(lambda: (supervisor.check(), not _alive(pool))[1])


# A process that, when told to stop, writes whether the service (its pid in argv[2]) still runs.
CLIENT = """
import os, signal, sys, time
# Unbuffered: a SIGTERM landing while "ready" is being written must not make the handler's own
# write a reentrant call on a buffered file (RuntimeError; seen once in CI).
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
def say(text):
    os.write(fd, text.encode())
def on_term(signum, frame):
    try:
        os.kill(int(open(sys.argv[2]).read()), 0)
        say("service up\\n")
    except (OSError, ValueError):
        say("service gone\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
say("ready\\n")
time.sleep(120)
"""


def test_the_services_stop_after_the_processes_that_call_them(supervisor, tmp_path):
    """Ctrl-C stops web, worker and beat first and the sandbox after them: a worker finishing its
    task on the way out still reaches the sandbox's Kubernetes API (with all stopped at once, the
    sync task found it gone and logged "ModelDeployment list failed" on every Ctrl-C)."""
    service_out, service_pid = tmp_path / "sandbox", tmp_path / "sandbox.pid"
    service = supervisor.start("sandbox", [sys.executable, "-c", COUNTER, str(service_out)], service=True)
    service_pid.write_text(str(service.pid()))
    outs = [tmp_path / name for name in ("web", "worker")]
    for out in outs:
        supervisor.start(out.name, [sys.executable, "-c", CLIENT, str(out), str(service_pid)])
    _until(lambda: all(f.exists() and "ready" in f.read_text() for f in [service_out, *outs]))
    supervisor.stop()
    assert [f.read_text().splitlines() for f in outs] == [["ready", "service up"]] * 2
    assert service_out.read_text().splitlines() == ["ready", "TERM"]
    assert not _alive(service.pid())
