"""Deployments pages: the deployment form field by field, quota, MaaS, list/detail polling, actions, pools, scoping."""

from __future__ import annotations

import re

import pytest
import yaml
from django.db import connection
from django.test import Client
from django.urls import reverse

from catalog.models import CatalogModel, MaaSMapping, ProfileBundle
from deployments.models import ComputePool, DeploymentState, Endpoint, ModelDeployment, PoolKind
from deployments.services import deployment_deactivate, deployment_update
from tests.conftest import login

pytestmark = pytest.mark.django_db

GOOD = {
    "name": "qwen-chat", "description": "Chat for the research team", "replicas_min": "1", "replicas_max": "1",
    "context_length": "4096", "prompt_caching": "on", "cpu": "2", "memory": "8Gi", "gpus": "1", "gpu_type": "",
    "env": "VLLM_LOGGING_LEVEL=INFO", "labels": "team=research", "annotations": "", "extra_args": "--max-num-seqs 16",
    "tolerations": "", "node_selector": "", "affinity": "", "currency": "USD", "price_input": "0.20",
    "price_output": "0.60", "rl_user_rpm": "60",
}  # fmt: skip


@pytest.fixture
def form_data(tenants, model, bundle, pool):
    return {
        **GOOD,
        "project": str(tenants.project.pk),
        "model": str(model.pk),
        "pool": str(pool.pk),
        "bundle": str(bundle.pk),
    }


def _running(deployment: ModelDeployment) -> ModelDeployment:
    # The status poll only reads rows; the sync task is what writes them in production.
    ModelDeployment.objects.filter(pk=deployment.pk).update(
        state=DeploymentState.RUNNING, state_reason="1/1 replicas ready"
    )
    deployment.refresh_from_db()
    return deployment


# --- The deployment form ------------------------------------------------------------------------


def test_form_shows_every_section(owner_client, pool, model, bundle):
    html = owner_client.get(reverse("deployments:create")).content.decode()
    for section in [
        "Details",
        "Model and Endpoint",
        "Inference Engine",
        "Resources",
        "Advanced",
        "Rate Limiting",
        "Pricing",
    ]:
        assert f"</span>{section}</h2>" in html, section
    for field in [
        "id_name",
        "id_replicas_max",
        "id_context_length",
        "id_gpus",
        "id_tolerations",
        "id_rl_api_key_tpm",
        "id_price_output",
    ]:
        assert f'id="{field}"' in html, field


def test_deploy_through_the_form(owner_client, form_data, tenants):
    response = owner_client.post(reverse("deployments:create"), form_data)
    deployment = ModelDeployment.objects.get(project=tenants.project, name="qwen-chat")
    assert response.status_code == 302 and response["Location"] == deployment.get_absolute_url()
    spec = deployment.spec()
    assert spec["resources"]["gpus"] == 1 and spec["resources"]["memory"] == "8Gi"
    assert spec["env"] == {"VLLM_LOGGING_LEVEL": "INFO"} and spec["labels"] == {"team": "research"}
    assert spec["extra_args"] == ["--max-num-seqs", "16"]
    assert (
        spec["rate_limits"]["user"]["rpm"] == 60
        and spec["rate_limits"]["organization"]["rpm"] is None
    )
    assert spec["pricing"]["input_per_million"].startswith("0.2")
    assert deployment.revisions.count() == 1


def test_model_cache_from_the_form_reaches_the_spec_and_the_manifests(owner_client, form_data, tenants):
    bad = owner_client.post(reverse("deployments:create"), {**form_data, "model_cache_size": "lots"})
    assert "quantity, e.g. 100Gi" in bad.content.decode()
    owner_client.post(
        reverse("deployments:create"),
        {**form_data, "model_cache_size": "100Gi", "model_cache_storage_class": "fast-rwx"},
    )
    deployment = ModelDeployment.objects.get(project=tenants.project, name="qwen-chat")
    assert deployment.spec()["model_cache"] == {
        "size": "100Gi", "storage_class": "fast-rwx", "access_mode": ""  # "": follows replicas
    }
    manifests = owner_client.get(deployment.get_absolute_url() + "?tab=manifests").content.decode()
    assert "PersistentVolumeClaim" in manifests and "fast-rwx" in manifests


def test_model_from_the_catalog_is_preselected_and_locked(owner_client, model, pool, bundle):
    html = owner_client.get(reverse("deployments:create") + f"?model={model.pk}").content.decode()
    assert "Deploying <strong>Qwen2.5 0.5B Instruct</strong>" in html
    assert 'name="model"' not in html  # locked: not a choice the user can change
    assert 'value="qwen2-5-0-5b-instruct"' in html  # a name is suggested from the model


