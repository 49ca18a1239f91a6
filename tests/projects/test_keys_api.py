"""REST API of API keys (create shown once, list, revoke; admins see the organization's) and
REST authentication by hashed keys instead of DRF's plaintext tokens."""

from __future__ import annotations

import pytest
from django.db import connection
from rest_framework.test import APIClient

from projects.keys import api_key_create, hash_secret
from projects.models import APIKey, APIKeyScope, Membership
from projects.services import membership_remove
from tests.factories import rest_api_client

pytestmark = pytest.mark.django_db


def token_client(secret: str, scheme: str = "Token") -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{scheme} {secret}")
    return client


def rest_key(user, org) -> str:
    return api_key_create(user=user, organization=org, name="rest", scope=APIKeyScope.REST)[1]


def test_create_shows_the_secret_once_and_the_database_holds_only_its_hash(tenants):
    client = rest_api_client(tenants.member)
    response = client.post("/api/v1/keys/", {"name": "support-bot"}, format="json")
    assert response.status_code == 201, response.json()
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    secret = body["secret"]
    assert secret.startswith("mdk_") and body["prefix"] == secret[:12]
    assert body["scope"] == "gateway" and body["state"] == "active" and body["owner"] == "member"
    key = APIKey.objects.get(pk=body["id"])
    assert key.key_hash == hash_secret(secret) and secret not in key.key_hash
    # Never again: not in the detail, not in the list.
    detail = client.get(f"/api/v1/keys/{key.pk}/").json()
    assert "secret" not in detail and secret not in str(detail)
    listed = client.get("/api/v1/keys/").json()
    assert secret not in str(listed)


def test_rest_tokens_are_stored_hashed_and_the_plaintext_table_is_gone(tenants):
    secret = rest_key(tenants.owner, tenants.org)
    assert token_client(secret).get("/api/v1/projects/").status_code == 200
    assert token_client(secret, "Bearer").get("/api/v1/projects/").status_code == 200
    # What the database holds is a keyed hash: searching every text column for the secret finds nothing.
    with connection.cursor() as cursor:
        cursor.execute("SELECT key_hash, prefix, name FROM projects_apikey")
        rows = cursor.fetchall()
    assert rows and all(secret not in value for row in rows for value in row)
    assert APIKey.objects.get(scope="rest").key_hash == hash_secret(secret)
    assert "authtoken_token" not in connection.introspection.table_names()


def test_rest_refuses_gateway_keys_revoked_keys_and_removed_members(tenants):
    gateway_secret = api_key_create(user=tenants.owner, organization=tenants.org, name="gw")[1]
    response = token_client(gateway_secret).get("/api/v1/projects/")
    assert response.status_code == 401 and "gateway key" in response.json()["detail"]
    assert token_client("mdk_" + "x" * 40).get("/api/v1/projects/").status_code == 401
    assert token_client("not-a-key").get("/api/v1/projects/").status_code == 401

    secret = rest_key(tenants.member, tenants.org)
    client = token_client(secret)
    assert client.get("/api/v1/projects/").status_code == 200
    membership_remove(user=tenants.owner, membership=Membership.objects.get(user=tenants.member, organization=tenants.org))
    response = client.get("/api/v1/projects/")
    assert response.status_code == 401 and "revoked" in response.json()["detail"]

    secret = rest_key(tenants.viewer, tenants.org)  # viewers may hold REST keys: their role still limits them
    assert token_client(secret).get("/api/v1/projects/").status_code == 200
    tenants.viewer.is_active = False
    tenants.viewer.save()
    assert token_client(secret).get("/api/v1/projects/").status_code == 401


def test_list_is_paginated_and_shows_members_only_their_own_keys(tenants):
    theirs, _ = api_key_create(user=tenants.owner, organization=tenants.org, name="owner key")
    mine, _ = api_key_create(user=tenants.member, organization=tenants.org, name="member key")
    client = rest_api_client(tenants.member)
    body = client.get("/api/v1/keys/").json()
    assert set(body) >= {"count", "next", "previous", "results"}
    ids = {row["id"] for row in body["results"]}
    assert mine.pk in ids and theirs.pk not in ids
    response = client.get(f"/api/v1/keys/?organization={tenants.org.pk}&owner=any")
    assert response.status_code == 403
    assert client.get(f"/api/v1/keys/{theirs.pk}/").status_code == 404
    assert client.post(f"/api/v1/keys/{theirs.pk}/revoke/", {}, format="json").status_code == 404
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


