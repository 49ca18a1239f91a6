"""/api/schema/ declares the errors every operation can answer (console/api_schema.py), in the
shapes the API really answers them (console/api.py's exception handler): real 400, 401, 403, 404
and 429 bodies are validated against what the schema says."""

from __future__ import annotations

import jsonschema
import pytest
from django.core.cache import cache
from django.test import Client
from rest_framework.test import APIClient

from catalog.models import MaaSMapping, ProfileBundle
from projects.api import auth
from tests.conftest import login
from tests.sharing import factories as f

pytestmark = pytest.mark.django_db

WRITES = {"post", "put", "patch", "delete"}


@pytest.fixture
def schema(tenants) -> dict:
    return login(tenants.owner).get("/api/schema/", HTTP_ACCEPT="application/json").json()


def operations(schema: dict):
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def assert_as_declared(schema: dict, path: str, method: str, response) -> None:
    """The response's status is declared for the operation, and its body has the declared shape."""
    declared = schema["paths"][path][method]["responses"]
    assert str(response.status_code) in declared, (path, method, response.status_code, sorted(declared))
    body_schema = declared[str(response.status_code)]["content"]["application/json"]["schema"]
    jsonschema.validate(response.json(), {**body_schema, "components": schema["components"]})


def test_every_operation_declares_the_errors_it_can_answer(schema):
    checked = 0
    for path, method, operation in operations(schema):
        codes = set(operation["responses"])
        parameters = operation.get("parameters", [])
        if path != "/api/v1/auth/token/":  # the one route open to anyone
            assert {"401", "403"} <= codes, (method, path, codes)
        if any(p["in"] == "path" for p in parameters):
            assert "404" in codes, (method, path, codes)
        if "requestBody" in operation or method in WRITES:
            assert "400" in codes, (method, path, codes)
        for code in codes - {"200", "201", "202", "204"}:
            assert operation["responses"][code]["content"]["application/json"]["schema"], (method, path, code)
        checked += 1
    assert checked > 100
    token = schema["paths"]["/api/v1/auth/token/"]["post"]["responses"]
    assert {"400", "401", "429"} <= set(token) and "Retry-After" in token["429"]["headers"]


def test_error_components_say_the_shape_the_exception_handler_gives(schema):
    components = schema["components"]["schemas"]
    assert components["Error"]["required"] == ["detail"]
    validation = components["ValidationError"]
    assert set(validation["properties"]) == {"detail", "code", "non_field_errors"}
    assert validation["additionalProperties"] == {"$ref": "#/components/schemas/FieldErrors"}


def test_real_401_403_and_404_bodies_match_the_schema(schema, tenants):
    env = f.environment(tenants.project, name="Production")
    theirs = f.environment(tenants.other_project, name="Theirs")
    detail = "/api/v1/environments/{id}/"

    anonymous = Client().get("/api/v1/projects/")
    assert anonymous.status_code == 401
    assert_as_declared(schema, "/api/v1/projects/", "get", anonymous)

    bad_key = APIClient()
    bad_key.credentials(HTTP_AUTHORIZATION="Token mdk_not_a_key")
    refused = bad_key.get(f"/api/v1/environments/{env.pk}/")
    assert refused.status_code == 401
    assert_as_declared(schema, detail, "get", refused)

    viewer = login(tenants.viewer).patch(
        f"/api/v1/environments/{env.pk}/", {"max_replicas": 2}, content_type="application/json"
    )
    assert viewer.status_code == 403
    assert_as_declared(schema, detail, "patch", viewer)

    # Another organization's environment is answered like one that does not exist.
    for response in (
        login(tenants.owner).get(f"/api/v1/environments/{theirs.pk}/"),
        login(tenants.owner).get("/api/v1/environments/99999999/"),
    ):
        assert response.status_code == 404
        assert_as_declared(schema, detail, "get", response)


def test_real_400_bodies_match_the_schema(schema, tenants):
    client = login(tenants.owner)
    # Fields, each with its messages.
    missing = client.post("/api/v1/environments/", {}, content_type="application/json")
    assert missing.status_code == 400 and set(missing.json()) >= {"project", "name", "slug"}
    assert_as_declared(schema, "/api/v1/environments/", "post", missing)
    # A list field's failing item, by index.
    order = client.post("/api/v1/mappings/reorder/", {"project": tenants.project.pk, "order": ["x"]},
                        content_type="application/json")  # fmt: skip
    assert order.status_code == 400 and order.json()["order"] == {"0": ["A valid integer is required."]}
    assert_as_declared(schema, "/api/v1/mappings/reorder/", "post", order)
    # A body that can't be read: `detail`.
    twice = client.post("/api/v1/environments/", '{"name": "a", "name": "b"}', content_type="application/json")
    assert twice.status_code == 400 and set(twice.json()) == {"detail"}
    assert_as_declared(schema, "/api/v1/environments/", "post", twice)
    # A write without a body the service refuses: `non_field_errors`.
    bundle = ProfileBundle.objects.create(organization=tenants.org, name="b", engine="vllm", image="vllm/vllm-openai:v0.6.3")
    MaaSMapping.objects.create(project=tenants.project, source="huggingface", bundle=bundle)
    in_use = client.delete(f"/api/v1/bundles/{bundle.pk}/")
    assert in_use.status_code == 400 and set(in_use.json()) == {"non_field_errors"}
    assert_as_declared(schema, "/api/v1/bundles/{id}/", "delete", in_use)


def test_a_real_429_matches_the_schema(schema, tenants, monkeypatch):
    monkeypatch.setattr(auth, "MAX_PER_USERNAME", 0)  # the first attempt is already one too many
    buckets = ["modeldeck:auth-token:user:schema-probe", "modeldeck:auth-token:ip:127.0.0.1"]
    try:
        response = APIClient().post(
            "/api/v1/auth/token/", {"username": "schema-probe", "password": "x"}, format="json"
        )
        assert response.status_code == 429 and int(response["Retry-After"]) > 0
        assert_as_declared(schema, "/api/v1/auth/token/", "post", response)
    finally:
        cache.delete_many(buckets)
