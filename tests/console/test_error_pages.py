"""Error pages a user may meet: DEBUG is off by default, so unknown URLs and server errors show
ModelDeck's own pages (templates/404.html, 500.html), never Django's technical ones; the API
answers in JSON; static files and /favicon.ico are served with DEBUG off."""

from __future__ import annotations

import json
import subprocess
import sys

from django.template import loader
from django.test import Client
from django.urls import reverse

from tests.console.test_security_settings import PRODUCTION, ROOT, _env, _settings


def test_debug_is_off_by_default_in_every_mode_and_can_be_turned_on(tmp_path):
    assert _settings(tmp_path, {}, "EMBEDDED", "DEBUG") == {"EMBEDDED": True, "DEBUG": False}
    production = {**PRODUCTION, "SECRET_KEY": "x" * 50}
    assert _settings(tmp_path, production, "DEBUG") == {"DEBUG": False}
    assert _settings(tmp_path, {"DEBUG": "1"}, "DEBUG") == {"DEBUG": True}


def test_an_unknown_page_shows_the_branded_404_with_the_console_around_it(owner_client):
    response = owner_client.get("/deployments/999999/")
    assert response.status_code == 404
    page = response.content.decode()
    assert "Page not found" in page and "<code>/deployments/999999/</code>" in page
    assert 'href="/">Go to the dashboard</a>' in page
    assert 'class="sidebar"' in page  # the console's navigation, to go anywhere else
    assert "DEBUG = True" not in page and "URLconf" not in page


def test_an_unknown_page_leads_a_signed_out_visitor_to_sign_in(db):
    response = Client().get("/nope/")
    assert response.status_code == 404
    page = response.content.decode()
    assert "Page not found" in page and 'href="/login/">Sign in</a>' in page
    assert 'class="sidebar"' not in page and "DEBUG = True" not in page


def test_unknown_api_urls_still_answer_json(owner_client):
    response = owner_client.get("/api/v1/nope/")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def test_the_500_page_renders_without_any_context_or_database():
    # No db fixture: a query would raise. Rendered as django.views.defaults.server_error does.
    page = loader.get_template("500.html").render()
    assert "Something went wrong" in page and 'href="/">Go to the dashboard</a>' in page
    assert 'href="/static/modeldeck/app.css"' in page


def test_a_failing_page_shows_the_500_page_and_a_failing_api_call_json(owner_client, monkeypatch):
    owner_client.raise_request_exception = False

    def broken(*args, **kwargs):
        raise RuntimeError("secret detail of the failure")

    monkeypatch.setattr("console.health.report", broken)
    response = owner_client.get("/healthz")
    assert response.status_code == 500
    page = response.content.decode()
    assert (
        "Something went wrong" in page and "secret detail" not in page and "Traceback" not in page
    )

    monkeypatch.setattr("console.api_root.get_resolver", broken)
    response = owner_client.get("/api/v1/")
    assert response.status_code == 500
    assert response.json() == {"detail": "Server error."}


STATIC_CHECK = """
import django, json, os
os.environ["DJANGO_SETTINGS_MODULE"] = "console.settings"
django.setup()
from django.conf import settings
from django.test import Client
from django.urls import reverse
client = Client()
answers = {path: (r.status_code, r.get("Content-Type"), r.get("Location"))
           for path in %r for r in [client.get(path)]}
print(json.dumps({"EMBEDDED": settings.EMBEDDED, "DEBUG": settings.DEBUG, "answers": answers}))
"""


