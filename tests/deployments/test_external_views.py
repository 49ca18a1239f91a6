"""External deployments in the console: the form (field errors, never a 500), the page with the
breaker and the served split, edit keeping the key, scoping (404 across organizations)."""

from __future__ import annotations

import re

import pytest

from deployments.models import ModelDeployment
from tests.conftest import login

pytestmark = pytest.mark.django_db



def _form(tenants, model, overflow, **changes):
    data = {
        "project": tenants.project.pk, "model": model.pk, "name": "onprem", "external_url": "https://llm.example.com/v1",
        "api_key": "sk-onprem-abcdef1234", "served_model_name": "llama-onprem", "overflow": overflow.pk,
        "timeout_s": "20", "max_concurrency": "5", "failure_threshold": "3", "cooldown_s": "30", "description": "",
    }  # fmt: skip
    data.update(changes)
    return data


def test_create_show_edit_and_scope(tenants, model, deploy, public_example_com):
    burst = deploy("burst")
    client = login(tenants.owner)
    assert client.get("/deployments/external/new/").status_code == 200
    response = client.post("/deployments/external/new/", _form(tenants, model, burst))
    assert response.status_code == 302, response.content.decode()[:2000]
    row = ModelDeployment.objects.get(name="onprem")
    assert row.is_external and row.overflow == burst and row.spec()["external"]["max_concurrency"] == 5

    page = client.get(row.get_absolute_url()).content.decode()
    assert "https://llm.example.com/v1" in page and "1234" in page and "sk-onprem" not in page
    assert 'id="breaker-state">closed' in page and "No requests yet." in page
    assert 'id="external-badge"' in page

    edit = client.post(f"/deployments/{row.pk}/external/", {**_form(tenants, model, burst, api_key=""), "timeout_s": "40"})
    assert edit.status_code == 302
    row.refresh_from_db()
    assert row.external_credential == "sk-onprem-abcdef1234"  # an empty key field keeps the stored one
    assert row.spec()["external"]["timeout_s"] == 40

    outsider = login(tenants.outsider)
    assert outsider.get(row.get_absolute_url()).status_code == 404
    assert outsider.get(f"/deployments/{row.pk}/external/").status_code == 404
    assert outsider.post(f"/deployments/{row.pk}/external/", _form(tenants, model, burst)).status_code == 404


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data", "file:///etc/passwd", "http://127.0.0.1:5432"])
def test_refused_urls_are_field_errors(tenants, model, deploy, url):
    burst = deploy("burst")
    response = login(tenants.owner).post("/deployments/external/new/", _form(tenants, model, burst, external_url=url))
    assert response.status_code == 200
    assert response.context["form"].errors["external_url"]
    assert not ModelDeployment.objects.filter(name="onprem").exists()


def test_another_orgs_deployment_is_not_an_overflow_choice(tenants, model, deploy, public_example_com):
    from tests.gateway.conftest import make_deployment

    theirs = make_deployment(tenants.other_project, "theirs")
    response = login(tenants.owner).post("/deployments/external/new/", _form(tenants, model, theirs))
    assert response.status_code == 200 and response.context["form"].errors["overflow"]


def test_a_viewer_gets_a_refusal_not_a_deployment(tenants, model, deploy, public_example_com):
    burst = deploy("burst")
    response = login(tenants.viewer).post("/deployments/external/new/", _form(tenants, model, burst))
    assert response.status_code in (200, 403)
    assert not ModelDeployment.objects.filter(name="onprem").exists()


def test_every_error_shows_at_once(tenants, model, deploy):
    """No model, a URL with a credential and another scheme, a negative time-out, a bad rate limit:
    one submit names them all (the service's URL rule beside the form's required model)."""
    burst = deploy("burst")
    client = login(tenants.owner)
    data = _form(tenants, model, burst, external_url="ftp://user:pw@example.com/v1?x=1", timeout_s="-3",
                 rl_api_key_rpm="lots")
    response = client.post("/deployments/external/new/", {**data, "model": ""})
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert set(errors) >= {"model", "external_url", "timeout_s", "rl_api_key_rpm"}, errors
    assert errors["external_url"] == ["Only http:// and https:// URLs can be called, not ftp."]
    assert len(errors["timeout_s"]) == 1  # the form's own message, not the service's again
    assert not ModelDeployment.objects.filter(name="onprem").exists()


