"""Fixtures of the CLI tests: the client's own virtual environment, the sandbox cluster of the
deployment tests and the demo data."""

from __future__ import annotations

import importlib
import io
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from django.core.cache import cache
from django.core.management import call_command

from tests.deployments.conftest import cluster, emulator  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def client_venv(tmp_path_factory) -> Path:
    """A venv with only the project installed (--no-deps): httpx and PyYAML through a .pth file."""
    venv = tmp_path_factory.mktemp("client") / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    (Path(purelib) / "modeldeck-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    build = tmp_path_factory.mktemp("build")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check", str(ROOT)],
        check=True, cwd=build, env={**os.environ, "PIP_NO_INPUT": "1"},
    )  # fmt: skip
    assert (venv / "bin" / "modeldeck").exists()
    return venv


def run(venv: Path, home: Path, *args: str, env: dict | None = None, input: str | None = None):
    """`modeldeck ARGS` as a subprocess with its own HOME (and so its own saved login)."""
    environment = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
        **(env or {}),
    }  # fmt: skip
    return subprocess.run(
        [str(venv / "bin" / "modeldeck"), *args], capture_output=True, text=True, env=environment,
        timeout=60, input=input, cwd=home,
    )  # fmt: skip


@pytest.fixture
def demo(settings, cluster):  # noqa: F811 - the imported fixture
    """`bootstrap_demo` against this test's sandbox cluster; `admin` signs in with a password."""
    from django.apps import apps
    from django.contrib.auth import get_user_model

    from deployments.models import ComputePool

    # The built-in Profile Bundles come from a data migration, which transactional tests' flushes wipe.
    importlib.import_module("catalog.migrations.0004_builtin_profile_bundles").seed(apps, None)
    settings.SANDBOX_KUBE_URL = cluster.url
    call_command("bootstrap_demo", stdout=io.StringIO())
    ComputePool.objects.filter(name="sandbox").update(api_url=cluster.url)
    admin = get_user_model().objects.get(username="admin")
    admin.set_password("cli-Test-password-1")
    admin.save()
    return admin


@pytest.fixture
def login_limits_reset():
    """The password exchange is rate limited in the shared cache; start each test with clean windows."""
    from projects.api import auth

    def reset() -> None:
        for bucket in ("ip:127.0.0.1", "user:admin", "user:owner", "user:member"):
            cache.delete(f"modeldeck:auth-token:{bucket}")

    reset()
    yield reset
    reset()
    assert auth.WINDOW_SECONDS > 0
