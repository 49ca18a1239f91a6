"""A compute pool's exposure through the pool service (form, REST, apply -f) and what it renders:
Ingress or HTTPRoute, the NetworkPolicy, the engine credential per engine."""

from __future__ import annotations

import dataclasses
import io

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.urls import reverse
from rest_framework.test import APIClient

from deployments.models import ComputePool, PoolExposure, PoolKind
from deployments.renderers import Exposure, RenderSpec, render, render_service
from deployments.services import pool_create, pool_update
from sandbox.kubelet import SandboxCluster
from tests.conftest import login

INGRESS = {"exposure": "ingress", "exposure_host": "models.example.com", "ingress_class": "nginx",
           "tls_secret": "models-tls", "ingress_namespace": "ingress-nginx"}  # fmt: skip


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_pool_service_refuses_an_exposure_it_cannot_render(tenants, operator):
    with pytest.raises(ValidationError) as no_host:
        pool_create(user=operator, organization=tenants.org, name="edge", kind=PoolKind.SANDBOX,
                    engine_label="vllm", exposure="ingress")  # fmt: skip
    assert "exposure_host" in no_host.value.message_dict
    with pytest.raises(ValidationError) as no_gateway:
        pool_create(user=operator, organization=tenants.org, name="edge", kind=PoolKind.SANDBOX,
                    engine_label="vllm", exposure="gateway_api", exposure_host="models.example.com")  # fmt: skip
    assert {"gateway_name", "gateway_namespace"} <= set(no_gateway.value.message_dict)
    with pytest.raises(ValidationError) as bad_address:
        pool_create(user=operator, organization=tenants.org, name="edge", kind=PoolKind.SANDBOX,
                    engine_label="vllm", exposure="ingress", exposure_host="models.example.com",
                    exposure_address="10.0.0.5")  # fmt: skip
    assert "exposure_address" in bad_address.value.message_dict
    pool = pool_create(user=operator, organization=tenants.org, name="edge", kind=PoolKind.SANDBOX,
                       engine_label="vllm", **INGRESS)  # fmt: skip
    assert (pool.exposure, pool.exposure_host, pool.tls_secret) == ("ingress", "models.example.com", "models-tls")
    with pytest.raises(ValidationError) as stray:
        pool_update(user=operator, pool=pool, exposure="in_cluster")
    assert "exposure_host" in stray.value.message_dict  # host given but nothing would use it


def test_pool_form_saves_the_exposure(tenants, operator):
    client = login(operator)
    response = client.post(reverse("deployments:pool_create"), {
        "name": "edge", "kind": "sandbox", "engine_label": "vllm", "exposure": "gateway_api",
        "exposure_host": "models.example.com", "gateway_name": "inference", "gateway_namespace": "gateways",
    })  # fmt: skip
    assert response.status_code in (200, 302)
    pool = ComputePool.objects.get(organization=tenants.org, name="edge")
    assert (pool.exposure, pool.gateway_name, pool.gateway_namespace) == ("gateway_api", "inference", "gateways")
    page = client.get(reverse("deployments:pool_detail", args=[pool.pk])).content.decode()
    assert "Gateway API (HTTPRoute)" in page and "gateways/inference" in page
    # Another organization's admin can't see it.
    assert login(tenants.outsider).get(reverse("deployments:pool_detail", args=[pool.pk])).status_code == 404


def test_rest_api_creates_and_reads_the_exposure(tenants, operator):
    client = api(operator)
    created = client.post("/api/v1/pools/", {"organization": tenants.org.pk, "name": "edge", "kind": "sandbox",
                                                  "engine_label": "vllm", **INGRESS},
                          format="json")  # fmt: skip
    assert created.status_code == 201, created.content
    data = client.get(f"/api/v1/pools/{created.json()['id']}/").json()
    assert data["exposure"] == "ingress" and data["exposure_host"] == "models.example.com"
    bad = client.post("/api/v1/pools/", {"organization": tenants.org.pk, "name": "x", "kind": "sandbox", "engine_label": "vllm",
                                         "exposure": "ingress"}, format="json")  # fmt: skip
    assert bad.status_code == 400 and "exposure_host" in bad.json()
    assert api(tenants.outsider).get(f"/api/v1/pools/{created.json()['id']}/").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_apply_file_sets_the_exposure(tmp_path, settings):
    with SandboxCluster(ready_delay=0.3, tick=0.05) as cluster:
        settings.SANDBOX_KUBE_URL = cluster.url
        call_command("bootstrap_demo", stdout=io.StringIO())
        _apply_and_check(tmp_path)


def _apply_and_check(tmp_path) -> None:
    manifest = tmp_path / "pool.yaml"
    manifest.write_text(
        "apiVersion: modeldeck.io/v1\nkind: ComputePool\nmetadata:\n  name: edge\nspec:\n"
        "  kind: sandbox\n  engine_label: vllm\n  exposure: ingress\n  exposure_host: models.example.com\n"
        "  ingress_class: nginx\n"
    )
    call_command("apply", "-f", str(manifest), stdout=io.StringIO())
    pool = ComputePool.objects.get(name="edge")
    assert (pool.exposure, pool.exposure_host, pool.ingress_class) == ("ingress", "models.example.com", "nginx")
    out = io.StringIO()
    call_command("apply", "-f", str(manifest), stdout=out)
    assert "unchanged" in out.getvalue()


