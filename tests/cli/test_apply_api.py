"""POST /api/v1/apply/ and /apply/delete/ (the same apply as `manage.py apply`), and the
password-for-token exchange of `modeldeck login`."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from deployments.models import DeploymentState, ModelDeployment
from projects.models import APIKey, Membership, Organization
from tests.deployments.conftest import state_of, wait_for
from tests.factories import rest_api_client

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _qwen(cluster_url: str, replace: tuple[str, str] | None = None) -> str:
    text = (EXAMPLES / "qwen-deployment.yaml").read_text()
    if replace:
        assert replace[0] in text
        text = text.replace(*replace)
    return text


@pytest.mark.django_db(transaction=True)
def test_rest_apply_prints_what_manage_py_apply_prints(demo, cluster, tmp_path):
    api = rest_api_client(demo, Organization.objects.get(slug="demo"))
    dry = api.post("/api/v1/apply/", {"manifest": _qwen(cluster.url), "dry_run": True}, format="json")
    assert dry.status_code == 200, dry.content
    assert "\nmodeldeployment/qwen-chat would be created:\n" in "\n".join(dry.json()["lines"])
    assert not ModelDeployment.objects.filter(name="qwen-chat").exists()

    applied = api.post("/api/v1/apply/", {"manifest": _qwen(cluster.url)}, format="json").json()
    assert applied["errors"] == 0 and "\nmodeldeployment/qwen-chat created:" in "\n".join(applied["lines"])
    deployment = ModelDeployment.objects.get(name="qwen-chat")
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)

    edited = _qwen(cluster.url, ("replicas: {min: 1, max: 1}", "replicas: {min: 1, max: 2}"))
    diff = api.post("/api/v1/apply/", {"manifest": edited, "dry_run": True}, format="json").json()["lines"]
    path = tmp_path / "edited.yaml"
    path.write_text(edited)
    out = io.StringIO()
    call_command("apply", "-f", str(path), "--dry-run", stdout=out)
    assert "\n".join(diff) + "\n" == out.getvalue()  # the server command prints the very same lines
    text = "\n".join(diff)
    assert "modeldeployment/qwen-chat would be configured:" in text and "replicas.max: 1 → 2" in text
    assert deployment.revisions.count() == 1

    gone = api.post("/api/v1/apply/delete/", {"manifest": _qwen(cluster.url), "dry_run": False}, format="json")
    assert gone.status_code == 200 and "modeldeployment/qwen-chat deleted" in gone.json()["lines"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body, field",
    [
        ({"manifest": "kind: [unclosed"}, "manifest"),
        ({"manifest": "apiVersion: v1\nkind: Pod\nmetadata: {name: x}"}, "manifest"),
        ({}, "manifest"),
        ({"manifest": "a: 1", "documents": [{}]}, "manifest"),
        ({"documents": ["not an object"]}, "documents"),
        ({"manifest": "x", "dry_run": "perhaps"}, "dry_run"),
    ],
)
def test_bad_manifests_are_400_with_the_field(tenants, body, field):
    response = rest_api_client(tenants.owner).post("/api/v1/apply/", body, format="json")
    assert response.status_code == 400 and field in response.json(), response.content


@pytest.mark.django_db
def test_apply_is_scoped_and_checks_roles_per_document(tenants):
    manifest = (
        "apiVersion: modeldeck.io/v1\nkind: Endpoint\nmetadata: {name: ep, project: research}\nspec: {path: /ep}\n"
    )
    outsider = rest_api_client(tenants.outsider)
    assert outsider.post("/api/v1/apply/", {"manifest": manifest, "organization": tenants.org.pk},
                         format="json").status_code == 404  # fmt: skip
    refused = rest_api_client(tenants.viewer).post("/api/v1/apply/", {"manifest": manifest}, format="json")
    assert refused.status_code == 422 and refused.json()["errors"] == 1
    assert refused.json()["lines"][0].startswith("error: endpoint/ep:")
    ok = rest_api_client(tenants.member).post("/api/v1/apply/", {"manifest": manifest}, format="json")
    assert ok.status_code == 200 and ok.json()["lines"] == ["endpoint/ep created:\n  path: (none) → /ep"]


@pytest.mark.django_db
def test_password_exchange_gives_a_rest_key_and_is_rate_limited(tenants, login_limits_reset):
    client = APIClient()
    wrong = client.post("/api/v1/auth/token/", {"username": "owner", "password": "nope"}, format="json")
    assert wrong.status_code == 401 and "Wrong username or password" in wrong.json()["detail"]
    good = client.post("/api/v1/auth/token/", {"username": "owner", "password": "pw-secret-123", "organization": "acme"},
                       format="json")  # fmt: skip
    assert good.status_code == 201 and good["Cache-Control"] == "no-store"
    token = good.json()["token"]
    key = APIKey.objects.get(pk=good.json()["key_id"])
    assert key.scope == "rest" and key.expires_at is not None and token not in key.key_hash
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/v1/projects/").status_code == 200
    not_theirs = APIClient().post("/api/v1/auth/token/", {"username": "owner", "password": "pw-secret-123",
                                                          "organization": "globex"}, format="json")  # fmt: skip
    assert not_theirs.status_code == 400

    login_limits_reset()
    statuses = [
        APIClient().post("/api/v1/auth/token/", {"username": "member", "password": f"guess{n}"}, format="json").status_code
        for n in range(12)
    ]
    assert statuses[:10] == [401] * 10 and statuses[10:] == [429, 429]
    # Even the right password waits out the window now.
    assert APIClient().post("/api/v1/auth/token/", {"username": "member", "password": "pw-secret-123"},
                            format="json").status_code == 429  # fmt: skip
    assert Membership.objects.filter(user__username="member").exists()
