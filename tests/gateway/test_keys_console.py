"""Keys across the console, the REST API and the gateway: an admin revokes a member's key in the
Developer Hub and the gateway refuses it; a key made through REST works with the openai client."""

from __future__ import annotations

import re

import httpx
import openai
import pytest
from django.test import Client
from django.urls import reverse

from projects.keys import api_key_create
from projects.models import APIKey
from tests.conftest import login
from tests.factories import rest_api_client
from tests.gateway.conftest import make_deployment, make_key

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = {"model": "llama-chat", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def deployment(tenants, gateway):
    return make_deployment(tenants.project, "llama", served_model_name="llama-chat")


def post(server, secret: str) -> httpx.Response:
    return httpx.post(
        server.base_url + "/chat/completions", json=CHAT,
        headers={"authorization": f"Bearer {secret}"}, timeout=30,
    )  # fmt: skip


def test_admin_revokes_another_members_key_in_the_console_and_the_gateway_refuses_it(
    tenants, deployment, gateway
):
    secret = make_key(tenants.member, tenants.org, name="member's bot")
    key = APIKey.objects.get(user=tenants.member)
    assert post(gateway, secret).status_code == 200

    admin = Client(enforce_csrf_checks=True)
    admin.force_login(tenants.owner)
    page = admin.get(reverse("devhub:keys") + "?view=organization").content.decode()
    row = re.search(rf'<tr data-key="{re.escape(key.prefix)}">.*?</tr>', page, re.S).group(0)
    for shown in ("member", "member&#x27;s bot", key.prefix, "never"):  # owner, name, prefix, last used
        assert shown in row
    assert "data-confirm=" in row and "of member?" in row  # a confirmation naming the owner
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', row).group(1)
    url = reverse("devhub:key_revoke", args=[key.pk])
    assert admin.post(url, {"view": "organization"}).status_code == 403  # no CSRF token: refused
    response = admin.post(url, {"csrfmiddlewaretoken": token, "view": "organization"}, follow=True)
    assert response.status_code == 200
    html = response.content.decode()
    assert "revoked" in html and "Revoked by organization admin owner." in html

    refused = post(gateway, secret)
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]


def test_members_see_only_their_own_keys_even_when_asking_for_the_organizations(tenants, deployment):
    owner_key, _ = api_key_create(user=tenants.owner, organization=tenants.org, name="owner only")
    mine, _ = api_key_create(user=tenants.member, organization=tenants.org, name="mine")
    member = login(tenants.member)
    page = member.get(reverse("devhub:keys") + "?view=organization").content.decode()
    assert mine.prefix in page and owner_key.prefix not in page and "owner only" not in page
    assert "Every key in" not in page
    assert member.post(reverse("devhub:key_revoke", args=[owner_key.pk])).status_code == 404
    outsider = login(tenants.outsider)
    page = outsider.get(reverse("devhub:keys") + "?view=organization").content.decode()
    assert mine.prefix not in page and owner_key.prefix not in page
    assert outsider.post(reverse("devhub:key_revoke", args=[mine.pk])).status_code == 404


def test_the_openai_client_works_with_a_key_made_through_rest(tenants, deployment, gateway):
    response = rest_api_client(tenants.member).post(
        "/api/v1/keys/", {"name": "from rest", "deployments": [deployment.pk]}, format="json"
    )
    assert response.status_code == 201, response.json()
    client = openai.OpenAI(api_key=response.json()["secret"], base_url=gateway.base_url, max_retries=0)
    reply = client.chat.completions.create(
        model="llama-chat", messages=[{"role": "user", "content": "Hello from REST"}]
    )
    assert reply.choices[0].message.content == "You said: Hello from REST"
    assert [m.id for m in client.models.list().data] == ["llama-chat"]


def test_a_rest_key_made_in_the_console_authenticates_the_rest_api(tenants):
    response = login(tenants.member).post(reverse("devhub:keys"), {"name": "ci", "scope": "rest"})
    assert response.status_code == 201
    secret = re.search(r'id="new-key-secret"[^>]*value="([^"]+)"', response.content.decode()).group(1)
    assert APIKey.objects.get(name="ci").scope == "rest"
    client = Client(HTTP_AUTHORIZATION=f"Token {secret}")
    assert client.get("/api/v1/projects/").status_code == 200
    wrong = secret[:-1] + ("y" if secret.endswith("x") else "x")  # a random secret can end in "x"
    assert Client(HTTP_AUTHORIZATION="Token " + wrong).get("/api/v1/projects/").status_code == 401
