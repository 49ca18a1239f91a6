"""The autoscaler: desired replicas from the gateway's load, within [min, max] and the GPU quota.

`decide` is the rule (pure: spec, current count, load, clocks in; a verdict with its reason out):
- the metric over the target per replica gives the replicas the load asks for (concurrency,
  requests/s and output tokens/s: ⌈load / target⌉; latency_p95_ms: grow while the p95 is above
  the target, shrink while it is under half of it);
- up at once; down only once the load has asked for fewer for `scale_down_delay_seconds`;
- to zero (min 0 only) once no request came for `scale_to_zero_after_seconds`; a request held
  at zero counts as in flight, so it asks for a replica at once.

`autoscale_step` applies a verdict to one deployment under its row lock: a scale-up reserves the
GPUs first (projects.services.quota_reserve, the same row-locked ledger as a deploy) and stops
at what fits ("Held at 2 of 4 replicas by the project's GPU quota"); a scale-down gives GPUs
back only once the pool shows the pods gone. Each change is an event with its reason, the
serving revision is scaled in place (the same push as a scale; ModelDeployment.replicas_wanted
is the count it renders), and the scale is published to the gateway (gateway/load.py).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from deployments import kube
from deployments.models import (
    ACTIVE_STATES,
    DeploymentScale,
    DeploymentState,
    ModelDeployment,
    ScaleSample,
)
from deployments.services import event_record, push_enqueue
from deployments.spec import autoscaled, start_replicas
from gateway import load as gateway_load
from gateway import memstore
from projects.selectors import quota_decide
from projects.services import quota_reserve

log = logging.getLogger(__name__)

METRIC_WORDS = {
    "concurrency": ("{:.1f} in flight", "target {} per replica"),
    "requests_per_second": ("{:.1f} requests/s", "target {} per replica"),
    "output_tokens_per_second": ("{:.0f} output tokens/s", "target {} per replica"),
    "latency_p95_ms": ("p95 {:.0f} ms", "target {} ms"),
}
SAMPLE_EVERY_SECONDS = 10.0
SAMPLE_KEEP = timedelta(days=1)


@dataclass(frozen=True)
class Verdict:
    desired: int  # what to ask of the pool (before the quota)
    reason: str  # "" when nothing changes
    low_since: datetime | None


def _target_words(metric: str, target: float) -> str:
    return METRIC_WORDS[metric][1].format(target)


def load_words(metric: str, load: gateway_load.Load) -> str:
    return METRIC_WORDS[metric][0].format(load.value(metric))


def asked_for(spec: dict[str, Any], current: int, load: gateway_load.Load) -> int:
    """Replicas the load asks for, before [min, max] and the delays."""
    auto = spec["autoscaling"]
    metric, target = auto["metric"], float(auto["target"])
    value = load.value(metric)
    busy = load.in_flight > 0 or load.requests > 0
    if metric == "latency_p95_ms":
        if load.in_flight > 0 and current == 0:
            return 1
        if not load.requests:
            return current if busy else 0
        if value > target:
            return max(current, 1) + 1 if current else 1
        if value < target / 2 and not load.in_flight:
            return max(current - 1, 1)
        return max(current, 1)
    wanted = math.ceil(value / target - 1e-9) if value > 0 else 0
    if busy:
        wanted = max(wanted, 1)  # a held request at zero asks for one replica
    return wanted


def decide(
    spec: dict[str, Any],
    current: int,
    load: gateway_load.Load,
    *,
    now: datetime,
    low_since: datetime | None,
    last_activity: float | None = None,
) -> Verdict:
    """The autoscaling rule (see the module docstring). `current`: the replicas asked of the pool;
    `last_activity`: epoch seconds of the last request (or, never called, of the last change)."""
    auto = spec["autoscaling"]
    lo, hi = int(spec["replicas"]["min"]), int(spec["replicas"]["max"])
    metric, target = auto["metric"], auto["target"]
    words = f"{load_words(metric, load)}, {_target_words(metric, target)}"
    wanted = asked_for(spec, current, load)
    last = max(filter(None, (load.last_request_at, last_activity)), default=None)
    idle_for = now.timestamp() - last if last is not None else None
    to_zero_after = auto.get("scale_to_zero_after_seconds")
    floor = max(lo, 1)
    zero_reason = ""
    if lo == 0 and to_zero_after is not None and load.in_flight == 0:
        if current == 0:
            floor = 0  # nothing runs: it stays at zero until a request comes
        elif idle_for is not None and idle_for >= to_zero_after:
            floor = 0
            zero_reason = f"no request for {int(idle_for)} s"
    wanted = min(max(wanted, floor), hi)
    if wanted > current:
        return Verdict(wanted, f"{current} → {wanted}: {words}", None)
    if wanted == current:
        return Verdict(current, "", None)
    if wanted == 0 and zero_reason:
        return Verdict(0, f"{current} → 0: {zero_reason} (scale to zero after {to_zero_after} s)", None)
    delay = int(auto.get("scale_down_delay_seconds") or 0)
    since = low_since or now
    if (now - since).total_seconds() >= delay:
        return Verdict(wanted, f"{current} → {wanted}: {words} (below for {delay} s)", None)
    return Verdict(current, "", since)


# ---- applying a verdict ----------------------------------------------------------------------


def _redis() -> Any:
    """Where the gateways' load is: Redis, or without it (the embedded mode) this process's
    memory, which its gateway writes and its EmbeddedAutoscaler reads (gateway/memstore.py)."""
    if not settings.REDIS_URL:
        return memstore.STORE
    import redis  # the client library, imported where the autoscaler runs (a worker)

    return redis.Redis.from_url(settings.REDIS_URL)


def _fit(deployment: ModelDeployment, spec: dict[str, Any], current: int, wanted: int) -> tuple[int, str]:
    """The largest count in [current, wanted] whose GPUs fit both quotas, and who held it."""
    per_replica = int(spec["resources"]["gpus"])
    if per_replica == 0 or wanted <= current:
        return wanted, ""
    project = deployment.project
    for count in range(wanted, current, -1):
        decision = quota_decide(project=project, organization=project.organization,
                                holder=deployment.gpu_holder(), gpus=count * per_replica)  # fmt: skip
        if not decision.refusal:
            return count, ""
        refused_by = decision.refused_by
    return current, refused_by


def autoscale_step(
    deployment_id: int,
    load: gateway_load.Load,
    *,
    observed: tuple[int, int] | None = None,
    now: datetime | None = None,
) -> DeploymentScale | None:
    """Decide and apply for one deployment; `observed`: (ready, pods) the pool shows for its
    serving pods, when the caller listed the pool. Returns the scale row (None: not autoscaled)."""
    now = now or timezone.now()
    push = False
    with transaction.atomic():
        locked = (
            ModelDeployment.objects.select_for_update(of=("self",))
            .select_related("current_revision", "project", "project__organization")
            .filter(pk=deployment_id, state__in=ACTIVE_STATES)
            .exclude(state=DeploymentState.PENDING)
            .first()
        )
        if locked is None or locked.current_revision is None or not autoscaled(locked.current_revision.spec):
            return None
        spec = locked.current_revision.spec
        scale, _ = DeploymentScale.objects.get_or_create(deployment=locked)
        before, first_observation = _fields(scale), scale.observed_at is None and observed is not None
        current = locked.replicas_wanted(spec) if scale.desired is not None else start_replicas(spec)
        if observed is not None:
            scale.ready, scale.pods = observed
            scale.observed_at = now
        fallback = scale.changed_at or locked.state_changed_at or locked.created_at
        verdict = decide(spec, current, load, now=now, low_since=scale.low_since,
                         last_activity=fallback.timestamp() if fallback else None)  # fmt: skip
        desired, reason, held = verdict.desired, verdict.reason, ""
        if desired > current:
            desired, held = _fit(locked, spec, current, desired)
        if held:
            reason = f"Held at {desired} of {verdict.desired} replicas by the {held}'s GPU quota."
        # GPUs held: the replicas asked for, or more while the pool still shows pods going away.
        running = scale.pods if observed is not None else current
        hold = max(desired, min(running, int(spec["replicas"]["max"]))) * int(spec["resources"]["gpus"])
        if hold != locked.gpus_held():
            quota_reserve(project=locked.project, holder=locked.gpu_holder(), gpus=hold)
        changed = desired != current
        scale.wanted, scale.load = verdict.desired, round(load.value(spec["autoscaling"]["metric"]), 3)
        scale.low_since = verdict.low_since
        if reason and (changed or reason != scale.reason):
            event_record(locked, reason="HeldByQuota" if held else "Autoscaled", message=reason,
                         type="Warning" if held else "Normal", source="autoscaler")  # fmt: skip
            scale.reason = reason[:300]
        elif not held and scale.reason.startswith("Held at") and not changed:
            scale.reason = ""
        if changed or scale.desired is None:
            scale.desired = desired
            scale.changed_at = now
            push = changed
        if first_observation or _fields(scale) != before:  # a steady deployment costs no write per tick
            scale.save()
        if push:
            transaction.on_commit(lambda: push_enqueue(locked.pk))
    return scale


def _fields(scale: DeploymentScale) -> tuple:
    return tuple(getattr(scale, f.attname) for f in DeploymentScale._meta.concrete_fields if f.attname != "observed_at")


def publish(scales: list[tuple[int, int, int]]) -> None:
    """Tell every gateway (deployment, desired, ready): they hold requests while ready is 0."""
    if not scales:
        return
    client = _redis()
    try:
        pipe = client.pipeline(transaction=False)
        for deployment_id, desired, ready in scales:
            # Pods beyond the count asked for are going away: asked for 0, nothing will answer.
            gateway_load.publish_scale(pipe, deployment_id, desired=desired, ready=min(ready, desired))
        pipe.execute()
    finally:
        client.close()


_last_sample: dict[int, float] = {}


def _sample(scales: list[DeploymentScale], now: datetime) -> None:
    """A chart point per deployment at most every SAMPLE_EVERY_SECONDS (per worker process)."""
    due = [s for s in scales if time.monotonic() - _last_sample.get(s.deployment_id, 0.0) >= SAMPLE_EVERY_SECONDS]
    if not due:
        return
    ScaleSample.objects.bulk_create(
        [ScaleSample(deployment_id=s.deployment_id, at=now, desired=s.desired or 0, ready=s.ready, load=s.load)
         for s in due]
    )  # fmt: skip
    for s in due:
        _last_sample[s.deployment_id] = time.monotonic()
    if len(_last_sample) % 50 == 0:
        ScaleSample.objects.filter(at__lt=now - SAMPLE_KEEP).delete()


def autoscaled_deployments() -> list[ModelDeployment]:
    return list(
        ModelDeployment.objects.filter(state__in=ACTIVE_STATES, current_revision__spec__autoscaling__enabled=True)
        .exclude(state=DeploymentState.PENDING)
        .select_related("pool", "project", "current_revision", "serving_revision")
        .order_by("pk")
    )


def observe_pool(pool: Any, deployments: list[ModelDeployment]) -> dict[int, tuple[int, int]]:
    """(ready, pods) of each deployment's serving pods, from one listing of the pool."""
    try:
        with kube.kube_for(pool) as k:
            listed_deployments, listed_pods = kube.list_managed(k)
    except kube.KubeError as err:
        log.warning("autoscaler can't list the pool: %s", err.message, extra={"pool": pool.pk})
        return {}
    observed = kube.observe(listed_deployments, listed_pods)
    out: dict[int, tuple[int, int]] = {}
    for deployment in deployments:
        revision = deployment.serving_revision or deployment.current_revision
        obs = (observed.get(deployment.pk) or {}).get(revision.pods_number())
        out[deployment.pk] = (obs.ready, obs.pods) if obs is not None and obs.exists else (0, 0)
    return out


