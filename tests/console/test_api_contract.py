"""What the REST API tells a client about itself: OPTIONS names the body a POST reads, lists are
paged within bounds, and /api/schema/ says what the routes answer (found by schemathesis)."""

from __future__ import annotations

import pytest
import yaml
from django.test import Client

from tests.factories import rest_api_client

pytestmark = pytest.mark.django_db

# A list route and some fields its POST reads. DRF's OPTIONS described the object each answers
# (every field read-only: nothing to send) or, for views without get_serializer, nothing at all.
POST_BODIES = {
    "/api/v1/deployments/": {"project", "model", "pool", "name", "spec"},
    "/api/v1/keys/": {"name", "scope", "expires_at", "deployments"},
    "/api/v1/members/": {"username", "role"},
    "/api/v1/invitations/": {"email", "role"},
    "/api/v1/models/": {"source", "repo_id", "project"},
    "/api/v1/pools/": {"name", "kind", "engine_label"},
    "/api/v1/data-sources/": {"name", "kind", "claim_name", "uri", "credentials"},
    "/api/v1/resource-templates/": {"name", "cpu", "memory", "gpus"},
    "/api/v1/apply/": {"manifest", "documents", "dry_run"},
    "/api/v1/promotions/": {"deployment", "revision", "target_environment"},
    "/api/v1/mappings/reorder/": {"project", "order"},
}


@pytest.mark.parametrize("url", sorted(POST_BODIES))
def test_options_on_a_list_route_documents_the_body_its_post_reads(tenants, url):
    response = rest_api_client(tenants.owner).options(url)
    assert response.status_code == 200, response.content[:200]
    post = response.json()["actions"]["POST"]
    writable = {name for name, field in post.items() if not field.get("read_only")}
    assert POST_BODIES[url] <= writable, sorted(writable)


def test_options_on_an_action_documents_its_body_or_none(tenants):
    client = rest_api_client(tenants.owner)
    members = client.options(f"/api/v1/projects/{tenants.project.pk}/members/").json()
    assert {"user", "role"} <= set(members["actions"]["POST"])  # not the project's fields
    scale = client.options("/api/v1/deployments/1/scale/").json()
    assert set(scale["actions"]["POST"]) == {"min", "max"}
    # deactivate reads no body: no fields to send, rather than the deployment's.
    assert "actions" not in client.options("/api/v1/deployments/1/deactivate/").json()


def test_options_describes_no_body_to_an_anonymous_client(tenants):
    response = Client().options("/api/v1/deployments/")
    assert "actions" not in response.json()


@pytest.mark.parametrize("limit", ["99999999999999999999", str(2**63), "1000000"])
def test_a_limit_past_the_ceiling_is_read_as_the_ceiling(tenants, limit):
    client = Client(raise_request_exception=False)
    client.force_login(tenants.owner)
    response = client.get("/api/v1/projects/", {"limit": limit})
    assert response.status_code == 200, response.content[:200]
    assert [p["name"] for p in response.json()["results"]] == ["Research"]


def test_the_schema_says_what_the_routes_answer(tenants):
    client = Client()
    client.force_login(tenants.owner)
    paths = yaml.safe_load(client.get("/api/schema/").content)["paths"]

    def body(path, method, code):
        return paths[path][method]["responses"][code]["content"]["application/json"]["schema"]

    # Unpaged lists are arrays, not {count, results}.
    for action in ("members", "integrations"):
        schema = body(f"/api/v1/projects/{{id}}/{action}/", "get", "200")
        assert schema["type"] == "array", schema
    # The galleries' writes declare their bodies.
    for gallery in ("data-sources", "resource-templates"):
        assert "requestBody" in paths[f"/api/v1/{gallery}/"]["post"]
        assert "requestBody" in paths[f"/api/v1/{gallery}/{{id}}/"]["patch"]
    deleted = paths["/api/v1/deployments/{id}/"]["delete"]["responses"]
    assert {code for code in deleted if code.startswith("2")} == {"202"}  # errors: test_api_schema_errors
    assert body("/api/v1/members/{id}/", "delete", "200") == {"$ref": "#/components/schemas/MemberRemoved"}
