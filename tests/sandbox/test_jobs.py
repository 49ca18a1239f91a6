"""The sandbox's Job controller behaves like kube-controller-manager's: indexes, backoff, deadline,
and the API server's Job validation."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from kubernetes import client as k8s

from sandbox.kubelet import SandboxCluster


@pytest.fixture
def batch() -> Iterator[tuple[k8s.BatchV1Api, SandboxCluster]]:
    cluster = SandboxCluster(ready_delay=0.2, tick=0.05, job_duration=0.3)
    cluster.start()
    config = k8s.Configuration()
    config.host = cluster.url
    api = k8s.ApiClient(config)
    k8s.CoreV1Api(api).create_namespace({"metadata": {"name": "ns"}})
    yield k8s.BatchV1Api(api), cluster
    api.close()
    cluster.stop()


def job(name: str, *, env: dict[str, str] | None = None, **spec) -> dict:
    container = {"name": "c", "image": "busybox:1.36", "command": ["true"],
                 "env": [{"name": k, "value": v} for k, v in (env or {}).items()]}  # fmt: skip
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [container]}}, **spec}}  # fmt: skip


def wait_condition(api: k8s.BatchV1Api, name: str, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = api.read_namespaced_job(name, "ns").to_dict()["status"] or {}
        done = [c for c in status.get("conditions") or [] if c["status"] == "True"]
        if done:
            return {"type": done[0]["type"], "reason": done[0]["reason"], **status}
        time.sleep(0.05)
    raise AssertionError(f"job {name} did not finish")


def test_an_indexed_job_completes_every_index(batch) -> None:
    api, _ = batch
    api.create_namespaced_job("ns", job("idx", completionMode="Indexed", completions=5, parallelism=2))
    done = wait_condition(api, "idx")
    assert done["type"] == "Complete" and done["succeeded"] == 5
    assert done["completed_indexes"] == "0-4"


def test_a_failing_job_stops_at_its_backoff_limit(batch) -> None:
    api, cluster = batch
    api.create_namespaced_job("ns", job("bad", env={"SANDBOX_CRASH": "1"}, backoffLimit=1))
    done = wait_condition(api, "bad")
    assert (done["type"], done["reason"]) == ("Failed", "BackoffLimitExceeded")
    assert done["failed"] == 2
    pods = cluster.emulator.list_objects("Pod", "ns")
    assert {p["status"]["phase"] for p in pods} == {"Failed"}


def test_a_job_past_its_deadline_fails(batch) -> None:
    api, _ = batch
    api.create_namespaced_job("ns", job("slow", env={"SANDBOX_RUN_SECONDS": "60"}, activeDeadlineSeconds=1))
    done = wait_condition(api, "slow")
    assert (done["type"], done["reason"]) == ("Failed", "DeadlineExceeded")


def test_the_api_server_refuses_what_a_real_one_refuses(batch) -> None:
    api, _ = batch
    always = job("always")
    always["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    with pytest.raises(k8s.ApiException) as err:
        api.create_namespaced_job("ns", always)
    assert err.value.status == 422 and "restartPolicy" in err.value.body
    api.create_namespaced_job("ns", job("fixed"))
    changed = job("fixed")
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "busybox:1.37"
    with pytest.raises(k8s.ApiException) as err:
        api.patch_namespaced_job("fixed", "ns", changed)
    assert err.value.status == 422 and "field is immutable" in err.value.body
