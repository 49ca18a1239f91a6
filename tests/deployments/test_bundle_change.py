"""Bundle version and variables changed from the deployment (page, REST, `apply -f` spec keys):
a diff first, then a revision through deployment_update rolled out blue-green; each revision
keeps running the bundle version it was made with."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from catalog.services import bundle_create, bundle_update
from deployments import services
from deployments.models import ComputePool, DeploymentState, ModelDeployment, PoolKind
from deployments.renderers import render
from deployments.spec import render_spec_for
from tests.factories import rest_api_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def offline_pool(tenants) -> ComputePool:
    return ComputePool.objects.create(organization=tenants.org, name="offline", kind=PoolKind.SANDBOX,
                                      api_url="http://127.0.0.1:9", engine_label="vllm")  # fmt: skip


@pytest.fixture
def versions(tenants):
    v1 = bundle_create(
        user=tenants.owner, organization=tenants.org, name="chat-vllm", engine="vllm", image="vllm/vllm-openai:v0.8.5",
        default_args=["--max-num-seqs", "32"], labels={"modeldeck.io/inference-engine": "vllm"},
        variables=[{"name": "gpu_memory_utilization", "type": "number", "default": "0.9"}],
    )  # fmt: skip
    v2 = bundle_update(user=tenants.owner, bundle=v1, image="vllm/vllm-openai:v0.9.0", default_args=["--max-num-seqs", "64"],
                       variables=[{"name": "gpu_memory_utilization", "type": "number", "default": "0.9"},
                                  {"name": "max_model_len", "type": "number", "default": ""}])  # fmt: skip
    return v1, v2


@pytest.fixture
def deployment(tenants, model, offline_pool, versions):
    d = services.deployment_create(
        user=tenants.owner, project=tenants.project, model=model, pool=offline_pool, name="chat", bundle=versions[0],
        spec={"resources": {"cpu": "2", "memory": "8Gi", "gpus": 1}},
    )  # fmt: skip
    services.state_claim(d, expect=DeploymentState.PENDING, state=DeploymentState.RUNNING)
    return d


def _args(deployment, revision=None) -> list[str]:
    revision = revision or deployment.current_revision
    objects = render(render_spec_for(deployment, revision))
    container = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return container["image"], container["args"]


def test_the_plan_shows_what_changes_without_writing(deployment, versions) -> None:
    plan = services.deployment_bundle_plan(deployment=deployment, version=2, variables={"gpu_memory_utilization": "0.8"})
    by_field = {c["field"]: (c["old"], c["new"]) for c in plan["changes"]}
    assert by_field["bundle"] == ("chat-vllm v1", "chat-vllm v2")
    assert by_field["image"] == ("vllm/vllm-openai:v0.8.5", "vllm/vllm-openai:v0.9.0")
    assert by_field["bundle_args"] == ("--max-num-seqs 32", "--max-num-seqs 64")
    assert by_field["variables.gpu_memory_utilization"] == ("0.9", "0.8")
    assert plan["rollout"] is True
    deployment.refresh_from_db()
    assert deployment.bundle == versions[0] and deployment.revisions.count() == 1


def test_a_bundle_change_is_a_blue_green_revision_and_rollback_restores_the_version(tenants, deployment, versions) -> None:
    revision = services.deployment_bundle_change(user=tenants.owner, deployment=deployment, version=2,
                                                 variables={"gpu_memory_utilization": "0.8", "max_model_len": "4096"})  # fmt: skip
    deployment.refresh_from_db()
    assert revision.number == 2 and deployment.bundle == versions[1]
    assert deployment.state == DeploymentState.DEPLOYING  # revision 1 serves until 2 is ready
    assert deployment.state_reason.startswith("Rolling out revision 2")
    image, args = _args(deployment)
    assert image == "vllm/vllm-openai:v0.9.0"
    assert args[args.index("--gpu-memory-utilization") + 1] == "0.8" and "--max-model-len" in args
    assert args[args.index("--max-num-seqs") + 1] == "64"
    # Revision 1 still renders as it ran: bundle v1, its image and arguments.
    image1, args1 = _args(deployment, deployment.revisions.get(number=1))
    assert image1 == "vllm/vllm-openai:v0.8.5" and args1[args1.index("--max-num-seqs") + 1] == "32"
    assert args1[args1.index("--gpu-memory-utilization") + 1] == "0.9"
    services.deployment_rollback(user=tenants.owner, deployment=deployment, revision_number=1)
    deployment.refresh_from_db()
    assert deployment.bundle == versions[0] and deployment.spec()["bundle_version"] == 1


def test_unknown_versions_and_variables_are_refused(tenants, deployment) -> None:
    with pytest.raises(ValidationError) as exc:
        services.deployment_bundle_change(user=tenants.owner, deployment=deployment, version=7)
    assert "has no version 7 (versions: 2, 1)" in " ".join(exc.value.message_dict["bundle_version"])
    with pytest.raises(ValidationError) as exc:
        services.deployment_bundle_change(user=tenants.owner, deployment=deployment, variables={"max_model_len": "9"})
    assert "chat-vllm v1 has no variable “max_model_len”" in " ".join(exc.value.message_dict["bundle_vars"])
    with pytest.raises(services.PermissionDenied):
        services.deployment_bundle_change(user=tenants.viewer, deployment=deployment, version=2)


def test_the_deployment_page_previews_the_diff_then_rolls_out(owner_client, deployment, versions) -> None:
    page = owner_client.get(deployment.get_absolute_url()).content.decode()
    assert 'id="bundle-card"' in page and "chat-vllm v2" in page and "Nothing changes with these settings." in page
    url = reverse("deployments:deployment_bundle", args=[deployment.pk])
    preview = owner_client.get(url, {"version": "2", "var_gpu_memory_utilization": "0.85"}, HTTP_HX_REQUEST="true").content.decode()
    assert "vllm/vllm-openai:v0.9.0" in preview and "variables.gpu_memory_utilization" in preview
    assert "A blue-green rollout" in preview
    assert 'id="id_var_max_model_len"' in preview  # v2's own variables are offered
    response = owner_client.post(url, {"version": "2", "var_gpu_memory_utilization": "0.85"})
    assert response.status_code == 302
    deployment.refresh_from_db()
    assert deployment.bundle == versions[1] and deployment.spec()["bundle_vars"] == {"gpu_memory_utilization": "0.85"}
    assert "Bundle chat-vllm v2" in deployment.current_revision.reason


def test_the_page_and_rest_are_scoped(client, tenants, deployment) -> None:
    from tests.conftest import login

    url = reverse("deployments:deployment_bundle", args=[deployment.pk])
    assert login(tenants.outsider).get(url, {"version": "2"}).status_code == 404
    assert login(tenants.viewer).post(url, {"version": "2"}).status_code == 403
    api = f"/api/v1/deployments/{deployment.pk}/bundle/"
    assert rest_api_client(tenants.outsider).post(api, {"version": 2}, format="json").status_code == 404
    assert rest_api_client(tenants.viewer).post(api, {"version": 2, "dry_run": True}, format="json").status_code == 403


def test_rest_dry_run_then_change_and_patch_spec_keys(tenants, deployment, versions) -> None:
    client = rest_api_client(tenants.owner)
    api = f"/api/v1/deployments/{deployment.pk}/bundle/"
    dry = client.post(api, {"version": 2, "dry_run": True}, format="json")
    assert dry.status_code == 200 and dry.json()["bundle"] == "chat-vllm v2"
    assert {"field": "bundle", "old": "chat-vllm v1", "new": "chat-vllm v2"} in dry.json()["changes"]
    assert ModelDeployment.objects.get(pk=deployment.pk).bundle == versions[0]
    assert client.post(api, {"version": 9}, format="json").status_code == 400
    done = client.post(api, {"version": 2, "variables": {"max_model_len": "8192"}}, format="json")
    assert done.status_code == 200 and done.json()["spec"]["bundle_vars"] == {"max_model_len": "8192"}
    # The same keys in a plain spec PATCH (and so in `apply -f`).
    patched = client.patch(f"/api/v1/deployments/{deployment.pk}/", {"spec": {"bundle_version": 1, "bundle_vars": {}}},
                           format="json")  # fmt: skip
    assert patched.status_code == 200, patched.json()
    assert patched.json()["spec"]["bundle_version"] == 1 and "bundle_vars" not in patched.json()["spec"]
    assert ModelDeployment.objects.get(pk=deployment.pk).bundle == versions[0]


def test_changes_that_dont_touch_the_bundle_keep_older_specs_equal(tenants, deployment) -> None:
    # A revision saved before specs recorded bundle_version: a price change still needs no rollout.
    revision = deployment.current_revision
    revision.spec = {k: v for k, v in revision.spec.items() if k != "bundle_version"}
    revision.save()
    deployment.refresh_from_db()
    again = services.deployment_update(user=tenants.owner, deployment=deployment, spec={"pricing": {"input_per_million": "2"}})
    assert again.pods_number() == 1 and again.spec["bundle_version"] == 1
