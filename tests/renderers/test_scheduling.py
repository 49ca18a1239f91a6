"""GPU flavors and node-pool priority: what the renderers make of them (valid Kubernetes, strict),
and where the sandbox's scheduler then puts the pods."""

from __future__ import annotations

import time
from typing import Any

import kubernetes_validate
import pytest
from kubernetes import client

from deployments.renderers import NodePool, SpecError, render, render_all, validate_spec
from deployments.renderers.common import node_pool_weights
from deployments.renderers.k8s_schema import affinity_errors
from deployments.renderers.nimservice import render as render_nimservice
from sandbox.kubelet import NodePool as SandboxNodePool
from sandbox.kubelet import SandboxCluster

from .specs import AFFINITY, make_spec

K8S_VERSION = "1.30"
GPU_LABEL = "nvidia.com/gpu.product"
POOL_LABEL = "sandbox.modeldeck.io/node-pool"  # the sandbox labels each node with its pool
A100, H100, L4 = "NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3", "NVIDIA-L4"
# Same architecture (Ampere), so one TEI image fits both.
A100_40 = "NVIDIA-A100-PCIE-40GB"


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]


def node_affinity(spec) -> dict[str, Any]:
    return pod_spec(render(spec))["affinity"]["nodeAffinity"]


@pytest.mark.parametrize("engine", ["vllm", "nim", "tgi", "tei"])
def test_gpu_flavors_render_as_a_required_in_list_and_validate(engine: str) -> None:
    flavors = (A100, A100_40) if engine == "tei" else (A100, H100)
    spec = make_spec(engine, gpu_type=flavors[0], gpu_types=flavors)
    objects = render_all(spec)
    for obj in objects:
        assert kubernetes_validate.validate(obj, K8S_VERSION, strict=True) == K8S_VERSION
    pod = pod_spec(objects)
    # No single product in the node selector any more: the flavors are an `In` list.
    assert GPU_LABEL not in (pod.get("nodeSelector") or {})
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": GPU_LABEL, "operator": "In", "values": list(flavors)}]}]


def test_one_gpu_type_stays_a_node_selector() -> None:
    pod = pod_spec(render(make_spec(gpu_type=L4, gpu_types=(L4,))))
    assert pod["nodeSelector"][GPU_LABEL] == L4 and "affinity" not in pod


def test_node_pools_render_preferred_weights_descending_and_the_union_as_required() -> None:
    pools = (NodePool("run.ai/node-pool", ("a100",)), NodePool("run.ai/node-pool", ("h100",)),
             NodePool("run.ai/node-pool", ("l4", "l4-spot")))  # fmt: skip
    spec = make_spec(node_pools=pools)
    for obj in render_all(spec):
        assert kubernetes_validate.validate(obj, K8S_VERSION, strict=True) == K8S_VERSION
    node = node_affinity(spec)
    required = node["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert required == [{"matchExpressions": [
        {"key": "run.ai/node-pool", "operator": "In", "values": ["a100", "h100", "l4", "l4-spot"]}]}]  # fmt: skip
    preferred = node["preferredDuringSchedulingIgnoredDuringExecution"]
    assert [p["weight"] for p in preferred] == [100, 50, 1]
    assert [p["preference"]["matchExpressions"][0]["values"] for p in preferred] == [["a100"], ["h100"], ["l4", "l4-spot"]]
    assert node_pool_weights(16)[0] == 100 and node_pool_weights(16)[-1] == 1
    assert all(a > b for a, b in zip(node_pool_weights(16), node_pool_weights(16)[1:], strict=False))


def test_scheduling_is_anded_into_every_term_the_user_gave() -> None:
    # The user's affinity requires a zone; GPU flavors and pools on different keys join every term.
    spec = make_spec(
        affinity=AFFINITY, gpu_type=A100, gpu_types=(A100, H100),
        node_pools=(NodePool("pool", ("big",)), NodePool("team", ("ml",))),
    )  # fmt: skip
    objects = render_all(spec)
    for obj in objects:
        assert kubernetes_validate.validate(obj, K8S_VERSION, strict=True) == K8S_VERSION
    affinity = pod_spec(objects)["affinity"]
    assert affinity["podAntiAffinity"] == AFFINITY["podAntiAffinity"]  # the rest is untouched
    terms = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    zone = {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["us-east-1a"]}
    gpu = {"key": GPU_LABEL, "operator": "In", "values": [A100, H100]}
    assert terms == [
        {"matchExpressions": [zone, gpu, {"key": "pool", "operator": "In", "values": ["big"]}]},
        {"matchExpressions": [zone, gpu, {"key": "team", "operator": "In", "values": ["ml"]}]},
    ]
    assert AFFINITY["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0][
        "matchExpressions"] == [zone]  # the caller's mapping is not changed  # fmt: skip


