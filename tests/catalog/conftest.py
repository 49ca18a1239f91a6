"""Fixtures for the catalog's outside-world modules: the offline Hub and NGC on free ports."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from sandbox.offline_hub import HUB_SNAPSHOT, OfflineHub, TokenGrant
from sandbox.offline_ngc import NGC_SNAPSHOT, NgcKeyGrant, OfflineNgc

# Hub tokens: Alice may read every gated repo, Bob none (he never accepted a license).
ALICE_TOKEN = "hf_alice_has_gated_access"
BOB_TOKEN = "hf_bob_without_gated_access"

# NGC keys: a personal key, a legacy key (exchanged for a token), and one whose organization
# has no NIM entitlement.
NGC_PERSONAL_KEY = "nvapi-test-personal-key"
NGC_LEGACY_KEY = "bGVnYWN5LXRlc3Qta2V5"
NGC_UNENTITLED_KEY = "nvapi-test-no-entitlement"

# Smaller than the Hub's 1000 so that searches cross page boundaries and follow `Link` headers.
HUB_PAGE_SIZE = 4


@pytest.fixture(scope="session")
def _hub_server() -> Iterator[OfflineHub]:
    hub = OfflineHub(
        tokens={
            ALICE_TOKEN: TokenGrant(user="alice"),
            BOB_TOKEN: TokenGrant(user="bob", gated_access=False),
        },
        max_page_size=HUB_PAGE_SIZE,
    )
    with hub:
        yield hub


@pytest.fixture
def offline_hub(_hub_server: OfflineHub) -> Iterator[OfflineHub]:
    """The offline Hub, back to normal behaviour and an empty request log for each test."""
    _hub_server.mode = "normal"
    _hub_server.requests.clear()
    yield _hub_server
    _hub_server.mode = "normal"
    for repo in _hub_server.repos.values():
        repo.revisions = {"main": repo.record["sha"]}


@pytest.fixture(scope="session")
def _ngc_server() -> Iterator[OfflineNgc]:
    ngc = OfflineNgc(
        keys={
            NGC_PERSONAL_KEY: NgcKeyGrant(org="modeldeck-test"),
            NGC_LEGACY_KEY: NgcKeyGrant(org="modeldeck-test"),
            NGC_UNENTITLED_KEY: NgcKeyGrant(org="no-nim", nim_entitled=False),
        }
    )
    with ngc:
        yield ngc


@pytest.fixture
def offline_ngc(_ngc_server: OfflineNgc) -> Iterator[OfflineNgc]:
    _ngc_server.mode = "normal"
    _ngc_server.requests.clear()
    yield _ngc_server
    _ngc_server.mode = "normal"


@pytest.fixture(scope="session")
def hub_snapshot() -> dict[str, dict[str, Any]]:
    """The recorded models by repo id, to compare the client's answers with."""
    return {m["id"]: m for m in json.loads(HUB_SNAPSHOT.read_text())["models"]}


@pytest.fixture(scope="session")
def ngc_snapshot() -> dict[str, dict[str, Any]]:
    return {i["resourceId"]: i for i in json.loads(NGC_SNAPSHOT.read_text())["images"]}


@pytest.fixture
def closed_port_url() -> str:
    """A URL nothing listens on."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
