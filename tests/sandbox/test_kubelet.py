"""The simulated kubelet makes status truthful: scheduling, image pulls, crashes, rollouts."""

from __future__ import annotations

import pytest
from kubernetes import client

from sandbox.kubelet import NodePool, SandboxCluster
from tests.sandbox.conftest import apply, deployment, wait_for

NS = "default"


@pytest.fixture
def core(cluster_api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(cluster_api)


@pytest.fixture
def apps(cluster_api: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(cluster_api)


def pods_of(core: client.CoreV1Api, name: str) -> list:
    return core.list_namespaced_pod(NS, label_selector=f"app={name}").items


def waiting_reasons(core: client.CoreV1Api, name: str) -> set[str]:
    return {
        cs.state.waiting.reason
        for pod in pods_of(core, name)
        for cs in pod.status.container_statuses or []
        if cs.state and cs.state.waiting
    }


def events_for(core: client.CoreV1Api, pod_name: str) -> list:
    return core.list_namespaced_event(NS, field_selector=f"involvedObject.name={pod_name}").items


def test_nodes_advertise_their_gpus(core: client.CoreV1Api) -> None:
    nodes = core.list_node().items
    assert [n.metadata.name for n in nodes] == ["sandbox-gpu-0", "sandbox-gpu-1"]
    node = nodes[0]
    assert node.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-L4"
    assert node.metadata.labels["nvidia.com/gpu.memory"] == "24576"
    assert node.metadata.labels["nvidia.com/gpu.count"] == "4"
    assert node.status.allocatable["nvidia.com/gpu"] == "4"
    assert node.status.capacity["nvidia.com/gpu"] == "4"
    assert [c.status for c in node.status.conditions if c.type == "Ready"] == ["True"]


def test_deployment_becomes_ready(core: client.CoreV1Api, apps: client.AppsV1Api) -> None:
    apply(apps, NS, deployment("llama", replicas=2))

    def ready():
        status = apps.read_namespaced_deployment_status("llama", NS).status
        return status if status.ready_replicas == 2 else None

    status = wait_for(ready)
    assert (status.replicas, status.updated_replicas, status.available_replicas) == (2, 2, 2)
    assert status.unavailable_replicas is None  # zero counts are omitted, like a real server
    assert status.observed_generation == 1
    conditions = {c.type: (c.status, c.reason) for c in status.conditions}
    assert conditions == {
        "Available": ("True", "MinimumReplicasAvailable"),
        "Progressing": ("True", "NewReplicaSetAvailable"),
    }
    pods = pods_of(core, "llama")
    assert len(pods) == 2
    for pod in pods:
        assert pod.status.phase == "Running" and pod.status.pod_ip
        assert pod.spec.node_name.startswith("sandbox-gpu-")
        assert pod.metadata.labels["pod-template-hash"]
        assert pod.metadata.owner_references[0].kind == "ReplicaSet"
        assert {c.type: c.status for c in pod.status.conditions}["Ready"] == "True"
        assert pod.status.container_statuses[0].ready and pod.status.container_statuses[0].started
    reasons = {e.reason for e in events_for(core, pods[0].metadata.name)}
    assert {"Scheduled", "Pulling", "Pulled", "Created", "Started"} <= reasons


def test_gpu_over_request_stays_pending_as_unschedulable(
    core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    apply(apps, NS, deployment("big", gpus=8))
    pod = wait_for(lambda: next(
        (p for p in pods_of(core, "big")
         if any(c.type == "PodScheduled" and c.status == "False" for c in p.status.conditions or [])),
        None,
    ))  # fmt: skip
    condition = next(c for c in pod.status.conditions if c.type == "PodScheduled")
    assert condition.reason == "Unschedulable"
    assert condition.message.startswith("0/2 nodes are available: 2 Insufficient nvidia.com/gpu.")
    assert pod.status.phase == "Pending" and pod.spec.node_name is None
    warning = wait_for(
        lambda: [e for e in events_for(core, pod.metadata.name) if e.reason == "FailedScheduling"]
    )
    assert warning[0].type == "Warning" and warning[0].message == condition.message


def test_gpus_are_accounted_across_pods(core: client.CoreV1Api, apps: client.AppsV1Api) -> None:
    apply(apps, NS, deployment("quad", gpus=4, replicas=3))
    wait_for(lambda: apps.read_namespaced_deployment_status("quad", NS).status.ready_replicas == 2)
    pending = [p for p in pods_of(core, "quad") if p.status.phase == "Pending"]
    assert len(pending) == 1
    assert {p.spec.node_name for p in pods_of(core, "quad") if p.spec.node_name} == {
        "sandbox-gpu-0",
        "sandbox-gpu-1",
    }


def test_bad_image_ends_in_image_pull_backoff(
    core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    apply(apps, NS, deployment("typo", image="nvcr.io/nim/meta/doesnotexist:1.0"))
    wait_for(lambda: waiting_reasons(core, "typo") == {"ImagePullBackOff"})
    pod = pods_of(core, "typo")[0]
    state = pod.status.container_statuses[0].state.waiting
    assert state.message == 'Back-off pulling image "nvcr.io/nim/meta/doesnotexist:1.0"'
    messages = {e.message for e in events_for(core, pod.metadata.name) if e.type == "Warning"}
    assert {"Error: ErrImagePull", "Error: ImagePullBackOff"} <= messages
    assert apps.read_namespaced_deployment_status("typo", NS).status.ready_replicas is None


def test_unparseable_image_is_invalid_image_name(
    core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    apply(apps, NS, deployment("upper", image="VLLM/Engine:latest"))
    wait_for(lambda: waiting_reasons(core, "upper") == {"InvalidImageName"})


def test_sandbox_crash_env_crash_loops(core: client.CoreV1Api, apps: client.AppsV1Api) -> None:
    apply(apps, NS, deployment("crashy", env={"SANDBOX_CRASH": "1"}))

    def restarted_twice():
        pods = pods_of(core, "crashy")
        statuses = pods[0].status.container_statuses if pods else None
        return statuses[0] if statuses and statuses[0].restart_count >= 2 else None

    status = wait_for(restarted_twice)
    wait_for(lambda: "CrashLoopBackOff" in waiting_reasons(core, "crashy"))
    assert status.last_state.terminated.exit_code == 1
    assert status.last_state.terminated.reason == "Error"
    assert not status.ready
    pod = pods_of(core, "crashy")[0]
    assert pod.status.phase == "Running"
    assert "BackOff" in {
        e.reason for e in events_for(core, pod.metadata.name) if e.type == "Warning"
    }
    log = core.read_namespaced_pod_log(pod.metadata.name, NS, previous=True)
    assert "SANDBOX_CRASH" in log


def test_missing_secret_is_a_container_config_error(
    core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    body = deployment("gated")
    body["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}}
    ]
    apply(apps, NS, body)
    wait_for(lambda: waiting_reasons(core, "gated") == {"CreateContainerConfigError"})
    core.create_namespaced_secret(
        NS, {"metadata": {"name": "hf-token"}, "stringData": {"token": "hf_x"}}
    )
    wait_for(lambda: apps.read_namespaced_deployment_status("gated", NS).status.ready_replicas == 1)


def test_template_change_rolls_over_without_downtime(
    cluster: SandboxCluster, core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    apply(apps, NS, deployment("llama", replicas=2))
    wait_for(lambda: apps.read_namespaced_deployment_status("llama", NS).status.ready_replicas == 2)
    first_hash = pods_of(core, "llama")[0].metadata.labels["pod-template-hash"]
    updated = apply(apps, NS, deployment("llama", replicas=2, env={"MAX_MODEL_LEN": "8192"}))
    assert updated.metadata.generation == 2

    lowest_ready = 2

    def rolled() -> bool:
        nonlocal lowest_ready
        pods = cluster.emulator.list_objects("Pod", NS, "app=llama")
        ready = sum(
            1 for p in pods
            for c in p["status"].get("conditions", []) if c["type"] == "Ready" and c["status"] == "True"
        )  # fmt: skip
        lowest_ready = min(lowest_ready, ready)
        hashes = {p["metadata"]["labels"]["pod-template-hash"] for p in pods}
        dep = cluster.emulator.get_object("Deployment", NS, "llama")
        return (
            ready == 2 and len(pods) == 2 and first_hash not in hashes
            and dep["status"].get("updatedReplicas") == 2 and dep["status"].get("replicas") == 2
        )  # fmt: skip

    wait_for(rolled, timeout=10, interval=0.005)  # 0.8 s when idle; the bound is for failing
    assert lowest_ready >= 2  # maxUnavailable 25% of 2 rounds down to 0
    status = apps.read_namespaced_deployment_status("llama", NS)
    assert status.status.observed_generation == 2
    assert status.metadata.annotations["deployment.kubernetes.io/revision"] == "2"
    replicasets = client.AppsV1Api(apps.api_client).list_namespaced_replica_set(NS).items
    assert sorted(rs.spec.replicas for rs in replicasets) == [0, 2]


def test_scaling_to_zero_and_deleting_remove_pods(
    core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    apply(apps, NS, deployment("llama", replicas=2))
    wait_for(lambda: len(pods_of(core, "llama")) == 2)
    apply(apps, NS, deployment("llama", replicas=0))
    wait_for(lambda: pods_of(core, "llama") == [])
    status = wait_for(
        lambda: apps.read_namespaced_deployment_status("llama", NS).status.observed_generation == 2
    )
    assert status
    apply(apps, NS, deployment("llama", replicas=1))
    wait_for(lambda: len(pods_of(core, "llama")) == 1)
    apps.delete_namespaced_deployment("llama", NS)
    assert pods_of(core, "llama") == []
    assert client.AppsV1Api(apps.api_client).list_namespaced_replica_set(NS).items == []


@pytest.mark.parametrize("cluster", [{"gpu_taint": True}], indirect=True)
def test_gpu_taint_needs_a_toleration(core: client.CoreV1Api, apps: client.AppsV1Api) -> None:
    apply(apps, NS, deployment("plain"))
    toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    apply(apps, NS, deployment("tolerant", pod_spec={"tolerations": [toleration]}))
    wait_for(
        lambda: apps.read_namespaced_deployment_status("tolerant", NS).status.ready_replicas == 1
    )
    pod = pods_of(core, "plain")[0]
    condition = next(c for c in pod.status.conditions if c.type == "PodScheduled")
    assert condition.message.startswith(
        "0/2 nodes are available: 2 node(s) had untolerated taint {nvidia.com/gpu: present}."
    )


@pytest.mark.parametrize(
    "cluster",
    [
        {
            "node_pools": [
                NodePool("l4", 1, 4, "NVIDIA-L4", 24),
                NodePool("a100", 1, 8, "NVIDIA-A100-SXM4-80GB", 80),
            ]
        }
    ],
    indirect=True,
)
def test_node_selector_picks_the_gpu_type(core: client.CoreV1Api, apps: client.AppsV1Api) -> None:
    selector = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    apply(apps, NS, deployment("on-a100", pod_spec={"nodeSelector": selector}))
    apply(
        apps,
        NS,
        deployment("on-h100", pod_spec={"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100"}}),
    )
    wait_for(
        lambda: apps.read_namespaced_deployment_status("on-a100", NS).status.ready_replicas == 1
    )
    assert pods_of(core, "on-a100")[0].spec.node_name == "a100-0"

    def unschedulable_message():
        pods = pods_of(core, "on-h100")
        conditions = pods[0].status.conditions if pods else None
        return next((c.message for c in conditions or [] if c.reason == "Unschedulable"), None)

    message = wait_for(unschedulable_message)
    assert message.startswith(
        "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
    )


@pytest.mark.parametrize("cluster", [{"crds": ["nimservices", "inferenceservices"]}], indirect=True)
def test_nim_and_kserve_operators_report_ready(cluster_api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(cluster_api)
    nim = {
        "apiVersion": "apps.nvidia.com/v1alpha1",
        "kind": "NIMService",
        "metadata": {"name": "llama3"},
        "spec": {
            "image": {"repository": "nvcr.io/nim/meta/llama3-8b-instruct", "tag": "1.0.3"},
            "replicas": 1,
            "resources": {"limits": {"nvidia.com/gpu": "1"}},
            "expose": {"service": {"type": "ClusterIP", "port": 8000}},
        },
    }
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "qwen"},
        "spec": {
            "predictor": {
                "model": {
                    "modelFormat": {"name": "huggingface"},
                    "args": ["--model_id=Qwen/Qwen2.5-0.5B"],
                }
            }
        },
    }
    custom.create_namespaced_custom_object("apps.nvidia.com", "v1alpha1", NS, "nimservices", nim)
    custom.create_namespaced_custom_object(
        "serving.kserve.io", "v1beta1", NS, "inferenceservices", isvc
    )

    def nim_state():
        obj = custom.get_namespaced_custom_object(
            "apps.nvidia.com", "v1alpha1", NS, "nimservices", "llama3"
        )
        return (obj.get("status") or {}).get("state") == "Ready" and obj

    nim_obj = wait_for(nim_state)
    assert nim_obj["status"]["model"]["clusterEndpoint"] == "llama3.default.svc.cluster.local:8000"

    def isvc_ready():
        obj = custom.get_namespaced_custom_object(
            "serving.kserve.io", "v1beta1", NS, "inferenceservices", "qwen"
        )
        conditions = {
            c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions", [])
        }
        return conditions.get("Ready") == "True" and obj

    assert (
        wait_for(isvc_ready)["status"]["url"] == "http://qwen-predictor.default.svc.cluster.local"
    )
    assert (
        client.CoreV1Api(cluster_api).read_namespaced_service("llama3", NS).spec.ports[0].port
        == 8000
    )
