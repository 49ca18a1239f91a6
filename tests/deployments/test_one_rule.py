"""Rules that two entry points used to apply differently; the service's rule now decides for all.

Each test here failed on the code before issue #8 (one rule, one place): the form and the service
compared names differently, the form normalized endpoint paths and the service did not, the
quota preview ignored the organization's quota, and a deactivated manifest reserved GPUs and
was pushed twice.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from deployments import services
from deployments.apply import Context, apply_documents, load_documents
from deployments.models import ComputePool, DeploymentState, Endpoint, ModelDeployment, PoolKind
from projects.models import GpuReservation
from tests.conftest import login
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def offline_pool(tenants) -> ComputePool:
    # Nothing listens on port 9; no test here should reach the pool anyway.
    return ComputePool.objects.create(organization=tenants.org, name="offline", kind=PoolKind.SANDBOX,
                                      api_url="http://127.0.0.1:9", engine_label="vllm")  # fmt: skip


def test_endpoint_paths_are_normalized_by_the_service_for_every_entry_point(tenants):
    endpoint = services.endpoint_create(
        user=tenants.owner, project=tenants.project, name="chat", path="/chat/"
    )
    assert endpoint.path == "/chat"  # the form used to strip the "/", the service did not
    with pytest.raises(services.ValidationError) as exc:
        services.endpoint_create(user=tenants.owner, project=tenants.project, name="c2", path="chat")
    assert "already used" in exc.value.message_dict["path"][0]


def test_endpoint_names_follow_the_services_exact_rule_in_the_form(owner_client, tenants):
    Endpoint.objects.create(project=tenants.project, name="chat", path="/chat")
    response = owner_client.post(
        reverse("deployments:endpoints"),
        {"project": tenants.project.pk, "name": "Chat", "path": "/chat-2"},
    )
    # The form refused "Chat" case-insensitively while the service (and the API) accepted it.
    assert response.status_code == 302
    assert set(Endpoint.objects.values_list("name", flat=True)) == {"chat", "Chat"}
    again = owner_client.post(
        reverse("deployments:endpoints"),
        {"project": tenants.project.pk, "name": "chat", "path": "/chat-3"},
    )
    assert "already exists in this project" in again.content.decode()
    assert Endpoint.objects.count() == 2


def test_pool_names_follow_the_services_exact_rule_in_the_form(tenants, offline_pool, operator):
    owner_client = login(operator)  # registering pools is a platform operator's act
    response = owner_client.post(
        reverse("deployments:pool_create"),
        {"name": "Offline", "kind": "sandbox", "engine_label": "vllm"},
    )
    assert response.status_code == 302
    assert set(ComputePool.objects.values_list("name", flat=True)) == {"offline", "Offline"}
    again = owner_client.post(
        reverse("deployments:pool_create"),
        {"name": "offline", "kind": "sandbox", "engine_label": "vllm"},
    )
    assert "already exists in this organization" in again.content.decode()


def test_quota_preview_applies_the_organizations_quota_too(owner_client, tenants, model, offline_pool):
    # Acme's quota is 16 GPUs; another of its projects holds 12 of them. Research (quota 8) holds
    # none, so 5 GPUs fit the project's quota but not the organization's.
    other = ProjectFactory(organization=tenants.org, name="Other", slug="other", gpu_quota=16)
    GpuReservation.objects.create(project=other, holder="deployment:other", gpus=12)
    panel = owner_client.post(
        reverse("deployments:create") + f"?model={model.pk}",
        {"project": tenants.project.pk, "gpus": "5", "replicas_max": "1", "_panel": "estimate"},
        HTTP_HX_REQUEST="true",
    ).content.decode()
    assert "0 of 8 are held by others" in panel
    assert "Organization “Acme” has a quota of 16 GPUs, 12 are in use: 5 more do not fit." in panel
    assert not GpuReservation.objects.filter(project=tenants.project).exists()  # a preview only


DEACTIVATED = """
apiVersion: modeldeck.io/v1
kind: ModelDeployment
metadata: {name: idle, project: research}
spec:
  model: Qwen2.5 0.5B Instruct
  pool: offline
  bundle: vllm-test
  state: deactivated
  served_model_name: idle
  replicas: {min: 1, max: 2}
  resources: {cpu: "2", memory: 8Gi, gpus: 2}
