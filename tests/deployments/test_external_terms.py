"""Rate limits and pricing of external deployments: set and changed like a managed deployment's,
in the service, the console form (field errors on the right box), the REST API and apply -f.
tests/gateway/test_external_overflow.py shows the gateway enforcing and metering them."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from deployments.apply import Context, apply_documents, load_documents
from deployments.external import external_deployment_create, external_deployment_update
from deployments.models import ModelDeployment
from tests.conftest import login
from tests.factories import rest_api_client

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("public_example_com")]

UNLIMITED = {"rpm": None, "tpm": None}



def _create(tenants, model, **terms) -> ModelDeployment:
    return external_deployment_create(
        user=tenants.owner, project=tenants.project, model=model, name="onprem",
        url="https://llm.example.com/v1", credential="sk-onprem-abcdef1234", **terms,
    )  # fmt: skip


def test_the_service_keeps_canonical_terms_and_merges_changes(tenants, model):
    row = _create(tenants, model, rate_limits={"api_key": {"rpm": "60"}},
                  pricing={"currency": "eur", "input_per_million": "0.5", "output_per_million": 2})  # fmt: skip
    spec = row.spec()
    assert spec["rate_limits"] == {"organization": UNLIMITED, "user": UNLIMITED, "api_key": {"rpm": 60, "tpm": None}}
    assert spec["pricing"] == {"currency": "EUR", "input_per_million": "0.50", "output_per_million": "2.00"}

    # Given keys go over the current ones; the rest stays, and so do they when not given.
    row = external_deployment_update(user=tenants.owner, deployment=row, rate_limits={"user": {"tpm": 10_000}},
                                     pricing={"output_per_million": "3"})  # fmt: skip
    spec = row.spec()
    assert spec["rate_limits"]["api_key"] == {"rpm": 60, "tpm": None}
    assert spec["rate_limits"]["user"] == {"rpm": None, "tpm": 10_000}
    assert spec["pricing"] == {"currency": "EUR", "input_per_million": "0.50", "output_per_million": "3.00"}
    row = external_deployment_update(user=tenants.owner, deployment=row, options={"timeout_s": 9})
    assert row.spec()["pricing"]["output_per_million"] == "3.00" and row.spec()["rate_limits"]["user"]["tpm"] == 10_000
    assert row.current_revision.number == 3

    # A limit is lifted by giving null.
    row = external_deployment_update(user=tenants.owner, deployment=row, rate_limits={"api_key": {"rpm": None}})
    assert row.spec()["rate_limits"]["api_key"] == UNLIMITED


@pytest.mark.parametrize(
    ("terms", "key"),
    [
        ({"rate_limits": {"user": {"rpm": 0}}}, "rate_limits.user.rpm"),
        ({"rate_limits": {"user": {"rpm": "many"}}}, "rate_limits.user.rpm"),
        ({"rate_limits": {"team": {"rpm": 5}}}, "rate_limits"),
        ({"rate_limits": "60/min"}, "rate_limits"),
        ({"pricing": {"currency": "dollars"}}, "pricing.currency"),
        ({"pricing": {"input_per_million": "-1"}}, "pricing.input_per_million"),
        ({"pricing": {"output_per_million": "NaN"}}, "pricing.output_per_million"),
    ],
)
def test_bad_terms_are_errors_on_their_field_and_create_nothing(tenants, model, terms, key):
    with pytest.raises(ValidationError) as caught:
        _create(tenants, model, **terms)
    assert key in caught.value.message_dict
    assert not ModelDeployment.objects.filter(name="onprem").exists()


def _form(tenants, model, **changes) -> dict:
    data = {
        "project": tenants.project.pk, "model": model.pk, "name": "onprem", "external_url": "https://llm.example.com/v1",
        "api_key": "sk-onprem-abcdef1234", "served_model_name": "llama-onprem", "overflow": "",
        "timeout_s": "20", "max_concurrency": "0", "failure_threshold": "3", "cooldown_s": "30", "description": "",
        "rl_organization_rpm": "", "rl_organization_tpm": "", "rl_user_rpm": "30", "rl_user_tpm": "",
        "rl_api_key_rpm": "", "rl_api_key_tpm": "50000", "currency": "USD", "price_input": "0.20",
        "price_output": "0.60",
    }  # fmt: skip
    data.update(changes)
    return data


def test_the_console_form_sets_shows_and_edits_them(tenants, model):
    client = login(tenants.owner)
    page = client.get("/deployments/external/new/").content.decode()
    assert 'name="rl_user_rpm"' in page and 'name="price_output"' in page and 'id="sec-pricing"' in page

    bad = client.post("/deployments/external/new/", _form(tenants, model, rl_user_rpm="0", currency="dollars"))
    assert bad.status_code == 200
    errors = bad.context["form"].errors
    assert "at least 1" in errors["rl_user_rpm"][0] and "three-letter" in errors["currency"][0]
    assert not ModelDeployment.objects.filter(name="onprem").exists()

    assert client.post("/deployments/external/new/", _form(tenants, model)).status_code == 302
    row = ModelDeployment.objects.get(name="onprem")
    assert row.spec()["rate_limits"]["user"] == {"rpm": 30, "tpm": None}
    assert row.spec()["rate_limits"]["api_key"] == {"rpm": None, "tpm": 50000}
    assert row.spec()["pricing"] == {"currency": "USD", "input_per_million": "0.20", "output_per_million": "0.60"}

    detail = client.get(row.get_absolute_url()).content.decode()
    assert '<dd data-scope="user">30 requests/min</dd>' in detail
    assert '<dd data-scope="api_key">50000 tokens/min</dd>' in detail
    assert 'data-scope="organization"><span class="muted">unlimited</span>' in detail
    assert "USD 0.20 in / 0.60 out per 1M tokens" in detail

    edit_page = client.get(f"/deployments/{row.pk}/external/").content.decode()
    assert 'name="rl_user_rpm" value="30"' in edit_page and 'name="price_output" value="0.60"' in edit_page
    assert "Empty: keep the stored key (…1234)." in edit_page
    edited = client.post(f"/deployments/{row.pk}/external/", _form(tenants, model, api_key="", rl_user_rpm="",
                                                                      price_output="1.25"))  # fmt: skip
    assert edited.status_code == 302
    row.refresh_from_db()
    assert row.spec()["rate_limits"]["user"] == UNLIMITED and row.spec()["pricing"]["output_per_million"] == "1.25"
    assert row.external_credential == "sk-onprem-abcdef1234"


def test_a_viewer_sees_them_but_no_edit_link(tenants, model):
    row = _create(tenants, model, rate_limits={"user": {"rpm": 7}})
    row.external_credential = ""
    row.save(update_fields=["external_credential"])
    assert "Empty: no key is sent (none is stored)." in login(tenants.owner).get(
        f"/deployments/{row.pk}/external/").content.decode()
    page = login(tenants.viewer).get(row.get_absolute_url()).content.decode()
    assert '<dd data-scope="user">7 requests/min</dd>' in page and "Change them" not in page
    assert login(tenants.outsider).get(row.get_absolute_url()).status_code == 404


def test_the_rest_api_creates_and_patches_them(tenants, model):
    client = rest_api_client(tenants.owner)
    body = {"kind": "external", "project": tenants.project.pk, "model": model.pk, "name": "onprem",
            "external_url": "https://llm.example.com/v1", "rate_limits": {"organization": {"rpm": 600}},
            "pricing": {"input_per_million": "1", "output_per_million": "2"}}  # fmt: skip
    created = client.post("/api/v1/deployments/", body, format="json")
    assert created.status_code == 201, created.json()
    spec = created.json()["spec"]
    assert spec["rate_limits"]["organization"] == {"rpm": 600, "tpm": None}
    assert spec["pricing"] == {"currency": "USD", "input_per_million": "1.00", "output_per_million": "2.00"}
    pk = created.json()["id"]

    patched = client.patch(f"/api/v1/deployments/{pk}/", {"pricing": {"currency": "GBP"}}, format="json")
    assert patched.status_code == 200, patched.json()
    assert patched.json()["spec"]["pricing"] == {"currency": "GBP", "input_per_million": "1.00",
                                                 "output_per_million": "2.00"}  # fmt: skip
    assert patched.json()["spec"]["rate_limits"]["organization"]["rpm"] == 600

    bad = client.patch(f"/api/v1/deployments/{pk}/", {"rate_limits": {"user": {"tpm": -5}}}, format="json")
    assert bad.status_code == 400 and "rate_limits.user.tpm" in bad.json()
    assert ModelDeployment.objects.get(pk=pk).spec()["rate_limits"]["user"] == UNLIMITED
    assert rest_api_client(tenants.outsider).patch(
        f"/api/v1/deployments/{pk}/", {"pricing": {"currency": "EUR"}}, format="json"
    ).status_code == 404


MANIFEST = """
apiVersion: modeldeck.io/v1
kind: ModelDeployment
metadata: {{name: onprem, project: {project}}}
spec:
  kind: external
  model: {model}
  url: https://llm.example.com/v1
  rate_limits: {{api_key: {{rpm: 120}}}}
  pricing: {{input_per_million: {price}, output_per_million: 1.5}}
