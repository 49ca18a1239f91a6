"""GPU flavors (`resources.gpu_types`) and node-pool priority (`node_pools`) in the deployment
spec: the service's rules, the form, REST and `apply -f`, and what the saved spec renders."""

from __future__ import annotations

import kubernetes_validate
import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from deployments import services
from deployments.apply import Context, apply_documents, load_documents
from deployments.models import ComputePool, ModelDeployment, PoolKind
from deployments.renderers import render
from deployments.spec import render_spec_for
from projects.models import Environment
from tests.factories import rest_api_client

pytestmark = pytest.mark.django_db

A100, H100, L4 = "NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3", "NVIDIA-L4"
BASE = {"resources": {"cpu": "2", "memory": "8Gi", "gpus": 1}}


@pytest.fixture
def offline_pool(tenants) -> ComputePool:
    return ComputePool.objects.create(organization=tenants.org, name="offline", kind=PoolKind.SANDBOX,
                                      api_url="http://127.0.0.1:9", engine_label="vllm")  # fmt: skip


@pytest.fixture
def create(tenants, model, bundle, offline_pool):
    def _create(spec: dict, *, environment=None, name: str = "chat"):
        merged = {**BASE, **spec, "resources": {**BASE["resources"], **spec.get("resources", {})}}
        return services.deployment_create(
            user=tenants.owner, project=tenants.project, model=model, pool=offline_pool,
            name=name, bundle=bundle, spec=merged, environment=environment,
        )  # fmt: skip

    return _create


def _pod(deployment) -> dict:
    objects = render(render_spec_for(deployment, deployment.current_revision))
    for obj in objects:
        assert kubernetes_validate.validate(obj, "1.30", strict=True) == "1.30"
    return next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]


def _errors(exc) -> dict[str, str]:
    return {k: " ".join(v) for k, v in exc.value.message_dict.items()}


def test_several_gpu_types_are_kept_in_order_and_rendered_as_an_in_list(create) -> None:
    deployment = create({"resources": {"gpu_types": [A100, H100]}})
    resources = deployment.spec()["resources"]
    assert resources["gpu_type"] == A100 and resources["gpu_types"] == [A100, H100]
    pod = _pod(deployment)
    expr = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert expr == [{"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In", "values": [A100, H100]}]}]
    assert "nvidia.com/gpu.product" not in (pod.get("nodeSelector") or {})
    assert deployment.gpus_held() == 1  # the quota counts GPUs, whichever flavor they are


def test_one_gpu_type_keeps_the_old_canonical_spec(create, tenants) -> None:
    deployment = create({"resources": {"gpu_type": L4}})
    assert "gpu_types" not in deployment.spec()["resources"]
    assert "node_pools" not in deployment.spec() and "policies" not in deployment.spec()
    # A spec saved before flavors existed compares equal: a price change rolls nothing out.
    revision = services.deployment_update(user=tenants.owner, deployment=deployment,
                                          spec={"pricing": {"input_per_million": "1.00"}})  # fmt: skip
    assert revision.pods_number() == 1


def test_gpu_type_given_alone_replaces_the_list_and_the_list_replaces_it(create, tenants) -> None:
    deployment = create({"resources": {"gpu_type": [L4, A100]}})  # a list in gpu_type works too
    assert deployment.spec()["resources"]["gpu_types"] == [L4, A100]
    services.deployment_update(user=tenants.owner, deployment=deployment, spec={"resources": {"gpu_type": H100}})
    deployment.refresh_from_db()
    assert deployment.spec()["resources"]["gpu_type"] == H100
    assert "gpu_types" not in deployment.spec()["resources"]
    services.deployment_update(user=tenants.owner, deployment=deployment,
                               spec={"resources": {"gpu_types": [A100, L4]}})  # fmt: skip
    deployment.refresh_from_db()
    assert deployment.spec()["resources"]["gpu_type"] == A100


