"""Endpoints reachable from where the gateway runs: a pool exposed through an Ingress, the engine's
per-deployment credential, and the Endpoint's path as a route prefix on the gateway.

The sandbox serves Ingress hosts (and in-cluster Service DNS) on its own loopback port, routing
to the Service's Ready pods and checking the credential the way vLLM does, so the gateway's call
really goes through the rendered route."""

from __future__ import annotations

import base64

import httpx
import pytest
from openai import OpenAI

from catalog.models import CatalogModel, ProfileBundle
from deployments.models import ComputePool, DeploymentState, PoolExposure, PoolKind
from deployments.services import deployment_create, endpoint_create, pool_test_connection
from sandbox.kubelet import SandboxCluster
from tests.deployments.conftest import BASE_SPEC, state_of, wait_for
from tests.gateway.conftest import make_deployment, make_key

BASE_HOST = "models.example.test"


@pytest.fixture
def bundle(tenants) -> ProfileBundle:
    return ProfileBundle.objects.create(
        organization=tenants.org, name="vllm-edge", engine="vllm", image="vllm/vllm-openai:v0.8.5",
        labels={ProfileBundle.ENGINE_LABEL: "vllm"},
    )  # fmt: skip


@pytest.fixture
def model(tenants) -> CatalogModel:
    return CatalogModel.objects.create(
        organization=tenants.org, name="Qwen2.5 0.5B Instruct", source="huggingface",
        repo_id="Qwen/Qwen2.5-0.5B-Instruct", task="text-generation",
    )  # fmt: skip


@pytest.fixture
def exposed(engine_server, settings, tenants, transactional_db):
    """A sandbox cluster whose data plane forwards to the simulated engine, and a pool in Ingress
    mode reaching it through the cluster's ingress address. The engine URL the gateway would use
    for in-cluster sandbox pools is dead: only the route can answer."""
    _, engine_url = engine_server
    settings.SANDBOX_ENGINE_URL = "http://127.0.0.1:9"
    cluster = SandboxCluster(ready_delay=0.3, tick=0.05, engine_url=engine_url)
    cluster.start()
    pool = ComputePool.objects.create(
        organization=tenants.org, name="edge", kind=PoolKind.SANDBOX, api_url=cluster.url,
        engine_label="vllm", exposure=PoolExposure.INGRESS, exposure_host=BASE_HOST,
        exposure_address=cluster.network.url, ingress_class="nginx", ingress_namespace="ingress-nginx",
    )  # fmt: skip
    pool_test_connection(user=None, pool=pool)  # the system, as the periodic check
    yield cluster, pool
    cluster.stop()


@pytest.fixture
def running(exposed, tenants, model, bundle):
    cluster, pool = exposed
    endpoint = endpoint_create(user=tenants.owner, project=tenants.project, name="chat", path="/chat")
    deployment = deployment_create(
        user=tenants.owner, project=tenants.project, model=model, pool=pool, name="qwen", bundle=bundle,
        endpoint=endpoint, spec={**BASE_SPEC, "served_model_name": "qwen"},
    )  # fmt: skip
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING, timeout=30)
    deployment.refresh_from_db()
    return cluster, deployment


def host_of(tenants) -> str:
    return f"qwen-{tenants.project.namespace()}.{BASE_HOST}"


def test_ingress_route_credential_and_network_policy_are_rendered(running, tenants):
    cluster, deployment = running
    ns = tenants.project.namespace()
    emulator = cluster.emulator
    ingress = emulator.get_object("Ingress", ns, "qwen")
    rule = ingress["spec"]["rules"][0]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert rule["host"] == host_of(tenants)
    assert rule["http"]["paths"][0]["backend"]["service"] == {"name": "qwen", "port": {"number": 80}}
    policy = emulator.get_object("NetworkPolicy", ns, "qwen-engine")
    assert policy["spec"]["podSelector"] == {"matchLabels": {"modeldeck.io/deployment-id": str(deployment.pk)}}
    allowed = policy["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"]
    assert allowed == ["ingress-nginx", "modeldeck"]
    # vLLM reads its key from VLLM_API_KEY (env from a ModelDeck-owned Secret), never from args.
    container = emulator.get_object("Deployment", ns, "qwen-r1")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    ref = env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == "modeldeck-engine-key-qwen"
    assert deployment.engine_credential not in " ".join(container.get("args") or [])
    secret = emulator.get_object("Secret", ns, ref["name"])
    assert base64.b64decode(secret["data"][ref["key"]]).decode() == deployment.engine_credential
    assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "modeldeck"