def test_admin_lists_and_revokes_every_key_of_the_organization(tenants):
    member_key, _ = api_key_create(user=tenants.member, organization=tenants.org, name="member key")
    client = rest_api_client(tenants.owner)
    rows = client.get(f"/api/v1/keys/?organization={tenants.org.pk}&owner=any&limit=1").json()
    assert rows["count"] >= 2 and len(rows["results"]) == 1 and rows["next"]
    everything = client.get(f"/api/v1/keys/?organization={tenants.org.pk}&owner=any").json()["results"]
    assert {"member", "owner"} <= {row["owner"] for row in everything}
    response = client.post(f"/api/v1/keys/{member_key.pk}/revoke/", {"reason": "left the team"}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["state"] == "revoked" and response.json()["revoked_reason"] == "left the team"
    again = client.post(f"/api/v1/keys/{member_key.pk}/revoke/", {}, format="json")
    assert again.status_code == 400 and "already revoked" in str(again.json())


def test_outsider_gets_404_on_another_organizations_keys(tenants):
    key, _ = api_key_create(user=tenants.member, organization=tenants.org, name="acme key")
    client = rest_api_client(tenants.outsider)
    assert client.get(f"/api/v1/keys/{key.pk}/").status_code == 404
    assert client.post(f"/api/v1/keys/{key.pk}/revoke/", {}, format="json").status_code == 404
    assert client.get(f"/api/v1/keys/?organization={tenants.org.pk}").status_code == 404
    assert client.get(f"/api/v1/keys/?organization={tenants.org.pk}&owner=any").status_code == 404
    response = client.post("/api/v1/keys/", {"name": "sneak", "organization": tenants.org.pk}, format="json")
    assert response.status_code == 404
    assert "acme key" not in str(client.get("/api/v1/keys/").json())
    key.refresh_from_db()
    assert key.revoked_at is None and not APIKey.objects.filter(name="sneak").exists()


def test_bad_input_is_a_400_on_the_field(tenants, ):
    client = rest_api_client(tenants.member)
    assert "name" in client.post("/api/v1/keys/", {"name": ""}, format="json").json()
    assert "scope" in client.post("/api/v1/keys/", {"name": "x", "scope": "root"}, format="json").json()
    past = client.post("/api/v1/keys/", {"name": "x", "expires_at": "2001-01-01T00:00:00Z"}, format="json")
    assert past.status_code == 400 and "expires_at" in past.json()
    foreign = client.post("/api/v1/keys/", {"name": "x", "deployments": [999999]}, format="json")
    assert foreign.status_code == 400 and "deployments" in foreign.json()
    assert client.get("/api/v1/keys/?organization=abc").status_code == 400
    assert client.get("/api/v1/keys/abc/").status_code == 404
    viewer = rest_api_client(tenants.viewer)
    assert viewer.post("/api/v1/keys/", {"name": "gw"}, format="json").status_code == 403


def test_key_routes_are_in_the_schema(tenants):
    schema = rest_api_client(tenants.owner).get("/api/schema/?format=json").json()
    paths = schema["paths"]
    assert {"get", "post"} <= set(paths["/api/v1/keys/"])
    assert "get" in paths["/api/v1/keys/{id}/"]
    assert "post" in paths["/api/v1/keys/{id}/revoke/"]
    listed = paths["/api/v1/keys/"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert listed["$ref"].endswith("PaginatedAPIKeyList")
    created = paths["/api/v1/keys/"]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
    assert "secret" in schema["components"]["schemas"][created["$ref"].rsplit("/", 1)[1]]["properties"]
    assert schema["components"]["securitySchemes"]["apiKeyAuth"]["in"] == "header"
