"""Fixed inputs shared by the DINOv2 reference-equality tests and the script that produced their expected values.

Closed-form (sines), so that the values do not depend on a random generator's implementation.
"""

import torch


def wave(rows: int, cols: int, phase: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    """(rows, cols) float32 ``scale * sin(0.37 * i + 0.11 * i * i / cols + phase)`` over the flat index i."""
    i = torch.arange(rows * cols, dtype=torch.float64)
    return (scale * torch.sin(0.37 * i + 0.11 * i * i / cols + phase)).reshape(rows, cols).float()
