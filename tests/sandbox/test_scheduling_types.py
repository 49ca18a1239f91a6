"""A wrongly typed affinity is refused by the sandbox's API (as a real API server's decoder
does, with a 400), and one bad pod never stops the scheduling of everybody else's."""

from __future__ import annotations

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sandbox.kubelet import SandboxCluster
from tests.sandbox.conftest import apply, deployment, wait_for

NS = "default"


@pytest.fixture
def apps(cluster_api: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(cluster_api)


@pytest.mark.parametrize(
    "pod_spec",
    [
        {"affinity": {"nodeAffinity": 5}},
        {"affinity": 5},
        {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": []}}},
        {"tolerations": [{"key": 5}]},
        {"nodeSelector": {"gpu": 1}},
    ],
)
def test_wrongly_typed_scheduling_fields_are_a_400(apps: client.AppsV1Api, pod_spec: dict) -> None:
    with pytest.raises(ApiException) as err:
        apply(apps, NS, deployment("bad", pod_spec=pod_spec))
    assert err.value.status == 400
    assert "cannot unmarshal" in err.value.body


def test_a_bad_pod_stored_around_validation_does_not_wedge_the_scheduler(
    cluster: SandboxCluster, apps: client.AppsV1Api
) -> None:
    bad = deployment("bad", pod_spec={"affinity": {"nodeAffinity": 5}})
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "bad-pod", "namespace": NS, "uid": "bad-uid",
                     "creationTimestamp": "2026-01-01T00:00:00Z", "labels": {"app": "bad"}},
        "spec": bad["spec"]["template"]["spec"], "status": {"phase": "Pending"},
    }  # fmt: skip
    cluster.emulator.put_object(pod)
    apply(apps, NS, deployment("good"))

    def ready():
        status = apps.read_namespaced_deployment_status("good", NS).status
        return status.ready_replicas == 1

    wait_for(ready, timeout=5)
