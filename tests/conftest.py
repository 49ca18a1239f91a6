"""Fixtures every test can use: real services, the owner/member/viewer/outsider set, clients."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
from django.conf import settings
from django.test import Client

from projects.models import Organization, Project, Role
from tests.factories import MembershipFactory, OrganizationFactory, ProjectFactory, UserFactory

TEST_OUTPUT = os.path.join(os.path.dirname(os.path.dirname(__file__)), "test-output")


def pytest_configure(config) -> None:
    os.makedirs(TEST_OUTPUT, exist_ok=True)
    # PBKDF2 costs ~0.3 s a user; the fixture set makes four per test. Tests don't test hashing.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # The suite runs in production mode (REDIS_URL set) but speaks plain HTTP to its servers;
    # HSTS, secure cookies and the CSP stay on (tests/console/test_security_settings.py).
    settings.SECURE_SSL_REDIRECT = False


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix) -> None:
    """Let several test runs share one PostgreSQL server (MODELDECK_TEST_DB_SUFFIX)."""
    suffix = os.environ.get("MODELDECK_TEST_DB_SUFFIX")
    if suffix:
        from django.conf import settings as django_settings

        db = django_settings.DATABASES["default"]
        db.setdefault("TEST", {})
        db["TEST"]["NAME"] = f"test_{db['NAME']}_{suffix}"


@pytest.fixture(scope="session", autouse=True)
def _require_real_services(django_db_blocker) -> None:
    """The suite only counts on PostgreSQL and Redis; refuse to pass on SQLite or without Redis."""
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql" and not os.environ.get(
        "MODELDECK_ALLOW_SQLITE_TESTS"
    ):
        pytest.exit("The test suite runs on PostgreSQL: use `make test` (it sets DATABASE_URL).", returncode=3)
    if not settings.REDIS_URL:
        pytest.exit("The test suite needs Redis: use `make test` (it sets REDIS_URL).", returncode=3)


@pytest.fixture(autouse=True)
def _celery_eager():
    """Run Celery tasks in-process; override_settings does not reach Celery's config."""
    from console.celery import app

    previous = app.conf.task_always_eager, app.conf.task_eager_propagates
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield
    app.conf.task_always_eager, app.conf.task_eager_propagates = previous


@pytest.fixture(autouse=True)
def _sandbox_pools_as_make_run_starts_them(settings, monkeypatch):
    """The suite runs outside the embedded mode (PostgreSQL, Redis) yet starts sandbox clusters
    itself, as `make run` does: sandbox pools are on, and each emulator a test starts counts as a
    sandbox ModelDeck started. Port 9 (discard) stands for one that has stopped since."""
    from sandbox.kubeapi import KubeEmulator

    settings.SANDBOX_POOLS_ENABLED = True
    settings.SANDBOX_KUBE_URLS = [settings.SANDBOX_KUBE_URL, "http://127.0.0.1:9"]
    start = KubeEmulator.start

    def start_and_register(self) -> str:
        url = start(self)
        settings.SANDBOX_KUBE_URLS.append(url.rstrip("/"))
        return url

    monkeypatch.setattr(KubeEmulator, "start", start_and_register)


@pytest.fixture
def redis_client():
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    client.ping()
    return client


@pytest.fixture
def public_example_com(monkeypatch):
    """example.com's addresses are public: external endpoints' URL rule answers for them without
    the network (every other host as it would)."""
    from deployments.kube import network

    real = network.non_public_addresses
    monkeypatch.setattr(network, "non_public_addresses",
                        lambda host, port: [] if host.endswith("example.com") else real(host, port))  # fmt: skip


@pytest.fixture
def pinned_budget_month(monkeypatch):
    """The budget month as it is when the test starts, for the gateway's spend counters in Redis
    (gateway.app._month) and the pages' month-to-date spend (gateway.reports.month_start): a test
    started at 23:59:59 on a month's last day must not see its spend split over two months.
    Returns the month's first instant (UTC)."""
    from gateway import app, reports

    start = reports.month_start()
    monkeypatch.setattr(app, "_month", lambda: start.strftime("%Y-%m"))
    monkeypatch.setattr(reports, "month_start", lambda now=None: start)
    return start


@dataclass
class Tenants:
    org: Organization
    project: Project
    owner: object
    member: object
    viewer: object
    other_org: Organization
    other_project: Project
    outsider: object


@pytest.fixture
def tenants(db) -> Tenants:
    org = OrganizationFactory(name="Acme", slug="acme", gpu_quota=16)
    owner = MembershipFactory(organization=org, role=Role.ADMIN, user=UserFactory(username="owner")).user
    member = MembershipFactory(organization=org, role=Role.MEMBER, user=UserFactory(username="member")).user
    viewer = MembershipFactory(organization=org, role=Role.VIEWER, user=UserFactory(username="viewer")).user
    project = ProjectFactory(organization=org, name="Research", slug="research", gpu_quota=8)
    other_org = OrganizationFactory(name="Globex", slug="globex")
    outsider = MembershipFactory(organization=other_org, role=Role.ADMIN, user=UserFactory(username="outsider")).user
    other_project = ProjectFactory(organization=other_org, name="Secret", slug="secret")
    return Tenants(org, project, owner, member, viewer, other_org, other_project, outsider)


@pytest.fixture
def operator(tenants):
    """A platform operator: the `operate_computepool` permission (no superuser), and a plain member
    of Acme so the console has an organization to show them."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    user = UserFactory(username="operator")
    user.user_permissions.add(Permission.objects.get(codename="operate_computepool"))
    MembershipFactory(organization=tenants.org, role=Role.MEMBER, user=user)
    return get_user_model().objects.get(pk=user.pk)  # without the cached permissions


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def owner_client(tenants) -> Client:
    return login(tenants.owner)


@pytest.fixture
def outsider_client(tenants) -> Client:
    return login(tenants.outsider)