def test_gateway_calls_the_model_through_the_ingress(running, tenants):
    from tests.gateway.conftest import start_console

    cluster, _ = running
    server = start_console()
    try:
        client = OpenAI(base_url=server.base_url, api_key=make_key(tenants.owner, tenants.org))
        reply = client.chat.completions.create(model="qwen", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == "You said: hi"
        routed = cluster.network.requests[-1]
        assert routed["host"] == host_of(tenants) and routed["service"] == "qwen"
        assert routed["path"] == "/v1/chat/completions"

        # The Endpoint's path is a route prefix: <base>/chat/v1/... answers for its deployments.
        prefixed = OpenAI(base_url=server.url + "/chat/v1", api_key=make_key(tenants.owner, tenants.org))
        assert prefixed.chat.completions.create(
            model="qwen", messages=[{"role": "user", "content": "via the endpoint"}]
        ).choices[0].message.content == "You said: via the endpoint"
        assert [m.id for m in prefixed.models.list().data] == ["qwen"]
        stream = prefixed.chat.completions.create(
            model="qwen", messages=[{"role": "user", "content": "streamed"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "You said: streamed"
    finally:
        server.stop()


def test_a_call_straight_to_the_engine_without_the_credential_is_refused(running, tenants):
    cluster, deployment = running
    body = {"model": "qwen", "messages": [{"role": "user", "content": "hi"}]}
    url = cluster.network.url + "/v1/chat/completions"
    service_dns = f"qwen.{tenants.project.namespace()}.svc.cluster.local"
    for host in (service_dns, host_of(tenants)):
        refused = httpx.post(url, json=body, headers={"Host": host})
        assert refused.status_code == 401, host
        wrong = httpx.post(url, json=body, headers={"Host": host, "Authorization": "Bearer mdk_guess"})
        assert wrong.status_code == 401, host
    allowed = httpx.post(
        url, json=body, headers={"Host": service_dns, "Authorization": f"Bearer {deployment.engine_credential}"}
    )
    assert allowed.status_code == 200


def test_endpoint_path_prefix_answers_only_for_its_own_deployments(gateway, tenants):
    chat = endpoint_create(user=tenants.owner, project=tenants.project, name="chat", path="/chat")
    on_chat = make_deployment(tenants.project, "on-chat")
    on_chat.endpoint = chat
    on_chat.save(update_fields=["endpoint"])
    make_deployment(tenants.project, "elsewhere")
    key = make_key(tenants.owner, tenants.org)
    headers = {"Authorization": f"Bearer {key}"}
    body = {"messages": [{"role": "user", "content": "hi"}]}

    ok = httpx.post(f"{gateway.url}/chat/v1/chat/completions", json={**body, "model": "on-chat"}, headers=headers)
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == "You said: hi"
    other = httpx.post(f"{gateway.url}/chat/v1/chat/completions", json={**body, "model": "elsewhere"}, headers=headers)
    assert other.status_code == 404 and other.json()["error"]["code"] == "model_not_found"
    listed = httpx.get(f"{gateway.url}/chat/v1/models", headers=headers).json()
    assert [m["id"] for m in listed["data"]] == ["on-chat"]
    # Not an endpoint's path: Django's 404, the gateway does not claim the URL.
    assert httpx.post(f"{gateway.url}/nochat/v1/chat/completions", json=body, headers=headers).status_code == 404
    # Another organization's key finds nothing on this endpoint.
    outsider = {"Authorization": f"Bearer {make_key(tenants.outsider, tenants.other_org)}"}
    denied = httpx.post(f"{gateway.url}/chat/v1/chat/completions", json={**body, "model": "on-chat"}, headers=outsider)
    assert denied.status_code == 404 and denied.json()["error"]["code"] == "model_not_found"


def test_gateway_api_pool_is_reached_through_its_httproute(engine_server, settings, tenants, transactional_db,
                                                          model, bundle):  # fmt: skip
    from tests.gateway.conftest import start_console

    _, engine_url = engine_server
    settings.SANDBOX_ENGINE_URL = "http://127.0.0.1:9"  # only the route can answer
    with SandboxCluster(ready_delay=0.3, tick=0.05, engine_url=engine_url, crds=["gateway-api"]) as cluster:
        pool = ComputePool.objects.create(
            organization=tenants.org, name="gw", kind=PoolKind.SANDBOX, api_url=cluster.url, engine_label="vllm",
            exposure=PoolExposure.GATEWAY_API, exposure_host=BASE_HOST, exposure_address=cluster.network.url,
            gateway_name="inference", gateway_namespace="gateways", ingress_namespace="gateways",
        )  # fmt: skip
        pool_test_connection(user=None, pool=pool)  # the system, as the periodic check
        deployment = deployment_create(
            user=tenants.owner, project=tenants.project, model=model, pool=pool, name="qwen", bundle=bundle,
            spec={**BASE_SPEC, "served_model_name": "qwen"},
        )  # fmt: skip
        wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING, timeout=30)
        route = cluster.emulator.get_object("HTTPRoute", tenants.project.namespace(), "qwen")
        assert route["spec"]["parentRefs"][0]["name"] == "inference"
        server = start_console()
        try:
            client = OpenAI(base_url=server.base_url, api_key=make_key(tenants.owner, tenants.org))
            reply = client.chat.completions.create(model="qwen", messages=[{"role": "user", "content": "gw"}])
            assert reply.choices[0].message.content == "You said: gw"
            assert cluster.network.requests[-1]["host"] == host_of(tenants)
        finally:
            server.stop()