"""


def test_apply_sets_them_and_a_same_price_written_differently_is_no_change(tenants, model):
    ctx = Context(user=tenants.owner, organization=tenants.org)
    out: list[str] = []

    def apply(price: str) -> int:
        text = MANIFEST.format(project=tenants.project.slug, model=model.name, price=price)
        return apply_documents(ctx, load_documents(text), dry_run=False, write=out.append)

    assert apply("0.5") == 0, out
    row = ModelDeployment.objects.get(name="onprem")
    assert row.spec()["rate_limits"]["api_key"] == {"rpm": 120, "tpm": None}
    assert row.spec()["pricing"]["input_per_million"] == "0.50"
    assert apply("0.50") == 0 and "unchanged" in out[-1], out
    assert apply("0.75") == 0 and "configured" in out[-1] and "pricing" in out[-1], out
    row.refresh_from_db()
    assert row.spec()["pricing"]["input_per_million"] == "0.75"
    assert apply("free") == 1 and "pricing.input_per_million" in out[-1], out
    row.refresh_from_db()
    assert row.spec()["pricing"]["input_per_million"] == "0.75"


def test_the_forms_own_errors_and_the_terms_errors_show_together(tenants, model):
    response = login(tenants.owner).post("/deployments/external/new/",
                                         {**_form(tenants, model, rl_api_key_tpm="-3", price_input="lots"), "model": ""})  # fmt: skip
    errors = response.context["form"].errors
    assert set(errors) >= {"model", "rl_api_key_tpm", "price_input"}
    assert not ModelDeployment.objects.filter(name="onprem").exists()


def test_the_external_form_reads_limits_as_the_deploy_form_does(tenants, model):
    client = login(tenants.owner)
    response = client.post("/deployments/external/new/", _form(tenants, model, rl_api_key_tpm="50,000",
                                                               rl_user_rpm="1_000"))  # fmt: skip
    assert response.status_code == 302, response.context["form"].errors
    limits = ModelDeployment.objects.get(name="onprem").spec()["rate_limits"]
    assert limits["api_key"]["tpm"] == 50_000 and limits["user"]["rpm"] == 1_000

    bad = client.post("/deployments/external/new/", _form(tenants, model, name="other", rl_user_rpm="lots"))
    assert bad.context["form"].errors["rl_user_rpm"] == [
        "Enter requests per minute as a whole number, or leave it empty."
    ]


def test_patch_with_null_lifts_every_limit_and_makes_it_free(tenants, model):
    row = _create(tenants, model, rate_limits={"user": {"rpm": 5}, "api_key": {"tpm": 900}},
                  pricing={"currency": "EUR", "input_per_million": "2"})  # fmt: skip
    client = rest_api_client(tenants.owner)
    patched = client.patch(f"/api/v1/deployments/{row.pk}/", {"rate_limits": None}, format="json")
    assert patched.status_code == 200, patched.json()
    assert patched.json()["spec"]["rate_limits"] == {"organization": UNLIMITED, "user": UNLIMITED,
                                                     "api_key": UNLIMITED}  # fmt: skip
    assert patched.json()["spec"]["pricing"]["currency"] == "EUR"
    patched = client.patch(f"/api/v1/deployments/{row.pk}/", {"pricing": None}, format="json")
    assert patched.status_code == 200, patched.json()
    assert patched.json()["spec"]["pricing"] == {"currency": "USD", "input_per_million": "0.00",
                                                 "output_per_million": "0.00"}  # fmt: skip


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ({"rate_limits": {"user": 5}}, "rate_limits.user"),
        ({"rate_limits": {"user": {"rpm": [1]}}}, "rate_limits.user.rpm"),
        ({"rate_limits": "60/min"}, "rate_limits"),
        ({"pricing": {"currency": {"code": "USD"}}}, "pricing.currency"),
        ({"pricing": {"input_per_million": "1e40"}}, "pricing.input_per_million"),
        ({"pricing": {"input_per_million": "1e20"}}, "pricing.input_per_million"),
        ({"pricing": {"output_per_million": "0.0000000001"}}, "pricing.output_per_million"),
        ({"pricing": {"output_per_million": 0.00001}}, "pricing.output_per_million"),
        ({"pricing": {"input_per_million": True}}, "pricing.input_per_million"),
    ],
)
def test_patch_with_values_of_the_wrong_shape_is_a_400_on_their_key(tenants, model, body, key):
    row = _create(tenants, model, rate_limits={"user": {"rpm": 5}})
    response = rest_api_client(tenants.owner).patch(f"/api/v1/deployments/{row.pk}/", body, format="json")
    assert response.status_code == 400 and key in response.json(), response.json()
    assert ModelDeployment.objects.get(pk=row.pk).spec()["rate_limits"]["user"]["rpm"] == 5


def test_reapplying_a_document_without_terms_is_no_change_even_if_the_stored_spec_lacks_them(tenants, model):
    ctx = Context(user=tenants.owner, organization=tenants.org)
    out: list[str] = []
    text = MANIFEST.replace("  rate_limits: {{api_key: {{rpm: 120}}}}\n", "").replace(
        "  pricing: {{input_per_million: {price}, output_per_million: 1.5}}\n", "")
    text = text.format(project=tenants.project.slug, model=model.name)
    assert apply_documents(ctx, load_documents(text), dry_run=False, write=out.append) == 0, out
    assert apply_documents(ctx, load_documents(text), dry_run=False, write=out.append) == 0
    assert "unchanged" in out[-1], out

    # A revision written without the keys (the gateway reads it as unlimited and free).
    revision = ModelDeployment.objects.get(name="onprem").current_revision
    revision.spec = {k: v for k, v in revision.spec.items() if k not in ("rate_limits", "pricing")}
    revision.save(update_fields=["spec"])
    assert apply_documents(ctx, load_documents(text), dry_run=False, write=out.append) == 0
    assert "unchanged" in out[-1], out


def test_the_schema_describes_both_bodies_of_create_and_patch(tenants):
    schema = rest_api_client(tenants.owner).get("/api/schema/?format=json").json()
    operations = schema["paths"]["/api/v1/deployments/"]["post"], schema["paths"]["/api/v1/deployments/{id}/"]["patch"]
    components = schema["components"]["schemas"]

    def bodies(operation) -> set[str]:
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        return {choice["$ref"].rsplit("/", 1)[1] for choice in components[ref]["oneOf"]}

    assert bodies(operations[0]) == {"DeploymentCreateRequest", "ExternalCreateRequest"}
    assert bodies(operations[1]) == {"PatchedDeploymentUpdateRequest", "PatchedExternalUpdateRequest"}
    for name in ("ExternalCreateRequest", "PatchedExternalUpdateRequest"):
        assert {"rate_limits", "pricing", "external_url"} <= set(components[name]["properties"])


def test_a_reader_gets_403_before_any_word_about_the_body(tenants, model, deploy):
    external = _create(tenants, model)
    managed = deploy("burst")
    viewer = rest_api_client(tenants.viewer)
    bad = {"rate_limits": "60/min", "spec": "not a mapping", "external_url": "file:///etc/passwd"}
    assert viewer.patch(f"/api/v1/deployments/{external.pk}/", bad, format="json").status_code == 403
    assert viewer.patch(f"/api/v1/deployments/{managed.pk}/", bad, format="json").status_code == 403
    assert viewer.put(f"/api/v1/deployments/{managed.pk}/", bad, format="json").status_code == 403
    owner = rest_api_client(tenants.owner)
    assert owner.patch(f"/api/v1/deployments/{external.pk}/", bad, format="json").status_code == 400
    assert owner.put(f"/api/v1/deployments/{managed.pk}/", bad, format="json").status_code == 400
