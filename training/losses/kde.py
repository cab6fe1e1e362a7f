"""KDE entropy regulariser on the student CLS tokens, Midnight's alternative to KoLeo.

Port of ``KDELoss`` of MedARC-AI/OpenMidnight ``dinov2/loss/kde_loss.py`` (kaiko's Midnight recipe,
Karasikov et al. 2025, arXiv:2504.05186; ``dino.kde_loss_weight: 0.05`` with KoLeo off in OpenMidnight's
``dinov2/configs/train/vitg14_reg4.yaml``): a von Mises-Fisher kernel density estimate on the unit sphere,

    loss = -mean_i log( sum_j exp(kappa * cos(x_i, x_j)) + 1e-9 ),   kappa = 5,

the sum running over all rows of the chunk including i itself. Applied per global-crop chunk and summed, like
KoLeo (``sum_over_crops``). Unlike KoLeo it stays smooth on duplicate and blank rows (a duplicate only adds
one more kernel term; a blank row has cosine 0 with everything), so no special case is needed. Computed in
float32 with ``logsumexp`` (the ``+ 1e-9`` inside the log is kept; against a sum of at least 1 it is below
float32 resolution).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .koleo import sum_over_crops

__all__ = ["kde_loss", "kde_per_crop"]


def kde_loss(x: Tensor, kappa: float = 5.0) -> Tensor:
    """Negative mean log kernel density of the rows of ``x`` (vMF kernel, concentration ``kappa``).

    Args:
        x: (N, D) vectors (student CLS tokens of one global crop).
        kappa: Kernel concentration (5 in OpenMidnight).

    Returns:
        Scalar float32 loss.

    Raises:
        ValueError: If ``x`` is not 2-D.
    """
    if x.ndim != 2:
        raise ValueError(f"kde_loss expects (N, D) vectors, got shape {tuple(x.shape)}")
    with torch.autocast(device_type=x.device.type, enabled=False):
        unit = F.normalize(x.float(), p=2, dim=-1)
        log_kernel = kappa * (unit @ unit.t())
        floor = torch.full_like(log_kernel[:, :1], math.log(1e-9))
        log_density = torch.logsumexp(torch.cat([log_kernel, floor], dim=1), dim=1)
        return -log_density.mean()


def kde_per_crop(student_cls: Tensor, n_crops: int = 2, kappa: float = 5.0) -> Tensor:
    """``kde_loss`` summed over the global-crop chunks, to weight by ``dino.kde_loss_weight`` (0.05).

    Args:
        student_cls: Crop-major (n_crops * B, D) student backbone CLS tokens.
        n_crops: Number of chunks (2 global crops).
        kappa: Kernel concentration.
    """
    return sum_over_crops(lambda chunk: kde_loss(chunk, kappa), student_cls, n_crops)