def test_bad_gpu_types_are_field_errors(create) -> None:
    with pytest.raises(ValidationError) as exc:
        create({"resources": {"gpu_types": [A100, "not a label!"]}})
    assert "not a node label value" in _errors(exc)["resources.gpu_types"]
    with pytest.raises(ValidationError) as exc:
        create({"resources": {"gpu_types": "A100"}})
    assert "list of GPU product names" in _errors(exc)["resources.gpu_types"]


def test_every_flavor_must_be_allowed_by_the_policies(create, tenants) -> None:
    env = Environment.objects.create(project=tenants.project, name="Prod", slug="prod", allowed_gpu_types=[A100, L4])
    with pytest.raises(ValidationError) as exc:
        create({"resources": {"gpu_types": [A100, H100]}}, environment=env)
    assert f"Environment “Prod” allows only GPU types {A100}, {L4}; the spec asks for “{H100}”" in _errors(exc)["resources.gpu_type"]
    assert create({"resources": {"gpu_types": [A100, L4]}}, environment=env).pk


def test_node_pools_render_the_priority(create) -> None:
    deployment = create({"node_pools": [{"key": "run.ai/node-pool", "values": ["a100"]}, "run.ai/node-pool=l4,l4-spot"]})
    assert deployment.spec()["node_pools"] == [
        {"key": "run.ai/node-pool", "values": ["a100"]}, {"key": "run.ai/node-pool", "values": ["l4", "l4-spot"]}]  # fmt: skip
    node = _pod(deployment)["affinity"]["nodeAffinity"]
    assert [p["weight"] for p in node["preferredDuringSchedulingIgnoredDuringExecution"]] == [100, 1]
    assert node["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"][0][
        "values"] == ["a100", "l4", "l4-spot"]  # fmt: skip


@pytest.mark.parametrize(
    ("node_pools", "words"),
    [
        ("a100", "Must be a list of node pools"),
        ([{"key": "pool"}], "give one or more label values"),
        ([{"key": "pool", "values": ["a"], "weight": 3}], "must be a mapping with key and values"),
        ([{"key": "bad key!", "values": ["a"]}], "not a valid label key"),
        (["pool=a", "pool=a"], "listed twice"),
    ],
)
def test_bad_node_pools_are_field_errors(create, node_pools, words) -> None:
    with pytest.raises(ValidationError) as exc:
        create({"node_pools": node_pools})
    assert words in _errors(exc)["node_pools"]