@pytest.mark.parametrize("redis", [True, False])
def test_the_page_says_a_health_check_runs_in_every_mode(tenants, model, settings, public_example_com, redis):
    from deployments.external import external_deployment_create

    row = external_deployment_create(user=tenants.owner, project=tenants.project, model=model, name="onprem",
                                     url="https://llm.example.com/v1")  # fmt: skip
    if not redis:
        settings.REDIS_URL = None  # the embedded mode (make run): the worker and beat run the check too
    page = login(tenants.owner).get(row.get_absolute_url()).content.decode()
    assert "Every 15 s a health check asks the endpoint for its models" in page
    assert "No health check runs here" not in page and "the state stays Running even when" not in page
    if redis:
        assert "opens and closes the circuit breaker every gateway process shares" in page
    else:
        assert "each gateway process's breaker learns the check's verdict when it changes" in page
    assert "its health, checked every 15 s, shows beside this state" in page  # the state's reason


def test_without_redis_the_page_shows_the_breaker_the_check_opened(tenants, model, settings, public_example_com):
    """Embedded, the page is drawn by the gateway's own process: its breaker has learnt the verdict."""
    from deployments.external import external_deployment_create, external_health_record

    settings.REDIS_URL = None
    row = external_deployment_create(user=tenants.owner, project=tenants.project, model=model, name="onprem",
                                     url="https://llm.example.com/v1")  # fmt: skip
    client = login(tenants.owner)
    assert 'id="breaker-state">closed' in client.get(row.get_absolute_url()).content.decode()
    external_health_record(deployment=row, healthy=False, detail="connection refused")
    page = client.get(row.get_absolute_url()).content.decode()
    assert 'id="breaker-state">open · retries in' in page
    external_health_record(deployment=row, healthy=True, detail="answered HTTP 200")
    page = client.get(row.get_absolute_url()).content.decode()
    assert 'id="breaker-state">closed' in page and 'data-health="healthy"' in page


def _poll_url(page: str) -> str:
    return re.search(r'hx-get="([^"]*fragment=status[^"]*)"', page).group(1).replace("&amp;", "&")


