"""Issue 15's console fixes: the playground's short-lived key, default MaaS rules for new projects,
the deploy form's project and image placeholder, the usage CSV's cost, going public asks first."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from catalog.maas import DEFAULT_RULES, resolve
from catalog.models import CatalogModel, MaaSMapping, ProfileBundle
from deployments.models import ComputePool, PoolKind
from gateway.models import UsageRecord
from projects.keys import PLAYGROUND_KEY_NAME, PLAYGROUND_KEY_TTL, api_key_state, hash_secret
from projects.models import APIKey, ProjectMember, Role
from projects.services import project_create
from tests.conftest import login
from tests.factories import ProjectFactory
from tests.gateway.conftest import make_deployment

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# ---- playground credential ------------------------------------------------------------------


def test_playground_credential_is_short_lived_hashed_limited_and_replaces_the_last(tenants):
    deployment = make_deployment(tenants.project, "llama", served_model_name="llama-chat")
    client = login(tenants.member)
    url = reverse("devhub:playground_credential", args=[deployment.pk])

    first = client.post(url)
    assert first.status_code == 201 and first["Cache-Control"] == "no-store"
    data = first.json()
    assert data["api_key"].startswith("mdk_") and data["model"] == "llama-chat"
    key = APIKey.objects.get(key_hash=hash_secret(data["api_key"]))  # only the hash is stored
    assert key.user == tenants.member and key.name == PLAYGROUND_KEY_NAME + "llama-chat"
    assert list(key.deployments.all()) == [deployment]
    assert timedelta(0) < key.expires_at - timezone.now() <= PLAYGROUND_KEY_TTL

    second = client.post(url).json()
    key.refresh_from_db()
    assert api_key_state(key) == "revoked" and "newer playground key" in key.revoked_reason
    assert APIKey.objects.filter(user=tenants.member, revoked_at__isnull=True).count() == 1
    assert second["api_key"] != data["api_key"]

    page = client.get(reverse("devhub:playground", args=[deployment.pk]))
    assert page.status_code == 200 and b"mdk_" not in page.content  # no secret in the page
    assert b"modeldeck/playground.js" in page.content


def test_playground_credential_needs_a_post_a_member_role_and_a_callable_deployment(tenants):
    deployment = make_deployment(tenants.project, "llama")
    url = reverse("devhub:playground_credential", args=[deployment.pk])
    assert login(tenants.member).get(url).status_code == 405
    assert login(tenants.viewer).post(url).status_code == 403
    assert login(tenants.outsider).post(url).status_code == 404
    assert login(tenants.outsider).get(reverse("devhub:playground", args=[deployment.pk])).status_code == 404
    assert not APIKey.objects.exists()


def test_playground_page_allows_a_separate_gateway_origin_in_its_csp(tenants, settings):
    settings.CONTENT_SECURITY_POLICY = "default-src 'self'; connect-src 'self'; object-src 'none'"
    settings.GATEWAY_BASE_URL = "https://gateway.example.com"
    deployment = make_deployment(tenants.project, "llama")
    response = login(tenants.member).get(reverse("devhub:playground", args=[deployment.pk]))
    assert "connect-src 'self' https://gateway.example.com;" in response["Content-Security-Policy"]
    other = login(tenants.member).get(reverse("devhub:models"))
    assert "gateway.example.com" not in other["Content-Security-Policy"]


# ---- default MaaS rules and the deploy form ---------------------------------------------------


def test_a_new_project_gets_the_default_rules_and_a_catalog_model_resolves(tenants):
    own_vllm = ProfileBundle.objects.create(organization=tenants.org, name="vllm", version=1, engine="vllm",
                                            image="registry.acme/vllm:v0.9.0")  # fmt: skip
    project = project_create(user=tenants.owner, organization=tenants.org, name="New team", slug="new-team")
    rules = list(MaaSMapping.objects.filter(project=project).order_by("position"))
    assert [(r.source, r.task, r.bundle.name) for r in rules] == [tuple(map(str, rule)) for rule in DEFAULT_RULES]
    assert [r.position for r in rules] == [1, 2, 3, 4]
    assert rules[0].bundle == own_vllm  # the organization's own bundle of the name wins
    assert rules[1].bundle.organization_id is None  # no own tei: the built-in one
    model = CatalogModel.objects.create(organization=tenants.org, name="Qwen", source="huggingface",
                                        repo_id="Qwen/Qwen2.5-0.5B-Instruct", task="text-generation")  # fmt: skip
    assert resolve(project, model).bundle == own_vllm


def _deploy_form(client, **params):
    return client.get(reverse("deployments:create"), params).content.decode()


def _selected_project(html: str) -> str:
    import re

    select = re.search(r'<select name="project".*?</select>', html, re.S).group(0)
    return re.search(r'<option value="(\d+)"[^>]*selected', select).group(1)


def test_the_deploy_form_starts_on_the_users_project(tenants):
    ComputePool.objects.create(organization=tenants.org, name="sandbox", kind=PoolKind.SANDBOX,
                               api_url="http://127.0.0.1:9", engine_label="vllm")  # fmt: skip
    alpha = ProjectFactory(organization=tenants.org, name="Alpha", slug="alpha")  # first by name
    client = login(tenants.member)
    # Only member of Research: Research, not the alphabetically first.
    ProjectMember.objects.create(project=tenants.project, user=tenants.member, role=Role.MEMBER)
    assert _selected_project(_deploy_form(client)) == str(tenants.project.pk)
    # Came from a project's page.
    assert _selected_project(_deploy_form(client, project=alpha.pk)) == str(alpha.pk)
    # Another organization's project in the URL is ignored.
    assert _selected_project(_deploy_form(client, project=tenants.other_project.pk)) == str(tenants.project.pk)
    # Last used wins over membership.
    ProjectMember.objects.create(project=alpha, user=tenants.member, role=Role.MEMBER)
    make_deployment(alpha, "used-last").__class__.objects.filter(name="used-last").update(created_by=tenants.member)
    assert _selected_project(_deploy_form(client)) == str(alpha.pk)


def test_the_engine_image_placeholder_is_the_chosen_bundles(tenants):
    ComputePool.objects.create(organization=tenants.org, name="sandbox", kind=PoolKind.SANDBOX,
                               api_url="http://127.0.0.1:9", engine_label="vllm")  # fmt: skip
    project = project_create(user=tenants.owner, organization=tenants.org, name="Team", slug="team")
    model = CatalogModel.objects.create(organization=tenants.org, name="Qwen", source="huggingface",
                                        repo_id="Qwen/Qwen2.5-0.5B-Instruct", task="text-generation")  # fmt: skip
    html = _deploy_form(login(tenants.owner), model=model.pk, project=project.pk)
    builtin = resolve(project, model).bundle
    assert builtin.image == "vllm/vllm-openai:v0.8.5"
    assert 'placeholder="vllm/vllm-openai:v0.8.5"' in html and "v0.6.3" not in html
    assert 'data-bundle-image="vllm/vllm-openai:v0.8.5"' in html


# ---- usage CSV, going public ---------------------------------------------------------------------


def test_usage_csv_prints_a_zero_cost_as_a_decimal(tenants):
    deployment = make_deployment(tenants.project, "llama")
    UsageRecord.objects.create(
        request_id="req_free", deployment=deployment, deployment_name="llama", organization=tenants.org,
        route="chat.completions", status_code=200, latency_ms=3.0, cost=Decimal("0"), created_at=timezone.now(),
    )  # fmt: skip
    response = login(tenants.owner).get(reverse("devhub:organization_usage"), {"format": "csv"})
    text = b"".join(response.streaming_content).decode()
    header, row = (line.split(",") for line in text.splitlines()[:2])
    assert row[header.index("cost")] == "0.00000000" and "E-" not in text


def test_going_public_asks_for_confirmation_and_only_then(tenants):
    deployment = make_deployment(tenants.project, "llama")
    html = login(tenants.owner).get(reverse("sharing:deployment_sharing", args=[deployment.pk])).content.decode()
    form = html[html.index('<form method="post" id="access-form"'):]
    form = form[: form.index(">")]
    assert 'data-confirm-field="kind"' in form and 'data-confirm-value="public"' in form
    assert "without an API key" in form


def test_the_playground_key_is_in_the_rest_api_too(tenants):
    from rest_framework.test import APIClient

    deployment = make_deployment(tenants.project, "llama", served_model_name="llama-chat")
    client = APIClient()
    client.force_authenticate(tenants.member)
    response = client.post(f"/api/v1/deployments/{deployment.pk}/playground-key/")
    assert response.status_code == 201 and response["Cache-Control"] == "no-store"
    key = APIKey.objects.get(key_hash=hash_secret(response.json()["api_key"]))
    assert list(key.deployments.all()) == [deployment] and key.expires_at is not None
    viewer = APIClient()
    viewer.force_authenticate(tenants.viewer)
    assert viewer.post(f"/api/v1/deployments/{deployment.pk}/playground-key/").status_code == 403
    outsider = APIClient()
    outsider.force_authenticate(tenants.outsider)
    assert outsider.post(f"/api/v1/deployments/{deployment.pk}/playground-key/").status_code == 404


def test_ids_past_64_bits_in_a_form_are_refused_before_the_database(tenants):
    """QA: on `make run`'s SQLite a key limited to deployment 999999999999999999999, or a group
    member of that id, was a 500 (OverflowError binding the number in IN (...) / WHERE)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from projects.services import group_create

    huge = "999999999999999999999"
    client = login(tenants.owner)
    make_deployment(tenants.project, "chat")
    with CaptureQueriesContext(connection) as queries:
        response = client.post(reverse("devhub:keys"), {"name": "bot", "scope": "gateway", "deployments": [huge]})
    assert response.status_code == 200
    assert f"{huge} is not one of the available choices" in response.content.decode()
    assert not APIKey.objects.filter(name="bot").exists()
    with CaptureQueriesContext(connection) as search:
        found = client.get(reverse("devhub:key_deployment_search"), {"q": "chat", "deployments": huge})
    assert found.status_code == 200 and "chat" in found.content.decode()
    group = group_create(user=tenants.owner, organization=tenants.org, name="ops")
    with CaptureQueriesContext(connection) as more:
        response = client.post(reverse("org:group_member_add", args=[group.pk]), {"user": huge})
    assert response.status_code == 404
    sql = [q["sql"] for q in queries.captured_queries + search.captured_queries + more.captured_queries]
    assert not [s for s in sql if huge in s]
