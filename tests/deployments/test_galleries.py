"""Galleries: resource templates and data sources, organization-wide or per project; chosen by
name in REST and apply -f and copied into the spec (a later template change leaves running
deployments alone); scoped (404 across organizations); bad input is a field error."""

from __future__ import annotations

import pytest

from deployments.models import DataSource, ModelDeployment, ResourceTemplate
from tests.factories import rest_api_client

pytestmark = pytest.mark.django_db

TEMPLATE = {"name": "a100-large", "cpu": "8", "memory": "64Gi", "gpus": 2, "gpu_type": "nvidia-a100", "shm_size": "16Gi"}


def test_template_crud_and_scoping(tenants):
    owner = rest_api_client(tenants.owner)
    created = owner.post("/api/v1/resource-templates/", TEMPLATE, format="json")
    assert created.status_code == 201, created.json()
    data = created.json()
    assert data["scope"] == "Organization" and data["gpus"] == 2 and data["project"] is None
    pk = data["id"]
    assert owner.patch(f"/api/v1/resource-templates/{pk}/", {"gpus": 4}, format="json").json()["gpus"] == 4
    outsider = rest_api_client(tenants.outsider)
    assert outsider.get(f"/api/v1/resource-templates/{pk}/").status_code == 404
    assert outsider.patch(f"/api/v1/resource-templates/{pk}/", {"gpus": 1}, format="json").status_code == 404
    assert outsider.delete(f"/api/v1/resource-templates/{pk}/").status_code == 404
    assert [t["name"] for t in outsider.get("/api/v1/resource-templates/").json()["results"]] == []
    dup = owner.post("/api/v1/resource-templates/", TEMPLATE, format="json")
    assert dup.status_code == 400 and "name" in dup.json()
    # A project's own template of the same name is another scope.
    proj = owner.post("/api/v1/resource-templates/", {**TEMPLATE, "project": tenants.project.pk, "gpus": 1}, format="json")
    assert proj.status_code == 201 and proj.json()["scope"] == tenants.project.name
    assert owner.delete(f"/api/v1/resource-templates/{pk}/").status_code == 204
    assert not ResourceTemplate.objects.filter(pk=pk).exists()


@pytest.mark.parametrize("field, value", [("cpu", "lots"), ("memory", ""), ("gpus", 99), ("shm_size", "16 gigs"), ("name", "Bad Name"),
                                          ("cpu", "1e308"), ("memory", "65Ti")])  # fmt: skip
def test_bad_template_fields_are_400s_naming_them(tenants, field, value):
    response = rest_api_client(tenants.owner).post("/api/v1/resource-templates/", {**TEMPLATE, field: value}, format="json")
    assert response.status_code == 400 and field in response.json()


def test_only_admins_make_organization_wide_entries(tenants):
    member = rest_api_client(tenants.member)
    refused = member.post("/api/v1/resource-templates/", TEMPLATE, format="json")
    assert refused.status_code == 403
    allowed = member.post("/api/v1/resource-templates/", {**TEMPLATE, "project": tenants.project.pk}, format="json")
    assert allowed.status_code == 201


