"""The deployment spec: defaults from bundle and model, field-named errors, GPU hold, render mapping."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from catalog.models import CatalogModel, ProfileBundle
from deployments.models import ComputePool, ModelDeployment, PoolKind, Revision
from deployments.renderers import render_yaml
from deployments.spec import gpu_hold, normalize_spec, render_spec_for
from projects.models import IntegrationKind
from projects.services import integration_set

pytestmark = pytest.mark.django_db


def errors_of(spec, bundle, model) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as exc:
        normalize_spec(spec, bundle=bundle, model=model)
    return exc.value.message_dict


def test_defaults_come_from_the_bundle_and_the_model(bundle, model):
    spec = normalize_spec({}, bundle=bundle, model=model)

    assert spec["engine"] == "vllm"
    assert spec["image"] == "vllm/vllm-openai:v0.6.3"
    assert spec["served_model_name"] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert spec["replicas"] == {"min": 1, "max": 1}
    assert spec["resources"] == {"cpu": "4", "memory": "16Gi", "gpus": 1, "gpu_type": ""}
    assert spec["rate_limits"]["api_key"] == {"rpm": None, "tpm": None}
    assert spec["pricing"] == {
        "currency": "USD",
        "input_per_million": "0.00",
        "output_per_million": "0.00",
    }
    assert (
        normalize_spec(spec, bundle=bundle, model=model) == spec
    )  # canonical: normalizing again is a no-op


def test_partial_nested_values_keep_the_other_defaults(bundle, model):
    spec = normalize_spec(
        {"replicas": {"max": 3}, "pricing": {"input_per_million": "0.1"}},
        bundle=bundle,
        model=model,
    )

    assert spec["replicas"] == {"min": 1, "max": 3}
    assert spec["pricing"]["input_per_million"] == "0.10"
    assert gpu_hold(spec) == 3


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"replicas": {"min": 3, "max": 2}}, "replicas.max"),
        ({"replicas": {"max": 0}}, "replicas.max"),
        ({"resources": {"gpus": 40}}, "resources.gpus"),
        ({"resources": {"gpus": "two"}}, "resources.gpus"),
        ({"resources": {"cpu": "lots"}}, "resources.cpu"),
        ({"resources": {"memory": "16 GB"}}, "resources.memory"),
        ({"resources": {"cpu": "10001"}}, "resources.cpu"),
        ({"resources": {"memory": "65Ti"}}, "resources.memory"),
        ({"env": {"HF_TOKEN": "hf_x"}}, "env"),
        ({"engine": "tgi"}, "engine"),
        ({"image": "vllm/vllm-openai"}, "image"),
        ({"served_model_name": "two words"}, "served_model_name"),
        ({"context_length": 12}, "context_length"),
        ({"autoscaling": {"metric": "vibes"}}, "autoscaling.metric"),
        ({"rate_limits": {"user": {"rpm": -1}}}, "rate_limits.user.rpm"),
        ({"rate_limits": {"user": {"tpm": 99999999999999999999}}}, "rate_limits.user.tpm"),
        ({"policies": {"max_replicas": "99999999999999999999"}}, "policies.max_replicas"),
        ({"pricing": {"output_per_million": "cheap"}}, "pricing.output_per_million"),
        ({"extra_args": ["--port", "9000"]}, "extra_args"),
        ({"replicas": {"min": 0, "max": 1}, "autoscaling": {"enabled": False}}, "replicas.min"),
        ({"colour": "blue"}, "colour"),
        # QA: both passed the digits check and int() raised (a 500 from the API and `apply -f`).
        ({"replicas": {"max": "\u00b2"}}, "replicas.max"),
        ({"resources": {"gpus": "--1"}}, "resources.gpus"),
    ],
)
def test_bad_values_are_errors_on_the_named_field(bundle, model, spec, field):
    assert field in errors_of(spec, bundle, model)


def test_bounds_are_said_with_thousands_separators(bundle, model):
    errors = errors_of({"rate_limits": {"api_key": {"rpm": 10**20}}, "context_length": 10**9}, bundle, model)
    assert errors["rate_limits.api_key.rpm"] == ["Must be at most 1,000,000,000."]
    assert errors["context_length"] == ["Must be at most 10,000,000."]


def test_a_negative_price_says_so(bundle, model):
    errors = errors_of({"pricing": {"input_per_million": "-1"}}, bundle, model)
    assert errors["pricing.input_per_million"] == ["A price can't be negative; 0 makes the model free."]


def test_render_spec_maps_the_revision_and_references_the_hf_token_secret(tenants, bundle, model):
    pool = ComputePool.objects.create(
        organization=tenants.org, name="p", kind=PoolKind.SANDBOX, engine_label="vllm"
    )
    deployment = ModelDeployment.objects.create(
        project=tenants.project, model=model, bundle=bundle, pool=pool, name="chat"
    )
    spec = normalize_spec(
        {"resources": {"gpus": 2}, "extra_args": ["--max-num-seqs", "8"]},
        bundle=bundle,
        model=model,
    )
    revision = Revision.objects.create(deployment=deployment, number=3, spec=spec)

    rs = render_spec_for(deployment, revision)
    assert rs.namespace == "acme-research"
    assert rs.revision == 3 and rs.gpus == 2 and rs.deployment_id == deployment.pk
    assert rs.model_revision == model.revision
    assert rs.bundle_args == ("--max-num-seqs", "32") and rs.extra_args == ("--max-num-seqs", "8")
    assert "HF_TOKEN" not in rs.secret_env

    integration_set(
        user=tenants.owner,
        project=tenants.project,
        kind=IntegrationKind.HUGGINGFACE,
        secret="hf_secret_value",
    )
    rs = render_spec_for(deployment, revision)
    assert rs.secret_env["HF_TOKEN"] == ("modeldeck-hf-token", "token")
    manifest = render_yaml(rs)
    assert "modeldeck-hf-token" in manifest
    assert "hf_secret_value" not in manifest


def test_nim_models_take_image_and_tag_from_ngc_and_reference_the_ngc_key(tenants):
    nim = ProfileBundle.objects.create(
        organization=tenants.org, name="nim", engine="nim", image="nvcr.io/nim/x:1"
    )
    llama = CatalogModel.objects.create(organization=tenants.org, name="llama", source="ngc",
                                        ngc_image="nvcr.io/nim/meta/llama-3.1-8b-instruct", ngc_tag="1.3.3")  # fmt: skip
    spec = normalize_spec({"nim_tag": "1.4.0"}, bundle=nim, model=llama)
    assert spec["image"] == "nvcr.io/nim/meta/llama-3.1-8b-instruct:1.4.0"
    assert spec["nim_tag"] == "1.4.0"
    pool = ComputePool.objects.create(
        organization=tenants.org, name="p", kind=PoolKind.SANDBOX, engine_label="nim"
    )
    deployment = ModelDeployment.objects.create(
        project=tenants.project, model=llama, bundle=nim, pool=pool, name="llama"
    )
    revision = Revision.objects.create(deployment=deployment, number=1, spec=spec)
    integration_set(
        user=tenants.owner, project=tenants.project, kind=IntegrationKind.NGC, secret="nvapi-secret"
    )

    rs = render_spec_for(deployment, revision)

    assert rs.secret_env["NGC_API_KEY"] == ("modeldeck-ngc-api-key", "NGC_API_KEY")
    assert rs.image_pull_secrets == ("modeldeck-ngc-pull",)
    assert rs.model_ref == "meta/llama-3.1-8b-instruct"
    render_yaml(rs)  # renders without error


def test_nim_tag_on_a_huggingface_model_is_refused(bundle, model):
    assert "nim_tag" in errors_of({"nim_tag": "1.0"}, bundle, model)


def test_the_one_table_of_error_keys_names_real_form_fields_and_renderer_fields():
    from dataclasses import fields

    from deployments.forms import DeploymentForm
    from deployments.renderers import RenderSpec
    from deployments.spec import ERROR_KEYS, error_key, form_field_for

    form_fields = set(DeploymentForm.base_fields)
    render_fields = {f.name for f in fields(RenderSpec)}
    for key, form_field, renderer_fields in ERROR_KEYS:
        assert form_field in form_fields, key
        for name in renderer_fields:
            assert name.split(".")[0] in render_fields, name
    # A renderer's complaint is reported in the spec's words and lands on the form's field.
    assert error_key("replicas") == "replicas.min"
    assert error_key("bundle_args") == "bundle"
    assert form_field_for(error_key("gpus"), form_fields) == "gpus"
    assert form_field_for("rate_limits.api_key.tpm", form_fields) == "rl_api_key_tpm"
    assert form_field_for("resources.gpus", form_fields) == "gpus"
    assert form_field_for("autoscaling.metric", form_fields) == "autoscale_metric"