def test_rest_and_apply_take_flavors_and_node_pools(tenants, model, bundle, offline_pool) -> None:
    client = rest_api_client(tenants.owner)
    body = {"project": tenants.project.pk, "model": model.pk, "pool": offline_pool.pk, "bundle": bundle.pk, "name": "chat",
            "spec": {"resources": {"cpu": "2", "memory": "8Gi", "gpus": 1, "gpu_types": [L4, A100]},
                     "node_pools": [{"key": "pool", "values": ["x"]}, {"key": "pool", "values": []}]}}  # fmt: skip
    response = client.post("/api/v1/deployments/", body, format="json")
    assert response.status_code == 400 and "give one or more label values" in " ".join(response.json()["node_pools"])
    body["spec"]["node_pools"][1]["values"] = ["y"]
    response = client.post("/api/v1/deployments/", body, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["spec"]["resources"]["gpu_types"] == [L4, A100]
    assert [p["values"] for p in response.json()["spec"]["node_pools"]] == [["x"], ["y"]]

    text = f"""
apiVersion: modeldeck.io/v1
kind: ModelDeployment
metadata: {{name: pooled, project: research}}
spec:
  model: Qwen2.5 0.5B Instruct
  pool: offline
  bundle: vllm-test
  served_model_name: pooled
  resources: {{cpu: "2", memory: 8Gi, gpus: 1, gpu_types: [{H100}, {A100}]}}
  node_pools:
    - {{key: run.ai/node-pool, values: [h100]}}
    - run.ai/node-pool=a100
"""
    out: list[str] = []
    ctx = Context(user=tenants.owner, organization=tenants.org)
    assert apply_documents(ctx, load_documents(text), dry_run=False, write=out.append) == 0, out
    spec = ModelDeployment.objects.get(name="pooled").spec()
    assert spec["resources"]["gpu_types"] == [H100, A100]
    assert [p["values"] for p in spec["node_pools"]] == [["h100"], ["a100"]]


def _form(tenants, model, bundle, pool, **fields: str) -> dict[str, str]:
    return {
        "name": "chat", "project": str(tenants.project.pk), "model": str(model.pk), "pool": str(pool.pk),
        "bundle": str(bundle.pk), "replicas_min": "1", "replicas_max": "1", "cpu": "2", "memory": "8Gi",
        "gpus": "1", "currency": "USD", "price_input": "0", "price_output": "0", **fields,
    }  # fmt: skip


def test_the_form_takes_a_list_of_gpu_types_and_ordered_node_pools(owner_client, tenants, model, bundle, offline_pool) -> None:
    bad = _form(tenants, model, bundle, offline_pool, node_pools="run.ai/node-pool")
    page = owner_client.post(reverse("deployments:create"), bad).content.decode()
    assert "write a node pool as key=value" in page
    form = _form(tenants, model, bundle, offline_pool, gpu_type=f"{A100}, {H100}",
                 node_pools="run.ai/node-pool=h100\nrun.ai/node-pool=a100,a100-spot")  # fmt: skip
    response = owner_client.post(reverse("deployments:create"), form)
    assert response.status_code == 302, response.content.decode()[:3000]
    deployment = ModelDeployment.objects.get(name="chat")
    spec = deployment.spec()
    assert spec["resources"]["gpu_types"] == [A100, H100]
    assert spec["node_pools"] == [{"key": "run.ai/node-pool", "values": ["h100"]},
                                  {"key": "run.ai/node-pool", "values": ["a100", "a100-spot"]}]  # fmt: skip
    # The edit form shows them as they were given, and the list is there to reorder.
    edit = owner_client.get(reverse("deployments:deployment_update", args=[deployment.pk])).content.decode()
    assert f"{A100}, {H100}" in edit
    assert "run.ai/node-pool=h100\nrun.ai/node-pool=a100,a100-spot" in edit
    assert 'data-reorder-for="id_node_pools"' in edit
    # Reordered (what the up/down buttons write) and saved: a new revision with the new order.
    form = {**form, "node_pools": "run.ai/node-pool=a100,a100-spot\nrun.ai/node-pool=h100", "reason": "A100 first"}
    for key in ("name", "project", "model", "pool", "bundle"):
        form.pop(key)
    response = owner_client.post(reverse("deployments:deployment_update", args=[deployment.pk]), form)
    assert response.status_code == 302, response.content.decode()[:3000]
    deployment.refresh_from_db()
    assert [p["values"][0] for p in deployment.spec()["node_pools"]] == ["a100", "h100"]


def test_the_estimate_sizes_for_the_smallest_flavor(owner_client, tenants, model, bundle, offline_pool) -> None:
    from deployments.selectors import deployment_estimate_preview

    # Llama-3.1-8B's facts (config.json): the pods may land on an 80 GB H100 or a 24 GB L4, so
    # the estimate is the L4's, and one L4 is too small for 8B at 128k context.
    model.parameters = 8_030_261_248
    model.config = {"num_hidden_layers": 32, "num_key_value_heads": 8, "hidden_size": 4096,
                    "num_attention_heads": 32, "max_position_embeddings": 131072}  # fmt: skip
    flavors = deployment_estimate_preview(model=model, context_length=131072, gpu_type=f"{H100}, {L4}",
                                          gpus_per_replica=1, pools=[offline_pool])  # fmt: skip
    assert flavors["estimate_gpu_type"] == L4
    assert "1 GPU per replica is too small" in flavors["estimate_warning"]
    h100 = deployment_estimate_preview(model=model, context_length=131072, gpu_type=H100,
                                       gpus_per_replica=1, pools=[offline_pool])  # fmt: skip
    assert h100["estimate_warning"] == ""
