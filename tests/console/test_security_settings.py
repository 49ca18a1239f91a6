"""Transport security and `check --deploy`: on by default in production, off in the embedded mode."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The production setup documented in the README: PostgreSQL, Redis, a real SECRET_KEY, a host.
PRODUCTION = {
    "DATABASE_URL": "postgres://modeldeck:secret@db.internal:5432/modeldeck",
    "REDIS_URL": "redis://redis.internal:6379/0",
    "ALLOWED_HOSTS": "modeldeck.example.com",
}


def _env(tmp_path, **extra) -> dict:
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "MODELDECK_DATA_DIR": str(tmp_path / "var"),
        **extra,
    }


def _settings(tmp_path, env: dict, *names: str) -> dict:
    code = (
        "import django, json, os; os.environ['DJANGO_SETTINGS_MODULE']='console.settings'; "
        "django.setup(); from django.conf import settings; "
        f"print(json.dumps({{n: getattr(settings, n, None) for n in {list(names)!r}}}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=_env(tmp_path, **env),
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_check_deploy_is_clean_in_the_documented_production_setup(tmp_path):
    env = {**PRODUCTION, "SECRET_KEY": secrets.token_urlsafe(50)}
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env=_env(tmp_path, **env), capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNINGS" not in result.stdout + result.stderr


def test_secure_by_default_in_production_and_each_setting_overridable(tmp_path):
    names = (
        "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE",
        "CONTENT_SECURITY_POLICY", "SECURE_PROXY_SSL_HEADER",
    )  # fmt: skip
    prod = _settings(tmp_path, {**PRODUCTION, "SECRET_KEY": "x" * 60}, *names)
    assert (
        prod["SECURE_SSL_REDIRECT"] and prod["SESSION_COOKIE_SECURE"] and prod["CSRF_COOKIE_SECURE"]
    )
    assert prod["SECURE_HSTS_SECONDS"] >= 31_536_000
    assert "default-src 'self'" in prod["CONTENT_SECURITY_POLICY"]
    assert prod["SECURE_PROXY_SSL_HEADER"] is None
    off = _settings(
        tmp_path,
        {
            **PRODUCTION, "SECRET_KEY": "x" * 60, "MODELDECK_SSL_REDIRECT": "false",
            "MODELDECK_HSTS_SECONDS": "0", "MODELDECK_SECURE_COOKIES": "false", "MODELDECK_CSP": "off",
            "MODELDECK_PROXY_SSL_HEADER": "true",
        },
        *names,
    )  # fmt: skip
    assert off == {
        "SECURE_SSL_REDIRECT": False, "SECURE_HSTS_SECONDS": 0, "SESSION_COOKIE_SECURE": False,
        "CSRF_COOKIE_SECURE": False, "CONTENT_SECURITY_POLICY": "",
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
    }  # fmt: skip
    embedded = _settings(tmp_path, {}, *names)
    assert not embedded["SECURE_SSL_REDIRECT"] and not embedded["SESSION_COOKIE_SECURE"]
    assert embedded["SECURE_HSTS_SECONDS"] == 0 and embedded["CONTENT_SECURITY_POLICY"] == ""


def test_a_bad_security_value_stops_the_start_naming_the_variable(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='console.settings'; django.setup()"],
        env=_env(tmp_path, MODELDECK_SECURE_COOKIES="sometimes"), capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 2 and "MODELDECK_SECURE_COOKIES='sometimes'" in result.stderr


@pytest.mark.django_db
def test_pages_carry_hsts_csp_and_secure_cookies(client, tenants):
    login = client.post("/login/", {"username": "owner", "password": "pw-secret-123"}, secure=True)
    assert login.status_code == 302
    assert login.cookies["sessionid"]["secure"] and login.cookies["csrftoken"]["secure"]
    page = client.get("/", secure=True)
    assert page.status_code == 200
    assert page["Strict-Transport-Security"].startswith("max-age=31536000")
    csp = page["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "http" not in csp