def test_the_nim_operator_gets_the_same_scheduling() -> None:
    spec = make_spec("nim", gpu_type=A100, gpu_types=(A100, H100), node_pools=(NodePool("pool", ("a", "b")),),
                     operator="nim-operator")  # fmt: skip
    body = next(o for o in render_nimservice(spec) if o["kind"] == "NIMService")["spec"]
    assert affinity_errors(body["affinity"]) == []
    assert GPU_LABEL not in (body.get("nodeSelector") or {})
    assert body["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"] == 100


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"gpu_types": (A100, "bad value!")}, "gpu_types", "not a valid label value"),
        ({"gpu_types": (A100, H100), "gpus": 0}, "gpu_types", "only apply when gpus"),
        ({"gpu_types": (A100, H100), "node_selector": {GPU_LABEL: L4}}, "node_selector", "contradicts"),
        ({"node_pools": (NodePool("pool", ()),)}, "node_pools", "give label values"),
        ({"node_pools": (NodePool("bad key!", ("a",)),)}, "node_pools", "not a valid label key"),
        ({"node_pools": (NodePool("pool", ("a",)),), "node_selector": {"pool": "z"}}, "node_pools", "none of the node pools"),
        ({"node_pools": tuple(NodePool("pool", (f"p{i}",)) for i in range(17))}, "node_pools", "at most 16"),
    ],
)  # fmt: skip
def test_bad_scheduling_is_a_spec_error(overrides: dict, field: str, words: str) -> None:
    with pytest.raises(SpecError) as exc:
        validate_spec(make_spec(**overrides))
    assert exc.value.field == field and words in str(exc.value)


def test_tei_refuses_flavors_of_different_architectures() -> None:
    with pytest.raises(SpecError) as exc:
        validate_spec(make_spec("tei", gpu_type=A100, gpu_types=(A100, H100)))
    assert "built per architecture" in str(exc.value)


# --- In the sandbox: the scheduler honours what was rendered ----------------------------------


@pytest.fixture
def three_pools():
    sandbox = SandboxCluster(
        ready_delay=0.2, tick=0.03,
        node_pools=[SandboxNodePool("l4", 1, 4, L4, 24), SandboxNodePool("a100", 1, 8, A100, 80),
                    SandboxNodePool("h100", 1, 8, H100, 80)],
    )  # fmt: skip
    sandbox.start()
    api = client.ApiClient(client.Configuration(host=sandbox.url))
    yield client.AppsV1Api(api), client.CoreV1Api(api)
    api.close()
    sandbox.stop()


def _nodes_of(core: client.CoreV1Api, spec, count: int) -> list[str]:
    selector = f"modeldeck.io/deployment-id={spec.deployment_id}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod(spec.namespace, label_selector=selector).items
        placed = sorted(p.spec.node_name for p in pods if p.spec.node_name)
        if len(placed) == count and len(pods) == count:
            return placed
        time.sleep(0.05)
    raise AssertionError(f"{count} pods were not placed: {[(p.metadata.name, p.spec.node_name) for p in pods]}")


def _apply(apps: client.AppsV1Api, core: client.CoreV1Api, spec) -> None:
    try:
        core.create_namespace({"metadata": {"name": spec.namespace}})
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    deployment = next(o for o in render(spec) if o["kind"] == "Deployment")
    apps.create_namespaced_deployment(spec.namespace, deployment)


def test_pods_go_to_the_first_node_pool_with_room_then_the_next(three_pools) -> None:
    apps, core = three_pools
    pools = (NodePool(POOL_LABEL, ("l4",)), NodePool(POOL_LABEL, ("a100",)))
    # 4 GPUs: the L4 node (4 GPUs) is preferred, although least-allocated scoring alone would
    # pick the emptier A100 node (8 GPUs).
    first = make_spec(deployment_id=7, deployment_name="first", gpus=4, node_pools=pools, secret_env={})
    _apply(apps, core, first)
    assert _nodes_of(core, first, 1) == ["l4-0"]
    # The L4 pool is full now: the next deployment goes to the next pool, never to the H100
    # node, which is as empty but not listed.
    second = make_spec(deployment_id=8, deployment_name="second", gpus=4, node_pools=pools, secret_env={})
    _apply(apps, core, second)
    assert _nodes_of(core, second, 1) == ["a100-0"]


def test_the_order_decides_where_a_pod_goes(three_pools) -> None:
    apps, core = three_pools
    pools = (NodePool(POOL_LABEL, ("h100",)), NodePool(POOL_LABEL, ("a100",)))
    spec = make_spec(deployment_id=10, deployment_name="h100-first", node_pools=pools, secret_env={})
    _apply(apps, core, spec)
    assert _nodes_of(core, spec, 1) == ["h100-0"]


def test_gpu_flavors_land_only_on_listed_products(three_pools) -> None:
    apps, core = three_pools
    spec = make_spec(deployment_id=9, deployment_name="flavors", replicas=2, gpus=8, gpu_type=L4,
                     gpu_types=(L4, A100), secret_env={})  # fmt: skip
    _apply(apps, core, spec)
    # The L4 node has only 4 GPUs: one 8-GPU replica fits on A100, the other stays Pending
    # rather than taking the H100, which is not listed.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod(spec.namespace, label_selector="modeldeck.io/deployment-id=9").items
        if len(pods) == 2 and any(p.spec.node_name for p in pods) and any(
            c.reason == "Unschedulable" for p in pods for c in (p.status.conditions or [])
        ):
            break
        time.sleep(0.05)
    assert sorted(p.spec.node_name or "" for p in pods) == ["", "a100-0"]
