"""NIM profiles: the NGC client reads an image's profiles from the offline NGC (and from pasted
`list-model-profiles` output); the catalog keeps them; the deploy form offers them for the GPU
type, "automatic" first; the spec accepts only a profile the image offers, on its GPU and with
its GPU count, and renders NIM_MODEL_PROFILE with the profile's id."""
# ruff: noqa: F811 - pytest fixtures are imported by name and then requested as arguments

from __future__ import annotations

import hashlib

import kubernetes_validate
import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from catalog import ngc, services
from catalog.models import CatalogModel, ProfileBundle
from catalog.services import bundles_builtin_ensure
from deployments.models import ComputePool, PoolKind
from deployments.renderers import render
from deployments.services import deployment_create
from deployments.spec import render_spec_for
from tests.catalog.catalog_fixtures import builtin_bundles, ngc_env, ngc_project  # noqa: F401 - fixtures
from tests.catalog.conftest import NGC_PERSONAL_KEY, NGC_UNENTITLED_KEY

IMAGE = "nim/meta/llama-3.1-8b-instruct"
L4, H100 = "NVIDIA-L4", "NVIDIA-H100-80GB-HBM3"


def _id(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()  # the snapshot's stand-in ids


def test_the_client_lists_an_images_profiles_with_their_facts(offline_ngc) -> None:
    profiles = ngc.image_profiles(base_url=offline_ngc.url, api_key=NGC_PERSONAL_KEY, image=IMAGE, tag="1.3.3")
    by_name = {p.name: p for p in profiles}
    assert len(profiles) == 12
    latency = by_name["tensorrt_llm-h100-fp8-tp2-latency"]
    assert (latency.id, latency.engine, latency.precision, latency.gpu, latency.tp, latency.mode) == (
        _id("tensorrt_llm-h100-fp8-tp2-latency"), "tensorrt_llm", "fp8", "H100", 2, "latency")
    generic = by_name["vllm-bf16-tp1"]
    assert (generic.gpu, generic.tp, generic.precision, generic.mode) == ("", 1, "bf16", "")
    assert latency.label() == "tensorrt_llm-h100-fp8-tp2-latency · H100 · FP8 · TP2 · latency"


def test_the_client_says_what_went_wrong(offline_ngc) -> None:
    with pytest.raises(ngc.NgcError) as exc:  # no manifest recorded for this image
        ngc.image_profiles(base_url=offline_ngc.url, api_key=NGC_PERSONAL_KEY,
                           image="nim/nvidia/nv-embedqa-e5-v5", tag="1.0.0")  # fmt: skip
    assert exc.value.code == "not_found"
    with pytest.raises(ngc.NgcError) as exc:
        ngc.image_profiles(base_url=offline_ngc.url, api_key=NGC_UNENTITLED_KEY, image=IMAGE, tag="1.3.3")
    assert exc.value.code == "forbidden"
    with pytest.raises(ngc.NgcError) as exc:
        ngc.image_profiles(base_url=offline_ngc.url, api_key="nvapi-unknown", image=IMAGE, tag="1.3.3")
    assert exc.value.code == "unauthorized"


def test_list_model_profiles_output_is_read() -> None:
    # The shape NVIDIA documents for `list-model-profiles` (NIM for LLMs 1.x, profiles.html).
    text = """SYSTEM INFO
- Free GPUs:
  -  [26b9:10de] (0) NVIDIA L40S (L40S) [current utilization: 1%]
MODEL PROFILES
- Compatible with system and runnable:
  - a93a1a6b72643f2b2ee5e80ef25904f4d3f942a87f8d32da9e617eeccfaae04c (tensorrt_llm-A100-fp16-tp2-latency)
  - 19031a45cf096b683c4d66fff2a072c0e164a24f19728a58771ebfc4c9ade44f (vllm-fp16-tp2)
- Incompatible with system:
  - 751382df4272eafc83f541f364d61b35aed9cce8c7b0c869269cea5a366cd08c (tensorrt_llm-A100-fp16-tp1-throughput)
"""
    profiles = ngc.parse_list_model_profiles(text)
    assert [(p.name, p.gpu, p.tp, p.precision, p.mode) for p in profiles] == [
        ("tensorrt_llm-A100-fp16-tp2-latency", "A100", 2, "fp16", "latency"),
        ("vllm-fp16-tp2", "", 2, "fp16", ""),
        ("tensorrt_llm-A100-fp16-tp1-throughput", "A100", 1, "fp16", "throughput"),
    ]
    assert ngc.parse_list_model_profiles("no profiles here") == ()


@pytest.mark.django_db
def test_adding_a_nim_records_its_profiles_and_refresh_rereads_them(tenants, ngc_env, ngc_project) -> None:
    model = services.model_add_from_ngc(user=tenants.owner, organization=tenants.org, image=IMAGE,
                                        tag="1.3.3", project=ngc_project)  # fmt: skip
    assert len(model.nim_profiles) == 12
    assert {p["name"] for p in model.nim_profiles} >= {"vllm-bf16-tp1", "tensorrt_llm-l4-fp8-tp2-latency"}
    model.nim_profiles = []
    model.save()
    services.model_refresh_ngc_tags(user=tenants.owner, model=model, project=ngc_project)
    model.refresh_from_db()
    assert len(model.nim_profiles) == 12
    # An image whose manifest NGC doesn't serve: added, profiles not known (any name accepted).
    other = services.model_add_from_ngc(user=tenants.owner, organization=tenants.org,
                                        image="nim/nvidia/nv-embedqa-e5-v5", project=ngc_project)  # fmt: skip
    assert other.nim_profiles == []


@pytest.mark.django_db
def test_pasted_list_model_profiles_output_sets_them(tenants) -> None:
    model = CatalogModel.objects.create(organization=tenants.org, name="nim", source="ngc",
                                        ngc_image="nvcr.io/nim/meta/llama-3.1-8b-instruct", ngc_tag="1.3.3")  # fmt: skip
    with pytest.raises(ValidationError):
        services.model_set_nim_profiles(user=tenants.owner, model=model, list_output="nothing")
    line = f"  - {_id('vllm-bf16-tp1')} (vllm-bf16-tp1)"
    services.model_set_nim_profiles(user=tenants.owner, model=model, list_output=f"MODEL PROFILES\n{line}\n")
    assert [p["name"] for p in model.nim_profiles] == ["vllm-bf16-tp1"]


# --- The deployment's choice ------------------------------------------------------------------


@pytest.fixture
def nim(tenants, ngc_env, ngc_project):
    bundles_builtin_ensure()
    pool = ComputePool.objects.create(organization=tenants.org, name="nim-pool", kind=PoolKind.SANDBOX,
                                      api_url="http://127.0.0.1:9", engine_label="nim")  # fmt: skip
    model = services.model_add_from_ngc(user=tenants.owner, organization=tenants.org, image=IMAGE,
                                        tag="1.3.3", name="llama-nim", project=ngc_project)  # fmt: skip
    return model, pool, ProfileBundle.objects.get(organization=None, name="nim-llm")


def _deploy(tenants, nim, *, gpus: int = 1, gpu_type: str = L4, **spec):
    model, pool, bundle = nim
    return deployment_create(
        user=tenants.owner, project=tenants.project, model=model, pool=pool, name="llama", bundle=bundle,
        spec={"resources": {"cpu": "4", "memory": "16Gi", "gpus": gpus, "gpu_type": gpu_type}, **spec},
    )  # fmt: skip


def _errors(exc) -> dict[str, str]:
    return {k: " ".join(v) for k, v in exc.value.message_dict.items()}


@pytest.mark.django_db
def test_a_chosen_profile_is_stored_by_id_and_rendered(tenants, nim) -> None:
    deployment = _deploy(tenants, nim, gpus=2, nim_profile="tensorrt_llm-l4-fp8-tp2-latency")
    assert deployment.spec()["nim_profile"] == _id("tensorrt_llm-l4-fp8-tp2-latency")
    objects = render(render_spec_for(deployment, deployment.current_revision))
    for obj in objects:
        assert kubernetes_validate.validate(obj, "1.30", strict=True) == "1.30"
    container = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["NIM_MODEL_PROFILE"] == _id("tensorrt_llm-l4-fp8-tp2-latency")


@pytest.mark.django_db
def test_automatic_sets_no_profile(tenants, nim) -> None:
    deployment = _deploy(tenants, nim)
    container = next(o for o in render(render_spec_for(deployment, deployment.current_revision))
                     if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]  # fmt: skip
    assert "NIM_MODEL_PROFILE" not in {e["name"] for e in container["env"]}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"nim_profile": "tensorrt_llm-l4-int2-tp1"}, "offers no profile “tensorrt_llm-l4-int2-tp1”; its profiles: tensorrt_llm-h100-fp8-tp2-latency"),
        ({"nim_profile": "tensorrt_llm-h100-fp8-tp1-throughput"}, f"is built for H100 GPUs; the deployment asks for {L4}"),
        ({"nim_profile": "tensorrt_llm-l4-fp8-tp2-latency"}, "runs on 2 GPUs per replica (TP2); set GPUs per replica to 2"),
        ({"nim_profile": "tensorrt_llm-h100-bf16-tp1-throughput", "resources": {"cpu": "4", "memory": "16Gi", "gpus": 1,
          "gpu_types": [H100, L4]}}, "is built for H100 GPUs"),
    ],
)  # fmt: skip
def test_a_profile_the_image_or_the_gpus_dont_fit_is_refused(tenants, nim, spec, words) -> None:
    with pytest.raises(ValidationError) as exc:
        _deploy(tenants, nim, **spec)
    assert words in _errors(exc)["nim_profile"]