def autoscale_all(*, window: int | None = None) -> dict[str, int]:
    """One autoscaler pass: every autoscaled deployment, one load read, one listing per pool."""
    window = window or settings.MODELDECK_AUTOSCALE_WINDOW_SECONDS
    deployments = autoscaled_deployments()
    stats = {"deployments": len(deployments), "changed": 0}
    if not deployments:
        return stats
    client = _redis()
    try:
        loads = gateway_load.read_loads(client, [d.pk for d in deployments], window=window)
    finally:
        client.close()
    by_pool: dict[int, list[ModelDeployment]] = {}
    for deployment in deployments:
        by_pool.setdefault(deployment.pool_id, []).append(deployment)
    observed: dict[int, tuple[int, int]] = {}
    for group in by_pool.values():
        observed.update(observe_pool(group[0].pool, group))
    now = timezone.now()
    scales = []
    for deployment in deployments:
        before = getattr(getattr(deployment, "scale", None), "desired", None)
        try:
            scale = autoscale_step(deployment.pk, loads[deployment.pk], observed=observed.get(deployment.pk), now=now)
        except Exception:  # one deployment's failure must not stop the others'
            log.exception("autoscaler step failed", extra={"deployment": deployment.pk})
            continue
        if scale is None:
            continue
        scales.append(scale)
        stats["changed"] += int(scale.desired != before)
    publish([(s.deployment_id, s.desired or 0, s.ready) for s in scales])
    _sample(scales, now)
    return stats