def test_locked_model_is_used_even_if_the_post_names_another(
    owner_client, form_data, model, tenants
):
    other = CatalogModel.objects.create(
        organization=tenants.org, name="Other", source="huggingface", repo_id="x/y"
    )
    owner_client.post(
        reverse("deployments:create") + f"?model={model.pk}", {**form_data, "model": str(other.pk)}
    )
    assert ModelDeployment.objects.get(name="qwen-chat").model == model


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("name", "Qwen Chat", "lowercase letters"),
        ("gpus", "two", "whole number"),
        ("memory", "8 gigs", "16Gi or 512Mi"),
        ("cpu", "lots", "millicores"),
        ("replicas_max", "x", "whole number"),
        ("context_length", "12", "at least 256"),
        ("env", "NOEQUALS", "KEY=VALUE"),
        ("labels", "bad key!=x", "not a valid label"),
        ("tolerations", "key: [unclosed", "not valid YAML"),
        ("tolerations", "key: a", "must be a list"),
        ("node_selector", "- a", "must be a mapping"),
        ("affinity", "nodeAfinity: {}", "nodeAffinity, podAffinity"),
        ("extra_args", '--x "unclosed', "check the quotes"),
        ("rl_organization_tpm", "-5", "whole number of 0 or more"),
        ("replicas_max", "-3", "whole number of 0 or more"),  # QA: "-3 is a whole number"
        ("currency", "dollars", "three-letter"),
        ("price_input", "cheap", "0.50"),
    ],
)
def test_each_field_is_validated_alone_as_the_user_types(
    owner_client, form_data, field, value, message
):
    response = owner_client.post(
        reverse("deployments:create"),
        {**form_data, field: value, "_validate": field},
        HTTP_HX_REQUEST="true",
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert f'id="field-{field}"' in html and message in html
    assert 'id="field-name"' not in html or field == "name"  # only the asked field comes back


def test_bad_input_keeps_everything_the_user_typed(owner_client, form_data):
    data = {
        **form_data,
        "memory": "eight",
        "tolerations": "- key: nvidia.com/gpu\n  operator: Exists\n  bogus: 1",
        "replicas_min": "3",
        "replicas_max": "2",
    }
    response = owner_client.post(reverse("deployments:create"), data)
    html = response.content.decode()
    assert response.status_code == 200
    assert (
        "16Gi or 512Mi" in html
        and "unknown field “bogus”" in html
        and "maximum (2) is below the minimum (3)" in html
    )
    assert (
        'value="qwen-chat"' in html
        and "Chat for the research team" in html
        and 'value="0.60"' in html
    )
    assert "VLLM_LOGGING_LEVEL=INFO" in html and "bogus: 1" in html and "--max-num-seqs 16" in html
    assert not ModelDeployment.objects.exists()


def test_a_nul_character_in_a_yaml_field_is_a_field_error_not_a_500(tenants, form_data):
    """QA: a YAML "\\0" escape in a toleration's value reached PostgreSQL's jsonb, which can't
    hold it (DataError, a 500 on the deploy form); `apply -f` reported the driver's words."""
    client = Client(raise_request_exception=False)
    client.force_login(tenants.owner)
    tolerations = '- {key: a, operator: Equal, value: "x\\0y", effect: NoSchedule}'
    response = client.post(reverse("deployments:create"), {**form_data, "tolerations": tolerations})
    assert response.status_code == 200
    html = response.content.decode()
    assert "Line 1, column 36: A NUL character (\\0) can&#x27;t be stored; remove it." in html
    assert not ModelDeployment.objects.exists()


def test_over_quota_is_refused_with_the_numbers(owner_client, form_data, tenants):
    # Research has a quota of 8 GPUs: 3 replicas × 4 GPUs = 12 do not fit.
    response = owner_client.post(
        reverse("deployments:create"),
        {**form_data, "replicas_min": "3", "replicas_max": "3", "gpus": "4"},
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert "quota of 8 GPUs" in html and "12 more do not fit" in html
    assert 'id="field-gpus"' in html and html.rindex("12 more do not fit") > html.index(
        'id="field-gpus"'
    )
    assert not ModelDeployment.objects.exists()
    assert tenants.project.gpu_used() == 0


def test_duplicate_name_in_the_project_is_an_error_on_the_name(owner_client, form_data, deploy):
    deploy("qwen-chat")
    response = owner_client.post(
        reverse("deployments:create"), {**form_data, "_validate": "name"}, HTTP_HX_REQUEST="true"
    )
    assert "already has a deployment named “qwen-chat”" in response.content.decode()
    full = owner_client.post(reverse("deployments:create"), form_data)  # the served name is the same name
    errors = full.context["form"].errors
    assert "name" in errors and "served_model_name" not in errors, errors  # said once, on the name


def test_service_errors_land_on_the_right_field(owner_client, form_data, deploy, tenants):
    deploy("first", spec={"served_model_name": "shared-name"})
    response = owner_client.post(
        reverse("deployments:create"), {**form_data, "served_model_name": "shared-name"}
    )
    html = response.content.decode()
    field_start = html.index('id="field-served_model_name"')
    assert html.rindex("already serves the model name") > field_start
    assert ModelDeployment.objects.filter(project=tenants.project).count() == 1


def test_engine_label_mismatch_names_both_labels(owner_client, form_data, tenants):
    nim = ProfileBundle.objects.create(
        organization=tenants.org, name="nim", engine="nim", image="nvcr.io/nim/x:1", labels={}
    )
    html = owner_client.post(
        reverse("deployments:create"), {**form_data, "bundle": str(nim.pk)}
    ).content.decode()
    assert "“vllm”" in html and "“nim”" in html
    assert not ModelDeployment.objects.exists()


def test_maas_mapping_choice_is_explained(owner_client, tenants, model, bundle, pool):
    MaaSMapping.objects.create(project=tenants.project, position=0, source="ngc", bundle=bundle)
    MaaSMapping.objects.create(
        project=tenants.project, position=1, source="huggingface", bundle=bundle
    )
    html = owner_client.get(reverse("deployments:create") + f"?model={model.pk}").content.decode()
    assert f"Bundle {bundle} chosen by rule 2 of Research" in html
    # The panel follows the form as the user changes it: picking a bundle by hand says so.
    panel = owner_client.post(
        reverse("deployments:create") + f"?model={model.pk}",
        {"project": tenants.project.pk, "bundle": bundle.pk, "_panel": "bundle"},
        HTTP_HX_REQUEST="true",
    ).content.decode()
    assert 'id="bundle-panel"' in panel and "chosen by you" in panel


def test_deploy_without_a_bundle_uses_the_maas_rule(owner_client, form_data, tenants, bundle):
    MaaSMapping.objects.create(
        project=tenants.project, position=0, source="huggingface", bundle=bundle
    )
    owner_client.post(reverse("deployments:create"), {**form_data, "bundle": ""})
    assert ModelDeployment.objects.get(name="qwen-chat").bundle == bundle


def test_no_maas_rule_and_no_bundle_says_what_to_do(owner_client, form_data):
    html = owner_client.post(
        reverse("deployments:create"), {**form_data, "bundle": ""}
    ).content.decode()
    assert "no MaaS mappings" in html and "pick a bundle" in html
    assert not ModelDeployment.objects.exists()


def test_gpu_estimate_warns_when_the_request_is_too_small(owner_client, tenants, pool, bundle):
    big = CatalogModel.objects.create(
        organization=tenants.org, name="Llama 3.1 70B", source="huggingface", repo_id="meta-llama/Llama-3.1-70B-Instruct",
        parameters=70_600_000_000, dtype="bf16",
        config={"num_hidden_layers": 80, "num_key_value_heads": 8, "num_attention_heads": 64, "hidden_size": 8192, "max_position_embeddings": 131072},
    )  # fmt: skip
    panel = owner_client.post(
        reverse("deployments:create") + f"?model={big.pk}",
        {
            "gpus": "1",
            "gpu_type": "NVIDIA-H100-80GB-HBM3",
            "context_length": "8192",
            "_panel": "estimate",
        },
        HTTP_HX_REQUEST="true",
    ).content.decode()
    assert (
        'id="estimate-warning"' in panel
        and "1 GPU per replica is too small" in panel
        and "H100 80GB" in panel
    )
    enough = owner_client.post(
        reverse("deployments:create") + f"?model={big.pk}",
        {
            "gpus": "4",
            "gpu_type": "NVIDIA-H100-80GB-HBM3",
            "context_length": "8192",
            "_panel": "estimate",
        },
        HTTP_HX_REQUEST="true",
    ).content.decode()
    assert "estimate-warning" not in enough and "are enough" in enough


# --- List and status polling --------------------------------------------------------------------


def test_empty_list_points_to_the_catalog(owner_client):
    html = owner_client.get(reverse("deployments:list")).content.decode()
    assert "No model deployments yet" in html and reverse("catalog:index") in html


def test_list_shows_deployments_and_keeps_polling_once_every_state_is_final(owner_client, deploy):
    deployment = deploy("chat")
    html = owner_client.get(reverse("deployments:list")).content.decode()
    assert (
        "chat" in html and 'hx-trigger="every 3s"' in html and f'id="state-{deployment.pk}"' in html
    )
    poll_url = re.search(r'hx-get="([^"]+)" hx-trigger="every 3s"', html).group(1)
    assert poll_url.startswith(reverse("deployments:list") + f"?ids={deployment.pk}.")
    assert owner_client.get(poll_url, HTTP_HX_REQUEST="true").status_code == 204  # unchanged
    _running(deployment)
    poll = owner_client.get(poll_url, HTTP_HX_REQUEST="true")
    body = poll.content.decode()
    assert poll.status_code == 200 and 'hx-swap-oob="true"' in body and "Running" in body
    # Every row Running: the page still polls, since a Running row can change too (slowly: 15 s).
    assert 'hx-trigger="every 15s"' in owner_client.get(reverse("deployments:list")).content.decode()


def _status_poll_url(html: str) -> str:
    return re.search(r'hx-get="([^"]*fragment=status[^"]*)"', html).group(1).replace("&amp;", "&")


def test_detail_status_poll_answers_204_until_the_deployment_changes(owner_client, tenants, deploy):
    deployment = deploy("chat")
    url = reverse("deployments:detail", args=[deployment.pk])
    pending = owner_client.get(url + "?fragment=status", HTTP_HX_REQUEST="true")
    assert pending.status_code == 200 and 'hx-trigger="every 3s"' in pending.content.decode()
    poll_url = _status_poll_url(pending.content.decode())
    assert "&v=" in poll_url and owner_client.get(poll_url, HTTP_HX_REQUEST="true").status_code == 204
    _running(deployment)
    final = owner_client.get(poll_url, HTTP_HX_REQUEST="true")
    html = final.content.decode()
    assert final.status_code == 200 and "Running" in html and "1/1 replicas ready" in html
    assert final["HX-Trigger"] == "deployment-changed"  # the events table reads again
    assert (
        'id="head-state-' in html and 'id="deactivate-button"' in html
    )  # header badge and buttons follow
    # Running is final, yet the card keeps polling: deactivated elsewhere, the page follows.
    poll_url = _status_poll_url(html)
    assert owner_client.get(poll_url, HTTP_HX_REQUEST="true").status_code == 204
    deployment_deactivate(user=tenants.owner, deployment=deployment)
    html = owner_client.get(poll_url, HTTP_HX_REQUEST="true").content.decode()
    assert "Deactivated" in html and 'id="activate-button"' in html and 'id="deactivate-button"' not in html
    # The overview's Scale headline reads again on that change.
    overview = owner_client.get(url).content.decode()
    assert 'id="scale-headline"' in overview and 'hx-trigger="deployment-changed from:body"' in overview
    scale = owner_client.get(url + "?fragment=scale", HTTP_HX_REQUEST="true").content.decode()
    assert "<strong>0</strong> desired" in scale and "Deactivated: no replicas." in scale


def test_detail_header_polls_on_every_tab_in_a_final_state(owner_client, deploy):
    deployment = _running(deploy("chat"))
    html = owner_client.get(deployment.get_absolute_url() + "?tab=events").content.decode()
    poll = re.search(r'<div hidden id="header-poll"[^>]*>', html).group(0)
    assert 'hx-trigger="every 3s"' in poll and 'hx-select="#header-poll"' in poll
    # Its answer carries the header-poll again with the new version, so the next poll is quiet.
    assert owner_client.get(_status_poll_url(poll), HTTP_HX_REQUEST="true").status_code == 204
    ModelDeployment.objects.filter(pk=deployment.pk).update(state=DeploymentState.FAILED)
    changed = owner_client.get(_status_poll_url(poll), HTTP_HX_REQUEST="true").content.decode()
    again = re.search(r'<div hidden id="header-poll"[^>]*>', changed).group(0)
    assert owner_client.get(_status_poll_url(again), HTTP_HX_REQUEST="true").status_code == 204
    # The events table of a final deployment reads again when the status poll reports a change.
    assert 'hx-trigger="deployment-changed from:body"' in html


# --- Detail tabs --------------------------------------------------------------------------------


def test_detail_tabs_render(owner_client, deploy, tenants):
    deployment = deploy("chat")
    url = reverse("deployments:detail", args=[deployment.pk])
    overview = owner_client.get(url).content.decode()
    assert "Model name to send" in overview and "chat" in overview and "/v1" in overview
    assert "Sandbox (simulated)" in overview  # the pool is the sandbox: said everywhere
    assert "Events" in owner_client.get(url + "?tab=events").content.decode()
    manifests = owner_client.get(url + "?tab=manifests").content.decode()
    assert (
        "kind: Deployment" in manifests and "chat-r1" in manifests and "acme-research" in manifests
    )
    deployment_tab = owner_client.get(url + "?tab=deployment").content.decode()
    assert (
        "Revision history" in deployment_tab
        and "r1" in deployment_tab
        and "owner" in deployment_tab
    )


def test_revision_diff_between_any_two_revisions(owner_client, deploy, tenants):
    from deployments.services import deployment_update

    deployment = deploy("chat")
    deployment_update(
        user=tenants.owner,
        deployment=deployment,
        spec={"resources": {"memory": "12Gi"}},
        reason="More memory",
    )
    deployment_update(
        user=tenants.owner,
        deployment=deployment,
        spec={"context_length": 2048},
        reason="Shorter context",
    )
    html = owner_client.get(
        reverse("deployments:detail", args=[deployment.pk]) + "?tab=deployment&a=1&b=3"
    ).content.decode()
    assert "More memory" in html and "Shorter context" in html
    assert (
        "resources.memory" in html
        and "12Gi" in html
        and "context_length" in html
        and "2048" in html
    )


def test_many_revisions_come_in_pages_and_the_pickers_list_every_number(owner_client, deploy, django_assert_max_num_queries):
    from deployments.models import Revision

    deployment = deploy("chat")
    spec = deployment.current_revision.spec
    Revision.objects.bulk_create(
        Revision(deployment=deployment, number=n, spec=spec, reason=f"Scale {n}") for n in range(2, 61)
    )
    url = reverse("deployments:detail", args=[deployment.pk])
    first = owner_client.get(url + "?tab=deployment").content.decode()
    table = first[first.index('id="revisions-table"'):first.index("</table>", first.index('id="revisions-table"'))]
    assert table.count("<tr>") == 26 and "Scale 60" in table and "Scale 35" not in table  # header + 25
    assert "1–25 of 60" in first and 'value="1"' in first  # the compare pickers still offer r1
    second = owner_client.get(url + "?tab=deployment&rev_page=3").content.decode()
    assert "Scale 10" in second and "Scale 11" not in second and "51–60 of 60" in second
    with django_assert_max_num_queries(30):  # a page of rows, not 60 (or 6,000)
        owner_client.get(url + "?tab=deployment&a=2&b=60")
    manifests = owner_client.get(url + "?tab=manifests&revision=7").content.decode()
    assert "r7" in manifests


def test_edit_form_locks_the_model_and_makes_a_revision(owner_client, deploy, form_data):
    deployment = deploy("chat")
    url = reverse("deployments:deployment_update", args=[deployment.pk])
    html = owner_client.get(url).content.decode()
    assert (
        "create a new deployment to change the model" in html
        and "Qwen/Qwen2.5-0.5B-Instruct@" in html
    )
    response = owner_client.post(
        url, {**form_data, "name": "renamed", "memory": "12Gi", "reason": "More memory"}
    )
    assert response.status_code == 302
    deployment.refresh_from_db()
    assert deployment.name == "chat"  # locked fields keep their values
    assert (
        deployment.current_revision.number == 2
        and deployment.current_revision.reason == "More memory"
    )
    assert deployment.spec()["resources"]["memory"] == "12Gi"


def test_edit_form_says_why_each_locked_field_cannot_change(owner_client, deploy):
    """QA: the Update form greyed out the model name clients send under the create form's hint
    ("Empty: the model's own name"), with no word on why it could not be changed."""
    deployment = deploy("chat")
    html = owner_client.get(reverse("deployments:deployment_update", args=[deployment.pk])).content.decode()

    def hint(name: str) -> str:
        field = re.search(rf'<(?:input|select)[^>]* name="{name}"[^>]*>', html).group(0)
        assert " disabled" in field, name
        return re.search(rf'id="id_{name}_helptext"[^>]*>([^<]*)<', html).group(1).strip()

    assert hint("served_model_name") == "Fixed once deployed: clients call the model by this name."
    assert hint("name") == "Fixed once deployed: it names the Kubernetes objects."
    assert "Profile Bundle card" in hint("bundle") and "another pool" in hint("pool")
    assert "Empty: the model's own name" not in html


def test_a_deployment_pk_past_64_bits_is_a_404_that_never_reaches_the_database(owner_client, deploy):
    """QA: /deployments/999999999999999999999/ was a 500 on `make run`'s SQLite (OverflowError in
    the status version's IN (...)); PostgreSQL happened to answer an empty list."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    deploy("chat")
    with CaptureQueriesContext(connection) as queries:
        assert owner_client.get("/deployments/999999999999999999999/").status_code == 404
    assert not [q["sql"] for q in queries.captured_queries if "999999999999999999999" in q["sql"]]


# --- Actions ------------------------------------------------------------------------------------


def test_deactivate_releases_gpus_and_activate_takes_them_back(owner_client, deploy, tenants):
    deployment = deploy("chat")
    assert tenants.project.gpu_used() == 1
    response = owner_client.post(reverse("deployments:deployment_deactivate", args=[deployment.pk]))
    assert response.status_code == 302
    deployment.refresh_from_db()
    assert deployment.state == DeploymentState.DEACTIVATED and tenants.project.gpu_used() == 0
    html = owner_client.get(deployment.get_absolute_url()).content.decode()
    assert 'id="activate-button"' in html and "data-confirm=" in html
    # The confirmation says what the service reserves, in words (was "1 × 1 GPU(s) in the quota").
    assert "It reserves 1 GPU of the quota and is pushed to" in html and "GPU(s)" not in html
    owner_client.post(reverse("deployments:deployment_activate", args=[deployment.pk]))
    deployment.refresh_from_db()
    assert deployment.state == DeploymentState.PENDING and tenants.project.gpu_used() == 1


def test_activating_an_autoscaled_deployment_says_it_reserves_its_minimum(owner_client, deploy, tenants):
    """QA: the Activate confirmation said max × GPUs per replica ("4 × 1 GPU(s)"); an autoscaled
    deployment starts again at its minimum, which is what deployment_activate reserves."""
    deployment = deploy("chat")
    spec = deployment.spec()
    spec = {**spec, "replicas": {"min": 2, "max": 4}, "autoscaling": {**spec["autoscaling"], "enabled": True}}
    deployment_update(user=tenants.owner, deployment=deployment, spec=spec)
    deployment_deactivate(user=tenants.owner, deployment=deployment)
    html = owner_client.get(deployment.get_absolute_url()).content.decode()
    assert "Activate “chat”? It reserves 2 GPUs of the quota and is pushed to sandbox again." in html
    owner_client.post(reverse("deployments:deployment_activate", args=[deployment.pk]))
    assert tenants.project.gpu_used() == 2


def test_scale_rollback_and_delete(owner_client, deploy, tenants):
    deployment = deploy("chat")
    owner_client.post(
        reverse("deployments:deployment_scale", args=[deployment.pk]),
        {"replicas_min": "1", "replicas_max": "3"},
    )
    deployment.refresh_from_db()
    assert deployment.spec()["replicas"] == {"min": 1, "max": 3} and tenants.project.gpu_used() == 3
    owner_client.post(
        reverse("deployments:deployment_rollback", args=[deployment.pk]), {"revision": "1"}
    )
    deployment.refresh_from_db()
    assert deployment.current_revision.number == 3 and deployment.spec()["replicas"]["max"] == 1
    response = owner_client.post(reverse("deployments:deployment_delete", args=[deployment.pk]))
    assert response.status_code == 302 and response["Location"] == reverse("deployments:list")
    assert (
        not ModelDeployment.objects.filter(pk=deployment.pk)
        .exclude(state=DeploymentState.DELETING)
        .exists()
    )


def test_scale_over_quota_is_refused_with_the_numbers(owner_client, deploy):
    deployment = deploy("chat")
    response = owner_client.post(
        reverse("deployments:deployment_scale", args=[deployment.pk]),
        {"replicas_min": "1", "replicas_max": "20"},
        follow=True,
    )
    assert "quota of 8 GPUs" in response.content.decode()
    deployment.refresh_from_db()
    assert deployment.spec()["replicas"]["max"] == 1


def test_nim_tag_change(owner_client, tenants, pool):
    nim_bundle = ProfileBundle.objects.create(
        organization=tenants.org,
        name="nim",
        engine="nim",
        image="nvcr.io/nim/meta/llama-3.1-8b-instruct:1.1.0",
        labels={ProfileBundle.ENGINE_LABEL: "vllm"},
    )
    nim_model = CatalogModel.objects.create(
        organization=tenants.org, name="Llama NIM", source="ngc", ngc_image="nvcr.io/nim/meta/llama-3.1-8b-instruct",
        ngc_tag="1.1.0", ngc_tags=["1.1.0", "1.3.0"],
    )  # fmt: skip
    from deployments.services import deployment_create
    from projects.services import integration_set

    integration_set(user=tenants.owner, project=tenants.project, kind="ngc", secret="nvapi-x")
    deployment = deployment_create(
        user=tenants.owner,
        project=tenants.project,
        model=nim_model,
        pool=pool,
        name="nim",
        spec={},
        bundle=nim_bundle,
    )
    html = owner_client.get(deployment.get_absolute_url()).content.decode()
    assert '<option value="1.3.0"' in html
    owner_client.post(
        reverse("deployments:deployment_nim_tag", args=[deployment.pk]), {"tag": "1.3.0"}
    )
    deployment.refresh_from_db()
    assert deployment.spec()["image"].endswith(":1.3.0") and deployment.current_revision.number == 2


# --- Compute pools and endpoints ----------------------------------------------------------------


def test_register_a_kubeconfig_pool_it_is_encrypted_and_never_shown(owner_client, tenants, operator):
    operator_client = login(operator)
    kubeconfig = "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster: {server: 'https://10.9.8.7:6443'}\nusers:\n- name: u\n  user: {token: sekret-token-123}\n"
    response = operator_client.post(
        reverse("deployments:pool_create"),
        {"name": "prod", "kind": "kubeconfig", "engine_label": "vllm", "kubeconfig": kubeconfig},
    )
    pool = ComputePool.objects.get(organization=tenants.org, name="prod")
    assert response.status_code == 302
    # The stored copy is the reduced one: the same server and token, nothing else.
    stored = yaml.safe_load(pool.kubeconfig)
    assert stored["clusters"][0]["cluster"] == {"server": "https://10.9.8.7:6443"}
    assert stored["users"][0]["user"] == {"token": "sekret-token-123"}
    with connection.cursor() as cursor:
        cursor.execute("SELECT kubeconfig FROM deployments_computepool WHERE id = %s", [pool.pk])
        assert "sekret-token-123" not in cursor.fetchone()[0]
    for url in [
        reverse("deployments:pool_detail", args=[pool.pk]),
        reverse("deployments:pool_edit", args=[pool.pk]),
        reverse("deployments:pools"),
    ]:
        assert "sekret-token-123" not in owner_client.get(url).content.decode()


def test_kubeconfig_upload_and_bad_kubeconfig(tenants, operator):
    from django.core.files.uploadedfile import SimpleUploadedFile

    owner_client = login(operator)

    upload = SimpleUploadedFile(
        "config", b"clusters:\n- name: c\n  cluster: {server: 'https://h:6443'}\n"
    )
    owner_client.post(
        reverse("deployments:pool_create"),
        {"name": "up", "kind": "kubeconfig", "engine_label": "vllm", "kubeconfig_file": upload},
    )
    assert "https://h:6443" in ComputePool.objects.get(name="up").kubeconfig
    html = owner_client.post(
        reverse("deployments:pool_create"),
        {"name": "bad", "kind": "kubeconfig", "engine_label": "vllm", "kubeconfig": "hello"},
    ).content.decode()
    assert "needs a “clusters:” list" in html and 'value="bad"' in html


def test_sandbox_pool_test_connection_shows_nodes_and_gpus(operator, cluster, pool):
    owner_client = login(operator)
    html = owner_client.post(
        reverse("deployments:pool_test", args=[pool.pk]), HTTP_HX_REQUEST="true"
    ).content.decode()
    assert "Connected" in html and "Kubernetes v1." in html
    assert "NVIDIA-L4" in html and 'id="pool-nodes"' in html
    assert "Sandbox (simulated)" in owner_client.get(reverse("deployments:pools")).content.decode()


def test_unreachable_pool_says_what_to_do(operator, tenants):
    owner_client = login(operator)
    pool = ComputePool.objects.create(
        organization=tenants.org,
        name="gone",
        kind=PoolKind.SANDBOX,
        api_url="http://127.0.0.1:9",
        engine_label="vllm",
    )
    html = owner_client.post(
        reverse("deployments:pool_test", args=[pool.pk]), HTTP_HX_REQUEST="true"
    ).content.decode()
    assert "Could not connect" in html and "What to do:" in html
    pool.refresh_from_db()
    assert pool.reachable is False


def test_endpoints_create_and_delete(owner_client, tenants):
    response = owner_client.post(
        reverse("deployments:endpoints"),
        {"project": tenants.project.pk, "name": "chat", "path": "llama-chat"},
    )
    assert response.status_code == 302
    endpoint = Endpoint.objects.get(project=tenants.project, name="chat")
    assert endpoint.path == "/llama-chat"
    assert "/llama-chat" in owner_client.get(reverse("deployments:endpoints")).content.decode()
    bad = owner_client.post(
        reverse("deployments:endpoints"),
        {"project": tenants.project.pk, "name": "x", "path": "/has space"},
    )
    assert "Use a path such as /llama-chat" in bad.content.decode()
    owner_client.post(reverse("deployments:endpoint_delete", args=[endpoint.pk]))
    assert not Endpoint.objects.filter(pk=endpoint.pk).exists()


# --- Scoping and roles --------------------------------------------------------------------------


def _object_urls(deployment, pool, endpoint):
    d, p = deployment.pk, pool.pk
    return [
        ("get", reverse("deployments:detail", args=[d])),
        ("get", reverse("deployments:detail", args=[d]) + "?tab=manifests"),
        ("get", reverse("deployments:detail", args=[d]) + "?fragment=status"),
        ("get", reverse("deployments:deployment_update", args=[d])),
        ("post", reverse("deployments:deployment_update", args=[d])),
        ("post", reverse("deployments:deployment_scale", args=[d])),
        ("post", reverse("deployments:deployment_deactivate", args=[d])),
        ("post", reverse("deployments:deployment_activate", args=[d])),
        ("post", reverse("deployments:deployment_rollback", args=[d])),
        ("post", reverse("deployments:deployment_nim_tag", args=[d])),
        ("post", reverse("deployments:deployment_delete", args=[d])),
        ("get", reverse("deployments:pool_detail", args=[p])),
        ("get", reverse("deployments:pool_edit", args=[p])),
        ("post", reverse("deployments:pool_edit", args=[p])),
        ("post", reverse("deployments:pool_test", args=[p])),
        ("post", reverse("deployments:pool_delete", args=[p])),
        ("post", reverse("deployments:endpoint_delete", args=[endpoint.pk])),
    ]


def test_outsider_gets_404_on_every_url(outsider_client, deploy, pool, model, tenants):
    deployment = deploy("chat")
    endpoint = Endpoint.objects.create(project=tenants.project, name="e", path="/e")
    for method, url in _object_urls(deployment, pool, endpoint):
        response = getattr(outsider_client, method)(
            url, {"replicas_min": 1, "replicas_max": 2, "revision": 1, "tag": "x"}
        )
        assert response.status_code == 404, (method, url, response.status_code)
    assert (
        outsider_client.get(reverse("deployments:create") + f"?model={model.pk}").status_code == 404
    )
    for url in [
        reverse("deployments:list"),
        reverse("deployments:pools"),
        reverse("deployments:endpoints"),
    ]:
        html = outsider_client.get(url).content.decode()
        assert (
            deployment.get_absolute_url() not in html
            and f"/pools/{pool.pk}/" not in html
            and "/e<" not in html
        )
    deployment.refresh_from_db()
    assert (
        deployment.state == DeploymentState.PENDING
        and Endpoint.objects.filter(pk=endpoint.pk).exists()
    )


def test_viewer_can_look_but_gets_403_on_every_write(deploy, pool, tenants):
    deployment = deploy("chat")
    endpoint = Endpoint.objects.create(project=tenants.project, name="e", path="/e")
    viewer = login(tenants.viewer)
    for method, url in _object_urls(deployment, pool, endpoint):
        response = getattr(viewer, method)(
            url, {"replicas_min": 1, "replicas_max": 2, "revision": 1, "tag": "x"}
        )
        expected = 200 if method == "get" and "/edit/" not in url else 403
        assert response.status_code == expected, (method, url, response.status_code)
    assert viewer.get(reverse("deployments:create")).status_code == 403
    assert viewer.get(reverse("deployments:pool_create")).status_code == 403
    assert (
        viewer.post(
            reverse("deployments:endpoints"),
            {"project": tenants.project.pk, "name": "v", "path": "/v"},
        ).status_code
        == 403
    )
    html = viewer.get(deployment.get_absolute_url()).content.decode()
    assert "deactivate-button" not in html and "Update</a>" not in html
    deployment.refresh_from_db()
    assert deployment.state == DeploymentState.PENDING and deployment.current_revision.number == 1


def test_members_deploy_but_only_admins_manage_pools(tenants, pool):
    member = login(tenants.member)
    assert member.get(reverse("deployments:create")).status_code == 200
    assert member.get(reverse("deployments:pool_create")).status_code == 403
    assert member.post(reverse("deployments:pool_delete", args=[pool.pk])).status_code == 403
    assert ComputePool.objects.filter(pk=pool.pk).exists()


def test_admin_actions_go_through_the_services(deploy, tenants):
    from django.contrib.auth import get_user_model

    staff = get_user_model().objects.create_superuser("root", "root@example.com", "pw-secret-123")
    deployment = deploy("chat")
    client = login(staff)
    response = client.post(
        reverse("admin:deployments_modeldeployment_changelist"),
        {"action": "deactivate", "_selected_action": [deployment.pk]},
        follow=True,
    )
    assert "Deactivated: 1 done." in response.content.decode()
    deployment.refresh_from_db()
    assert deployment.state == DeploymentState.DEACTIVATED and tenants.project.gpu_used() == 0
    assert (
        client.get(
            reverse("admin:deployments_modeldeployment_change", args=[deployment.pk])
        ).status_code
        == 200
    )


def test_spec_rules_of_the_service_show_while_typing(owner_client, form_data):
    # Not a syntax error the form knows about: the spec rules (normalize_spec) refuse it.
    response = owner_client.post(
        reverse("deployments:create"),
        {**form_data, "replicas_min": "0", "_validate": "replicas_min"},
        HTTP_HX_REQUEST="true",
    )
    html = response.content.decode()
    assert 'id="field-replicas_min"' in html and "autoscaling" in html


def test_quota_preview_warns_before_the_save(owner_client, tenants, model, pool, deploy):
    deploy("first")  # holds 1 GPU of Research's 8
    panel = owner_client.post(
        reverse("deployments:create") + f"?model={model.pk}",
        {"project": tenants.project.pk, "gpus": "4", "replicas_max": "2", "_panel": "estimate"},
        HTTP_HX_REQUEST="true",
    ).content.decode()
    assert "This deployment holds <strong>8</strong> GPUs; 1 of 8 are held by others." in panel
    assert "1 + 8 exceeds the quota of 8 GPUs" in panel


def test_refused_credentials_say_what_to_do(operator, tenants):
    owner_client = login(operator)
    from sandbox.kubelet import SandboxCluster

    with SandboxCluster(token="only-this-token") as locked:
        pool = ComputePool.objects.create(
            organization=tenants.org,
            name="locked",
            kind=PoolKind.SANDBOX,
            api_url=locked.url,
            engine_label="vllm",
        )
        html = owner_client.post(
            reverse("deployments:pool_test", args=[pool.pk]), HTTP_HX_REQUEST="true"
        ).content.decode()
    assert "Could not connect" in html and "401" in html
    assert "refused the credentials" in html


def test_form_without_pools_or_models_says_what_to_do_first(owner_client):
    html = owner_client.get(reverse("deployments:create")).content.decode()
    assert 'id="no-pools"' in html and reverse("deployments:pool_create") in html
    assert 'id="no-models"' in html


def test_a_failed_deployment_says_why_and_what_to_do(owner_client, deploy):
    deployment = deploy("chat")
    reason = "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    ModelDeployment.objects.filter(pk=deployment.pk).update(
        state=DeploymentState.FAILED, state_reason=reason
    )
    response = owner_client.get(
        deployment.get_absolute_url() + "?fragment=status", HTTP_HX_REQUEST="true"
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="failure"' in html and "Insufficient nvidia.com/gpu" in html and "Update" in html


def test_a_viewer_with_a_change_grant_may_scale_from_the_page(tenants, deploy):
    from guardian.shortcuts import assign_perm

    deploy = deploy("granted")
    viewer = login(tenants.viewer)
    url = reverse("deployments:deployment_scale", args=[deploy.pk])
    assert viewer.post(url, {"replicas_min": "1", "replicas_max": "2"}).status_code == 403
    assign_perm("deployments.change_modeldeployment", tenants.viewer, deploy)
    assert "Update" in viewer.get(deploy.get_absolute_url()).content.decode()
    response = viewer.post(url, {"replicas_min": "1", "replicas_max": "2"})
    assert response.status_code == 302
    deploy.refresh_from_db()
    assert deploy.spec()["replicas"]["max"] == 2


def test_the_forms_error_summary_lists_fields_in_the_pages_order(owner_client, form_data):
    html = owner_client.post(reverse("deployments:create"), {**form_data, "name": "", "rl_user_rpm": "lots",
                                                             "price_output": "cheap"}).content.decode()  # fmt: skip
    summary = html[html.index('id="form-errors"'):]
    positions = [summary.index(f'href="#field-{name}"') for name in ("name", "rl_user_rpm", "price_output")]
    assert positions == sorted(positions), positions


def test_admin_deployment_page_never_shows_its_credentials(deploy, tenants):
    """QA pass: the admin's change form showed the engine credential (and an external endpoint's
    key) decrypted in a text box; like the integrations' secrets and the kubeconfig, they stay out."""
    from django.contrib.auth import get_user_model

    from deployments.external import external_deployment_create
    from deployments.services import deployment_engine_credential

    staff = get_user_model().objects.create_superuser("root", "root@example.com", "pw-secret-123")
    deployment = deploy("chat")
    engine_secret = deployment_engine_credential(deployment=deployment)
    external = external_deployment_create(
        user=None, project=tenants.project, model=deployment.model, name="ext", url="https://llm.example.com/v1",
        served_model_name="ext", credential="sk-external-secret-1234",
    )  # fmt: skip
    client = login(staff)
    for obj, secret in ((deployment, engine_secret), (external, "sk-external-secret-1234")):
        response = client.get(reverse("admin:deployments_modeldeployment_change", args=[obj.pk]))
        html = response.content.decode()
        assert response.status_code == 200 and obj.name in html
        assert secret and secret not in html
        assert 'name="engine_credential"' not in html and 'name="external_credential"' not in html
