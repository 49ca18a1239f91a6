"""The REST API answers bad input with 4xx JSON in its error shape, never a 500 (issue: "500s")."""

from __future__ import annotations

import pytest
from django.test import Client

from catalog.models import CatalogModel, ProfileBundle
from projects.models import Environment, Project
from tests.factories import rest_api_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(tenants) -> Client:
    # A 500 must show up as a status here, not as an exception the test client re-raises.
    client = Client(raise_request_exception=False)
    client.force_login(tenants.owner)
    return client


@pytest.fixture
def catalog(tenants):
    model = CatalogModel.objects.create(
        organization=tenants.org, name="m", source="huggingface", repo_id="acme/m"
    )
    bundle = ProfileBundle.objects.create(
        organization=tenants.org, name="b", engine="vllm", image="vllm/vllm-openai:v0.6.3"
    )
    return model, bundle


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/models/abc/",
        "/api/v1/models/null,null/",
        "/api/v1/models/99999999999999999999999/",
        "/api/v1/models/abc/estimate/",
        "/api/v1/bundles/abc/",
        "/api/v1/bundles/abc/versions/",
        "/api/v1/mappings/abc/",
        "/api/v1/deployments/abc/",
        "/api/v1/projects/1.5/",
        "/api/v1/no-such-collection/",
    ],
)
def test_ids_that_are_not_whole_numbers_are_a_json_404(client, catalog, url):
    response = client.get(url)
    assert response.status_code == 404, response.content[:200]
    assert response["Content-Type"] == "application/json"
    assert response.json()["detail"]


@pytest.mark.parametrize("body", ["0", "[]", '"x"', "null", "[null, null]", "true"])
@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/models/",
        "/api/v1/projects/",
        "/api/v1/bundles/",
        "/api/v1/mappings/",
        "/api/v1/models/hub-add/",
    ],
)
def test_json_bodies_that_are_not_objects_are_a_400(client, url, body):
    response = client.post(url, data=body, content_type="application/json")
    assert response.status_code == 400, response.content[:200]
    assert "must be an object" in response.json()["detail"]


@pytest.mark.parametrize("depth", [33, 5000, 100000])
@pytest.mark.parametrize(
    "url", ["/api/v1/projects/", "/api/v1/deployments/", "/api/v1/auth/token/", "/api/v1/apply/"]
)
def test_json_bodies_nested_too_deeply_are_a_400(client, url, depth):
    body = '{"a": ' + "[" * depth + "]" * depth + "}"
    response = client.post(url, data=body, content_type="application/json")
    assert response.status_code == 400, response.content[:200]
    assert "nested too deeply" in response.json()["detail"]


def test_a_json_body_of_ordinary_depth_still_reaches_the_view(client):
    body = '{"name": "p", "x": ' + "[" * 31 + "]" * 31 + "}"
    response = client.post("/api/v1/projects/", data=body, content_type="application/json")
    assert "nested too deeply" not in response.content.decode()


def test_json_body_that_is_not_an_object_on_an_update_route_is_a_400(client, catalog):
    model, _ = catalog
    response = client.patch(
        f"/api/v1/models/{model.pk}/", data="[1]", content_type="application/json"
    )
    assert response.status_code == 400 and "must be an object" in response.json()["detail"]


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/models/?q=a%00b",
        "/api/v1/deployments/?state=%00",
        "/api/v1/audit-entries/?actor=x%00",
    ],
)
def test_nul_byte_in_a_list_filter_is_a_400(client, catalog, url):
    response = client.get(url)
    assert response.status_code == 400, response.content[:200]
    assert "NUL" in response.json()["detail"]


