"""Fixtures of the catalog's Django tests: settings pointing at the offline Hub/NGC, tokens on projects."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from projects.services import integration_set
from tests.catalog.conftest import ALICE_TOKEN, BOB_TOKEN, NGC_PERSONAL_KEY
from tests.factories import rest_api_client

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
QWEN_05B = "Qwen/Qwen2.5-0.5B-Instruct"


@pytest.fixture
def hub_env(settings, offline_hub):
    """The views and services talk to the offline Hub through the real huggingface_hub client."""
    settings.HF_ENDPOINT = offline_hub.url
    settings.HUB_TIMEOUT_SECONDS = 5
    previous = offline_hub.stall_seconds
    yield offline_hub
    offline_hub.stall_seconds = previous


@pytest.fixture
def ngc_env(settings, offline_ngc):
    settings.NGC_API_URL = offline_ngc.url
    settings.HUB_TIMEOUT_SECONDS = 5
    return offline_ngc


@pytest.fixture
def alice_project(tenants):
    """The Research project holds a Hugging Face token with access to gated repos."""
    integration_set(user=None, project=tenants.project, kind="huggingface", secret=ALICE_TOKEN)
    return tenants.project


@pytest.fixture
def bob_project(tenants):
    """The Research project holds a token that never accepted a gated model's license."""
    integration_set(user=None, project=tenants.project, kind="huggingface", secret=BOB_TOKEN)
    return tenants.project


@pytest.fixture
def ngc_project(tenants):
    integration_set(user=None, project=tenants.project, kind="ngc", secret=NGC_PERSONAL_KEY)
    return tenants.project


def api(user) -> APIClient:
    return rest_api_client(user)


@pytest.fixture(autouse=True)
def builtin_bundles(db):
    """The built-in bundles the data migration seeds; re-seeded because transactional tests
    elsewhere in the suite flush every table, migration data included."""
    from catalog.services import bundles_builtin_ensure

    bundles_builtin_ensure()
