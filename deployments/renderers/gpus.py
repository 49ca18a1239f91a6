"""NVIDIA GPU products (the `nvidia.com/gpu.product` node label) and their compute capability.

Compute capabilities from NVIDIA's "CUDA GPUs" list (developer.nvidia.com/cuda-gpus). GPU
feature discovery labels nodes with the product name, dashes for spaces: `Tesla-T4`,
`NVIDIA-A100-SXM4-80GB`, `NVIDIA-H100-80GB-HBM3`, `NVIDIA-L4`, `NVIDIA-A10G`.
"""

from __future__ import annotations

import re

# Model token (as it appears between dashes in the label) -> compute capability.
COMPUTE_CAPABILITY: dict[str, tuple[int, int]] = {
    "P100": (6, 0), "P40": (6, 1), "P4": (6, 1),
    "V100": (7, 0), "V100S": (7, 0), "TITAN-V": (7, 0),
    "T4": (7, 5), "T4G": (7, 5), "QUADRO-RTX-6000": (7, 5), "QUADRO-RTX-8000": (7, 5),
    "A100": (8, 0), "A800": (8, 0), "A30": (8, 0),
    "A10": (8, 6), "A10G": (8, 6), "A16": (8, 6), "A2": (8, 6), "A40": (8, 6),
    "RTX-A4000": (8, 6), "RTX-A5000": (8, 6), "RTX-A6000": (8, 6), "RTX-3090": (8, 6),
    "L4": (8, 9), "L40": (8, 9), "L40S": (8, 9), "L20": (8, 9), "RTX-6000-ADA": (8, 9),
    "RTX-4090": (8, 9),
    "H100": (9, 0), "H800": (9, 0), "H200": (9, 0), "H20": (9, 0), "GH200": (9, 0),
    "B100": (10, 0), "B200": (10, 0), "GB200": (10, 0),
}  # fmt: skip


def compute_capability(gpu_product: str | None) -> tuple[int, int] | None:
    """(8, 0) for `NVIDIA-A100-SXM4-80GB`; None for a product this table does not know."""
    if not gpu_product:
        return None
    name = re.sub(r"^(NVIDIA|Tesla|Quadro)-", "", gpu_product.strip(), flags=re.IGNORECASE).upper()
    tokens = name.split("-")
    # Longest known prefix of dash-joined tokens: "RTX-A6000-..." before "RTX".
    for size in range(min(3, len(tokens)), 0, -1):
        candidate = "-".join(tokens[:size])
        if candidate in COMPUTE_CAPABILITY:
            return COMPUTE_CAPABILITY[candidate]
    return None
