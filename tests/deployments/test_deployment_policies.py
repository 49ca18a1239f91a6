"""Policies on one deployment (spec `policies`): they narrow the environment's, never widen them,
and every refusal names the rule — through the service, the form, REST and `apply -f`."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from deployments import services
from deployments.apply import Context, apply_documents, load_documents
from deployments.models import ComputePool, ModelDeployment, PoolKind
from projects.models import Environment
from tests.factories import rest_api_client

pytestmark = pytest.mark.django_db

BASE = {"resources": {"cpu": "2", "memory": "8Gi", "gpus": 1, "gpu_type": "NVIDIA-L4"}}


@pytest.fixture
def offline_pool(tenants) -> ComputePool:
    return ComputePool.objects.create(organization=tenants.org, name="offline", kind=PoolKind.SANDBOX,
                                      api_url="http://127.0.0.1:9", engine_label="vllm")  # fmt: skip


@pytest.fixture
def second_pool(tenants) -> ComputePool:
    return ComputePool.objects.create(organization=tenants.org, name="second", kind=PoolKind.SANDBOX,
                                      api_url="http://127.0.0.1:9", engine_label="vllm")  # fmt: skip


@pytest.fixture
def staging(tenants, offline_pool, second_pool) -> Environment:
    env = Environment.objects.create(
        project=tenants.project, name="Staging", slug="staging", max_replicas=4,
        max_gpus_per_replica=2, allowed_gpu_types=["NVIDIA-L4", "NVIDIA-A100-SXM4-80GB"],
    )  # fmt: skip
    env.allowed_pools.set([offline_pool, second_pool])
    return env


@pytest.fixture
def create(tenants, model, bundle, offline_pool):
    def _create(spec: dict, *, environment=None, name: str = "chat", pool=None):
        return services.deployment_create(
            user=tenants.owner, project=tenants.project, model=model, pool=pool or offline_pool,
            name=name, bundle=bundle, spec={**BASE, **spec}, environment=environment,
        )  # fmt: skip

    return _create


def _errors(exc: pytest.ExceptionInfo[ValidationError]) -> dict[str, str]:
    return {k: " ".join(v) for k, v in exc.value.message_dict.items()}


def test_a_deployment_policy_narrows_the_environments_maximum(create, staging) -> None:
    # The environment allows 4 replicas; the deployment's own policy allows 2.
    with pytest.raises(ValidationError) as exc:
        create({"policies": {"max_replicas": 2}, "replicas": {"min": 1, "max": 3}}, environment=staging)
    message = _errors(exc)["replicas.max"]
    assert "The deployment's policy max_replicas allows at most 2 replicas" in message
    assert "asks for 3" in message
    deployment = create({"policies": {"max_replicas": 2}, "replicas": {"min": 1, "max": 2}},
                        environment=staging)  # fmt: skip
    assert deployment.spec()["policies"] == {"max_replicas": 2}


def test_a_deployment_policy_narrows_gpu_types_and_pools(create, staging, second_pool) -> None:
    narrowed = {"allowed_gpu_types": ["NVIDIA-A100-SXM4-80GB"], "allowed_pools": ["second"]}
    with pytest.raises(ValidationError) as exc:
        create({"policies": narrowed}, environment=staging)
    errors = _errors(exc)
    # The environment allows L4 and offline; the deployment's policy only A100 on "second".
    assert "The deployment's policy allowed_gpu_types allows only GPU types NVIDIA-A100-SXM4-80GB" in errors["resources.gpu_type"]
    assert "“NVIDIA-L4”" in errors["resources.gpu_type"]
    assert "The deployment's policy allowed_pools allows only the compute pools “second”" in errors["pool"]
    deployment = create({"policies": narrowed, "resources": {**BASE["resources"], "gpu_type": "NVIDIA-A100-SXM4-80GB"}},
                        environment=staging, pool=second_pool)  # fmt: skip
    assert deployment.pool == second_pool


@pytest.mark.parametrize(
    ("policies", "key", "words"),
    [
        ({"max_replicas": 8}, "policies.max_replicas",
         "The deployment's policy max_replicas (8) would widen Environment “Staging”, which allows at most 4"),
        ({"max_gpus_per_replica": 4}, "policies.max_gpus_per_replica",
         "The deployment's policy max_gpus_per_replica (4) would widen Environment “Staging”, which allows at most 2"),
        ({"allowed_gpu_types": ["NVIDIA-L4", "NVIDIA-H100-80GB-HBM3"]}, "policies.allowed_gpu_types",
         "The deployment's policy allowed_gpu_types lists NVIDIA-H100-80GB-HBM3, which Environment “Staging” does not allow"),
    ],
)  # fmt: skip
def test_a_deployment_policy_that_would_widen_the_environment_is_refused_naming_the_rule(
    create, staging, policies, key, words
) -> None:
    with pytest.raises(ValidationError) as exc:
        create({"policies": policies}, environment=staging)
    assert words in _errors(exc)[key]
    assert not ModelDeployment.objects.exists()


def test_a_pool_outside_the_environment_is_a_widening(create, tenants, staging) -> None:
    ComputePool.objects.create(organization=tenants.org, name="elsewhere", kind=PoolKind.SANDBOX,
                               api_url="http://127.0.0.1:9", engine_label="vllm")  # fmt: skip
    with pytest.raises(ValidationError) as exc:
        create({"policies": {"allowed_pools": ["offline", "elsewhere"]}}, environment=staging)
    message = _errors(exc)["policies.allowed_pools"]
    assert "lists elsewhere, which Environment “Staging” does not allow" in message


def test_policies_hold_without_an_environment(create) -> None:
    with pytest.raises(ValidationError) as exc:
        create({"policies": {"max_gpus_per_replica": 0}})
    assert "The deployment's policy max_gpus_per_replica allows at most 0 GPUs per replica" in _errors(exc)["resources.gpus"]


def test_unknown_rules_and_pools_of_no_one_are_refused(create, tenants) -> None:
    with pytest.raises(ValidationError) as exc:
        create({"policies": {"max_replicaz": 1}})
    assert "Unknown policy rule" in _errors(exc)["policies.max_replicaz"]
    ComputePool.objects.create(organization=tenants.other_org, name="theirs", kind=PoolKind.SANDBOX,
                               api_url="http://127.0.0.1:9", engine_label="vllm")  # fmt: skip
    with pytest.raises(ValidationError) as exc:
        create({"policies": {"allowed_pools": ["theirs"]}})
    assert "names “theirs”, which is no compute pool of this organization" in _errors(exc)["policies.allowed_pools"]


def test_changing_only_policies_needs_no_rollout(create, tenants) -> None:
    deployment = create({"replicas": {"min": 1, "max": 2}})
    revision = services.deployment_update(user=tenants.owner, deployment=deployment,
                                          spec={"policies": {"max_replicas": 2}})  # fmt: skip
    assert revision.number == 2 and revision.pods_number() == 1
    assert "no rollout needed" in revision.reason
    with pytest.raises(ValidationError) as exc:
        services.deployment_update(user=tenants.owner, deployment=deployment, spec={"policies": {"max_replicas": 1}})
    assert "allows at most 1 replica" in _errors(exc)["replicas.max"]
    # Clearing the policies removes them (a mapping replaced whole, not merged key by key).
    services.deployment_update(user=tenants.owner, deployment=deployment, spec={"policies": {}})
    deployment.refresh_from_db()
    assert "policies" not in deployment.spec()


def test_rest_takes_policies_and_names_the_rule_in_a_400(tenants, model, bundle, offline_pool, staging) -> None:
    client = rest_api_client(tenants.owner)
    body = {"project": tenants.project.pk, "model": model.pk, "pool": offline_pool.pk, "bundle": bundle.pk,
            "name": "chat", "environment": staging.pk, "spec": {**BASE, "policies": {"max_replicas": 9}}}  # fmt: skip
    response = client.post("/api/v1/deployments/", body, format="json")
    assert response.status_code == 400
    assert "would widen Environment “Staging”" in " ".join(response.json()["policies.max_replicas"])
    body["spec"]["policies"] = {"max_replicas": 1}
    response = client.post("/api/v1/deployments/", body, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["spec"]["policies"] == {"max_replicas": 1}
    pk = response.json()["id"]
    response = client.patch(f"/api/v1/deployments/{pk}/", {"spec": {"replicas": {"min": 1, "max": 2}}}, format="json")
    assert response.status_code == 400
    assert "The deployment's policy max_replicas allows at most 1 replica" in " ".join(response.json()["replicas.max"])


def test_apply_takes_policies(tenants, model, bundle, offline_pool) -> None:
    text = """
