"""The GPU memory estimate against published figures (within 5 %) and its GPU-count rules."""

from __future__ import annotations

import pytest

from catalog.estimate import (
    GB,
    GIB,
    GPU_TYPES,
    MemoryEstimate,
    dtype_bytes,
    estimate_for_config,
    estimate_memory,
    kv_cache_bytes_per_token,
    normalize_dtype,
    weights_bytes_from_safetensors,
)
from catalog.hub import ModelConfigFacts


def within_5_percent(value: float, published: float) -> bool:
    return abs(value - published) <= 0.05 * published


def llama_31_8b(**kwargs) -> MemoryEstimate:
    # meta-llama/Llama-3.1-8B: 8.03e9 params, 32 layers, 8 KV heads, head dim 4096/32 = 128.
    return estimate_memory(
        parameters=8_030_261_248, num_layers=32, num_kv_heads=8, head_dim=128, **kwargs
    )


# Published figures: Hugging Face's Llama 3.1 release post (huggingface.co/blog/llama31,
# "Inference Memory Requirements") lists weights of 16 GB (8B) and 140 GB (70B) in FP16, and a
# KV cache at 128k tokens of 15.62 GB (8B) and 39.06 GB (70B) — the KV figures are in GiB.


def test_llama_31_8b_matches_published_figures() -> None:
    est = llama_31_8b(dtype="bf16", context_length=128_000)
    # Weights: 8.03e9 params × 2 bytes = 16.06e9 bytes = 16.06 GB.
    assert est.weights_bytes == 8_030_261_248 * 2
    assert within_5_percent(est.weights_gb, 16.0)
    # KV per token: 2 (K and V) × 32 layers × 8 KV heads × 128 head dim × 2 bytes = 131072 B = 128 KiB.
    assert est.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2 == 131_072
    assert est.kv_kib_per_token == 128
    # KV at 128k tokens: 131072 B × 128000 = 16.78e9 B = 15.62 GiB.
    assert est.kv_cache_bytes == 131_072 * 128_000
    assert within_5_percent(est.kv_cache_gib, 15.62)


def test_llama_31_70b_matches_published_figures() -> None:
    est = estimate_memory(
        parameters=70_553_706_496,
        num_layers=80,
        num_kv_heads=8,
        head_dim=128,
        context_length=128_000,
    )
    # 70.55e9 × 2 = 141.1e9 bytes ≈ 140 GB; KV 2 × 80 × 8 × 128 × 2 = 327680 B/token × 128000 = 39.06 GiB.
    assert within_5_percent(est.weights_gb, 140)
    assert within_5_percent(est.kv_cache_gib, 39.06)


def test_qwen25_72b() -> None:
    est = estimate_memory(
        parameters=72_700_000_000,
        num_layers=80,
        num_kv_heads=8,
        head_dim=128,
        context_length=32_768,
    )
    # 72.7e9 params × 2 bytes = 145.4e9 bytes ≈ 145 GB.
    assert within_5_percent(est.weights_gb, 145)
    # 2 × 80 layers × 8 KV heads × 128 × 2 bytes = 327680 B = 320 KiB per token.
    assert est.kv_bytes_per_token == 327_680
    assert est.kv_kib_per_token == 320


def test_mistral_7b_v01() -> None:
    est = estimate_memory(
        parameters=7_240_000_000, num_layers=32, num_kv_heads=8, head_dim=128, context_length=8192
    )
    # 7.24e9 × 2 = 14.48e9 bytes ≈ 14.5 GB; 2 × 32 × 8 × 128 × 2 = 131072 B = 128 KiB per token.
    assert within_5_percent(est.weights_gb, 14.5)
    assert est.kv_kib_per_token == 128


def test_smaller_dtypes_shrink_weights_and_kv_follows_the_weights() -> None:
    bf16 = llama_31_8b(context_length=8192)
    fp8 = llama_31_8b(dtype="fp8", context_length=8192)
    int4 = llama_31_8b(dtype="int4", context_length=8192)
    assert fp8.weights_bytes == bf16.weights_bytes / 2
    assert int4.weights_bytes == bf16.weights_bytes / 4
    assert fp8.kv_bytes_per_token == bf16.kv_bytes_per_token / 2  # fp8 cache, like vLLM's "auto"
    assert int4.kv_dtype == "bf16"  # 4-bit weights keep a 16-bit cache
    assert (
        llama_31_8b(dtype="int4", kv_dtype="fp8", context_length=8192).kv_bytes_per_token == 65_536
    )


def test_concurrency_multiplies_the_kv_cache() -> None:
    one = llama_31_8b(context_length=8192)
    eight = llama_31_8b(context_length=8192, concurrency=8)
    assert eight.kv_cache_tokens == 65_536
    assert eight.kv_cache_bytes == 8 * one.kv_cache_bytes


def test_total_is_weights_plus_kv_plus_overhead() -> None:
    est = llama_31_8b(context_length=8192)
    assert est.overhead_bytes_per_gpu == 2 * GIB
    assert est.total_bytes == est.weights_bytes + est.kv_cache_bytes + 2 * GIB
    # 16.06 GB + 1.07 GB (8192 × 128 KiB) + 2.15 GB = 19.29 GB
    assert est.total_gb == pytest.approx(19.29, abs=0.01)


def test_llama_8b_fits_one_h100() -> None:
    est = llama_31_8b(context_length=8192, gpu="H100-80GB")
    assert est.gpus == 1 and est.fits and not est.exceeds_node
    assert est.usable_bytes_per_gpu == pytest.approx(0.9 * 80 * GIB)


