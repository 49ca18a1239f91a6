"""GPU memory estimate for serving a model: weights + KV cache + overhead, and the GPUs that takes.

Pure functions, no I/O. Every intermediate figure is returned so that the UI can show the
arithmetic rather than a bare number. Figures are an estimate of what an engine such as vLLM
needs; the engine's own profiling at start-up is the final word.

Units: "GB" is decimal (1e9 bytes, what model cards and GPU data sheets print), "GiB" is binary
(2**30 bytes, what nvidia-smi and Kubernetes print). Both are returned where it matters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

GB = 1_000_000_000
GIB = 1024**3

# Bytes per parameter (or per KV-cache element) by dtype. Keys are normalised names; aliases
# below map the spellings found in config.json (`torch_dtype`), safetensors metadata (`BF16`,
# `F8_E4M3`) and engine flags (`--dtype half`, `--kv-cache-dtype fp8`) onto them.
BYTES_PER_PARAM: dict[str, float] = {
    "fp64": 8,
    "fp32": 4,
    "bf16": 2,
    "fp16": 2,
    "fp8": 1,
    "int8": 1,
    # 4-bit formats. MXFP4 and GPTQ/AWQ also store a scale per group of 32-128 weights, which
    # adds 1-3 %; it is ignored here and falls inside the estimate's margin.
    "int4": 0.5,
    "fp4": 0.5,
}

_DTYPE_ALIASES: dict[str, str] = {
    "float64": "fp64",
    "f64": "fp64",
    "double": "fp64",
    "float32": "fp32",
    "f32": "fp32",
    "float": "fp32",
    "bfloat16": "bf16",
    "float16": "fp16",
    "f16": "fp16",
    "half": "fp16",
    "float8": "fp8",
    "f8_e4m3": "fp8",
    "f8_e5m2": "fp8",
    "float8_e4m3fn": "fp8",
    "float8_e5m2": "fp8",
    "fp8_e4m3": "fp8",
    "fp8_e5m2": "fp8",
    "i8": "int8",
    "u8": "int8",
    "uint8": "int8",
    "i4": "int4",
    "awq": "int4",
    "gptq": "int4",
    "mxfp4": "fp4",
    "nvfp4": "fp4",
}

# vLLM's --gpu-memory-utilization default: the share of each GPU's memory the engine may use
# for weights, activations and KV cache together.
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9

# Memory each GPU needs beyond weights and KV cache: the CUDA context and cuBLAS/NCCL
# workspaces (~0.5-1 GiB) plus the activation peak vLLM measures in its profiling run at
# moderate batch sizes (~1 GiB for 7B-70B models). 2 GiB per GPU is a deliberately round,
# slightly generous figure; very large batches or vision encoders need more.
DEFAULT_OVERHEAD_BYTES_PER_GPU = 2 * GIB

# GPUs in one node: tensor parallelism across nodes is slow, so an estimate that needs more
# than this is flagged rather than silently accepted.
GPUS_PER_NODE = 8


def normalize_dtype(dtype: str) -> str:
    """Map a dtype spelling (`torch.bfloat16`, `BF16`, `half`, `F8_E4M3`) onto a BYTES_PER_PARAM key."""
    key = dtype.strip().lower().removeprefix("torch.")
    key = _DTYPE_ALIASES.get(key, key)
    if key not in BYTES_PER_PARAM:
        known = ", ".join(sorted(BYTES_PER_PARAM))
        raise ValueError(f"Unknown dtype {dtype!r}; expected one of {known}.")
    return key


def dtype_bytes(dtype: str) -> float:
    """Bytes per parameter for a dtype, e.g. 2 for bf16, 0.5 for int4."""
    return BYTES_PER_PARAM[normalize_dtype(dtype)]


@dataclass(frozen=True)
class GpuType:
    """A GPU model and its memory as sold (HBM/GDDR capacities are binary: "80 GB" is 80 GiB)."""

    key: str
    name: str
    memory_gib: int

    @property
    def memory_bytes(self) -> int:
        return self.memory_gib * GIB


# Common data-centre GPUs. The driver reserves a few hundred MiB of each (nvidia-smi shows an
# H100 80GB as 81559 MiB); the 0.9 utilization target leaves room for that.
GPU_TYPES: dict[str, GpuType] = {
    gpu.key: gpu
    for gpu in (
        GpuType("B200", "NVIDIA B200 180GB", 180),
        GpuType("H200", "NVIDIA H200 141GB", 141),
        GpuType("H100-80GB", "NVIDIA H100 80GB", 80),
        GpuType("H100-94GB", "NVIDIA H100 NVL 94GB", 94),
        GpuType("A100-80GB", "NVIDIA A100 80GB", 80),
        GpuType("A100-40GB", "NVIDIA A100 40GB", 40),
        GpuType("L40S", "NVIDIA L40S 48GB", 48),
        GpuType("L40", "NVIDIA L40 48GB", 48),
        GpuType("A6000", "NVIDIA RTX A6000 48GB", 48),
        GpuType("L4", "NVIDIA L4 24GB", 24),
        GpuType("A10G", "NVIDIA A10G 24GB", 24),
        GpuType("A10", "NVIDIA A10 24GB", 24),
        GpuType("V100-32GB", "NVIDIA V100 32GB", 32),
        GpuType("T4", "NVIDIA T4 16GB", 16),
    )
}


def weights_bytes(*, parameters: int, dtype: str) -> float:
    """Memory the weights take: parameters × bytes per parameter."""
    return parameters * dtype_bytes(dtype)


def weights_bytes_from_safetensors(parameters_by_dtype: Mapping[str, int]) -> float:
    """Memory of a checkpoint as stored, from the Hub's `safetensors.parameters` ({"BF16": n, ...}).

    More exact than `weights_bytes` for mixed checkpoints (e.g. BF16 attention + packed U8
    MXFP4 experts); unknown dtypes count as 2 bytes.
    """
    total = 0.0
    for name, count in parameters_by_dtype.items():
        try:
            total += count * dtype_bytes(name)
        except ValueError:
            total += count * 2
    return total


def kv_cache_bytes_per_token(
    *, num_layers: int, num_kv_heads: int, head_dim: int, kv_dtype: str = "bf16"
) -> float:
    """KV cache per token: 2 (one K and one V tensor) × layers × KV heads × head dim × bytes."""
    return 2 * num_layers * num_kv_heads * head_dim * dtype_bytes(kv_dtype)


@dataclass(frozen=True)
class MemoryEstimate:
    """The estimate with every step of its arithmetic, for the UI to show."""

    # Weights
    parameters: int
    dtype: str
    bytes_per_param: float
    weights_bytes: float
    # KV cache
    num_layers: int
    num_kv_heads: int
    head_dim: int
    kv_dtype: str
    kv_bytes_per_element: float
    kv_bytes_per_token: float
    context_length: int
    concurrency: int
    kv_cache_tokens: int
    kv_cache_bytes: float
    # Overhead and total (as if on one GPU)
    overhead_bytes_per_gpu: float
    total_bytes: float
    # Fit on GPUs
    gpu: GpuType | None
    gpu_memory_utilization: float
    usable_bytes_per_gpu: float | None
    gpus_min: int | None
    gpus: int | None
    exceeds_node: bool
    fits: bool
    notes: tuple[str, ...] = field(default=())

    @property
    def weights_gb(self) -> float:
        return self.weights_bytes / GB

    @property
    def weights_gib(self) -> float:
        return self.weights_bytes / GIB

    @property
    def kv_kib_per_token(self) -> float:
        return self.kv_bytes_per_token / 1024

    @property
    def kv_cache_gb(self) -> float:
        return self.kv_cache_bytes / GB

    @property
    def kv_cache_gib(self) -> float:
        return self.kv_cache_bytes / GIB

    @property
    def total_gb(self) -> float:
        return self.total_bytes / GB

    @property
    def total_gib(self) -> float:
        return self.total_bytes / GIB

    @property
    def total_bytes_on_gpus(self) -> float | None:
        """Weights + KV cache + the per-GPU overhead on each of the chosen GPUs."""
        if self.gpus is None:
            return None
        return self.weights_bytes + self.kv_cache_bytes + self.overhead_bytes_per_gpu * self.gpus


def _next_power_of_two(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def estimate_memory(
    *,
    parameters: int,
    dtype: str = "bf16",
    num_layers: int,
    num_kv_heads: int,
    head_dim: int,
    context_length: int,
    concurrency: int = 1,
    kv_dtype: str | None = None,
    gpu: GpuType | str | None = None,
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION,
    overhead_bytes_per_gpu: float = DEFAULT_OVERHEAD_BYTES_PER_GPU,
    gpus_per_node: int = GPUS_PER_NODE,
) -> MemoryEstimate:
    """Estimate serving memory and, if a GPU type is given, how many of them one replica needs.

    `context_length × concurrency` tokens of KV cache are budgeted: that many sequences can be
    at full length at once. `kv_dtype` defaults to the weights' dtype, as vLLM's
    `--kv-cache-dtype auto` does (a 4-bit weight dtype keeps a 16-bit cache).
    """
    if parameters <= 0:
        raise ValueError("parameters must be positive")
    if min(num_layers, num_kv_heads, head_dim, context_length, concurrency) <= 0:
        raise ValueError(
            "layers, KV heads, head dim, context length and concurrency must be positive"
        )
    if not 0 < gpu_memory_utilization <= 1:
        raise ValueError("gpu_memory_utilization must be in (0, 1]")

    dtype = normalize_dtype(dtype)
    if kv_dtype is None:
        kv_dtype = dtype if BYTES_PER_PARAM[dtype] >= 1 else "bf16"
    kv_dtype = normalize_dtype(kv_dtype)
    if isinstance(gpu, str):
        try:
            gpu = GPU_TYPES[gpu]
        except KeyError:
            raise ValueError(
                f"Unknown GPU type {gpu!r}; expected one of {', '.join(GPU_TYPES)}."
            ) from None

    bytes_per_param = BYTES_PER_PARAM[dtype]
    w_bytes = parameters * bytes_per_param
    kv_per_token = kv_cache_bytes_per_token(
        num_layers=num_layers, num_kv_heads=num_kv_heads, head_dim=head_dim, kv_dtype=kv_dtype
    )
    kv_tokens = context_length * concurrency
    kv_bytes = kv_per_token * kv_tokens
    total = w_bytes + kv_bytes + overhead_bytes_per_gpu

    notes: list[str] = []
    usable = gpus_min = gpus = None
    exceeds_node = False
    fits = True
    if gpu is not None:
        usable = gpu.memory_bytes * gpu_memory_utilization
        room_per_gpu = usable - overhead_bytes_per_gpu
        if room_per_gpu <= 0:
            fits = False
            notes.append(f"A {gpu.name} has no room left after the per-GPU overhead.")
        else:
            # Weights and KV cache are sharded evenly by tensor parallelism; the overhead is
            # paid again on every GPU.
            gpus_min = max(1, math.ceil((w_bytes + kv_bytes) / room_per_gpu))
            # Tensor parallelism needs the attention heads to divide evenly across GPUs, and
            # head counts are powers of two (times a small factor) in practice, so engines
            # want TP = 1, 2, 4, 8: round up to the next power of two.
            gpus = _next_power_of_two(gpus_min)
            if gpus > gpus_per_node:
                exceeds_node = True
                fits = False
                notes.append(
                    f"Needs {gpus} × {gpu.name}, more than one node of {gpus_per_node}: "
                    "use a larger GPU, a smaller dtype, a shorter context, or pipeline parallelism."
                )
            if gpus != gpus_min:
                notes.append(
                    f"{gpus_min} GPU(s) would hold it; rounded up to {gpus} for tensor parallelism."
                )
    return MemoryEstimate(
        parameters=parameters,
        dtype=dtype,
        bytes_per_param=bytes_per_param,
        weights_bytes=w_bytes,
        num_layers=num_layers,
        num_kv_heads=num_kv_heads,
        head_dim=head_dim,
        kv_dtype=kv_dtype,
        kv_bytes_per_element=BYTES_PER_PARAM[kv_dtype],
        kv_bytes_per_token=kv_per_token,
        context_length=context_length,
        concurrency=concurrency,
        kv_cache_tokens=kv_tokens,
        kv_cache_bytes=kv_bytes,
        overhead_bytes_per_gpu=overhead_bytes_per_gpu,
        total_bytes=total,
        gpu=gpu,
        gpu_memory_utilization=gpu_memory_utilization,
        usable_bytes_per_gpu=usable,
        gpus_min=gpus_min,
        gpus=gpus,
        exceeds_node=exceeds_node,
        fits=fits,
        notes=tuple(notes),
    )


class _ArchitectureFacts(Protocol):
    """What `estimate_for_config` reads; `catalog.hub.ModelConfigFacts` has these attributes."""

    num_hidden_layers: int | None
    num_key_value_heads: int | None
    head_dim: int | None
    max_position_embeddings: int | None
    dtype: str | None


def estimate_for_config(
    *,
    parameters: int,
    config: _ArchitectureFacts,
    dtype: str | None = None,
    context_length: int | None = None,
    concurrency: int = 1,
    kv_dtype: str | None = None,
    gpu: GpuType | str | None = None,
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION,
) -> MemoryEstimate:
    """`estimate_memory` fed from config.json facts; raises ValueError naming what is missing.

    The dtype defaults to the checkpoint's (config `torch_dtype`, else bf16) and the context
    length to the model's maximum.
    """
    missing = [
        name
        for name in ("num_hidden_layers", "num_key_value_heads", "head_dim")
        if getattr(config, name) is None
    ]
    context = context_length or config.max_position_embeddings
    if context is None:
        missing.append("max_position_embeddings (or give a context length)")
    if missing:
        raise ValueError("config.json does not say: " + ", ".join(missing))
    assert config.num_hidden_layers and config.num_key_value_heads and config.head_dim and context
    return estimate_memory(
        parameters=parameters,
        dtype=dtype or config.dtype or "bf16",
        num_layers=config.num_hidden_layers,
        num_kv_heads=config.num_key_value_heads,
        head_dim=config.head_dim,
        context_length=context,
        concurrency=concurrency,
        kv_dtype=kv_dtype,
        gpu=gpu,
        gpu_memory_utilization=gpu_memory_utilization,
    )
