"""The sandbox kubelet's container runtime: image pulls, starts, readiness, crashes, pod status, logs."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from sandbox.apimachinery import (
    now_rfc3339,
)
from sandbox.cluster_common import (
    BACKOFF_TEXT,
    _Container,
    _PodRun,
    _revise,
    _set_condition,
)
from sandbox.store import qos_class

log = logging.getLogger(__name__)

# The last line a container that crashes on purpose (SANDBOX_CRASH=1) logs.
CRASH_LOG_LINE = "RuntimeError: SANDBOX_CRASH=1: the sandbox engine exits on purpose"


class ContainerRuntime:
    """Mixed into Kubelet: runs each scheduled pod's containers through their simulated lives."""

    def _new_run(self, pod: dict) -> _PodRun:
        self._ip_counter += 1
        containers = {}
        for spec in (pod.get("spec") or {}).get("containers") or []:
            env = {
                e.get("name"): str(e.get("value", ""))
                for e in spec.get("env") or []
                if isinstance(e, dict)
            }
            delay = self.ready_delay
            if env.get("SANDBOX_READY_DELAY"):
                try:
                    delay = float(env["SANDBOX_READY_DELAY"])
                except ValueError:
                    pass
            run_for = None
            if (pod.get("spec") or {}).get("restartPolicy") in ("Never", "OnFailure"):
                run_for = self.job_duration  # a Job's container: it runs to completion
                try:
                    run_for = float(env.get("SANDBOX_RUN_SECONDS") or run_for)
                except ValueError:
                    pass
            containers[spec["name"]] = _Container(
                name=spec["name"], image=spec.get("image", ""), env=env, ready_delay=delay,
                since=time.monotonic(), run_for=run_for,
            )  # fmt: skip
        n = self._ip_counter
        return _PodRun(
            uid=pod["metadata"]["uid"],
            node=pod["spec"]["nodeName"],
            ip=f"10.244.{(n // 250) % 250}.{n % 250 + 2}",
            start_time=now_rfc3339(),
            containers=containers,
        )

    def _run_pods(self) -> None:
        pods = self.store.objects(self.rt["pods"])
        live = set()
        for pod in pods:
            spec = pod.get("spec") or {}
            if not spec.get("nodeName") or pod["metadata"].get("deletionTimestamp"):
                continue
            uid = pod["metadata"]["uid"]
            live.add(uid)
            run = self._runs.get(uid)
            if run is None:
                run = self._runs[uid] = self._new_run(pod)
                for container in run.containers.values():
                    if self._image_problem(container.image) != "invalid":
                        self.event(pod, "Pod", "v1", "Normal", "Pulling",
                                   f'Pulling image "{container.image}"', "kubelet",
                                   field_path=f"spec.containers{{{container.name}}}", host=run.node)  # fmt: skip
            try:
                self._step_pod(pod, run)
            except (KeyError, TypeError, ValueError, AttributeError):
                log.exception("cannot run pod %s", pod["metadata"].get("name"))
        for uid in set(self._runs) - live:
            del self._runs[uid]

    def _step_pod(self, pod: dict, run: _PodRun) -> None:
        now = time.monotonic()
        for container in run.containers.values():
            if self._step_container(pod, run, container, now):
                run.dirty = True
        if not run.dirty and pod["metadata"]["resourceVersion"] == run.written_rv:
            return
        status = self._pod_status(pod, run)
        if status == pod.get("status"):
            run.dirty = False
            run.written_rv = pod["metadata"]["resourceVersion"]
            return
        updated = _revise(pod, status=status)
        written = self.store.update_internal(
            self.rt["pods"], updated, expect_rv=pod["metadata"]["resourceVersion"]
        )
        if written is not None:
            run.dirty = False
            run.written_rv = written["metadata"]["resourceVersion"]

    def _step_container(self, pod: dict, run: _PodRun, c: _Container, now: float) -> bool:
        """Advance one container's simulated life; True when its status changed."""
        elapsed = now - c.since
        pull_time = c.ready_delay * 0.4
        field_path = f"spec.containers{{{c.name}}}"

        def event(type_: str, reason: str, message: str) -> None:
            self.event(
                pod,
                "Pod",
                "v1",
                type_,
                reason,
                message,
                "kubelet",
                field_path=field_path,
                host=run.node,
            )

        def enter(phase: str) -> None:
            c.phase, c.since = phase, now

        if c.phase == "pulling":
            problem = self._image_problem(c.image)
            if problem == "invalid":
                enter("invalid")
                c.waiting_message = (
                    f'Failed to apply default image tag "{c.image}": couldn\'t parse image name '
                    f'"{c.image}": invalid reference format'
                )
                event("Warning", "InspectFailed", c.waiting_message)
                event("Warning", "Failed", "Error: InvalidImageName")
                return True
            if elapsed < pull_time:
                return False
            if problem == "pull":
                enter("pull_error")
                c.waiting_message = (
                    f'rpc error: code = NotFound desc = failed to pull and unpack image "{c.image}": '
                    f'failed to resolve reference "{c.image}": {c.image}: not found'
                )
                event("Warning", "Failed", f'Failed to pull image "{c.image}": {c.waiting_message}')
                event("Warning", "Failed", "Error: ErrImagePull")
                return True
            event("Normal", "Pulled",
                  f'Successfully pulled image "{c.image}" in {pull_time:.3f}s '
                  f"({pull_time:.3f}s including waiting)")  # fmt: skip
            return self._start_or_config_error(pod, run, c, now, event)
        if c.phase == "config_error":
            if self._missing_config(pod, c.name) is None:
                return self._start_or_config_error(pod, run, c, now, event)
            return False
        if c.phase == "pull_error":
            if elapsed >= pull_time:
                enter("pull_backoff")
                c.waiting_message = f'Back-off pulling image "{c.image}"'
                event("Normal", "BackOff", c.waiting_message)
                event("Warning", "Failed", "Error: ImagePullBackOff")
                return True
            return False
        if c.phase == "running":
            crash = c.env.get("SANDBOX_CRASH") in ("1", "true", "True") or c.env.get(
                "SANDBOX_OOM"
            ) in ("1", "true", "True")
            crash_after = max(0.05, c.ready_delay * 0.3)
            if crash and elapsed >= crash_after:
                oom = c.env.get("SANDBOX_OOM") in ("1", "true", "True")
                c.last_terminated = {
                    "terminated": {
                        "exitCode": 137 if oom else 1,
                        "reason": "OOMKilled" if oom else "Error",
                        "startedAt": c.started_at,
                        "finishedAt": now_rfc3339(),
                        "containerID": c.container_id,
                    }
                }
                if not oom and self._logs_on_error(pod, c.name):
                    # terminationMessagePolicy FallbackToLogsOnError: the log's tail.
                    c.last_terminated["terminated"]["message"] = CRASH_LOG_LINE
                c.restarts += 1
                c.ready = False
                if (pod.get("spec") or {}).get("restartPolicy") == "Never":
                    enter("terminated")
                    return True
                enter("crashed")
                backoff = BACKOFF_TEXT[min(c.restarts - 1, len(BACKOFF_TEXT) - 1)]
                meta = pod["metadata"]
                c.waiting_message = (
                    f"back-off {backoff} restarting failed container={c.name} "
                    f"pod={meta['name']}_{meta['namespace']}({meta['uid']})"
                )
                event("Warning", "BackOff",
                      f"Back-off restarting failed container {c.name} in pod "
                      f"{meta['name']}_{meta['namespace']}({meta['uid']})")  # fmt: skip
                return True
            if c.run_for is not None and elapsed >= c.run_for:
                # A Job's container is done: exit 0, the pod Succeeded once all are.
                c.last_terminated = {"terminated": {
                    "exitCode": 0, "reason": "Completed", "startedAt": c.started_at,
                    "finishedAt": now_rfc3339(), "containerID": c.container_id}}  # fmt: skip
                c.ready = False
                enter("terminated")
                return True
            never_ready = c.env.get("SANDBOX_NEVER_READY") in ("1", "true", "True")
            if never_ready:
                if now - c.unhealthy_reported > max(c.ready_delay, 1.0):
                    c.unhealthy_reported = now
                    event("Warning", "Unhealthy",
                          "Readiness probe failed: HTTP probe failed with statuscode: 503")  # fmt: skip
                return False
            if not c.ready and elapsed >= c.ready_delay - pull_time:
                c.ready = True
                return True
            return False
        if c.phase == "crashed":
            backoff = max(0.05, c.ready_delay * 0.3) * (2 ** min(c.restarts - 1, 5))
            if elapsed >= backoff:
                event("Normal", "Pulled", f'Container image "{c.image}" already present on machine')
                return self._start_or_config_error(pod, run, c, now, event)
            return False
        return False

    def _start_or_config_error(
        self, pod: dict, run: _PodRun, c: _Container, now: float, event: Any
    ) -> bool:
        missing = self._missing_config(pod, c.name)
        if missing:
            if c.phase != "config_error":
                c.phase, c.since = "config_error", now
                c.waiting_message = missing
                event("Warning", "Failed", f"Error: {missing}")
                return True
            return False
        c.phase, c.since = "running", now
        c.started_at = now_rfc3339()
        event("Normal", "Created", f"Created container {c.name}")
        event("Normal", "Started", f"Started container {c.name}")
        return True

    def _missing_config(self, pod: dict, container_name: str) -> str | None:
        ns = pod["metadata"]["namespace"]
        spec = next(
            (c for c in pod["spec"].get("containers") or [] if c.get("name") == container_name), {}
        )
        refs: list[tuple[str, str, bool]] = []
        for env in spec.get("env") or []:
            source = (env or {}).get("valueFrom") or {}
            for key, kind in (("secretKeyRef", "secrets"), ("configMapKeyRef", "configmaps")):
                ref = source.get(key)
                if ref and ref.get("name"):
                    refs.append((kind, ref["name"], bool(ref.get("optional"))))
        for env_from in spec.get("envFrom") or []:
            for key, kind in (("secretRef", "secrets"), ("configMapRef", "configmaps")):
                ref = (env_from or {}).get(key)
                if ref and ref.get("name"):
                    refs.append((kind, ref["name"], bool(ref.get("optional"))))
        for kind, name, optional in refs:
            if not optional and self.store.try_get(self.rt[kind], ns, name) is None:
                return f'{kind[:-1]} "{name}" not found'
        return None

    def _pod_status(self, pod: dict, run: _PodRun) -> dict:
        old = pod.get("status") or {}
        now = now_rfc3339()
        statuses = []
        for c in sorted(run.containers.values(), key=lambda c: c.name):
            state: dict
            if c.phase == "running":
                state = {"running": {"startedAt": c.started_at}}
            elif c.phase == "terminated" and c.last_terminated:
                state = c.last_terminated
            else:
                reason = {
                    "pulling": "ContainerCreating",
                    "pull_error": "ErrImagePull",
                    "pull_backoff": "ImagePullBackOff",
                    "invalid": "InvalidImageName",
                    "config_error": "CreateContainerConfigError",
                    "crashed": "CrashLoopBackOff",
                }.get(c.phase, "ContainerCreating")
                waiting = {"reason": reason}
                if c.phase != "pulling" and c.waiting_message:
                    waiting["message"] = c.waiting_message
                state = {"waiting": waiting}
            status = {
                "name": c.name,
                "state": state,
                "lastState": c.last_terminated
                if c.last_terminated and c.phase != "terminated"
                else {},
                "ready": c.ready,
                "restartCount": c.restarts,
                "image": c.image,
                "imageID": c.image_id,
                "started": c.phase == "running",
            }
            if c.phase in ("running", "crashed", "terminated"):
                status["containerID"] = c.container_id
            statuses.append(status)
        ever_started = any(c.started_at for c in run.containers.values())
        all_ready = all(c.ready for c in run.containers.values())
        restart_never = (pod.get("spec") or {}).get("restartPolicy") in ("Never", "OnFailure")
        phase = "Running" if ever_started else "Pending"
        if restart_never and all(c.phase == "terminated" for c in run.containers.values()):
            exits = [((c.last_terminated or {}).get("terminated") or {}).get("exitCode") for c in run.containers.values()]
            phase = "Succeeded" if all(code == 0 for code in exits) else "Failed"
        not_ready = [
            c.name for c in sorted(run.containers.values(), key=lambda c: c.name) if not c.ready
        ]
        unready_message = f"containers with unready status: [{' '.join(not_ready)}]"
        conditions = list(old.get("conditions") or [])
        conditions = _set_condition(conditions, "PodReadyToStartContainers", "True", now=now)
        conditions = _set_condition(conditions, "Initialized", "True", now=now)
        if all_ready:
            conditions = _set_condition(conditions, "Ready", "True", now=now)
            conditions = _set_condition(conditions, "ContainersReady", "True", now=now)
        else:
            conditions = _set_condition(
                conditions, "Ready", "False", "ContainersNotReady", unready_message, now
            )
            conditions = _set_condition(conditions, "ContainersReady", "False", "ContainersNotReady",
                                        unready_message, now)  # fmt: skip
        conditions = _set_condition(conditions, "PodScheduled", "True", now=now)
        order = [
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
            "PodScheduled",
        ]
        conditions.sort(key=lambda c: order.index(c["type"]) if c["type"] in order else 99)
        return {
            "phase": phase,
            "conditions": conditions,
            "hostIP": self._node_ip(run.node),
            "hostIPs": [{"ip": self._node_ip(run.node)}],
            "podIP": run.ip,
            "podIPs": [{"ip": run.ip}],
            "startTime": run.start_time,
            "containerStatuses": statuses,
            "qosClass": old.get("qosClass") or qos_class(pod.get("spec") or {}),
        }

    def _logs_on_error(self, pod: dict, container_name: str) -> bool:
        spec = next((c for c in (pod.get("spec") or {}).get("containers") or []
                     if c.get("name") == container_name), {})  # fmt: skip
        return spec.get("terminationMessagePolicy") == "FallbackToLogsOnError"

    def _node_ip(self, node_name: str) -> str:
        node = self.store.try_get(self.rt["nodes"], "", node_name)
        for address in ((node or {}).get("status") or {}).get("addresses") or []:
            if address.get("type") == "InternalIP":
                return address["address"]
        return "10.0.0.1"

    def pod_log(self, pod: dict, container: str, previous: bool) -> str:
        """Plausible engine logs for `kubectl logs` / read_namespaced_pod_log: vLLM-shaped start-up
        lines from the container's own arguments, the requests the sandbox engine answered for
        its served model name (when the kubelet knows the engine), and a stats line every
        STATS_SECONDS while it runs — so a followed log grows."""
        run = self._runs.get(pod["metadata"]["uid"])
        c = run.containers.get(container) if run else None
        if c is None:
            return ""
        spec = next((s for s in (pod.get("spec") or {}).get("containers") or [] if s.get("name") == container), {})
        args = [str(a) for a in (spec.get("command") or []) + (spec.get("args") or [])]
        model = _arg(args, "--model") or (args[args.index("serve") + 1] if "serve" in args[:-1] else "")
        served = _arg(args, "--served-model-name") or model
        started = _epoch(c.started_at) if c.started_at else time.time()
        stamp = _log_stamp
        lines = [
            f"INFO {stamp(started)} sandbox engine starting: image={c.image} pod={pod['metadata']['name']}",
            f"INFO {stamp(started)} [api_server.py] args: {' '.join(args)[:2000] or '(image defaults)'}",
            f"INFO {stamp(started)} [config.py] model={model or '(default)'} served_model_name={served or '(default)'}"
            f" max_model_len={_arg(args, '--max-model-len') or 'auto'}",
            f"INFO {stamp(started)} loading model weights (simulated)",
        ]
        crashed = c.last_terminated is not None and (
            previous or c.phase in ("crashed", "terminated")
        )
        if crashed:
            reason = (c.last_terminated or {}).get("terminated", {}).get("reason")
            if reason == "OOMKilled":
                lines.append(
                    "ERROR CUDA out of memory (SANDBOX_OOM=1): the container was OOM-killed"
                )
            else:
                lines += [
                    "Traceback (most recent call last):",
                    '  File "/sandbox/engine.py", line 1, in <module>',
                    CRASH_LOG_LINE,
                ]
        elif c.phase == "running":
            lines.append(f"INFO {stamp(started)} Started server process; Uvicorn running on http://0.0.0.0:8000")
            if c.ready:
                lines.append(f'INFO {stamp(started)} "GET /health HTTP/1.1" 200 OK')
                lines += self._engine_lines(served, started)
        return "\n".join(lines) + "\n"

    STATS_SECONDS = 10.0

    def _engine_lines(self, served: str, started: float) -> list[str]:
        """Request lines of the engine for this model since the container started, merged in time
        with a periodic stats line (as vLLM logs them)."""
        timed: list[tuple[float, str]] = []
        engine = getattr(self, "engine", None)
        for r in list(getattr(engine, "requests", ()) or ()):
            body = r.body if isinstance(r.body, dict) else {}
            if r.received_at >= started and (not served or body.get("model") == served):
                timed.append((r.received_at, f'INFO {_log_stamp(r.received_at)} "{r.method} {r.path} HTTP/1.1" 200 OK'
                                             f" model={body.get('model', '')}"))  # fmt: skip
        now = time.time()
        ticks = min(int((now - started) // self.STATS_SECONDS), 500)
        received = [t for t, _ in timed]  # the requests only, not the stats lines added below
        for i in range(1, ticks + 1):
            at = started + i * self.STATS_SECONDS
            window = sum(1 for t in received if at - self.STATS_SECONDS <= t < at)
            timed.append((at, f"INFO {_log_stamp(at)} [metrics.py] Avg prompt throughput: {window * 12 / self.STATS_SECONDS:.1f} "
                              f"tokens/s, Avg generation throughput: {window * 8 / self.STATS_SECONDS:.1f} tokens/s, "
                              "Running: 0 reqs, Waiting: 0 reqs"))  # fmt: skip
        return [line for _, line in sorted(timed, key=lambda t: t[0])]

    # -- NIM and KServe operators --------------------------------------------------------


def _arg(args: list[str], flag: str) -> str:
    """The value of `--flag value` or `--flag=value` in a container's arguments."""
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return ""


def _epoch(rfc3339: str) -> float:
    try:
        return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time()


def _log_stamp(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%m-%d %H:%M:%S")