@pytest.mark.parametrize(
    "url",
    ["/deployments/?q=a%00", "/audit/?q=%00", "/catalog/?q=%00", "/hub/keys/?q=%00", "/hub/usage/?req_q=%00",
     "/pools/?q=%00", "/projects/?q=%00", "/organization/members/?q=%00", "/hub/keys/deployments/?q=%00"],
)
def test_nul_byte_in_a_page_query_is_a_400_page(client, catalog, url):
    """QA: the console's searches put it in a LIKE that PostgreSQL refuses (a 500)."""
    response = client.get(url)
    assert response.status_code == 400, response.content[:200]
    assert "Bad request" in response.content.decode()


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/deployments/?project=999999999999999999999",
        "/api/v1/endpoints/?project=999999999999999999999",
        "/api/v1/data-sources/?project=999999999999999999999",
        "/api/v1/resource-templates/?project=999999999999999999999",
        "/api/v1/models/?organization=999999999999999999999",
        "/api/v1/mappings/?project=999999999999999999999",
        "/api/v1/environments/?project=999999999999999999999",
    ],
)
def test_a_list_filtered_by_an_id_past_64_bits_is_empty_without_asking_the_database(client, catalog, url):
    """QA: on `make run`'s SQLite these were 500s (OverflowError binding the number); an id no row
    can have matches nothing, and the number never reaches the database."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, response.content[:200]
    assert response.json()["results"] == []
    assert not [q["sql"] for q in queries.captured_queries if "999999999999999999999" in q["sql"]]


SUPERSCRIPT_TWO = "\u00b2"  # "²": str.isdigit() says yes, int() refuses it


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/deployments/?project=²",
        "/api/v1/models/?organization=²",
        "/api/v1/budgets/?organization=²",
        "/api/v1/members/?organization=²",
        "/api/v1/keys/?organization=²",
        "/api/v1/usage/summary/?organization=²",
        "/api/v1/audit-entries/?actor=²",
        "/audit/?actor=²",
        "/audit/history/deployment/²/",
        "/hub/keys/deployments/?q=a&deployments=²",
    ],
)
def test_a_superscript_digit_where_an_id_goes_is_no_500(client, catalog, url):
    """QA: "²" passed the id checks (str.isdigit) and int() raised: a 500 on each of these."""
    response = client.get(url)
    assert response.status_code in (200, 400, 404), (url, response.status_code)


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/org/switch/", {"organization": "²"}),
        ("/hub/budgets/", {"level": "member", "target": "²", "monthly_budget": "1"}),
        ("/hub/budgets/", {"level": "key", "target": "²", "monthly_budget": "1"}),
        ("/hub/keys/", {"name": "bot", "scope": "gateway", "deployments": ["²"]}),
    ],
)
def test_a_superscript_digit_posted_where_an_id_goes_is_no_500(client, url, body):
    response = client.post(url, body)
    assert response.status_code in (200, 302, 400, 404), (url, response.status_code)


def test_a_superscript_digit_as_the_token_organization_is_a_field_error(tenants):
    tenants.owner.set_password("pw-for-token")
    tenants.owner.save()
    response = Client(raise_request_exception=False).post(
        "/api/v1/auth/token/",
        {"username": tenants.owner.username, "password": "pw-for-token", "organization": "²"},
        content_type="application/json",
    )
    assert response.status_code == 400 and "organization" in response.json()


def test_multipart_without_boundary_is_a_400(client):
    response = client.post("/api/v1/models/", data=b"--x--", content_type="multipart/form-data")
    assert response.status_code == 400 and "boundary" in response.json()["detail"]


@pytest.mark.parametrize("data", ["allowed_pool_labels=null", "allowed_gpu_types=null"])
def test_form_encoded_null_on_patch_is_a_field_error_not_an_integrity_error(client, tenants, data):
    env = Environment.objects.create(project=tenants.project, name="Dev", slug="dev")
    response = client.patch(
        f"/api/v1/environments/{env.pk}/",
        data=data,
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 400, response.content[:200]
    assert set(response.json()) == {data.split("=")[0]}
    env.refresh_from_db()
    assert env.allowed_pool_labels == {} and env.allowed_gpu_types == []


def test_list_actions_are_paginated_as_the_schema_documents(client, tenants, catalog):
    from tests.gateway.conftest import make_deployment

    _, bundle = catalog
    deployment = make_deployment(tenants.project, "chat")
    deployment.events.create(reason="Created")
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    for path, url in [
        ("/api/v1/bundles/{id}/versions/", f"/api/v1/bundles/{bundle.pk}/versions/"),
        ("/api/v1/deployments/{id}/revisions/", f"/api/v1/deployments/{deployment.pk}/revisions/"),
        ("/api/v1/deployments/{id}/events/", f"/api/v1/deployments/{deployment.pk}/events/"),
    ]:
        documented = schema["paths"][path]["get"]["responses"]["200"]["content"][
            "application/json"
        ]["schema"]
        assert documented["$ref"].startswith("#/components/schemas/Paginated"), path
        body = client.get(url + "?limit=1").json()
        assert set(body) == {"count", "next", "previous", "results"}, url
        assert body["count"] >= 1 and len(body["results"]) == 1
    # The reorder answer is the whole new order, documented as an array and sent as one.
    reorder = schema["paths"]["/api/v1/mappings/reorder/"]["post"]["responses"]["200"]
    assert reorder["content"]["application/json"]["schema"]["type"] == "array"


def test_project_and_sharing_errors_do_not_reveal_other_organizations(tenants):
    """An outsider learns nothing from the texts: same answer for unknown and foreign ids."""
    from tests.gateway.conftest import make_deployment

    outsider = Client(raise_request_exception=False)
    outsider.force_login(tenants.outsider)
    body = {"name": "Sneak", "slug": "sneak"}
    foreign = outsider.post(
        "/api/v1/projects/",
        {**body, "organization": tenants.org.pk},
        content_type="application/json",
    )
    unknown = outsider.post(
        "/api/v1/projects/", {**body, "organization": 987654}, content_type="application/json"
    )
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json() == unknown.json() and "Acme" not in foreign.content.decode()

    # An admin granting access to users: another organization's user and a missing id read alike.
    theirs = make_deployment(tenants.other_project, "theirs")
    for user_id in (tenants.owner.pk, 987654):
        response = outsider.put(
            f"/api/v1/deployment-sharing/{theirs.pk}/",
            {"mode": "none", "access": "users", "users": [user_id]},
            content_type="application/json",
        )
        assert response.status_code == 400, response.content
        text = response.content.decode()
        assert "owner" not in text and str(user_id) not in text
        assert "Choose users of this organization" in text


# ---- JSON nested too deeply where the body parser's check doesn't look (security review) -------
# JSON carried as a string (an S3 secret, a data source's credentials) or a form field DRF's
# JSONField parses: RecursionError, a 500.

DEEP = "[" * 3000  # under the integration secret's 4,000 characters


def _raising_client(user):
    client = rest_api_client(user)
    client.raise_request_exception = False
    return client


def test_integration_secret_as_deep_json_string(tenants):
    r = _raising_client(tenants.owner).post(f"/api/v1/projects/{tenants.project.pk}/integrations/",
                                    {"kind": "s3", "secret": DEEP}, format="json")
    assert r.status_code == 400, (r.status_code, r.content[:200])


def test_data_source_credentials_as_deep_json_string(tenants):
    r = _raising_client(tenants.owner).post("/api/v1/data-sources/", {"name": "w", "kind": "s3", "uri": "s3://acme-models/x",
                                    "project": tenants.project.pk, "credentials": DEEP}, format="json")
    assert r.status_code == 400, (r.status_code, r.content[:200])


def test_data_source_credentials_in_a_multipart_form(tenants):
    r = _raising_client(tenants.owner).post("/api/v1/data-sources/", {"name": "w", "kind": "s3", "uri": "s3://acme-models/x",
                                    "project": tenants.project.pk, "credentials": DEEP}, format="multipart")
    assert r.status_code == 400, (r.status_code, r.content[:200])


def test_budget_as_deep_json_in_a_form(tenants):
    # projects/api/serializers.py monthly_budget = serializers.JSONField (form input is json.loads-ed)
    r = _raising_client(tenants.owner).post("/api/v1/budgets/", {"monthly_budget": DEEP, "level": "organization"},
                                    format="multipart")
    assert r.status_code == 400, (r.status_code, r.content[:200])


def test_a_body_over_the_size_limit_is_a_413_that_says_so(client, settings):
    """QA: a 3 MB JSON body (a large `apply -f`) was answered "Bad request." and nothing more."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = '{"name": "big", "description": "' + "x" * 2000 + '"}'
    response = client.post("/api/v1/projects/", data=body, content_type="application/json")
    assert response.status_code == 413, response.content[:200]
    assert response.json() == {"detail": "The request body is larger than the server takes (1,000 bytes)."}


