"""Fixtures of the CLI tests: the sandbox cluster of the deployment tests and the demo data."""

from __future__ import annotations

import importlib
import io

import pytest
from django.core.cache import cache
from django.core.management import call_command

from tests.deployments.conftest import cluster, emulator  # noqa: F401 - fixtures


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
