"""Governance tests run against the console's URLs plus sharing.urls."""

from __future__ import annotations

import pytest

from sharing import access


@pytest.fixture(autouse=True)
def _sharing_urls(settings):
    settings.ROOT_URLCONF = "tests.sharing.urls_for_tests"


@pytest.fixture(autouse=True)
def _fresh_policy_cache():
    access.policy_cache.clear()
    yield
    access.policy_cache.clear()