def autoscale_wake(deployment_id: int) -> DeploymentScale | None:
    """A request arrived at a deployment at zero: decide now, not at the next tick."""
    client = _redis()
    try:
        load = gateway_load.read_loads(client, [deployment_id], window=settings.MODELDECK_AUTOSCALE_WINDOW_SECONDS)
    finally:
        client.close()
    scale = autoscale_step(deployment_id, load[deployment_id])
    if scale is not None:
        publish([(deployment_id, scale.desired or 0, scale.ready)])
    return scale


def record_ready(deployments: list[ModelDeployment], observed: dict[int, dict[int, Any]]) -> None:
    """The status sync's observation of each decided row: ready replicas and pods of the
    revision it runs (one statement; only rows whose numbers changed)."""
    now = timezone.now()
    rows = []
    for deployment in deployments:
        revision = deployment.current_revision
        obs = (observed.get(deployment.pk) or {}).get(revision.pods_number()) if revision else None
        ready, pods = (obs.ready, obs.pods) if obs is not None and obs.exists else (0, 0)
        try:
            scale = deployment.scale
        except DeploymentScale.DoesNotExist:
            scale = None
        if scale is not None and scale.observed_at is not None and (scale.ready, scale.pods) == (ready, pods):
            continue
        rows.append(DeploymentScale(deployment_id=deployment.pk, ready=ready, pods=pods, observed_at=now))
    if rows:
        DeploymentScale.objects.bulk_create(rows, update_conflicts=True, unique_fields=["deployment"],
                                            update_fields=["ready", "pods", "observed_at"])  # fmt: skip


