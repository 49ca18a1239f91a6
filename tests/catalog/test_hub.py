"""catalog.hub through the real huggingface_hub client against the offline Hub."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from huggingface_hub import constants

from catalog import hub
from catalog.hub import HubError, check_token, model_detail, pin_revision, search_models
from sandbox.offline_hub import OfflineHub

from .conftest import ALICE_TOKEN, BOB_TOKEN, HUB_PAGE_SIZE

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
QWEN_SMALL = "Qwen/Qwen2.5-0.5B-Instruct"


def ids(page: hub.SearchPage) -> list[str]:
    return [m.repo_id for m in page.items]


def expected_order(snapshot: dict, key: str, keep=lambda m: True) -> list[str]:
    models = [m for m in snapshot.values() if keep(m)]
    return [m["id"] for m in sorted(models, key=lambda m: (m[key], m["id"]), reverse=True)]


# --- search ----------------------------------------------------------------------------


def test_search_by_task_and_library_finds_only_matching_models(offline_hub: OfflineHub) -> None:
    page = search_models(
        endpoint=offline_hub.url, task="feature-extraction", library="sentence-transformers"
    )
    assert ids(page) == ["BAAI/bge-large-en-v1.5", "intfloat/e5-mistral-7b-instruct"]
    assert all(m.task == "feature-extraction" for m in page.items)
    assert all(m.library == "sentence-transformers" for m in page.items)
    assert page.has_next is False


def test_search_by_author_is_sorted_by_downloads(
    offline_hub: OfflineHub, hub_snapshot: dict
) -> None:
    page = search_models(endpoint=offline_hub.url, author="Qwen", sort="downloads")
    assert ids(page) == expected_order(hub_snapshot, "downloads", lambda m: m["author"] == "Qwen")
    assert len(page.items) == 4
    downloads = [m.downloads for m in page.items]
    assert downloads == sorted(downloads, reverse=True)


@pytest.mark.parametrize(
    ("sort", "key"),
    [("likes", "likes"), ("trending", "trendingScore"), ("last_modified", "lastModified")],
)
def test_search_sorts_as_asked(
    offline_hub: OfflineHub, hub_snapshot: dict, sort: str, key: str
) -> None:
    page = search_models(endpoint=offline_hub.url, sort=sort, limit=6)  # type: ignore[arg-type]
    assert ids(page) == expected_order(hub_snapshot, key)[:6]


def test_search_query_matches_part_of_the_name(offline_hub: OfflineHub) -> None:
    page = search_models(endpoint=offline_hub.url, query="llama")
    assert set(ids(page)) == {
        "meta-llama/Llama-3.1-8B-Instruct",
        "meta-llama/Llama-3.1-70B-Instruct",
        "meta-llama/Llama-3.2-1B-Instruct",
        "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
    }


def test_search_pages_follow_the_hubs_link_header(
    offline_hub: OfflineHub, hub_snapshot: dict
) -> None:
    everything = expected_order(hub_snapshot, "downloads")
    first = search_models(endpoint=offline_hub.url, sort="downloads", limit=5, page=1)
    offline_hub.requests.clear()
    second = search_models(endpoint=offline_hub.url, sort="downloads", limit=5, page=2)
    requests_for_second = list(offline_hub.requests)
    last = search_models(endpoint=offline_hub.url, sort="downloads", limit=5, page=4)

    assert ids(first) == everything[0:5]
    assert ids(second) == everything[5:10]
    assert ids(last) == everything[15:20]
    assert first.has_next and second.has_next and second.has_previous
    assert not last.has_next
    # Page 2 needs the first 11 results; the server pages by 4, so that took three requests,
    # the second and third following the cursors in the `Link` headers.
    assert len(requests_for_second) == -(-11 // HUB_PAGE_SIZE) == 3
    assert ["cursor=" in path for _, path in requests_for_second] == [False, True, True]


def test_search_beyond_the_results_is_an_empty_last_page(offline_hub: OfflineHub) -> None:
    page = search_models(endpoint=offline_hub.url, limit=20, page=3)
    assert page.items == () and not page.has_next


def test_search_result_shows_gated_models_and_dates(offline_hub: OfflineHub) -> None:
    page = search_models(endpoint=offline_hub.url, author="meta-llama")
    llama = next(m for m in page.items if m.repo_id == LLAMA_8B)
    assert llama.gated and llama.gated_mode == "manual"
    assert llama.last_modified is not None and llama.last_modified.year == 2024
    assert "license:llama3.1" in llama.tags
    qwen = search_models(endpoint=offline_hub.url, query="Qwen2.5-0.5B").items[0]
    assert not qwen.gated and qwen.gated_mode is None


def test_search_rejects_nonsense_arguments() -> None:
    with pytest.raises(ValueError):
        search_models(endpoint="http://unused", sort="popular")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        search_models(endpoint="http://unused", page=0)


# --- model detail ---------------------------------------------------------------------


def test_model_detail_has_commit_parameters_files_and_config(
    offline_hub: OfflineHub, hub_snapshot: dict
) -> None:
    detail = model_detail(endpoint=offline_hub.url, token=ALICE_TOKEN, repo_id=LLAMA_8B)

    assert detail.sha == hub_snapshot[LLAMA_8B]["sha"]
    assert detail.license == "llama3.1"
    assert detail.gated and detail.gated_mode == "manual"
    assert detail.task == "text-generation" and detail.library == "transformers"
    assert detail.parameters == 8_030_261_248
    assert detail.parameters_by_dtype == {"BF16": 8_030_261_248}
    assert detail.dtype == "bf16"
    sizes = {f.path: f.size for f in detail.files}
    assert sizes["model-00001-of-00004.safetensors"] == 4_976_698_672
    assert detail.weights_bytes == 16_060_556_376  # four shards: ~16.06 GB for 8.03e9 bf16 params
    assert sizes["config.json"] > 0
    assert next(f for f in detail.files if f.path.endswith(".safetensors")).lfs

    config = detail.config
    assert config is not None
    assert config.architecture == "LlamaForCausalLM"
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (
        32,
        4096,
        32,
    )
    assert config.num_key_value_heads == 8
    assert config.head_dim == 128  # not in config.json: 4096 / 32
    assert config.max_position_embeddings == 131_072
    assert config.vocab_size == 128_256
    assert config.dtype == "bfloat16"
    assert config.num_experts is None and not config.nested


def test_model_detail_of_an_open_model_needs_no_token(offline_hub: OfflineHub) -> None:
    detail = model_detail(endpoint=offline_hub.url, token=None, repo_id=QWEN_SMALL)
    assert detail.license == "apache-2.0" and not detail.gated
    assert detail.parameters == 494_032_768
    assert detail.config is not None
    assert detail.config.num_key_value_heads == 2
    assert detail.config.head_dim == 64  # 896 hidden / 14 heads
    assert detail.config.max_position_embeddings == 32_768


def test_model_detail_reads_the_text_config_of_a_vision_language_model(
    offline_hub: OfflineHub,
) -> None:
    detail = model_detail(endpoint=offline_hub.url, repo_id="llava-hf/llava-1.5-7b-hf")
    config = detail.config
    assert config is not None
    assert config.architecture == "LlavaForConditionalGeneration"
    assert config.nested
    assert config.max_position_embeddings == 4096  # only in text_config
    assert config.vocab_size == 32_064
    assert detail.dtype == "fp16"


def test_model_detail_reports_experts_and_quantization(offline_hub: OfflineHub) -> None:
    mixtral = model_detail(
        endpoint=offline_hub.url, token=ALICE_TOKEN, repo_id="mistralai/Mixtral-8x7B-Instruct-v0.1"
    )
    assert mixtral.config is not None
    assert (mixtral.config.num_experts, mixtral.config.num_experts_per_token) == (8, 2)
    gpt_oss = model_detail(endpoint=offline_hub.url, repo_id="openai/gpt-oss-20b")
    assert gpt_oss.config is not None
    assert (gpt_oss.config.num_experts, gpt_oss.config.num_experts_per_token) == (32, 4)
    assert gpt_oss.config.quantization == "mxfp4"
    assert gpt_oss.config.head_dim == 64  # given explicitly: 2880 / 64 heads would be 45


def test_model_detail_takes_the_dtype_from_safetensors_when_config_has_none(
    offline_hub: OfflineHub,
) -> None:
    detail = model_detail(
        endpoint=offline_hub.url, repo_id="sentence-transformers/all-MiniLM-L6-v2"
    )
    assert detail.config is not None and detail.config.dtype is None
    assert detail.dtype == "fp32"
    assert detail.config.num_key_value_heads == 12  # plain multi-head attention


def test_model_detail_at_a_pinned_commit(offline_hub: OfflineHub, hub_snapshot: dict) -> None:
    sha = hub_snapshot[QWEN_SMALL]["sha"]
    detail = model_detail(endpoint=offline_hub.url, repo_id=QWEN_SMALL, revision=sha)
    assert detail.sha == sha and detail.revision == sha


def test_model_detail_leaves_nothing_behind(offline_hub: OfflineHub, tmp_path: Path) -> None:
    user_cache = Path(constants.HF_HUB_CACHE) / "models--Qwen--Qwen2.5-0.5B-Instruct"
    existed = user_cache.exists()
    model_detail(endpoint=offline_hub.url, repo_id=QWEN_SMALL, work_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert user_cache.exists() == existed


def test_model_detail_never_uses_the_servers_own_token(
    offline_hub: OfflineHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A token in the environment of the console's process belongs to whoever runs it, not to
    # the project asking; a project without a token must not get gated files with it.
    monkeypatch.setenv("HF_TOKEN", ALICE_TOKEN)
    with pytest.raises(HubError) as err:
        model_detail(endpoint=offline_hub.url, token=None, repo_id=LLAMA_8B)
    assert err.value.code == "gated"


# --- pinning ---------------------------------------------------------------------------


def test_pin_revision_turns_a_branch_into_a_commit(
    offline_hub: OfflineHub, hub_snapshot: dict
) -> None:
    sha = hub_snapshot[QWEN_SMALL]["sha"]
    assert pin_revision(endpoint=offline_hub.url, repo_id=QWEN_SMALL) == sha
    assert pin_revision(endpoint=offline_hub.url, repo_id=QWEN_SMALL, revision=sha[:10]) == sha

    offline_hub.add_revision(QWEN_SMALL, "v1.0", "0123456789abcdef0123456789abcdef01234567")
    assert (
        pin_revision(endpoint=offline_hub.url, repo_id=QWEN_SMALL, revision="v1.0")
        == "0123456789abcdef0123456789abcdef01234567"
    )


# --- errors a user sees ---------------------------------------------------------------


def test_gated_model_without_a_token_says_to_accept_the_license(offline_hub: OfflineHub) -> None:
    with pytest.raises(HubError) as err:
        model_detail(endpoint=offline_hub.url, token=None, repo_id=LLAMA_8B)
    assert err.value.code == "gated"
    assert err.value.message == (
        "meta-llama/Llama-3.1-8B-Instruct is gated: accept its license on the Hub and use a token "
        "with access (no Hugging Face token is set)"
    )


def test_gated_model_with_a_token_that_lacks_access(offline_hub: OfflineHub) -> None:
    with pytest.raises(HubError) as err:
        model_detail(endpoint=offline_hub.url, token=BOB_TOKEN, repo_id="google/gemma-2-9b-it")
    assert err.value.code == "gated"
    assert str(err.value) == (
        "google/gemma-2-9b-it is gated: accept its license on the Hub and use a token with access"
    )


@pytest.mark.parametrize("token", [None, ALICE_TOKEN])
def test_missing_model_is_reported_by_name(offline_hub: OfflineHub, token: str | None) -> None:
    with pytest.raises(HubError) as err:
        model_detail(endpoint=offline_hub.url, token=token, repo_id="nobody/no-such-model")
    assert err.value.code == "not_found"
    assert err.value.message == (
        "Model nobody/no-such-model was not found on the Hub (check the name or your token's access)"
    )


def test_missing_revision_is_reported(offline_hub: OfflineHub) -> None:
    with pytest.raises(HubError) as err:
        pin_revision(endpoint=offline_hub.url, repo_id=QWEN_SMALL, revision="v9-does-not-exist")
    assert err.value.code == "revision_not_found"
    assert "'v9-does-not-exist' of Qwen/Qwen2.5-0.5B-Instruct was not found" in err.value.message


@pytest.mark.parametrize("revision", ["\U000c7f0b0", "caf\u00e9", "\x0f"])
def test_a_revision_with_any_characters_is_not_found_rather_than_unreachable(
    offline_hub: OfflineHub, revision: str
) -> None:
    """QA (schemathesis): a revision outside latin-1 made the offline Hub drop the connection
    while writing its error header, and the catalog said the Hub could not be reached."""
    with pytest.raises(HubError) as err:
        model_detail(endpoint=offline_hub.url, repo_id=QWEN_SMALL, revision=revision)
    assert err.value.code == "revision_not_found", err.value.message


def test_invalid_model_name_is_reported(offline_hub: OfflineHub) -> None:
    with pytest.raises(HubError) as err:
        model_detail(endpoint=offline_hub.url, repo_id="not a repo name!")
    assert err.value.code == "invalid_name"
    assert not offline_hub.requests  # refused before asking the Hub


def test_bad_token_is_rejected_everywhere(offline_hub: OfflineHub) -> None:
    for call in (
        lambda: search_models(endpoint=offline_hub.url, token="hf_expired"),
        lambda: model_detail(endpoint=offline_hub.url, token="hf_expired", repo_id=QWEN_SMALL),
    ):
        with pytest.raises(HubError) as err:
            call()
        assert err.value.code == "unauthorized"
        assert err.value.message.startswith(
            "The Hub rejected the token (401): it is invalid or expired"
        )


def test_hub_answering_500_fails_fast_with_a_clear_message(offline_hub: OfflineHub) -> None:
    offline_hub.mode = "error"
    for call in (
        lambda: search_models(endpoint=offline_hub.url),
        lambda: model_detail(endpoint=offline_hub.url, repo_id=QWEN_SMALL),
    ):
        started = time.monotonic()
        with pytest.raises(HubError) as err:
            call()
        # huggingface_hub alone would retry with 1+2+4+8+8 s of back-off.
        assert time.monotonic() - started < 2
        assert err.value.code == "server_error"
        assert (
            err.value.message
            == f"The Hub at {offline_hub.url} is failing (HTTP 500); try again later"
        )


@pytest.mark.parametrize("call", ["search", "detail", "pin"])
def test_stalled_hub_times_out_within_the_bound(offline_hub: OfflineHub, call: str) -> None:
    offline_hub.mode = "stall"
    offline_hub.stall_seconds = 20
    calls = {
        "search": lambda: search_models(endpoint=offline_hub.url, timeout=1),
        "detail": lambda: model_detail(endpoint=offline_hub.url, repo_id=QWEN_SMALL, timeout=1),
        "pin": lambda: pin_revision(endpoint=offline_hub.url, repo_id=QWEN_SMALL, timeout=1),
    }
    started = time.monotonic()
    with pytest.raises(HubError) as err:
        calls[call]()
    elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 3
    assert err.value.code == "timeout"
    assert err.value.message == (
        f"The Hub at {offline_hub.url} did not answer within 1 s; try again or check the network"
    )


def test_unreachable_hub_is_reported_at_once(closed_port_url: str) -> None:
    started = time.monotonic()
    with pytest.raises(HubError) as err:
        search_models(endpoint=closed_port_url)
    assert time.monotonic() - started < 2
    assert err.value.code == "unreachable"
    assert err.value.message.startswith(f"The Hub at {closed_port_url} could not be reached")


# --- token check ---------------------------------------------------------------------


def test_check_token_names_the_user(offline_hub: OfflineHub) -> None:
    result = check_token(endpoint=offline_hub.url, token=ALICE_TOKEN)
    assert result.ok and result.user == "alice" and result.role == "read"
    assert result.message == f"Token works: signed in to {offline_hub.url} as alice (read access)"


def test_check_token_reports_a_bad_token(offline_hub: OfflineHub) -> None:
    result = check_token(endpoint=offline_hub.url, token="hf_revoked")
    assert not result.ok and result.code == "unauthorized" and result.user is None
    assert "invalid or expired" in result.message


def test_check_token_without_a_token(offline_hub: OfflineHub) -> None:
    result = check_token(endpoint=offline_hub.url, token="  ")
    assert not result.ok and result.code == "no_token"
    assert not offline_hub.requests


def test_check_token_against_a_stalled_hub_times_out(offline_hub: OfflineHub) -> None:
    offline_hub.mode = "stall"
    started = time.monotonic()
    result = check_token(endpoint=offline_hub.url, token=ALICE_TOKEN, timeout=1)
    assert time.monotonic() - started < 3
    assert not result.ok and result.code == "timeout"


# --- config parsing (pure) ---------------------------------------------------------------


def test_parse_config_understands_other_naming_schemes() -> None:
    gpt2 = hub.parse_config(
        {
            "architectures": ["GPT2LMHeadModel"],
            "n_layer": 12,
            "n_embd": 768,
            "n_head": 12,
            "n_positions": 1024,
            "vocab_size": 50257,
        }
    )
    assert (gpt2.num_hidden_layers, gpt2.hidden_size, gpt2.num_key_value_heads, gpt2.head_dim) == (
        12,
        768,
        12,
        64,
    )
    assert gpt2.max_position_embeddings == 1024

    falcon = hub.parse_config(
        {
            "num_hidden_layers": 32,
            "hidden_size": 4544,
            "num_attention_heads": 71,
            "multi_query": True,
        }
    )
    assert falcon.num_key_value_heads == 1

    nested = hub.parse_config(
        {
            "architectures": ["Mistral3ForConditionalGeneration"],
            "text_config": {
                "num_hidden_layers": 40,
                "hidden_size": 5120,
                "num_attention_heads": 32,
                "num_key_value_heads": 8,
                "head_dim": 128,
                "max_position_embeddings": 131072,
                "torch_dtype": "bfloat16",
            },
        }
    )
    assert nested.nested and nested.num_hidden_layers == 40 and nested.head_dim == 128
    assert nested.architecture == "Mistral3ForConditionalGeneration"

    awq = hub.parse_config(
        {"num_hidden_layers": 1, "quantization_config": {"quant_method": "awq", "bits": 4}}
    )
    assert awq.quantization == "awq-4bit"
