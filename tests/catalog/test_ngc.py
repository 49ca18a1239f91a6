"""catalog.ngc against the offline NGC."""

from __future__ import annotations

import time

import pytest

from catalog.ngc import NgcError, check_key, image_tags, list_nim_images, parse_image
from sandbox.offline_ngc import OfflineNgc

from .conftest import NGC_LEGACY_KEY, NGC_PERSONAL_KEY, NGC_UNENTITLED_KEY

LLAMA_NIM = "nim/meta/llama-3.1-8b-instruct"


def test_list_nim_images_most_popular_first(offline_ngc: OfflineNgc, ngc_snapshot: dict) -> None:
    page = list_nim_images(base_url=offline_ngc.url, page_size=5)
    expected = sorted(ngc_snapshot.values(), key=lambda i: -i["weightPopular"])
    assert [i.resource_id for i in page.items] == [i["resourceId"] for i in expected[:5]]
    assert page.total == len(ngc_snapshot) and page.has_next

    llama = next(i for i in page.items if i.resource_id == LLAMA_NIM)
    assert llama.image == "nvcr.io/nim/meta/llama-3.1-8b-instruct"
    assert (llama.org, llama.team, llama.name) == ("nim", "meta", "llama-3.1-8b-instruct")
    assert llama.display_name == "Llama-3.1-8b-instruct"
    assert llama.latest_tag == "1.3.3"
    assert llama.size_bytes == ngc_snapshot[LLAMA_NIM]["latestImageSize"]
    assert llama.updated_at is not None and llama.updated_at.year == 2024
    assert "NVIDIA NIM" in llama.labels


def test_list_nim_images_pages(offline_ngc: OfflineNgc, ngc_snapshot: dict) -> None:
    first = list_nim_images(base_url=offline_ngc.url, page_size=5, page=1)
    last = list_nim_images(base_url=offline_ngc.url, page_size=5, page=3)
    assert len(last.items) == len(ngc_snapshot) - 10 and not last.has_next
    assert not {i.resource_id for i in first.items} & {i.resource_id for i in last.items}


def test_list_nim_images_searches_names_and_descriptions(offline_ngc: OfflineNgc) -> None:
    page = list_nim_images(base_url=offline_ngc.url, query="embed")
    assert {i.resource_id for i in page.items} == {
        "nim/nvidia/nv-embedqa-e5-v5",
        "nim/nvidia/llama-3.2-nv-embedqa-1b-v2",
    }
    assert list_nim_images(base_url=offline_ngc.url, query="no-such-model").items == ()


def test_image_tags_with_a_personal_key(offline_ngc: OfflineNgc) -> None:
    tags = image_tags(base_url=offline_ngc.url, api_key=NGC_PERSONAL_KEY, image=LLAMA_NIM)
    assert tags.tags[:5] == ("1.3.3", "1.2.2", "1.1.2", "1.1.1", "1.1.0")
    assert "latest" in tags.tags
    assert tags.latest_tag == "1.3.3"
    assert tags.image == "nvcr.io/nim/meta/llama-3.1-8b-instruct"
    # A personal key is its own bearer token: no exchange.
    assert not any(path.startswith("/token") for _, path in offline_ngc.requests)


def test_image_tags_with_a_legacy_key_exchanges_it_for_a_token(offline_ngc: OfflineNgc) -> None:
    tags = image_tags(
        base_url=offline_ngc.url,
        api_key=NGC_LEGACY_KEY,
        image="nvcr.io/nim/mistralai/mistral-7b-instruct-v0.3:1.0.0",
    )
    assert tags.tags == ("1.1.2", "1.0.0", "latest")
    assert [path.split("?")[0] for _, path in offline_ngc.requests] == [
        "/token",
        "/v2/org/nim/team/mistralai/repos/mistral-7b-instruct-v0.3",
    ]