def test_static_files_and_the_favicon_are_served_in_the_embedded_mode_with_debug_off(tmp_path):
    paths = [
        "/static/modeldeck/app.css",
        "/static/modeldeck/app.js",
        "/static/django_htmx/htmx-2.min.js",  # from an installed app
        "/static/admin/css/base.css",
        "/favicon.ico",
        "/static/modeldeck/nope.css",
    ]
    result = subprocess.run(
        [sys.executable, "-c", STATIC_CHECK % paths],
        env=_env(tmp_path), capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["EMBEDDED"] is True and out["DEBUG"] is False
    answers = out["answers"]
    assert answers["/static/modeldeck/app.css"][:2] == [200, 'text/css; charset="utf-8"']
    assert answers["/static/modeldeck/app.js"][0] == 200
    assert answers["/static/django_htmx/htmx-2.min.js"][0] == 200
    assert answers["/static/admin/css/base.css"][0] == 200
    assert answers["/favicon.ico"] == [
        302,
        "text/html; charset=utf-8",
        "/static/modeldeck/favicon.svg",
    ]
    assert answers["/static/modeldeck/nope.css"][0] == 404


def test_the_favicon_redirects_to_the_svg_icon(db):
    response = Client().get("/favicon.ico")
    assert response.status_code == 302 and response["Location"] == "/static/modeldeck/favicon.svg"
    assert Client().get(response["Location"]).status_code == 200


# --- 403, 400 and the CSRF failure: branded pages in the console, JSON in the API -----------------


def test_a_refused_page_shows_the_branded_403_with_the_reason(tenants):
    from tests.conftest import login

    response = login(tenants.viewer).get(reverse("deployments:create"))
    assert response.status_code == 403
    page = response.content.decode()
    assert "<h1>Not allowed</h1>" in page and 'id="error-403"' in page
    assert 'class="sidebar"' in page and 'href="/">Go to the dashboard</a>' in page
    assert "403 Forbidden" not in page  # not Django's plain page


def test_a_refusal_that_names_whom_to_ask_drops_the_generic_role_line(tenants):
    from console.templatetags.console_tags import names_whom_to_ask
    from tests.conftest import login

    response = login(tenants.viewer).get(reverse("deployments:pool_create"))
    assert response.status_code == 403
    page = response.content.decode()
    assert "Platform operators register compute pools; ask one" in page
    assert "can give you another role" not in page  # it would contradict "ask a platform operator"
    # A reason that names nobody keeps the generic pointer.
    assert not names_whom_to_ask("Viewers cannot change integrations.") and not names_whom_to_ask(None)
    assert names_whom_to_ask("Only organization admins can manage members.")


def test_a_refusal_logs_one_line_without_a_traceback(tenants, caplog):
    import logging

    from tests.conftest import login

    with caplog.at_level(logging.WARNING, logger="django.request"):
        response = login(tenants.viewer).get(reverse("deployments:pool_create"))
    assert response.status_code == 403
    [record] = [r for r in caplog.records if r.name == "django.request"]
    assert record.getMessage() == f"Forbidden (Permission denied): {reverse('deployments:pool_create')}"
    assert record.exc_info is None and "Traceback" not in caplog.text


def test_a_malformed_request_shows_the_branded_400_and_the_api_answers_json(db):
    client = Client(HTTP_HOST="not-a-host-we-serve.invalid")
    response = client.get("/deployments/")
    assert response.status_code == 400
    page = response.content.decode()
    assert "Bad request" in page and "reload the page and try again" in page
    assert 'href="/static/modeldeck/app.css"' in page and "Bad Request (400)" not in page
    response = client.get("/api/v1/")
    assert response.status_code == 400 and response.json() == {"detail": "Bad request."}


def test_a_stale_form_token_says_to_reload_and_try_again(tenants):
    client = Client(enforce_csrf_checks=True)
    client.force_login(tenants.owner)
    response = client.post(reverse("org-switch"), {"organization": tenants.org.pk})
    assert response.status_code == 403
    page = response.content.decode()
    assert "This page has expired" in page and "reload the page and try again" in page
    assert "CSRF verification failed" not in page and 'href="/static/modeldeck/app.css"' in page
    # The API keeps its JSON: DRF checks the token of a session-signed call itself.
    response = client.post("/api/v1/projects/", {"name": "x"}, content_type="application/json")
    assert response.status_code == 403 and "CSRF" in response.json()["detail"]


def test_the_gateway_keeps_its_json_errors(transactional_db):
    import httpx

    from tests.gateway.conftest import start_console

    server = start_console()
    try:
        response = httpx.post(
            server.url + "/v1/chat/completions", json={"model": "x", "messages": [{"role": "user", "content": "hi"}]}
        )
        assert response.status_code == 401  # no key
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["error"]["message"]
    finally:
        server.stop()
