"""KoLeo (Kozachenko-Leonenko) entropy regulariser on the student CLS tokens.

Port of ``KoLeoLoss`` of facebookresearch/dinov2 ``dinov2/loss/koleo_loss.py`` (Sablayrolles et al. 2019,
"Spreading vectors for similarity search", Sec. 3.2; DINOv2 Sec. 4): L2-normalise the rows, find each row's
nearest other row by inner product, and return ``-mean_i log(||x_i - x_nn(i) + eps|| + eps)`` (``eps`` inside
the norm as ``nn.PairwiseDistance``). DINOv2 applies it to each global-crop chunk of the student backbone's
CLS tokens separately (never between the two crops of one image) and sums the chunks: ``koleo_per_crop``.

Difference from upstream, on purpose: pathology streams contain duplicate tiles (blank glass, repeated
regions) and blank rows. Upstream gives an exact duplicate pair the distance ``eps * sqrt(D)``: a loss of ~18
per row and a gradient of order ``1 / eps`` that swamps the step. Here a row is left out of the mean when it
is blank (norm below ``eps``) or when every other row is a duplicate of it (distance below
``duplicate_distance`` on the unit sphere); a duplicate is never chosen as nearest neighbour. Without blank or
duplicate rows the value equals upstream's. With no row left the loss is 0 (still attached to the graph).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["koleo_loss", "koleo_per_crop", "sum_over_crops"]


def koleo_loss(x: Tensor, eps: float = 1e-8, duplicate_distance: float = 1e-4) -> Tensor:
    """KoLeo loss of one set of vectors, computed in float32 (autocast off).

    Args:
        x: (N, D) vectors (student CLS tokens of one global crop).
        eps: Normalisation and distance epsilon (1e-8 as upstream).
        duplicate_distance: Rows closer than this after L2 normalisation count as the same tile.

    Returns:
        Scalar float32 loss.

    Raises:
        ValueError: If ``x`` is not 2-D.
    """
    if x.ndim != 2:
        raise ValueError(f"koleo_loss expects (N, D) vectors, got shape {tuple(x.shape)}")
    with torch.autocast(device_type=x.device.type, enabled=False):
        raw = x.float()
        unit = F.normalize(raw, p=2, dim=-1, eps=eps)
        with torch.no_grad():
            n = unit.shape[0]
            blank = raw.norm(dim=-1) < eps
            # exact pairwise distances (no mm trick) so that fp32 noise does not hide or invent duplicates
            close = torch.cdist(unit, unit, compute_mode="donot_use_mm_for_euclid_dist") < duplicate_distance
            excluded = close | blank.unsqueeze(0) | blank.unsqueeze(1)
            excluded |= torch.eye(n, dtype=torch.bool, device=x.device)
            dots = (unit @ unit.t()).masked_fill(excluded, -2.0)
            # -2 is below any inner product of unit vectors, so a masked pair is never the maximum
            best, neighbour = dots.max(dim=1)
            valid = (best > -2.0) & ~blank
        distances = F.pairwise_distance(unit, unit[neighbour], p=2, eps=eps)
        losses = -torch.log(distances + eps)
        if not bool(valid.any()):
            return losses.sum() * 0.0
        return losses[valid].mean()


def sum_over_crops(loss_fn: Callable[[Tensor], Tensor], student_cls: Tensor, n_crops: int = 2) -> Tensor:
    """Sum of ``loss_fn`` over the crop chunks of the student CLS tokens (as ``SSLMetaArch`` does for KoLeo).

    Args:
        loss_fn: A per-set regulariser, (N, D) -> scalar.
        student_cls: Crop-major (n_crops * B, D) student backbone CLS tokens (before the head).
        n_crops: Number of chunks (2 global crops).

    Returns:
        Scalar float32 loss.
    """
    total = student_cls.new_zeros((), dtype=torch.float32)
    for chunk in student_cls.chunk(n_crops):
        total = total + loss_fn(chunk)
    return total


def koleo_per_crop(student_cls: Tensor, n_crops: int = 2, **kwargs: float) -> Tensor:
    """``koleo_loss`` summed over the global-crop chunks, to weight by ``dino.koleo_loss_weight`` (0.1).

    Args:
        student_cls: Crop-major (n_crops * B, D) student backbone CLS tokens.
        n_crops: Number of chunks (2 global crops).
        **kwargs: Passed to ``koleo_loss``.
    """
    return sum_over_crops(lambda chunk: koleo_loss(chunk, **kwargs), student_cls, n_crops)