@pytest.mark.django_db
def test_the_form_offers_the_profiles_for_the_gpu_type_automatic_first(owner_client, tenants, nim) -> None:
    model, pool, bundle = nim
    url = reverse("deployments:create") + f"?model={model.pk}"
    form = {"project": tenants.project.pk, "model": model.pk, "pool": pool.pk, "bundle": bundle.pk, "gpus": "1",
            "gpu_type": L4, "_panel": "nim_profile"}  # fmt: skip
    panel = owner_client.post(url, form, HTTP_HX_REQUEST="true").content.decode()
    options = panel.split("<option")[1:]
    assert "Automatic" in options[0]
    assert any("tensorrt_llm-l4-fp8-tp2-latency" in o for o in options)
    assert any("vllm-bf16-tp1 · any GPU" in o for o in options)  # generic profiles fit any GPU
    assert not any("h100" in o for o in options)
    assert len(options) == 5  # automatic, two L4 profiles, two generic ones
    assert "4 of 12 profiles of this NIM fit NVIDIA-L4" in panel
    form["gpu_type"] = H100
    panel = owner_client.post(url, form, HTTP_HX_REQUEST="true").content.decode()
    assert "tensorrt_llm-h100-fp8-tp2-latency" in panel and "tensorrt_llm-l4" not in panel


