"""Label-free training monitors for DINO: RankMe, off-diagonal correlation, teacher entropy, collapse check.

The paper (arXiv 2404.15217) tracks RankMe and the off-diagonal correlation of embeddings as label-free
proxies of downstream quality; DINO's own failure modes (Caron et al. 2021, section 5.3) show up in the
entropy of the teacher's output distribution: near 0 when one dimension dominates, near log(K) when the
output is uniform. All functions are pure (no logging, no state) and work on any device; results are
computed in float64 on a detached copy.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["check_collapse", "entropy", "offdiagonal_correlation", "rankme", "teacher_entropy"]


def _as_float64_matrix(embeddings: Tensor, name: str, min_rows: int) -> Tensor:
    """Validates an (N, D) tensor and returns a detached float64 copy."""
    if not isinstance(embeddings, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape (N, D), got {type(embeddings).__name__}")
    if embeddings.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D tensor (N, D), got shape {tuple(embeddings.shape)}")
    if embeddings.shape[0] < min_rows or embeddings.shape[1] < 1:
        raise ValueError(
            f"{name}: needs at least {min_rows} rows and 1 column, got shape {tuple(embeddings.shape)}"
        )
    x = embeddings.detach().to(dtype=torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: embeddings contain NaN or Inf")
    return x


def rankme(embeddings: Tensor, eps: float = 1e-7) -> float:
    """RankMe effective rank of a batch of embeddings.

    Garrido et al. 2023, "RankMe: Assessing the downstream performance of pretrained self-supervised
    representations by their rank" (ICML), eq. 1: with singular values ``s_k`` of the embedding matrix,
    ``p_k = s_k / ||s||_1 + eps`` and ``RankMe = exp(-sum_k p_k log p_k)``. The embeddings are NOT
    centred (as in the paper). The value lies in ``[1, min(N, D)]`` up to the ``eps`` term: an identity
    matrix gives ``D``, a rank-1 matrix gives about 1.

    Args:
        embeddings: (N, D) float tensor, one embedding per row (e.g. teacher CLS on a fixed probe batch).
        eps: small constant added to each normalised singular value (the paper uses 1e-7).

    Returns:
        The effective rank as a Python float.

    Raises:
        ValueError: if ``embeddings`` is not 2-D, is empty, contains NaN/Inf, or is all zeros.
    """
    x = _as_float64_matrix(embeddings, "rankme", min_rows=1)
    singular_values = torch.linalg.svdvals(x)
    total = singular_values.sum()
    if total <= 0:
        raise ValueError("rankme: all singular values are zero (the embeddings are all zeros)")
    p = singular_values / total + eps
    return float(torch.exp(-(p * torch.log(p)).sum()))


def offdiagonal_correlation(embeddings: Tensor) -> float:
    """Mean absolute Pearson correlation between different embedding dimensions.

    For (N, D) embeddings, computes the D x D correlation matrix of the columns and averages ``|corr|``
    over the ``D * (D - 1)`` off-diagonal entries. 0 means decorrelated features; 1 means every feature is
    a linear function of every other (a collapsed, rank-1 representation). A constant column has no
    defined correlation and contributes 0.

    Args:
        embeddings: (N, D) float tensor with N >= 2 and D >= 2.

    Returns:
        The mean absolute off-diagonal correlation in ``[0, 1]``.

    Raises:
        ValueError: if the tensor is not 2-D, has fewer than 2 rows or 2 columns, or contains NaN/Inf.
    """
    x = _as_float64_matrix(embeddings, "offdiagonal_correlation", min_rows=2)
    n, d = x.shape
    if d < 2:
        raise ValueError(f"offdiagonal_correlation: needs at least 2 dimensions, got shape {(n, d)}")
    centred = x - x.mean(dim=0, keepdim=True)
    std = centred.pow(2).mean(dim=0).sqrt()
    constant = std <= 1e-12 * (1.0 + x.abs().amax(dim=0))
    z = centred / torch.where(constant, torch.ones_like(std), std)
    z[:, constant] = 0.0
    corr = (z.T @ z) / n
    off_diagonal = corr.abs().sum() - corr.diagonal().abs().sum()
    return float(off_diagonal / (d * (d - 1)))


def entropy(probs: Tensor, dim: int = -1) -> Tensor:
    """Shannon entropy (nats) of probability vectors, with ``0 * log 0 = 0``.

    Args:
        probs: tensor of probabilities (non-negative, summing to 1 along ``dim``), any shape.
        dim: the dimension holding each distribution.

    Returns:
        Tensor of ``probs.shape`` without ``dim``, in the input's floating dtype.

    Raises:
        ValueError: if ``probs`` has negative entries.
    """
    if (probs < 0).any():
        raise ValueError("entropy: probabilities must be non-negative")
    logs = torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))
    return -(torch.where(probs > 0, probs * logs, torch.zeros_like(probs))).sum(dim=dim)


def teacher_entropy(teacher_logits: Tensor, center: Tensor | None, teacher_temp: float) -> float:
    """Mean entropy of the DINO teacher distribution ``softmax((t - center) / teacher_temp)``.

    This is exactly the target distribution of the DINO loss (Caron et al. 2021, eq. 1 and section 3.1).

    Args:
        teacher_logits: (B, K) teacher head outputs (before softmax), any float dtype.
        center: (K,) or (1, K) center, or None for no centering.
        teacher_temp: teacher temperature (> 0).

    Returns:
        The mean over the B rows of the entropy, in nats (between 0 and log K).

    Raises:
        ValueError: if the logits are not 2-D, the center does not broadcast to (1, K), or the temperature
            is not positive.
    """
    if teacher_logits.ndim != 2:
        raise ValueError(f"teacher_entropy: expected logits (B, K), got shape {tuple(teacher_logits.shape)}")
    if teacher_temp <= 0:
        raise ValueError(f"teacher_entropy: teacher_temp must be > 0, got {teacher_temp}")
    logits = teacher_logits.detach().to(torch.float64)
    if center is not None:
        c = center.detach().to(device=logits.device, dtype=torch.float64).reshape(1, -1)
        if c.shape[1] != logits.shape[1]:
            raise ValueError(
                f"teacher_entropy: center has {c.shape[1]} entries, logits have K={logits.shape[1]}"
            )
        logits = logits - c
    log_p = torch.log_softmax(logits / teacher_temp, dim=-1)
    return float(-(log_p.exp() * log_p).sum(dim=-1).mean())


def check_collapse(mean_entropy: float, out_dim: int, low: float = 0.05, high: float = 0.95) -> str | None:
    """Flags the two DINO collapse modes from the teacher's mean output entropy.

    The entropy is normalised by its maximum ``log(out_dim)``: below ``low`` one dimension dominates the
    teacher output (sharpening without centering); above ``high`` the output is almost uniform (centering
    without sharpening). Caron et al. 2021, section 5.3 / figure 7.

    Args:
        mean_entropy: mean teacher entropy in nats (see `teacher_entropy`).
        out_dim: K, the number of DINO prototypes (>= 2).
        low: normalised-entropy threshold for one-dimension collapse.
        high: normalised-entropy threshold for uniform collapse.

    Returns:
        A warning message naming the collapse mode and the numbers, or None when the entropy is healthy.

    Raises:
        ValueError: if ``out_dim < 2``, the thresholds are not ``0 <= low < high <= 1``, or the entropy is
            not finite.
    """
    if out_dim < 2:
        raise ValueError(f"check_collapse: out_dim must be >= 2, got {out_dim}")
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(f"check_collapse: need 0 <= low < high <= 1, got low={low}, high={high}")
    if not math.isfinite(mean_entropy):
        return f"teacher entropy is not finite ({mean_entropy}): the run has diverged"
    h_max = math.log(out_dim)
    normalised = mean_entropy / h_max
    if normalised < low:
        return (
            f"possible one-dimension collapse: teacher entropy {mean_entropy:.4f} nats is "
            f"{normalised:.3f} of the maximum log({out_dim}) = {h_max:.4f} (threshold {low})"
        )
    if normalised > high:
        return (
            f"possible uniform collapse: teacher entropy {mean_entropy:.4f} nats is "
            f"{normalised:.3f} of the maximum log({out_dim}) = {h_max:.4f} (threshold {high})"
        )
    return None