@pytest.mark.parametrize(
    ("key", "image", "code", "message"),
    [
        (
            "nvapi-revoked",
            LLAMA_NIM,
            "unauthorized",
            "NGC rejected the API key (401): it is invalid, expired or revoked",
        ),
        ("not-a-valid-legacy-key", LLAMA_NIM, "unauthorized", "NGC rejected the API key (401)"),
        (
            NGC_UNENTITLED_KEY,
            LLAMA_NIM,
            "forbidden",
            "The NGC API key has no access to NIM image nim/meta/llama-3.1-8b-instruct (403)",
        ),
        (
            NGC_PERSONAL_KEY,
            "nim/meta/llama-9-imaginary",
            "not_found",
            "NIM image nim/meta/llama-9-imaginary was not found on NGC",
        ),
        (
            NGC_PERSONAL_KEY,
            "Not An Image",
            "invalid_name",
            "'Not An Image' is not an NGC image name",
        ),
    ],
)
def test_image_tags_errors_say_what_is_wrong(
    offline_ngc: OfflineNgc, key: str, image: str, code: str, message: str
) -> None:
    with pytest.raises(NgcError) as err:
        image_tags(base_url=offline_ngc.url, api_key=key, image=image)
    assert err.value.code == code
    assert err.value.message.startswith(message)


def test_image_tags_needs_a_key(offline_ngc: OfflineNgc) -> None:
    with pytest.raises(NgcError) as err:
        image_tags(base_url=offline_ngc.url, api_key="", image=LLAMA_NIM)
    assert err.value.code == "unauthorized" and "No NGC API key" in err.value.message


def test_check_key_personal_names_the_organization(offline_ngc: OfflineNgc) -> None:
    result = check_key(base_url=offline_ngc.url, api_key=NGC_PERSONAL_KEY)
    assert result.ok and result.kind == "personal" and result.org == "modeldeck-test"
    assert result.message == "NGC accepted the personal API key for organization modeldeck-test"


def test_check_key_legacy(offline_ngc: OfflineNgc) -> None:
    result = check_key(base_url=offline_ngc.url, api_key=NGC_LEGACY_KEY)
    assert result.ok and result.kind == "legacy"


@pytest.mark.parametrize("key", ["nvapi-revoked", "revoked-legacy-key"])
def test_check_key_rejected(offline_ngc: OfflineNgc, key: str) -> None:
    result = check_key(base_url=offline_ngc.url, api_key=key)
    assert not result.ok and result.code == "unauthorized"
    assert "invalid, expired or revoked" in result.message


def test_check_key_without_a_key(offline_ngc: OfflineNgc) -> None:
    result = check_key(base_url=offline_ngc.url, api_key=None)
    assert not result.ok and result.code == "no_key" and not offline_ngc.requests


def test_ngc_answering_500(offline_ngc: OfflineNgc) -> None:
    offline_ngc.mode = "error"
    with pytest.raises(NgcError) as err:
        list_nim_images(base_url=offline_ngc.url)
    assert err.value.code == "server_error"
    assert err.value.message == f"NGC at {offline_ngc.url} is failing (HTTP 500); try again later"


def test_stalled_ngc_times_out_within_the_bound(offline_ngc: OfflineNgc) -> None:
    offline_ngc.mode = "stall"
    offline_ngc.stall_seconds = 20
    started = time.monotonic()
    with pytest.raises(NgcError) as err:
        # A legacy key means two requests (exchange + call): the bound is for both together.
        image_tags(base_url=offline_ngc.url, api_key=NGC_LEGACY_KEY, image=LLAMA_NIM, timeout=1)
    assert 0.9 < time.monotonic() - started < 3
    assert err.value.code == "timeout"
    assert err.value.message == (
        f"NGC at {offline_ngc.url} did not answer within 1 s; try again or check the network"
    )


def test_unreachable_ngc(closed_port_url: str) -> None:
    result = check_key(base_url=closed_port_url, api_key=NGC_PERSONAL_KEY)
    assert not result.ok and result.code == "unreachable"
    assert result.message.startswith(f"NGC at {closed_port_url} could not be reached")


def test_authn_url_defaults() -> None:
    from catalog.ngc import DEFAULT_API_URL, DEFAULT_AUTHN_URL, _authn_url

    assert _authn_url(DEFAULT_API_URL, None) == DEFAULT_AUTHN_URL
    assert _authn_url("http://127.0.0.1:8095/", None) == "http://127.0.0.1:8095"
    assert _authn_url("http://127.0.0.1:8095", "http://authn.local/") == "http://authn.local"


def test_parse_image_accepts_registry_and_tag() -> None:
    assert parse_image("nvcr.io/nim/meta/llama-3.1-8b-instruct:1.3.3") == (
        "nim",
        "meta",
        "llama-3.1-8b-instruct",
    )
    assert parse_image("nvidia/tritonserver") == ("nvidia", None, "tritonserver")
