"""Sinkhorn-Knopp teacher centering of DINOv2 / SwAV.

Turns teacher logits into soft assignments whose prototype marginals are uniform over the (global) batch, in
place of centering by an EMA of the teacher mean. Port of ``sinkhorn_knopp_teacher`` of
facebookresearch/dinov2 ``dinov2/loss/dino_clstoken_loss.py`` and ``ibot_patch_loss.py`` (Oquab et al. 2023,
Sec. 4; Caron et al. 2020, SwAV Sec. 3.1): 3 iterations, float32, sums all-reduced over ranks.

Differences from upstream, on purpose:
- every all-reduce is guarded by ``torch.distributed.is_initialized()`` (upstream's iBOT variant all-reduces
the
  sample count unconditionally and fails in a single process; fixed upstream in PR #590);
- the logits are shifted by their global maximum before ``exp``: the result is mathematically unchanged (the
  first normalisation divides the shift out) but stays finite for teacher logits / temperature above ~88,
  where upstream's float32 ``exp`` overflows to ``inf`` and returns NaN;
- a prototype (or sample) whose every entry underflowed to 0 after the shift (logit range over temperature
  above ~100, e.g. temperature 0.01 or a grown weight-norm magnitude) keeps mass 0 instead of becoming 0 / 0
  = NaN: the normalising sums are floored at the smallest normal float32, which leaves every other value
  bit-identical.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["sinkhorn_knopp"]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _all_reduce(tensor: Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> Tensor:
    if _distributed():
        dist.all_reduce(tensor, op=op)
    return tensor


@torch.no_grad()
def sinkhorn_knopp(
    teacher_output: Tensor, teacher_temp: float, n_iterations: int = 3, n_samples: int | Tensor | None = None
) -> Tensor:
    """Soft assignments of teacher outputs to prototypes with equipartition over the global batch.

    Args:
        teacher_output: Teacher head logits of this rank, shape (B, K) (any float dtype; computed in float32).
        teacher_temp: Teacher softmax temperature (> 0).
        n_iterations: Alternating row / column normalisations (3 in DINOv2).
        n_samples: This rank's number of rows to count in the global batch size; summed over ranks. ``None``
            counts B per rank (CLS tokens). iBOT passes its number of masked patches here, as upstream.

    Returns:
        Float32 tensor of shape (B, K) whose rows sum to 1 (assignment probabilities per sample).

    Raises:
        ValueError: If ``teacher_output`` is not 2-D or ``teacher_temp`` is not positive.
    """
    if teacher_output.ndim != 2:
        raise ValueError(f"sinkhorn_knopp expects (B, K) teacher logits, got {tuple(teacher_output.shape)}")
    if teacher_temp <= 0:
        raise ValueError(f"sinkhorn_knopp: teacher_temp must be > 0, got {teacher_temp}")
    logits = teacher_output.float() / teacher_temp
    # (K, B): prototypes on rows, samples on columns, as in the SwAV paper's notation.
    peak = logits.max() if logits.numel() else logits.new_zeros(())
    q = torch.exp(logits - _all_reduce(peak.clone(), dist.ReduceOp.MAX)).t()
    k = q.shape[0]
    local = q.shape[1] if n_samples is None else n_samples
    b = _all_reduce(torch.as_tensor(local, dtype=torch.float32, device=q.device).clone())
    tiny = torch.finfo(q.dtype).tiny
    q /= _all_reduce(q.sum()).clamp_min(tiny)
    for _ in range(n_iterations):
        # every prototype gets total mass 1 / K over the global batch
        q /= _all_reduce(q.sum(dim=1, keepdim=True)).clamp_min(tiny)
        q /= k
        # every sample gets total mass 1 / B
        q /= q.sum(dim=0, keepdim=True).clamp_min(tiny)
        q /= b
    q *= b
    return q.t()
