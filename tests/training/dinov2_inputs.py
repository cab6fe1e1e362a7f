"""Fixed inputs of the DINOv2 reference-equality tests and of the script that produced their expected values.

Closed-form (sines), so that the values do not depend on a random generator's implementation.
"""

import zlib

import torch


def wave(rows: int, cols: int, phase: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    """(rows, cols) float32 ``scale * sin(0.37 * i + 0.11 * i * i / cols + phase)`` over the flat index i."""
    i = torch.arange(rows * cols, dtype=torch.float64)
    return (scale * torch.sin(0.37 * i + 0.11 * i * i / cols + phase)).reshape(rows, cols).float()


def param_value(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Fixed value of the parameter ``name``, in facebookresearch/dinov2 naming (``blocks.0.ls1.gamma``).

    Norm weights are near 1, everything else small, so that the forward pass stays well conditioned.
    """
    numel = 1
    for size in shape:
        numel *= size
    phase = zlib.crc32(name.encode()) % 1000 / 100
    base = 1.0 if ("norm" in name and name.endswith("weight")) else 0.0
    return (base + wave(1, numel, phase, 0.1)).reshape(shape)