# --- What the exposure renders (pure) -----------------------------------------------------------


def spec_for(engine: str, exposure: Exposure | None, **extra) -> RenderSpec:
    images = {"vllm": "vllm/vllm-openai:v0.8.5", "tgi": "ghcr.io/huggingface/text-generation-inference:3.0.1",
              "tei": "ghcr.io/huggingface/text-embeddings-inference:1.5", "nim": "nvcr.io/nim/meta/llama-3.1-8b-instruct:1.3.3"}  # fmt: skip
    return RenderSpec(
        deployment_id=7, deployment_name="chat", revision=2, namespace="acme-research", engine=engine,
        image=images[engine], model_ref="meta/llama-3.1-8b-instruct" if engine == "nim" else "Qwen/Qwen2.5-0.5B-Instruct",
        model_source="ngc" if engine == "nim" else "huggingface", engine_credential=True, exposure=exposure,
        gpus=0 if engine == "tei" else 1, **extra,
    )  # fmt: skip


GATEWAY = Exposure(mode="gateway_api", base_host="models.example.com", gateway_name="inference",
                   gateway_namespace="gateways", admit_namespaces=("envoy-gateway-system", "modeldeck"))  # fmt: skip


def by_kind(objects: list[dict]) -> dict[str, dict]:
    return {o["kind"]: o for o in objects}


def test_gateway_api_mode_renders_an_httproute_on_the_named_gateway():
    objects = by_kind(render(spec_for("vllm", GATEWAY)))
    route = objects["HTTPRoute"]
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"][0]["name"] == "inference"
    assert route["spec"]["parentRefs"][0]["namespace"] == "gateways"
    assert route["spec"]["hostnames"] == ["chat-acme-research.models.example.com"]
    assert route["spec"]["rules"][0]["backendRefs"] == [{"name": "chat", "port": 80}]
    assert "Ingress" not in objects
    policy = objects["NetworkPolicy"]["spec"]
    assert policy["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8000}]
    assert policy["ingress"][0]["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"] == [
        "envoy-gateway-system", "modeldeck"]  # fmt: skip
    # The route and policy outlive revisions: no revision label, so old-revision sweeps spare them.
    assert "modeldeck.io/revision" not in route["metadata"]["labels"]


@pytest.mark.parametrize(("engine", "variable"), [("vllm", "VLLM_API_KEY"), ("tgi", "API_KEY"), ("tei", "API_KEY")])
def test_engines_with_an_api_key_read_it_from_the_secret(engine, variable):
    deployment = by_kind(render(spec_for(engine, None)))["Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env[variable]["valueFrom"]["secretKeyRef"] == {"name": "modeldeck-engine-key-chat", "key": "api-key"}
    assert "--api-key" not in (container.get("args") or [])
    assert len(deployment["spec"]["template"]["spec"]["containers"]) == 1
    assert render_service(spec_for(engine, None))["spec"]["ports"][0]["targetPort"] == "http"


def test_nim_gets_a_header_checking_proxy_that_the_service_targets():
    spec = spec_for("nim", GATEWAY)
    containers = by_kind(render(spec))["Deployment"]["spec"]["template"]["spec"]["containers"]
    proxy = containers[1]
    assert proxy["name"] == "auth-proxy" and proxy["image"].startswith("nginxinc/nginx-unprivileged:")
    script = proxy["command"][-1]
    assert 'if (\\$http_authorization != "Bearer ${MODELDECK_ENGINE_KEY}") { return 401; }' in script
    assert "proxy_pass http://127.0.0.1:8000;" in script and "listen 8480;" in script
    assert render_service(spec)["spec"]["ports"][0]["targetPort"] == 8480
    policy = by_kind(render(spec))["NetworkPolicy"]["spec"]
    assert policy["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8480}]


def test_a_user_env_var_may_not_replace_the_engine_credential():
    from deployments.renderers import SpecError

    with pytest.raises(SpecError) as err:
        render(spec_for("vllm", None, env={"VLLM_API_KEY": "mine"}))
    assert err.value.field == "env"
    # Refused when the deploy form validates too (its stand-in spec asks for no credential).
    with pytest.raises(SpecError):
        dataclasses.replace(spec_for("tgi", None, env={"API_KEY": "mine"}), engine_credential=False).validate()


def test_in_cluster_pools_get_no_route(tenants):
    pool = ComputePool(organization=tenants.org, name="p", kind=PoolKind.SANDBOX, engine_label="vllm")
    assert pool.exposure == PoolExposure.IN_CLUSTER
    from deployments.spec import exposure_for

    kinds = [o["kind"] for o in render(spec_for("vllm", exposure_for(pool)))]
    assert kinds == ["Deployment", "NetworkPolicy"]


@pytest.mark.parametrize("path", ["/api", "/v1", "/admin/x", "/chat/v1"])
def test_endpoint_paths_that_would_capture_console_urls_are_refused(tenants, path):
    from deployments.services import endpoint_create

    with pytest.raises(ValidationError) as err:
        endpoint_create(user=tenants.owner, project=tenants.project, name="e", path=path)
    assert "path" in err.value.message_dict