class EmbeddedAutoscaler(threading.Thread):
    """The autoscaler of the embedded mode (`make run`, no Redis), in the process that serves the
    gateway: the gateway measures into this process's memory (gateway/memstore.py), so the pass
    must run here, not in the Celery worker (whose `deployments.autoscale` then does nothing).
    Every `tick` seconds a pass over every autoscaled deployment, as beat does with Redis; a
    deployment a held request wakes (gateway/load.py `wake`) is decided at once, between passes."""

    def __init__(self, *, tick: float | None = None) -> None:
        super().__init__(daemon=True, name="embedded-autoscaler")
        self.tick = float(tick or settings.MODELDECK_AUTOSCALE_TICK_SECONDS)
        self.stopped = threading.Event()
        self._nudge = threading.Event()
        self._woken: set[int] = set()
        self._lock = threading.Lock()

    def wake(self, deployment_id: int) -> None:
        with self._lock:
            self._woken.add(deployment_id)
        self._nudge.set()

    def run(self) -> None:
        gateway_load.set_local_wake(self.wake)
        next_pass = 0.0
        try:
            while not self.stopped.is_set():
                with self._lock:
                    woken, self._woken = self._woken, set()
                    self._nudge.clear()
                try:
                    for deployment_id in sorted(woken):
                        autoscale_wake(deployment_id)
                    if time.monotonic() >= next_pass:
                        next_pass = time.monotonic() + self.tick
                        autoscale_all()
                except Exception:  # noqa: BLE001 - the next pass tries again; the web process goes on
                    log.exception("embedded autoscaler pass failed")
                finally:
                    connection.close()  # this thread's, between passes (as a worker between tasks)
                self._nudge.wait(max(0.0, next_pass - time.monotonic()))
        finally:
            gateway_load.set_local_wake(None)
            connection.close()

    def stop(self) -> None:
        self.stopped.set()
        self._nudge.set()
        self.join(timeout=10)