@pytest.mark.django_db
def test_profiles_show_on_the_model_page_and_can_be_pasted_there_and_over_rest(owner_client, tenants) -> None:
    from tests.factories import rest_api_client

    model = CatalogModel.objects.create(organization=tenants.org, name="nim", source="ngc",
                                        ngc_image="nvcr.io/nim/meta/llama-3.1-8b-instruct", ngc_tag="1.3.3")  # fmt: skip
    assert "Not known: the deploy form takes any profile name or id." in owner_client.get(model.get_absolute_url()).content.decode()
    output = f"MODEL PROFILES\n  - {_id('tensorrt_llm-h100-fp8-tp1-throughput')} (tensorrt_llm-h100-fp8-tp1-throughput)\n"
    owner_client.post(reverse("catalog:model_set_nim_profiles", args=[model.pk]), {"list_output": output})
    page = owner_client.get(model.get_absolute_url()).content.decode()
    assert "tensorrt_llm-h100-fp8-tp1-throughput</span> · H100 · FP8 · TP1 · throughput" in page
    url = f"/api/v1/models/{model.pk}/nim-profiles/"
    response = rest_api_client(tenants.owner).post(url, {"list_output": f"  - {_id('vllm-bf16-tp2')} (vllm-bf16-tp2)"}, format="json")
    assert response.status_code == 200 and [p["name"] for p in response.json()["nim_profiles"]] == ["vllm-bf16-tp2"]
    assert rest_api_client(tenants.owner).post(url, {"list_output": 5}, format="json").status_code == 400
    assert rest_api_client(tenants.outsider).post(url, {"list_output": output}, format="json").status_code == 404
    assert rest_api_client(tenants.viewer).post(url, {"list_output": output}, format="json").status_code == 403
