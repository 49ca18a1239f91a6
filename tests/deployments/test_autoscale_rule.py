"""The autoscaling rule (deployments.autoscale.decide), the spec's autoscaling validation, and the
gateway's load measurement in Redis (gateway.load) read back by the autoscaler."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ValidationError

from deployments.autoscale import decide
from deployments.spec import gpu_hold, normalize_spec
from gateway import load as gateway_load
from gateway.load import Load

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def spec(**auto) -> dict:
    lo, hi = auto.pop("min", 1), auto.pop("max", 4)
    return {
        "replicas": {"min": lo, "max": hi},
        "resources": {"gpus": 1},
        "autoscaling": {"enabled": True, "metric": "concurrency", "target": 4, "scale_down_delay_seconds": 120,
                        "scale_to_zero_after_seconds": 600 if lo == 0 else None, "cold_start_hold_seconds": 300,
                        **auto},
    }  # fmt: skip


def test_up_at_once_with_the_reason_in_the_issue_words():
    verdict = decide(spec(), 3, Load(in_flight=15, concurrency=15.2, requests=40), now=NOW, low_since=None)
    assert verdict.desired == 4
    assert verdict.reason == "3 → 4: 15.2 in flight, target 4 per replica"


def test_never_above_max_nor_below_min():
    assert decide(spec(max=2, target=1), 1, Load(in_flight=6, requests=6), now=NOW, low_since=None).desired == 2
    quiet = decide(spec(min=2, scale_down_delay_seconds=0), 3, Load(), now=NOW, low_since=None)
    assert quiet.desired == 2


def test_down_only_after_the_delay():
    low = Load(in_flight=1, concurrency=1.0, requests=5)
    first = decide(spec(), 3, low, now=NOW, low_since=None)
    assert first.desired == 3 and first.reason == "" and first.low_since == NOW
    still = decide(spec(), 3, low, now=NOW + timedelta(seconds=119), low_since=NOW)
    assert still.desired == 3
    later = decide(spec(), 3, low, now=NOW + timedelta(seconds=120), low_since=NOW)
    assert later.desired == 1 and later.reason == "3 → 1: 1.0 in flight, target 4 per replica (below for 120 s)"


def test_to_zero_only_after_the_idle_window_and_a_request_wakes_it():
    idle_since = (NOW - timedelta(seconds=599)).timestamp()
    assert decide(spec(min=0), 1, Load(last_request_at=idle_since), now=NOW, low_since=None).desired == 1
    idle_since = (NOW - timedelta(seconds=601)).timestamp()
    gone = decide(spec(min=0), 1, Load(last_request_at=idle_since), now=NOW, low_since=None)
    assert gone.desired == 0 and gone.reason == "1 → 0: no request for 601 s (scale to zero after 600 s)"
    assert decide(spec(min=0), 0, Load(), now=NOW, low_since=None).desired == 0
    woken = decide(spec(min=0), 0, Load(in_flight=1, requests=1), now=NOW, low_since=None)
    assert woken.desired == 1 and woken.reason.startswith("0 → 1: ")


@pytest.mark.parametrize(
    ("metric", "load", "desired"),
    [
        ("requests_per_second", Load(requests_per_second=9.0, requests=90), 3),
        ("output_tokens_per_second", Load(output_tokens_per_second=250.0, requests=10), 3),
        ("latency_p95_ms", Load(latency_p95_ms=1600.0, requests=10), 3),  # above the target: one more
    ],
)
def test_other_metrics(metric, load, desired):
    target = {"requests_per_second": 4, "output_tokens_per_second": 100, "latency_p95_ms": 800}[metric]
    assert decide(spec(metric=metric, target=target), 2, load, now=NOW, low_since=None).desired == desired


def errors(bundle, model, given: dict) -> dict:
    with pytest.raises(ValidationError) as exc:
        normalize_spec(given, bundle=bundle, model=model)
    return exc.value.message_dict


@pytest.mark.django_db
def test_the_issue_yaml_is_accepted_and_bad_values_are_field_errors(bundle, model):
    ok = normalize_spec({"replicas": {"min": 0, "max": 3}, "autoscaling": {
        "metric": "concurrency", "target": 4, "scale_down_delay_seconds": 120,
        "scale_to_zero_after_seconds": 600, "cold_start_hold_seconds": 300}}, bundle=bundle, model=model)  # fmt: skip
    assert ok["autoscaling"]["enabled"] is True and ok["replicas"] == {"min": 0, "max": 3}
    assert gpu_hold(ok) == 1  # admission: the start replica, not max
    assert gpu_hold(ok, 3) == 3 and gpu_hold(ok, 9) == 3
    fixed = normalize_spec({"replicas": {"min": 1, "max": 3}}, bundle=bundle, model=model)
    assert fixed["autoscaling"]["enabled"] is False and gpu_hold(fixed) == 3  # as before
    for given, field in [
        ({"autoscaling": {"target": 0}}, "autoscaling.target"),
        ({"autoscaling": {"target": "lots"}}, "autoscaling.target"),
        ({"autoscaling": {"metric": "gpu_utilization"}}, "autoscaling.metric"),
        ({"autoscaling": {"scale_down_delay_seconds": -1}}, "autoscaling.scale_down_delay_seconds"),
        ({"autoscaling": {"cold_start_hold_seconds": 99_999}}, "autoscaling.cold_start_hold_seconds"),
        ({"replicas": {"min": 1, "max": 2}, "autoscaling": {"scale_to_zero_after_seconds": 60}},
         "autoscaling.scale_to_zero_after_seconds"),
        ({"autoscaling": {"burst": 3}}, "autoscaling.burst"),
    ]:  # fmt: skip
        assert field in errors(bundle, model, given), given


def test_gateway_measurement_is_read_back_per_deployment(redis_client):
    redis_client.flushdb()
    now = time.time()
    pipe = redis_client.pipeline(transaction=False)
    commands = [c for i in range(4) for c in gateway_load.admit_commands(7, f"r{i}", now)]
    commands += gateway_load.finish_commands(7, "r0", now, latency_ms=150.0, output_tokens=20)
    commands += gateway_load.finish_commands(7, "r1", now, latency_ms=3000.0, output_tokens=40)
    for command in commands:
        pipe.execute_command(*command)
    raw = pipe.execute()
    assert gateway_load.parse_scale(raw[4]).at_zero is False  # not autoscaled: nothing published

    loads = gateway_load.read_loads(redis_client, [7, 8], window=2, now=now)

    assert loads[7].in_flight == 2 and loads[7].requests == 4
    assert loads[7].output_tokens_per_second == 30.0 and loads[7].requests_per_second == 2.0
    assert loads[7].latency_p95_ms == 3200.0  # the bin 3,000 ms falls in
    assert loads[7].value("concurrency") == 2.0
    assert loads[8] == Load()
    pipe = redis_client.pipeline(transaction=False)
    gateway_load.publish_scale(pipe, 7, desired=0, ready=0)
    for command in gateway_load.admit_commands(7, "r9", now):
        pipe.execute_command(*command)
    assert gateway_load.parse_scale(pipe.execute()[-1]).at_zero is True
    redis_client.flushdb()


@pytest.mark.django_db
def test_console_form_has_the_autoscaling_section_and_the_page_charts_the_last_hour(owner_client, outsider_client, deploy):
    from django.urls import reverse
    from django.utils import timezone

    from deployments.models import DeploymentScale, ScaleSample
    from deployments.services import event_record

    form = owner_client.get(reverse("deployments:create")).content.decode()
    assert "</span>Autoscaling</h2>" in form and 'id="id_autoscale_metric"' in form
    assert "A minimum of 0 lets an idle model give back all its GPUs" in form

    deployment = deploy("chat", spec={"replicas": {"min": 0, "max": 3}, "autoscaling": {"target": 2}})
    now = timezone.now()
    DeploymentScale.objects.create(deployment=deployment, desired=2, ready=1, reason="1 → 2: 3.5 in flight, "
                                   "target 2 per replica", observed_at=now)  # fmt: skip
    ScaleSample.objects.bulk_create([
        ScaleSample(deployment=deployment, at=now - timedelta(minutes=m), desired=2, ready=1, load=3.5)
        for m in (90, 30, 1)
    ])  # fmt: skip
    event_record(deployment, reason="Autoscaled", message="1 → 2: 3.5 in flight, target 2 per replica",
                 source="autoscaler")  # fmt: skip

    page = owner_client.get(deployment.get_absolute_url()).content.decode()

    assert 'id="chart-scale"' in page and 'id="scale-series"' in page
    assert page.count('"desired": [2, 2]') == 1  # the last hour only: 2 of the 3 samples
    assert "<strong>1</strong> ready of <strong>2</strong> desired" in page
    assert "1 → 2: 3.5 in flight, target 2 per replica" in page
    assert outsider_client.get(deployment.get_absolute_url()).status_code == 404


@pytest.mark.django_db
def test_quota_page_splits_reserved_from_autoscaled_use(owner_client, tenants, deploy):
    from django.urls import reverse

    from deployments.selectors import gpu_holders
    from projects.services import quota_reserve

    deployment = deploy("chat", spec={"replicas": {"min": 1, "max": 3}, "autoscaling": {"target": 2}})
    fixed = deploy("fixed", spec={"replicas": {"min": 2, "max": 2}})
    quota_reserve(project=tenants.project, holder=deployment.gpu_holder(), gpus=3)  # the autoscaler grew it

    rows = {r["holder"]: (r["reserved"], r["autoscaled"], r["gpus"]) for r in gpu_holders(tenants.project)}

    assert rows == {deployment.gpu_holder(): (1, 2, 3), fixed.gpu_holder(): (2, 0, 2)}
    page = owner_client.get(reverse("projects:detail", args=[tenants.project.pk])).content.decode()
    assert "Autoscaled" in page and f'<a href="{deployment.get_absolute_url()}">chat</a>' in page



@pytest.mark.django_db
def test_without_redis_the_workers_autoscale_tasks_leave_it_to_the_web_process(settings, deploy, monkeypatch):
    # Without Redis the load is in the web process's memory (EmbeddedAutoscaler decides there): a
    # worker's pass would read its own empty memory and scale every deployment down. QA first saw
    # it raise AttributeError from redis.from_url(None) on every beat tick.
    from deployments import tasks

    deploy("chat", spec={"replicas": {"min": 0, "max": 3}, "autoscaling": {"target": 2}})
    monkeypatch.setattr(tasks, "autoscale_all", lambda: pytest.fail("the worker must not autoscale"))
    monkeypatch.setattr(tasks, "autoscale_wake_now", lambda _: pytest.fail("the worker must not wake"))
    settings.REDIS_URL = None

    assert tasks.autoscale() == {"deployments": 0, "changed": 0}
    assert tasks.autoscale_wake(1) is None