def test_deploy_with_a_template_copies_it_and_a_later_change_leaves_the_deployment(tenants, model, bundle, pool):
    owner = rest_api_client(tenants.owner)
    pk = owner.post("/api/v1/resource-templates/", {**TEMPLATE, "gpus": 1, "gpu_type": ""}, format="json").json()["id"]
    body = {"project": tenants.project.pk, "model": model.pk, "pool": pool.pk, "bundle": bundle.pk, "name": "chat",
            "resource_template": "a100-large", "spec": {"served_model_name": "qwen-chat"}}  # fmt: skip
    response = owner.post("/api/v1/deployments/", body, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["spec"]["resources"] == {"cpu": "8", "memory": "64Gi", "gpus": 1, "gpu_type": "",
                                                    "shm_size": "16Gi"}  # fmt: skip
    # The shared memory reaches the pod: /dev/shm's emptyDir is the template's size.
    manifests = owner.get(f"/api/v1/deployments/{response.json()['id']}/manifests/").json()["yaml"]
    import yaml

    docs = [d for d in yaml.safe_load_all(manifests) if d and d.get("kind") == "Deployment"]
    volumes = docs[0]["spec"]["template"]["spec"]["volumes"]
    assert {"medium": "Memory", "sizeLimit": "16Gi"} in [v.get("emptyDir") for v in volumes]
    owner.patch(f"/api/v1/resource-templates/{pk}/", {"cpu": "2", "memory": "8Gi"}, format="json")
    deployment = ModelDeployment.objects.get(name="chat")
    assert deployment.spec()["resources"]["cpu"] == "8" and deployment.current_revision.number == 1

    missing = owner.post("/api/v1/deployments/", {**body, "name": "other", "resource_template": "nope"}, format="json")
    assert missing.status_code == 400 and "resource_template" in missing.json()


def test_apply_picks_a_template_by_name(tenants, model, bundle, pool):
    from deployments.apply import Context, apply_documents, load_documents
    from deployments.galleries import template_create

    template_create(user=tenants.owner, organization=tenants.org, project=tenants.project, name="small",
                    cpu="2", memory="8Gi", gpus=1)  # fmt: skip
    doc = f"""
apiVersion: modeldeck.io/v1
kind: ModelDeployment
metadata: {{name: chat, project: {tenants.project.slug}}}
spec: {{model: {model.name}, pool: {pool.name}, bundle: {bundle.name}, resource_template: small, served_model_name: c1}}
"""
    out: list[str] = []
    assert apply_documents(Context(user=tenants.owner, organization=tenants.org), load_documents(doc),
                           dry_run=False, write=out.append) == 0, out  # fmt: skip
    assert ModelDeployment.objects.get(name="chat").spec()["resources"]["memory"] == "8Gi"


def test_data_sources_s3_credentials_are_write_only_and_checked(tenants):
    owner = rest_api_client(tenants.owner)
    body = {"name": "weights", "kind": "s3", "uri": "s3://acme-models/llama", "project": tenants.project.pk,
            "credentials": {"access_key_id": "AKIAEXAMPLE1234", "secret_access_key": "s3cr3t-value"}}  # fmt: skip
    created = owner.post("/api/v1/data-sources/", body, format="json")
    assert created.status_code == 201, created.json()
    data = created.json()
    assert data["credentials_last4"] == "1234" and "credentials" not in data
    row = DataSource.objects.get(pk=data["id"])
    assert "s3cr3t-value" in row.credentials
    patched = owner.patch(f"/api/v1/data-sources/{row.pk}/", {"description": "llama weights"}, format="json")
    assert patched.status_code == 200
    row.refresh_from_db()
    assert "s3cr3t-value" in row.credentials  # kept when not given
    bad = owner.post("/api/v1/data-sources/", {**body, "name": "w2", "uri": "http://x", "credentials": {"access_key_id": ""}},
                     format="json")  # fmt: skip
    assert bad.status_code == 400 and "uri" in bad.json()
    pvc = owner.post("/api/v1/data-sources/", {"name": "hf", "kind": "hf_cache", "claim_name": "hf-cache",
                                              "mount_path": "/root/.cache/huggingface"}, format="json")  # fmt: skip
    assert pvc.status_code == 201 and pvc.json()["claim_name"] == "hf-cache"
    assert owner.post("/api/v1/data-sources/", {"name": "x", "kind": "pvc", "claim_name": "Bad Claim"},
                      format="json").status_code == 400  # fmt: skip
    assert rest_api_client(tenants.outsider).get(f"/api/v1/data-sources/{row.pk}/").status_code == 404


def test_console_pages_list_add_and_delete(tenants):
    from tests.conftest import login

    client = login(tenants.owner)
    base = "/galleries/templates/"
    empty = client.get(base).content.decode()
    assert "Nothing here yet: add one with the form." in empty and "No matches" not in empty
    assert "<th>GPU type</th>" in empty and "GPUTYPE" not in empty.upper().replace("GPU TYPE", "")
    added = client.post(base, {"name": "small", "cpu": "2", "memory": "8Gi", "gpus": "1", "project": ""})
    assert added.status_code == 302
    listing = client.get(base).content.decode()
    assert 'data-name="small"' in listing
    bad = client.post(base, {"name": "big", "cpu": "two", "memory": "8Gi", "gpus": "1"})
    assert bad.status_code == 200 and bad.context["form"].errors["cpu"]
    # Every error at once: the service's quantity and name rules beside the form's GPU range.
    worse = client.post(base, {"name": "Big One", "cpu": "-3", "memory": "lots", "gpus": "-1"})
    assert worse.status_code == 200
    assert set(worse.context["form"].errors) == {"name", "cpu", "memory", "gpus"}
    assert len(worse.context["form"].errors["gpus"]) == 1
    row = ResourceTemplate.objects.get(name="small")
    assert login(tenants.outsider).post(f"{base}{row.pk}/delete/").status_code == 404
    assert ResourceTemplate.objects.filter(pk=row.pk).exists()
    assert client.post(f"{base}{row.pk}/delete/").status_code == 302
    assert not ResourceTemplate.objects.filter(pk=row.pk).exists()

    sources = base.replace("templates", "data-sources")
    assert client.get(sources).status_code == 200
    member = login(tenants.member)
    refused = member.post(sources, {"name": "hf", "kind": "hf_cache", "claim_name": "hf-cache"})
    assert refused.status_code == 200 and refused.context["form"].errors["project"]  # org-wide: admins only
    assert member.post(sources, {"name": "hf", "kind": "hf_cache", "claim_name": "hf-cache",
                                 "project": tenants.project.pk}).status_code == 302  # fmt: skip
    assert client.get("/galleries/nope/").status_code == 404


def test_deploy_form_copies_the_chosen_template(owner_client, tenants, model, bundle, pool):
    from django.urls import reverse

    from deployments.galleries import template_create, template_update
    from tests.deployments.test_views import GOOD

    template = template_create(user=tenants.owner, organization=tenants.org, name="two-gpu", cpu="6",
                               memory="48Gi", gpus=1, gpu_type="NVIDIA-A100-SXM4-80GB")  # fmt: skip
    html = owner_client.get(reverse("deployments:create")).content.decode()
    assert 'id="id_resource_template"' in html and "two-gpu · 6 CPU, 48Gi, 1 GPU" in html
    data = {**GOOD, "project": str(tenants.project.pk), "model": str(model.pk), "pool": str(pool.pk),
            "bundle": str(bundle.pk), "resource_template": str(template.pk)}  # fmt: skip
    response = owner_client.post(reverse("deployments:create"), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    deployment = ModelDeployment.objects.get(name=GOOD["name"])
    resources = deployment.spec()["resources"]
    assert (resources["cpu"], resources["memory"], resources["gpu_type"]) == ("6", "48Gi", "NVIDIA-A100-SXM4-80GB")
    template_update(user=tenants.owner, template=template, cpu="1", memory="2Gi")
    deployment.refresh_from_db()
    assert deployment.spec()["resources"]["cpu"] == "6"  # the running deployment keeps its copy


def test_deploy_form_mounts_chosen_data_sources(owner_client, tenants, model, bundle, pool):
    from django.urls import reverse

    from deployments.galleries import data_source_create
    from tests.deployments.test_views import GOOD

    source = data_source_create(user=tenants.owner, organization=tenants.org, name="weights", kind="pvc",
                                claim_name="weights-claim", mount_path="/weights")  # fmt: skip
    assert 'weights · PersistentVolumeClaim weights-claim → /weights' in owner_client.get(reverse("deployments:create")).content.decode()
    data = {**GOOD, "project": str(tenants.project.pk), "model": str(model.pk), "pool": str(pool.pk),
            "bundle": str(bundle.pk), "data_sources": [str(source.pk)]}  # fmt: skip
    response = owner_client.post(reverse("deployments:create"), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    spec = ModelDeployment.objects.get(name=GOOD["name"]).spec()
    assert spec["data_sources"] == [{"name": "weights", "kind": "pvc", "claim_name": "weights-claim",
                                     "mount_path": "/weights"}]  # fmt: skip




def test_claim_data_sources_are_copied_and_mounted_read_only(tenants, model, bundle, pool):
    import kubernetes_validate
    import yaml

    from deployments.galleries import data_source_create

    owner = rest_api_client(tenants.owner)
    data_source_create(user=tenants.owner, organization=tenants.org, name="hf", kind="hf_cache",
                       claim_name="hf-cache", mount_path="/hf")  # fmt: skip
    data_source_create(user=tenants.owner, organization=tenants.org, project=tenants.project, name="bucket",
                       kind="s3", uri="s3://acme-models/x",
                       credentials={"access_key_id": "AKIA12345678", "secret_access_key": "s"})  # fmt: skip
    body = {"project": tenants.project.pk, "model": model.pk, "pool": pool.pk, "bundle": bundle.pk, "name": "chat",
            "spec": {"served_model_name": "c", "data_sources": ["hf"]}}  # fmt: skip
    response = owner.post("/api/v1/deployments/", body, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["spec"]["data_sources"] == [
        {"name": "hf", "kind": "hf_cache", "claim_name": "hf-cache", "mount_path": "/hf"}
    ]
    text = owner.get(f"/api/v1/deployments/{response.json()['id']}/manifests/").json()["yaml"]
    deployment = next(d for d in yaml.safe_load_all(text) if d and d.get("kind") == "Deployment")
    kubernetes_validate.validate(deployment, "1.30", strict=True)
    pod = deployment["spec"]["template"]["spec"]
    assert {"name": "data-0", "persistentVolumeClaim": {"claimName": "hf-cache", "readOnly": True}} in pod["volumes"]
    assert {"name": "data-0", "mountPath": "/hf", "readOnly": True} in pod["containers"][0]["volumeMounts"]

    for names, words in ((["nope"], "No data source"), (["bucket"], "S3 bucket")):
        bad = owner.post("/api/v1/deployments/", {**body, "name": "x", "spec": {"data_sources": names}}, format="json")
        assert bad.status_code == 400 and words in str(bad.json())
