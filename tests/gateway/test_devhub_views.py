"""Developer Hub pages: keys (shown once, revoke), models with samples, usage pages and CSV; scoping."""

from __future__ import annotations

import contextlib
import io
import os
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from gateway.models import UsageRecord
from projects.keys import api_key_create, hash_secret
from projects.models import APIKey
from tests.conftest import login
from tests.gateway.conftest import make_deployment, make_key, start_console

pytestmark = pytest.mark.django_db


@pytest.fixture
def deployment(tenants):
    return make_deployment(
        tenants.project,
        "llama",
        served_model_name="llama-chat",
        pricing={"currency": "EUR", "input_per_million": "1.00", "output_per_million": "3.00"},
    )


def record(deployment, key: APIKey, **fields) -> UsageRecord:
    defaults = dict(
        request_id=f"req_{UsageRecord.objects.count()}_{key.pk}",
        deployment=deployment,
        deployment_name=deployment.name,
        organization=key.organization,
        user=key.user,
        api_key_id=key.pk,
        api_key_prefix=key.prefix,
        route="chat.completions",
        status_code=200,
        prompt_tokens=10,
        completion_tokens=20,
        latency_ms=42.0,
        cost=Decimal("0.00007000"),
        currency="EUR",
        created_at=timezone.now(),
    )
    defaults.update(fields)
    return UsageRecord.objects.create(**defaults)


def test_creating_a_key_shows_the_secret_once_and_stores_only_its_hash(tenants, deployment):
    client = login(tenants.member)
    response = client.post(reverse("devhub:keys"), {"name": "support-bot"})
    assert response.status_code == 201
    key = APIKey.objects.get()
    html = response.content.decode()
    start = html.index('id="new-key-secret"')
    secret = html[start:].split('value="', 1)[1].split('"', 1)[0]
    assert secret.startswith("mdk_") and len(secret) == 44
    assert key.key_hash == hash_secret(secret) and secret not in key.key_hash
    assert key.prefix == secret[:12]
    assert response["Cache-Control"] == "no-store"
    again = client.get(reverse("devhub:keys")).content.decode()
    assert secret not in again and key.prefix in again