def test_the_page_list_and_api_show_the_endpoints_health(tenants, model, public_example_com):
    from deployments.external import external_deployment_create, external_health_record
    from tests.factories import rest_api_client
    from tests.gateway.conftest import make_deployment

    row = external_deployment_create(user=tenants.owner, project=tenants.project, model=model, name="onprem",
                                     url="https://llm.example.com/v1")  # fmt: skip
    client = login(tenants.owner)
    page = client.get(row.get_absolute_url()).content.decode()
    assert f'id="head-health-{row.pk}"><span class="badge plain" data-health="unknown"' in page
    assert "Endpoint not checked yet" in page and "the first check comes within 15 s" in page
    listing = client.get("/deployments/").content.decode()
    assert "Endpoint not checked yet" in listing.split(f'id="deployment-row-{row.pk}"')[1].split("</tr>")[0]
    list_poll = re.search(r'hx-get="(/deployments/\?ids=[^"]+)"', listing).group(1)
    page_poll = _poll_url(page)
    hx = {"HTTP_HX_REQUEST": "true"}
    # Nothing changed: both polls answer 204 (no body).
    assert client.get(page_poll, **hx).status_code == 204
    assert client.get(list_poll, **hx).status_code == 204

    # The health check (gateway.tasks.check_external_endpoints) finds the endpoint dead.
    assert external_health_record(deployment=row, healthy=False, detail="connection refused")

    status = client.get(page_poll, **hx)
    assert status.status_code == 200
    fragment = status.content.decode()
    assert f'id="head-health-{row.pk}" hx-swap-oob="true"><span class="badge bad" data-health="unhealthy"' in fragment
    assert "<strong>Endpoint unreachable:</strong> connection refused." in fragment
    assert 'id="health-detail">connection refused · last checked <time' in fragment
    assert "Running</span>" in fragment  # the state stays, the health is beside it
    assert client.get(_poll_url(fragment), **hx).status_code == 204  # unchanged again

    rows = client.get(list_poll, **hx)
    assert rows.status_code == 200
    changed = rows.content.decode().split(f'id="deployment-row-{row.pk}"')[1].split("</tr>")[0]
    assert "Endpoint unreachable" in changed and "connection refused · last checked" in changed
    assert "Running" in changed

    page = client.get(row.get_absolute_url()).content.decode()
    assert "<strong>Endpoint unreachable:</strong> connection refused." in page
    assert "Callers get an error (503" in page  # no overflow deployment

    data = rest_api_client(tenants.owner).get(f"/api/v1/deployments/{row.pk}/").json()
    assert (data["state"], data["health"], data["health_detail"]) == ("running", "unhealthy", "connection refused")
    assert data["health_checked_at"]
    listed = rest_api_client(tenants.owner).get("/api/v1/deployments/").json()
    assert [d["health"] for d in listed["results"] if d["id"] == row.pk] == ["unhealthy"]
    managed = make_deployment(tenants.project, "burst")
    data = rest_api_client(tenants.owner).get(f"/api/v1/deployments/{managed.pk}/").json()
    assert (data["health"], data["health_detail"], data["health_checked_at"]) == (None, None, None)  # nothing checked

    # Another organization's user sees none of it.
    outsider = login(tenants.outsider)
    assert outsider.get(row.get_absolute_url()).status_code == 404
    assert outsider.get(page_poll, **hx).status_code == 404
    gone = outsider.get(list_poll, **hx)
    assert "connection refused" not in gone.content.decode() and f"deployment-row-{row.pk}" not in gone.content.decode()
    assert rest_api_client(tenants.outsider).get(f"/api/v1/deployments/{row.pk}/").status_code == 404


def test_the_lists_summary_counts_unreachable_endpoints(tenants, model, public_example_com):
    from deployments.external import external_deployment_create, external_health_record

    row = external_deployment_create(user=tenants.owner, project=tenants.project, model=model, name="onprem",
                                     url="https://llm.example.com/v1")  # fmt: skip
    client = login(tenants.owner)

    def running_card() -> str:
        html = client.get("/deployments/").content.decode()
        return html.split('<div class="label">Running</div>')[1].split("</div></div>")[0]

    assert "unreachable" not in running_card()  # not checked yet is not unreachable
    external_health_record(deployment=row, healthy=False, detail="connection refused")
    assert "0 failed · 0 deactivated · <a" in running_card() and ">1 endpoint unreachable</a>" in running_card()
    # The fragment the poll reads again after a row changed says the same.
    stats = client.get("/deployments/?fragment=stats", HTTP_HX_REQUEST="true").content.decode()
    assert ">1 endpoint unreachable</a>" in stats
    external_health_record(deployment=row, healthy=True, detail="answered HTTP 200")
    assert "unreachable" not in running_card()
    assert "unreachable" not in login(tenants.outsider).get("/deployments/").content.decode()


@pytest.mark.parametrize("host", ["localhost.", "LOCALHOST", "api.localhost", "api.localhost."])
def test_loopback_names_are_refused_even_when_they_do_not_resolve_here(host, monkeypatch):
    # QA: "localhost." (fully qualified) passed the check when the name did not resolve on this
    # machine; where it does, the gateway would have called this server. *.localhost is loopback too.
    from deployments.external import external_url_refusal
    from deployments.kube import network

    monkeypatch.setattr(network, "_addresses", lambda *_: None)  # unresolvable: only the name can tell
    assert "loopback" in external_url_refusal(f"http://{host}:8000/v1")
    assert external_url_refusal("https://llm.example.com/v1") == ""
