"""NIM as NVIDIA documents it: the built-in bundle deploys, the NGC key is required at save time,
pull and API-key Secrets have ModelDeck's own names, and nobody else's Secret is taken over."""

from __future__ import annotations

import base64

import pytest
from django.core.exceptions import ValidationError

from catalog.models import CatalogModel, ProfileBundle
from catalog.services import bundles_builtin_ensure
from deployments.models import ComputePool, DeploymentEvent, DeploymentState, PoolKind
from deployments.services import deployment_create
from projects.models import IntegrationKind
from projects.services import integration_set
from tests.deployments.conftest import state_of, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

NGC_KEY = "nvapi-test-key"


@pytest.fixture
def nim_pool(tenants, cluster) -> ComputePool:
    return ComputePool.objects.create(
        organization=tenants.org, name="nim-pool", kind=PoolKind.SANDBOX, api_url=cluster.url,
        engine_label="nim",
    )  # fmt: skip


@pytest.fixture
def nim_model(tenants) -> CatalogModel:
    return CatalogModel.objects.create(
        organization=tenants.org, name="Llama 3.1 8B Instruct NIM", source="ngc",
        ngc_image="nvcr.io/nim/meta/llama-3.1-8b-instruct", ngc_tag="1.3.3",
    )  # fmt: skip


@pytest.fixture
def nim_bundle(db) -> ProfileBundle:
    bundles_builtin_ensure()
    return ProfileBundle.objects.get(organization=None, name="nim-llm")


def _deploy(tenants, nim_model, nim_pool, nim_bundle, **spec):
    return deployment_create(
        user=tenants.owner, project=tenants.project, model=nim_model, pool=nim_pool,
        name="llama", bundle=nim_bundle,
        spec={"resources": {"cpu": "4", "memory": "16Gi", "gpus": 1}, **spec},
    )  # fmt: skip


def test_nim_without_the_projects_ngc_key_is_refused_at_save(
    tenants, nim_model, nim_pool, nim_bundle
) -> None:
    with pytest.raises(ValidationError) as err:
        _deploy(tenants, nim_model, nim_pool, nim_bundle)
    assert "NGC API key" in str(err.value.message_dict["model"])


def test_builtin_nim_bundle_deploys_with_its_own_secrets(
    tenants, nim_model, nim_pool, nim_bundle, emulator
) -> None:
    integration_set(user=tenants.owner, project=tenants.project, kind=IntegrationKind.NGC,
                    secret=NGC_KEY)  # fmt: skip
    deployment = _deploy(
        tenants, nim_model, nim_pool, nim_bundle, nim_profile="tensorrt_llm-l4-bf16-tp1"
    )
    ns = tenants.project.namespace()
    wait_for(lambda: emulator.get_object("Deployment", ns, "llama-r1"), sync=False)
    pod = emulator.get_object("Deployment", ns, "llama-r1")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert pod["imagePullSecrets"] == [{"name": "modeldeck-ngc-pull"}]
    assert env["NGC_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "modeldeck-ngc-api-key", "key": "NGC_API_KEY"}  # fmt: skip
    assert env["NIM_MODEL_PROFILE"]["value"] == "tensorrt_llm-l4-bf16-tp1"
    assert env["NIM_ENABLE_KV_CACHE_REUSE"]["value"] == "1"
    cache_mount = next(m for m in container["volumeMounts"] if m["name"] == "model-cache")
    assert cache_mount["mountPath"] == env["NIM_CACHE_PATH"]["value"]

    pull = emulator.get_object("Secret", ns, "modeldeck-ngc-pull")
    assert pull["type"] == "kubernetes.io/dockerconfigjson"
    config = base64.b64decode(pull["data"][".dockerconfigjson"]).decode()
    assert '"username": "$oauthtoken"' in config and "nvcr.io" in config
    assert pull["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "modeldeck"
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)


def test_a_secret_modeldeck_did_not_create_is_never_taken_over(
    tenants, nim_model, nim_pool, nim_bundle, emulator
) -> None:
    integration_set(user=tenants.owner, project=tenants.project, kind=IntegrationKind.NGC,
                    secret=NGC_KEY)  # fmt: skip
    ns = tenants.project.namespace()
    theirs = base64.b64encode(b"the operator's own").decode()
    emulator.put_object({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "modeldeck-ngc-api-key", "namespace": ns, "labels": {"team": "ml"}},
        "data": {"NGC_API_KEY": theirs},
    })  # fmt: skip
    deployment = _deploy(tenants, nim_model, nim_pool, nim_bundle)
    assert state_of(deployment) == DeploymentState.FAILED
    assert "not created by ModelDeck" in deployment.state_reason
    assert DeploymentEvent.objects.filter(deployment=deployment, reason="SecretNotOwned").exists()
    kept = emulator.get_object("Secret", ns, "modeldeck-ngc-api-key")
    assert kept["data"]["NGC_API_KEY"] == theirs
    assert "app.kubernetes.io/managed-by" not in kept["metadata"]["labels"]