@pytest.mark.parametrize(
    "body, key",
    [
        ('{"name": "a", "name": "b"}', "name"),
        ('{"name": "p", "description": "x", "quota": {"gpus": 1, "gpus": 2}}', "gpus"),
        ('{"name": "p", "spec": {"env": [{"name": "A", "value": "1", "value": "2"}]}}', "value"),
    ],
)
def test_a_json_body_naming_a_key_twice_is_a_400_naming_it(client, body, key):
    # json.loads keeps the last of the two: the project would be made as "b", silently.
    response = client.post("/api/v1/projects/", data=body, content_type="application/json")
    assert response.status_code == 400, response.content[:200]
    assert response.json() == {
        "detail": f"The JSON body names “{key}” twice in one object; each key may appear once "
        "(with a key written twice, which value counts is not defined)."
    }
    assert not Project.objects.filter(name__in=["a", "b", "p"]).exists()


def test_the_same_key_in_two_different_objects_is_fine(client, tenants):
    body = '{"name": "Twin", "labels": {"name": "x"}}'
    response = client.post("/api/v1/projects/", data=body, content_type="application/json")
    assert response.status_code == 201, response.content[:200]


def test_a_json_value_in_a_form_naming_a_key_twice_is_a_field_error(tenants):
    r = _raising_client(tenants.owner).post(
        "/api/v1/data-sources/",
        {"name": "w", "kind": "s3", "uri": "s3://acme-models/x", "project": tenants.project.pk,
         "credentials": '{"access_key_id": "a", "access_key_id": "b"}'},
        format="multipart",
    )  # fmt: skip
    assert r.status_code == 400, (r.status_code, r.content[:200])
    assert r.json() == {
        "credentials": [
            "The value names “access_key_id” twice in one object; each key may appear once "
            "(with a key written twice, which value counts is not defined)."
        ]
    }


def test_an_error_asked_for_as_csv_is_still_json(client, tenants):
    """Found by the fuzzer once errors were in the schema: GET /usage/?format=csv with a bad scope
    answered 400 with an empty body (the CSV renderer's), no JSON, no reason."""
    response = client.get("/api/v1/usage/", {"format": "csv", "scope": "nobody"})
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    assert response.json() == {"scope": ["Choose one of: keys, organization, deployment."]}
    assert client.get("/api/v1/usage/", {"format": "csv"})["Content-Type"].startswith("text/csv")


@pytest.mark.django_db
def test_another_organizations_id_as_a_list_filter_is_a_404_as_everywhere(tenants):
    """QA: /api/v1/audit-entries/?organization=<theirs> answered 400 "You are not a member of that
    organization." where every route answers another organization's id with 404."""
    from tests.factories import rest_api_client

    client = rest_api_client(tenants.outsider)
    response = client.get("/api/v1/audit-entries/", {"organization": tenants.org.pk})
    assert response.status_code == 404, response.content[:200]
    assert client.get("/api/v1/audit-entries/", {"organization": tenants.other_org.pk}).status_code == 200