def test_key_form_errors_land_on_the_fields(tenants, deployment):
    client = login(tenants.member)
    past = (timezone.now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    response = client.post(reverse("devhub:keys"), {"name": " ", "expires_at": past})
    assert response.status_code == 200
    html = response.content.decode()
    assert "This field is required." in html
    assert "The expiry must be in the future." in html
    assert not APIKey.objects.exists()


def test_key_limited_to_a_deployment_and_with_expiry(tenants, deployment):
    client = login(tenants.member)
    soon = (timezone.now() + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")
    response = client.post(
        reverse("devhub:keys"), {"name": "ci", "expires_at": soon, "deployments": [deployment.pk]}
    )
    assert response.status_code == 201
    key = APIKey.objects.get()
    assert list(key.deployments.all()) == [deployment]
    assert key.expires_at is not None


def test_viewer_cannot_create_keys(tenants, deployment):
    response = login(tenants.viewer).post(reverse("devhub:keys"), {"name": "x"})
    assert response.status_code == 403
    assert not APIKey.objects.exists()


def test_revoke_with_confirmation_form(tenants, deployment):
    key, _ = api_key_create(user=tenants.member, organization=tenants.org, name="old")
    client = login(tenants.member)
    page = client.get(reverse("devhub:keys")).content.decode()
    assert "data-confirm=" in page and reverse("devhub:key_revoke", args=[key.pk]) in page
    response = client.post(reverse("devhub:key_revoke", args=[key.pk]), follow=True)
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert "revoked" in response.content.decode()


def test_outsider_gets_404_on_every_devhub_object_url(tenants, deployment):
    key, _ = api_key_create(user=tenants.member, organization=tenants.org, name="acme key")
    record(deployment, key)
    outsider = login(tenants.outsider)
    assert outsider.post(reverse("devhub:key_revoke", args=[key.pk])).status_code == 404
    assert outsider.get(reverse("devhub:deployment_usage", args=[deployment.pk])).status_code == 404
    assert (
        outsider.get(
            reverse("devhub:deployment_usage", args=[deployment.pk]) + "?format=csv"
        ).status_code
        == 404
    )
    key.refresh_from_db()
    assert key.revoked_at is None
    # Lists never show the other organization's things either.
    for name in ("devhub:models", "devhub:keys", "devhub:usage", "devhub:organization_usage"):
        html = outsider.get(reverse(name)).content.decode()
        assert "llama-chat" not in html and key.prefix not in html and "acme key" not in html


def test_an_unreachable_external_endpoint_shows_on_the_hub_and_the_dashboard(tenants, deployment, public_example_com):
    from catalog.models import CatalogModel
    from deployments.external import external_deployment_create, external_health_record

    model = CatalogModel.objects.create(organization=tenants.org, name="onprem", source="huggingface", repo_id="acme/onprem")

    def external(name: str, **kwargs):
        return external_deployment_create(user=tenants.owner, project=tenants.project, model=model, name=name,
                                          url=f"https://{name}.example.com/v1", **kwargs)  # fmt: skip

    dead, covered, fine = external("dead"), external("covered", overflow="llama"), external("fine")
    external_health_record(deployment=dead, healthy=False, detail="connection refused")
    external_health_record(deployment=covered, healthy=False, detail="answered HTTP 503")
    external_health_record(deployment=fine, healthy=True, detail="answered HTTP 200")

    html = login(tenants.member).get(reverse("devhub:models")).content.decode()
    cards = {name: html.split(f'data-model="{name}"')[1].split('<dl class="facts"')[0] for name in ("dead", "covered", "fine", "llama-chat")}
    # No overflow: not callable, in the gateway's own terms (its 503), with what the check saw.
    assert "Not callable right now: its endpoint is unreachable (connection refused · last checked" in cards["dead"]
    assert re.search(r"</time>\). The gateway answers 503", cards["dead"])  # no space before the bracket
    assert "The gateway answers 503 until the endpoint answers its health check again" in cards["dead"]
    assert 'data-health="unhealthy"' in cards["dead"] and "Endpoint unreachable" in cards["dead"]
    # An overflow deployment answers meanwhile: callable, and said so.
    assert "Not callable" not in cards["covered"]
    assert "Its endpoint is unreachable right now (answered HTTP 503 · last checked" in cards["covered"]
    assert "sends your requests to its overflow deployment" in cards["covered"]
    assert "callout" not in cards["fine"] and "Endpoint reachable" in cards["fine"]
    assert "callout" not in cards["llama-chat"] and "Endpoint" not in cards["llama-chat"]  # a managed one: no check

    # The playground says it too (QA: its header kept a green "Running" over every 503).
    playground = login(tenants.member).get(reverse("devhub:playground", args=[dead.pk])).content.decode()
    assert 'id="playground-health-' in playground and "Endpoint unreachable" in playground
    assert "Its endpoint is unreachable right now (connection refused · last checked" in playground
    assert "the gateway answers 503 until the endpoint answers" in playground
    playground = login(tenants.member).get(reverse("devhub:playground", args=[covered.pk])).content.decode()
    assert "sends your calls to its overflow deployment meanwhile" in playground
    playground = login(tenants.member).get(reverse("devhub:playground", args=[fine.pk])).content.decode()
    assert "Endpoint reachable" in playground and "unreachable" not in playground

    dashboard = login(tenants.member).get(reverse("dashboard")).content.decode()
    assert '<span style="color:var(--bad)">' not in dashboard  # nothing failed
    assert ">2 endpoints unreachable</a>" in dashboard
    external_health_record(deployment=covered, healthy=True, detail="answered HTTP 200")
    assert ">1 endpoint unreachable</a>" in login(tenants.member).get(reverse("dashboard")).content.decode()
    external_health_record(deployment=dead, healthy=True, detail="answered HTTP 200")
    assert "unreachable" not in login(tenants.member).get(reverse("dashboard")).content.decode()
    external_health_record(deployment=dead, healthy=False, detail="connection refused")
    outsider = login(tenants.outsider)  # another organization's: none of it
    assert "unreachable" not in outsider.get(reverse("dashboard")).content.decode()
    assert "connection refused" not in outsider.get(reverse("devhub:models")).content.decode()


def test_a_member_cannot_revoke_another_members_key_but_an_admin_can(tenants, deployment):
    key, _ = api_key_create(user=tenants.owner, organization=tenants.org, name="owner's")
    assert (
        login(tenants.member).post(reverse("devhub:key_revoke", args=[key.pk])).status_code == 404
    )
    mine, _ = api_key_create(user=tenants.member, organization=tenants.org, name="member's")
    assert (
        login(tenants.owner).post(reverse("devhub:key_revoke", args=[mine.pk])).status_code == 302
    )
    mine.refresh_from_db()
    assert mine.revoked_at is not None


def test_models_page_lists_callable_deployments_with_real_samples(tenants, deployment, settings):
    settings.GATEWAY_BASE_URL = "https://ai.example.com"
    make_deployment(
        tenants.project,
        "off",
        served_model_name="off-model",
        state="deactivated",
        rate_limits={"user": {"rpm": 60, "tpm": None}, "api_key": {"rpm": 10, "tpm": 5000}},
    )
    make_deployment(tenants.other_project, "globex", served_model_name="globex-secret")
    html = login(tenants.member).get(reverse("devhub:models")).content.decode()
    assert "https://ai.example.com/v1" in html
    assert "curl https://ai.example.com/v1/chat/completions" in html
    assert "base_url=&quot;https://ai.example.com/v1&quot;" in html
    assert "fetch(&quot;https://ai.example.com/v1/chat/completions&quot;" in html
    assert "&quot;model&quot;: &quot;llama-chat&quot;" in html
    assert "off-model" in html and "Not callable right now: the deployment is deactivated" in html
    assert "globex-secret" not in html
    assert (
        "Per user: 60 requests/min" in html and "Per API key: 10 requests/min, 5000 tokens/min" in html
    )
    assert "none — unlimited" in html  # llama-chat has no limits


def test_models_page_empty_state_has_a_next_step(tenants):
    html = login(tenants.member).get(reverse("devhub:models")).content.decode()
    assert "No models to call yet" in html


def test_usage_pages_show_totals_and_export_csv(tenants, deployment):
    key, _ = api_key_create(user=tenants.member, organization=tenants.org, name="mine")
    other_key, _ = api_key_create(user=tenants.owner, organization=tenants.org, name="owner's")
    record(deployment, key, prompt_tokens=100, completion_tokens=50, cost=Decimal("0.00025000"))
    record(deployment, key, created_at=timezone.now() - timedelta(days=3), prompt_tokens=7)
    record(deployment, other_key, prompt_tokens=1000)
    client = login(tenants.member)
    mine = client.get(reverse("devhub:usage")).content.decode()  # last 24 hours, my keys only
    assert 'id="stat-requests">1<' in mine
    assert 'id="stat-tokens">100 / 50<' in mine
    assert 'id="usage-series"' in mine and "chart.umd.min.js" in mine
    week = client.get(reverse("devhub:usage") + "?range=7d").content.decode()
    assert 'id="stat-requests">2<' in week
    deployment_page = client.get(
        reverse("devhub:deployment_usage", args=[deployment.pk])
    ).content.decode()
    assert 'id="stat-requests">2<' in deployment_page  # both keys, last 24 hours
    org_page = client.get(reverse("devhub:organization_usage") + "?range=30d").content.decode()
    assert 'id="stat-requests">3<' in org_page
    csv_response = client.get(reverse("devhub:usage") + "?range=7d&format=csv")
    assert csv_response["Content-Type"].startswith("text/csv")
    assert csv_response.streaming  # sent as it is read, never built whole in memory
    lines = b"".join(csv_response.streaming_content).decode().strip().splitlines()
    assert lines[0].startswith("created_at,request_id,deployment_name")
    assert len(lines) == 3 and all(key.prefix in line for line in lines[1:])
    header = lines[0].split(",")
    assert header[4:6] == ["status_code", "error"]
    assert [line.split(",")[4:6] for line in lines[1:]] == [["200", ""]] * 2  # answered: no error words


def test_usage_range_switch_answers_the_fragment_to_htmx(tenants, deployment):
    client = login(tenants.member)
    response = client.get(reverse("devhub:usage") + "?range=1h", HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="usage-body">') and "<html" not in html
    assert "No requests in last hour" in html


@pytest.mark.django_db(transaction=True)
def test_the_python_sample_runs_as_copied(tenants, engine, settings):
    server = start_console()
    try:
        settings.GATEWAY_BASE_URL = server.url
        make_deployment(tenants.project, "llama", served_model_name="llama-chat")
        secret = make_key(tenants.member, tenants.org)
        from gateway.views import gateway_base_url, samples

        code = samples(gateway_base_url(), "llama-chat", embeddings=False)["python"]
        out = io.StringIO()
        os.environ["MODELDECK_API_KEY"] = secret
        try:
            with contextlib.redirect_stdout(out):
                exec(compile(code, "sample.py", "exec"), {})
        finally:
            del os.environ["MODELDECK_API_KEY"]
        assert out.getvalue().strip() == "You said: Hello!"
    finally:
        server.stop()


def test_usage_tables_name_the_organizations_keys_and_only_prefix_others(tenants, deployment):
    """Usage groups by the recorded prefix; the page and the API name your organization's keys
    beside it. A caller from another organization (a shared deployment) keeps its prefix only."""
    key, _ = api_key_create(user=tenants.member, organization=tenants.org, name="support-bot")
    foreign, _ = api_key_create(user=tenants.outsider, organization=tenants.other_org, name="globex-secret-name")
    record(deployment, key)
    record(deployment, foreign, organization=tenants.other_org)
    client = login(tenants.member)
    mine = client.get(reverse("devhub:usage")).content.decode()
    by_key = mine[mine.index('id="by-key"'):mine.index("</table>", mine.index('id="by-key"'))]
    assert "support-bot" in by_key and f"{key.prefix}…" in by_key
    recent = mine[mine.index('id="usage-table"'):]
    assert "support-bot" in recent
    page = login(tenants.owner).get(reverse("devhub:deployment_usage", args=[deployment.pk])).content.decode()
    assert "support-bot" in page and f"{foreign.prefix}…" in page
    assert "globex-secret-name" not in page
    # The requests' search box finds a key by its name too (your organization's keys).
    found = login(tenants.owner).get(reverse("devhub:deployment_usage", args=[deployment.pk]), {"req_q": "support"})
    recent = found.content.decode().split('id="usage-table"', 1)[1]
    assert recent.count("<tr>") == 2 and "support-bot" in recent and f"{foreign.prefix}…" not in recent  # header + 1
    hidden = login(tenants.owner).get(reverse("devhub:deployment_usage", args=[deployment.pk]), {"req_q": "globex"})
    assert "No request matches." in hidden.content.decode()
    api = login(tenants.owner)
    rows = api.get("/api/v1/usage/", {"scope": "deployment", "deployment": deployment.pk}).json()["results"]
    named = {r["api_key_prefix"]: (r["api_key"], r["api_key_name"]) for r in rows}
    assert named == {key.prefix: (key.pk, "support-bot"), foreign.prefix: (foreign.pk, "")}
    summary = api.get("/api/v1/usage/summary/", {"scope": "deployment", "deployment": deployment.pk}).json()
    assert {r["name"]: r["api_key_name"] for r in summary["by_key"]} == {key.prefix: "support-bot", foreign.prefix: ""}


def test_usage_csv_writes_formula_like_text_as_text(tenants, deployment):
    """A username is typed by a person ("+cmd|…", "@SUM(1)" are valid Django usernames): a
    spreadsheet opening the export must not run it as a formula (OWASP CSV injection)."""
    import csv as csvlib

    tenants.member.username = "@SUM(1+1)"
    tenants.member.save()
    key, _ = api_key_create(user=tenants.member, organization=tenants.org, name="mine")
    record(deployment, key, route="-chat")
    response = login(tenants.member).get(reverse("devhub:usage") + "?format=csv")
    rows = list(csvlib.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [(r["user"], r["route"], r["deployment_name"]) for r in rows] == [("'@SUM(1+1)", "'-chat", "llama")]
    assert rows[0]["prompt_tokens"] == "10" and rows[0]["cost"] == "0.00007000"  # figures stay figures