apiVersion: modeldeck.io/v1
kind: ModelDeployment
metadata: {name: guarded, project: research}
spec:
  model: Qwen2.5 0.5B Instruct
  pool: offline
  bundle: vllm-test
  replicas: {min: 1, max: 2}
  resources: {cpu: "2", memory: 8Gi, gpus: 1}
  policies: {max_replicas: 1}
"""
    out: list[str] = []
    ctx = Context(user=tenants.owner, organization=tenants.org)
    assert apply_documents(ctx, load_documents(text), dry_run=False, write=out.append) == 1
    assert "The deployment's policy max_replicas allows at most 1 replica" in out[0]
    out.clear()
    fixed = text.replace("max: 2}", "max: 1}")
    assert apply_documents(ctx, load_documents(fixed), dry_run=False, write=out.append) == 0, out
    assert ModelDeployment.objects.get(name="guarded").spec()["policies"] == {"max_replicas": 1}


def test_the_form_shows_the_refusal_on_the_policies_field(owner_client, tenants, model, bundle, offline_pool, staging) -> None:
    form = {
        "name": "chat", "project": str(tenants.project.pk), "model": str(model.pk), "pool": str(offline_pool.pk),
        "bundle": str(bundle.pk), "environment": str(staging.pk), "replicas_min": "1", "replicas_max": "1",
        "cpu": "2", "memory": "8Gi", "gpus": "1", "gpu_type": "NVIDIA-L4", "currency": "USD",
        "price_input": "0", "price_output": "0", "policies": "max_replicas: 10",
    }  # fmt: skip
    page = owner_client.post(reverse("deployments:create"), form).content.decode()
    assert "would widen Environment “Staging”" in page
    assert not ModelDeployment.objects.exists()
    form["policies"] = "max_replicas: 1\nallowed_gpu_types: [NVIDIA-L4]"
    response = owner_client.post(reverse("deployments:create"), form)
    assert response.status_code == 302, response.content.decode()[:3000]
    spec = ModelDeployment.objects.get(name="chat").spec()
    assert spec["policies"] == {"max_replicas": 1, "allowed_gpu_types": ["NVIDIA-L4"]}