def test_qwen_72b_needs_four_h100s_rounded_up_from_three() -> None:
    est = estimate_memory(
        parameters=72_706_203_648,
        num_layers=80,
        num_kv_heads=8,
        head_dim=128,
        context_length=32_768,
        gpu="H100-80GB",
    )
    # (145.4e9 weights + 10.7e9 KV) / (0.9 × 85.9e9 − 2.1e9 overhead per GPU) = 2.1 → 3 → power of two: 4.
    assert est.gpus_min == 3
    assert est.gpus == 4
    assert est.fits
    assert any("rounded up to 4" in note for note in est.notes)
    assert est.total_bytes_on_gpus == est.weights_bytes + est.kv_cache_bytes + 4 * 2 * GIB


def test_qwen_72b_fits_two_h200s() -> None:
    est = estimate_memory(
        parameters=72_706_203_648,
        num_layers=80,
        num_kv_heads=8,
        head_dim=128,
        context_length=32_768,
        gpu=GPU_TYPES["H200"],
    )
    assert est.gpus == 2


def test_llama_405b_in_bf16_does_not_fit_a_node_of_h100s() -> None:
    est = estimate_memory(
        parameters=405_853_388_800,
        num_layers=126,
        num_kv_heads=8,
        head_dim=128,
        context_length=8192,
        gpu="H100-80GB",
    )
    # 811.7e9 bytes of weights / ~75e9 usable per GPU → 11 → 16 GPUs: more than one node of 8.
    assert est.gpus == 16
    assert est.exceeds_node and not est.fits
    assert any("more than one node of 8" in note for note in est.notes)


def test_a_gpu_smaller_than_the_overhead_cannot_fit_anything() -> None:
    est = llama_31_8b(context_length=1024, gpu="T4", gpu_memory_utilization=0.1)
    assert not est.fits and est.gpus is None


def test_dtype_names_from_configs_safetensors_and_engines() -> None:
    assert normalize_dtype("torch.bfloat16") == "bf16"
    assert normalize_dtype("BF16") == "bf16"
    assert normalize_dtype("half") == "fp16"
    assert normalize_dtype("F8_E4M3") == "fp8"
    assert dtype_bytes("float32") == 4 and dtype_bytes("int8") == 1 and dtype_bytes("awq") == 0.5
    with pytest.raises(ValueError, match="Unknown dtype"):
        dtype_bytes("fp12")


def test_kv_cache_bytes_per_token_formula() -> None:
    assert (
        kv_cache_bytes_per_token(num_layers=28, num_kv_heads=4, head_dim=128)
        == 2 * 28 * 4 * 128 * 2
    )


def test_weights_from_safetensors_counts_each_dtype() -> None:
    assert weights_bytes_from_safetensors({"BF16": 1_000, "F32": 10, "U8": 100}) == 2_000 + 40 + 100


def test_gpu_table_has_the_common_data_centre_gpus() -> None:
    memory = {key: gpu.memory_gib for key, gpu in GPU_TYPES.items()}
    assert memory["H100-80GB"] == 80 and memory["H200"] == 141 and memory["B200"] == 180
    assert memory["A100-40GB"] == 40 and memory["A100-80GB"] == 80
    assert (
        memory["L40S"] == 48 and memory["L4"] == 24 and memory["A10G"] == 24 and memory["T4"] == 16
    )
    assert GPU_TYPES["T4"].memory_bytes == 16 * GIB


def test_estimate_for_config_uses_the_models_facts() -> None:
    facts = ModelConfigFacts(
        architecture="LlamaForCausalLM",
        model_type="llama",
        num_hidden_layers=32,
        hidden_size=4096,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        max_position_embeddings=131_072,
        dtype="bfloat16",
        vocab_size=128_256,
    )
    est = estimate_for_config(parameters=8_030_261_248, config=facts)
    assert est.dtype == "bf16"
    assert est.context_length == 131_072  # the model's maximum unless told otherwise
    assert est.kv_cache_bytes == 131_072 * 131_072
    assert (
        estimate_for_config(
            parameters=8_030_261_248, config=facts, context_length=4096
        ).kv_cache_tokens
        == 4096
    )


def test_estimate_for_config_names_missing_facts() -> None:
    facts = ModelConfigFacts(
        architecture="LlavaForConditionalGeneration",
        model_type="llava",
        num_hidden_layers=None,
        hidden_size=None,
        num_attention_heads=None,
        num_key_value_heads=None,
        head_dim=None,
        max_position_embeddings=4096,
        dtype="float16",
        vocab_size=32_064,
    )
    with pytest.raises(ValueError, match="num_hidden_layers, num_key_value_heads, head_dim"):
        estimate_for_config(parameters=7_063_427_072, config=facts)


def test_decimal_and_binary_units() -> None:
    est = llama_31_8b(context_length=1)
    assert est.weights_gb == est.weights_bytes / GB
    assert est.weights_gib == est.weights_bytes / GIB
    assert est.weights_gib < est.weights_gb


def test_memory_under_a_tenth_of_a_gib_is_shown_in_mib_not_as_zero():
    # QA: a small model's KV cache read "KV cache 0.0 GiB" (e.g. 0.047 GiB).
    from console.templatetags.console_tags import gib

    assert gib(8.0) == "8.0 GiB" and gib(0.1) == "0.1 GiB" and gib(15.625) == "15.6 GiB"
    assert gib(0.047) == "48 MiB" and gib(0.0001) == "< 1 MiB" and gib(0) == "0 GiB"
    assert gib(None) == "" and gib("x") == ""
