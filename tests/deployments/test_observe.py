"""The deployment page's Replicas, Logs and Metrics tabs and their REST routes, against the sandbox."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from deployments.models import DeploymentState
from gateway.models import UsageRecord
from tests.conftest import login
from tests.deployments.conftest import state_of, wait_for

pytestmark = pytest.mark.django_db(transaction=True)
HTMX = {"HTTP_HX_REQUEST": "true"}


def _running(deploy, name="chat", **kwargs):
    deployment = deploy(name, **kwargs)
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)
    return deployment


def test_replicas_show_the_pods_with_node_gpu_readiness_and_role(deploy, tenants):
    deployment = _running(deploy, spec={"replicas": {"min": 2, "max": 2}})
    client = login(tenants.member)

    api = client.get(f"/api/v1/deployments/{deployment.pk}/replicas/")
    assert api.status_code == 200, api.content
    data = api.json()
    assert data["serving_revision"] == 1 and data["rolling_out_revision"] is None
    assert len(data["pods"]) == 2
    for pod in data["pods"]:
        assert pod["ready"] is True and pod["ready_containers"] == "1/1" and pod["status"] == "Running"
        assert pod["role"] == "serving" and pod["revision"] == 1
        assert pod["node"].startswith("sandbox-gpu-") and pod["gpus"] == 1 and pod["gpu_product"] == "NVIDIA-L4"
        assert pod["restarts"] == 0 and pod["age_seconds"] >= 0

    page = client.get(f"/deployments/{deployment.pk}/?tab=replicas")
    assert page.status_code == 200 and b'hx-get="/deployments/%d/?fragment=replicas"' % deployment.pk in page.content
    fragment = client.get(f"/deployments/{deployment.pk}/?fragment=replicas", **HTMX).content.decode()
    for pod in data["pods"]:
        assert pod["name"] in fragment and pod["node"] in fragment
    assert fragment.count('data-role="serving"') == 2 and "NVIDIA-L4" in fragment


def test_a_rollout_shows_both_revisions_pods(deploy, tenants):
    from deployments.services import deployment_update

    deployment = _running(deploy, spec={"env": {"SANDBOX_READY_DELAY": "0.2"}})
    deployment_update(user=tenants.owner, deployment=deployment,
                      spec={**deployment.spec(), "env": {"SANDBOX_READY_DELAY": "60"}})  # fmt: skip
    client = login(tenants.member)

    def both():
        pods = client.get(f"/api/v1/deployments/{deployment.pk}/replicas/").json()["pods"]
        return {(p["revision"], p["role"]) for p in pods} >= {(1, "serving"), (2, "rolling out")} and pods

    pods = wait_for(both)
    assert any(p["revision"] == 2 and not p["ready"] for p in pods)


def test_crash_looping_pod_shows_restarts_and_its_previous_log(deploy, tenants):
    deployment = deploy("crashy", spec={"env": {"SANDBOX_CRASH": "1"}})
    client = login(tenants.member)
    pods = wait_for(lambda: [p for p in client.get(f"/api/v1/deployments/{deployment.pk}/replicas/").json()["pods"]
                             if p["restarts"] >= 1])  # fmt: skip
    assert pods[0]["ready"] is False and pods[0]["status"] in {"CrashLoopBackOff", "Error", "Running"}

    logs = client.get(f"/api/v1/deployments/{deployment.pk}/logs/", {"pod": pods[0]["name"], "previous": "true"})
    assert logs.status_code == 200, logs.content
    assert any("SANDBOX_CRASH" in line for line in logs.json()["lines"])


def test_logs_tail_the_engine_lines_of_the_chosen_pod(deploy, tenants, cluster):
    deployment = _running(deploy, "qwen")
    client = login(tenants.member)

    api = client.get(f"/api/v1/deployments/{deployment.pk}/logs/")
    assert api.status_code == 200, api.content
    data = api.json()
    pod = data["pods"][0]["name"]
    assert data["pod"] == pod and data["container"] == data["pods"][0]["containers"][0]
    text = "\n".join(data["lines"])
    assert f"pod={pod}" in text and "served_model_name=qwen" in text and "Uvicorn running" in text

    short = client.get(f"/api/v1/deployments/{deployment.pk}/logs/", {"tail": "2"}).json()
    assert short["lines"] == data["lines"][-2:] or len(short["lines"]) == 2

    fragment = client.get(f"/deployments/{deployment.pk}/?fragment=logs&pod={pod}", **HTMX).content.decode()
    assert "served_model_name=qwen" in fragment and 'id="log-text"' in fragment
    assert 'hx-trigger="every 2s"' in fragment  # following by default
    unfollowed = client.get(f"/deployments/{deployment.pk}/?fragment=logs&form=1&pod={pod}", **HTMX).content.decode()
    assert 'hx-trigger="every 2s"' not in unfollowed


@pytest.mark.parametrize(
    ("params", "field"),
    [({"tail": "lots"}, "tail"), ({"tail": "0"}, "tail"), ({"tail": "999999"}, "tail"),
     ({"pod": "kube-apiserver"}, "pod"), ({"container": "sidecar"}, "container")],
)  # fmt: skip
def test_bad_log_requests_are_field_errors_not_500s(deploy, tenants, params, field):
    deployment = _running(deploy)
    client = login(tenants.member)
    response = client.get(f"/api/v1/deployments/{deployment.pk}/logs/", params)
    assert response.status_code == 400 and field in response.json(), response.content
    page = client.get(f"/deployments/{deployment.pk}/", {"fragment": "logs", **params}, **HTMX)
    assert page.status_code == 200 and b"log-error" in page.content


def test_unreachable_pool_is_said_in_words(deploy, tenants, cluster):
    deployment = _running(deploy)
    cluster.emulator.set_down(True)
    try:
        client = login(tenants.member)
        api = client.get(f"/api/v1/deployments/{deployment.pk}/replicas/")
        assert api.status_code == 503 and "could not be reached" in api.json()["detail"]
        logs = client.get(f"/api/v1/deployments/{deployment.pk}/logs/")
        assert logs.status_code == 503 and "could not be reached" in logs.json()["detail"]
        fragment = client.get(f"/deployments/{deployment.pk}/?fragment=replicas", **HTMX)
        assert fragment.status_code == 200 and b"could not be reached" in fragment.content
    finally:
        cluster.emulator.set_down(False)


def test_a_deactivated_deployments_logs_say_it_is_deactivated(deploy, tenants):
    """It answered 503 "no pods on its compute pool right now", as for a pool that is down."""
    from deployments.observe import deployment_replicas
    from deployments.services import deployment_deactivate

    deployment = _running(deploy)
    deployment_deactivate(user=tenants.owner, deployment=deployment)
    wait_for(lambda: not deployment_replicas(deployment).pods)
    client = login(tenants.member)

    api = client.get(f"/api/v1/deployments/{deployment.pk}/logs/")
    assert api.status_code == 409, api.content  # a state to change, not an outage to retry
    data = api.json()
    assert data["deployment_state"] == "deactivated" and data["lines"] == [] and data["pods"] == []
    assert data["detail"].startswith("This deployment is deactivated: it is scaled to zero and has no running pods")
    assert "Activate it to start its pods again." in data["detail"]
    # The Logs tab says the same.
    fragment = client.get(f"/deployments/{deployment.pk}/?fragment=logs", **HTMX).content.decode()
    assert 'id="log-error"' in fragment and "This deployment is deactivated: it is scaled to zero" in fragment


def test_outsiders_get_404_on_every_tab_and_route(deploy, tenants):
    deployment = _running(deploy)
    client = login(tenants.outsider)
    for route in ("replicas", "logs", "metrics"):
        assert client.get(f"/api/v1/deployments/{deployment.pk}/{route}/").status_code == 404
    for query in ("tab=replicas", "tab=logs", "tab=metrics"):
        assert client.get(f"/deployments/{deployment.pk}/?{query}").status_code == 404
    for fragment in ("replicas", "logs"):
        assert client.get(f"/deployments/{deployment.pk}/?fragment={fragment}", **HTMX).status_code == 404


def _record(deployment, revision, *, now, status=200, latency=100.0, ttft=20.0, completion=10, ago=timedelta(0)):
    n = UsageRecord.objects.count()
    return UsageRecord.objects.create(
        request_id=f"req_{n}", deployment=deployment, deployment_name=deployment.name,
        organization=deployment.project.organization, route="chat.completions", status_code=status,
        prompt_tokens=5, completion_tokens=completion, latency_ms=latency, ttft_ms=ttft,
        revision_id=revision.pk if revision else None, created_at=now - ago,
    )  # fmt: skip


def test_metrics_are_per_revision_from_the_gateways_records(deploy, tenants):
    from deployments.services import deployment_update

    deployment = deploy("chat")
    r1 = deployment.current_revision
    r2 = deployment_update(user=tenants.owner, deployment=deployment,
                           spec={**deployment.spec(), "context_length": 4096})  # fmt: skip
    # One instant for all: records read "3 minutes ago" one by one could straddle a minute
    # boundary and split r1's latencies over two buckets (p50 200 becomes 150 and 300).
    now = timezone.now()
    for latency in (100.0, 200.0, 300.0):
        _record(deployment, r1, now=now, latency=latency, ago=timedelta(minutes=3))
    _record(deployment, r1, now=now, status=500, ago=timedelta(minutes=3))
    _record(deployment, r2, now=now, latency=50.0, ttft=5.0, completion=120)
    _record(deployment, r2, now=now, ago=timedelta(hours=3))  # outside the last hour

    client = login(tenants.member)
    data = client.get(f"/api/v1/deployments/{deployment.pk}/metrics/").json()
    assert data["range"] == "1h" and data["bucket"] == "minute"
    by_rev = {r["revision"]: r for r in data["revisions"]}
    assert set(by_rev) == {1, 2} and r2.number == 2 and r1.number == 1
    assert by_rev[1]["total_requests"] == 4 and by_rev[1]["total_errors"] == 1
    assert by_rev[2]["total_requests"] == 1 and by_rev[2]["total_errors"] == 0
    assert sorted(v for v in by_rev[1]["p50"] if v is not None) == [200.0]  # the 500 is not a latency
    assert [v for v in by_rev[2]["ttft_p50"] if v is not None] == [5.0]
    assert max(by_rev[2]["tokens_per_second"]) == 2.0  # 120 tokens in a minute bucket
    assert len(data["labels"]) == len(by_rev[1]["requests"]) and sum(by_rev[1]["requests"]) == 4

    day = client.get(f"/api/v1/deployments/{deployment.pk}/metrics/", {"range": "24h"}).json()
    assert [(r["revision"], r["total_requests"]) for r in day["revisions"]] == [(2, 2), (1, 4)]  # newest first
    bad = client.get(f"/api/v1/deployments/{deployment.pk}/metrics/", {"range": "forever"})
    assert bad.status_code == 400 and "range" in bad.json()

    page = client.get(f"/deployments/{deployment.pk}/?tab=metrics").content.decode()
    assert 'id="deployment-metrics"' in page and "r1: 4 requests, 1 error" in page and "r2: 1 request, 0 errors" in page
    assert "vendor/chartjs/chart.umd.min.js" in page and "modeldeck/metrics.js" in page


def test_an_idle_sandbox_engine_logs_zero_throughput():
    """The stats line every 10 s counts requests in its window, not the stats lines before it
    (an idle engine logged 1.2 tokens/s forever)."""
    import time
    from types import SimpleNamespace

    from sandbox.runtime import ContainerRuntime

    idle = SimpleNamespace(STATS_SECONDS=10.0, engine=SimpleNamespace(requests=[]))
    lines = ContainerRuntime._engine_lines(idle, "qwen", time.time() - 45)
    assert len(lines) == 4
    assert all("Avg prompt throughput: 0.0 tokens/s, Avg generation throughput: 0.0" in line for line in lines)