"""


def test_a_deactivated_manifest_is_created_deactivated_without_gpus_or_a_push(
    tenants, model, bundle, offline_pool, monkeypatch, django_capture_on_commit_callbacks
):
    from deployments import tasks

    pushed: list[int] = []
    reserved: list[int] = []
    monkeypatch.setattr(tasks.push_deployment, "delay", lambda pk: pushed.append(pk))
    real_reserve = services.quota_reserve

    def spy_reserve(*, project, holder, gpus):
        reserved.append(gpus)
        return real_reserve(project=project, holder=holder, gpus=gpus)

    monkeypatch.setattr(services, "quota_reserve", spy_reserve)
    out: list[str] = []
    ctx = Context(user=tenants.owner, organization=tenants.org)
    with django_capture_on_commit_callbacks(execute=True):
        errors = apply_documents(ctx, load_documents(DEACTIVATED), dry_run=False, write=out.append)

    assert errors == 0, out
    deployment = ModelDeployment.objects.get(name="idle")
    assert deployment.state == DeploymentState.DEACTIVATED
    assert deployment.current_revision.spec["resources"]["gpus"] == 2
    # Before: created active (4 GPUs reserved, a push), then deactivated (a second push).
    assert [g for g in reserved if g] == []
    assert not GpuReservation.objects.exists()
    assert pushed == []
    assert list(deployment.events.values_list("reason", flat=True)) == ["Created"]


def test_a_document_that_fails_half_way_leaves_nothing_behind(tenants, model, bundle, offline_pool):
    # The project has room for 8 GPUs: the deployment is refused at the reservation, after its
    # row was written inside the document's transaction; nothing of it may remain.
    text = DEACTIVATED.replace("state: deactivated", "state: active").replace("gpus: 2", "gpus: 8")
    out: list[str] = []
    ctx = Context(user=tenants.owner, organization=tenants.org)
    errors = apply_documents(ctx, load_documents(text), dry_run=False, write=out.append)
    assert errors == 1 and "quota of 8 GPUs" in out[0]
    assert not ModelDeployment.objects.filter(name="idle").exists()


def _form(tenants, model, bundle, pool, **fields: str) -> dict[str, str]:
    return {
        "name": "qwen-chat", "project": str(tenants.project.pk), "model": str(model.pk),
        "pool": str(pool.pk), "bundle": str(bundle.pk), "replicas_min": "1", "replicas_max": "1",
        "cpu": "2", "memory": "8Gi", "gpus": "1", "currency": "USD", "price_input": "0.20",
        "price_output": "0.60", **fields,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value", "stored"),
    [
        # The form allowed only [A-Za-z0-9._:/-] here; the spec (and so the API) any name
        # without spaces.
        ("served_model_name", "team+qwen@v1", ("served_model_name",)),
        # The form's quantity pattern had no exponents; Kubernetes (and the renderers) take them.
        ("memory", "17e9", ("resources", "memory")),
        # The form refused prices over 1,000,000 that the API accepted.
        ("price_input", "2000000", ("pricing", "input_per_million")),
    ],
)
def test_the_form_accepts_what_the_services_rule_accepts(
    owner_client, tenants, model, bundle, offline_pool, field, value, stored
):
    response = owner_client.post(
        reverse("deployments:create"), _form(tenants, model, bundle, offline_pool, **{field: value})
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    spec = ModelDeployment.objects.get(name="qwen-chat").spec()
    for key in stored:
        spec = spec[key]
    assert spec == ("2000000.00" if field == "price_input" else value)
