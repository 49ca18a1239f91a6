"""/healthz and the strict environment readers."""

from __future__ import annotations

import pytest

from console.env import EnvError, database_from_url, env_bool, env_int


@pytest.mark.django_db
def test_healthz_tells_anonymous_callers_only_up_or_down(client, tenants, settings):
    from console.tasks import health_ping

    health_ping.delay()  # a worker name now exists that must not be shown
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    settings.METRICS_TOKEN = "probe-token"
    with_token = client.get("/healthz", HTTP_AUTHORIZATION="Bearer probe-token")
    assert with_token.json()["database"]["ok"] is True
    client.force_login(tenants.owner)  # an organization admin is not platform staff
    assert client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.django_db
def test_healthz_reports_database_and_broker(client, tenants):
    tenants.owner.is_staff = True
    tenants.owner.save()
    client.force_login(tenants.owner)
    response = client.get("/healthz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["database"] == {"ok": True, "vendor": "postgresql"}
    assert body["broker"]["ok"] is True and body["broker"]["transport"] == "redis"


@pytest.mark.django_db
def test_health_task_records_a_heartbeat(client, tenants):
    from console.tasks import health_ping

    tenants.owner.is_staff = True
    tenants.owner.save()
    client.force_login(tenants.owner)
    health_ping.delay()
    assert client.get("/healthz").json()["workers"]["ok"] is True


def test_env_helpers_fail_loudly_naming_the_variable(monkeypatch):
    monkeypatch.setenv("MODELDECK_PORT", "eighty")
    with pytest.raises(EnvError, match="MODELDECK_PORT"):
        env_int("MODELDECK_PORT", 8000)
    monkeypatch.setenv("DEBUG", "maybe")
    with pytest.raises(EnvError, match="DEBUG"):
        env_bool("DEBUG", False)
    with pytest.raises(EnvError, match="DATABASE_URL"):
        database_from_url("DATABASE_URL", "mysql://x/y")
    assert database_from_url("DATABASE_URL", "postgres://u:p@h:5433/db")["PORT"] == "5433"
    assert database_from_url("DATABASE_URL", "sqlite:///x.db")["NAME"] == "x.db"


def test_bad_setting_stops_the_start_with_the_variable_named():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='console.settings'; django.setup()"],
        env={"PATH": "/usr/bin:/bin", "MODELDECK_PORT": "99999"},
        capture_output=True, text=True, cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]),
    )
    assert result.returncode == 2
    assert "MODELDECK_PORT=99999 is above the maximum 65535" in result.stderr
