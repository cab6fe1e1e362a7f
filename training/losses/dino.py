"""DINO self-distillation loss with a centred, sharpened teacher.

Port of ``DINOLoss`` from facebookresearch/dino ``main_dino.py`` (Caron et al. 2021, Sec. 3.1, Algorithm 1):

    loss = mean over pairs (teacher global view a, student view b != a) of
           sum_k  -softmax((t_a - center) / teacher_temp)_k * log_softmax(s_b / student_temp)_k

averaged over the batch. The center is an EMA of the teacher's batch-mean output (momentum 0.9).

Difference from upstream, on purpose: upstream updates the center inside ``forward`` from each call's batch.
Here ``forward`` is pure and the center update is a separate call (``update_center``) that the training loop
makes once per *optimizer* step, from the sum of teacher outputs over all micro-batches and all ranks, so that
gradient accumulation over k micro-batches gives the same center as one big batch. The teacher temperature is
passed in (see ``schedules.teacher_temp_schedule``) rather than indexed by epoch inside the loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pathfm.training.losses.sinkhorn import sinkhorn_knopp

__all__ = ["CENTERINGS", "DINOLoss"]

CENTERINGS = ("centering", "sinkhorn_knopp")


class DINOLoss(nn.Module):
    """Cross-entropy between the centred/sharpened teacher and the student over all view pairs.

    Args:
        out_dim: Head output size K.
        ncrops: Student views per image (2 global + number of local crops).
        student_temp: Student softmax temperature (0.1 in DINO).
        center_momentum: EMA momentum of the center (0.9 in DINO).
        centering: Teacher targets: ``centering`` (DINO: softmax of the centred, sharpened teacher) or
            ``sinkhorn_knopp`` (DINOv2 / SwAV equipartition over the global batch, ``losses/sinkhorn.py``;
            the center is then still tracked but not used by the loss).

    Attributes:
        center: Buffer of shape (1, K), saved with the module state (``state_dict``).
    """

    center: Tensor

    def __init__(
        self,
        out_dim: int,
        ncrops: int,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        centering: str = "centering",
    ) -> None:
        super().__init__()
        if ncrops < 2:
            raise ValueError(f"DINOLoss needs at least the 2 global crops, got ncrops={ncrops}")
        if centering not in CENTERINGS:
            raise ValueError(f"DINOLoss: centering must be one of {CENTERINGS}, got {centering!r}")
        self.centering = centering
        self.out_dim = out_dim
        self.ncrops = ncrops
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student_output: Tensor, teacher_output: Tensor, teacher_temp: float) -> Tensor:
        """Compute the DINO loss (does not touch the center).

        Args:
            student_output: Student head outputs for all views, crop-major, shape (ncrops * B, K):
                rows [v * B, (v + 1) * B) are view v; views 0 and 1 are the global crops.
            teacher_output: Teacher head outputs for the 2 global views, shape (2 * B, K); no gradient flows
                through it.
            teacher_temp: Teacher softmax temperature for this step.

        Returns:
            Scalar loss (mean over the 2 * (ncrops - 1) view pairs of the batch-mean cross-entropy).

        Raises:
            ValueError: If the shapes do not match ``ncrops`` / ``out_dim``.
        """
        if student_output.shape[-1] != self.out_dim or teacher_output.shape[-1] != self.out_dim:
            raise ValueError(
                f"DINOLoss expects out_dim={self.out_dim}, got student {tuple(student_output.shape)}, "
                f"teacher {tuple(teacher_output.shape)}"
            )
        if student_output.shape[0] % self.ncrops or teacher_output.shape[0] % 2:
            raise ValueError(
                f"DINOLoss: student rows {student_output.shape[0]} not divisible by ncrops={self.ncrops} or "
                f"teacher rows {teacher_output.shape[0]} not divisible by 2"
            )
        student_out = (student_output.float() / self.student_temp).chunk(self.ncrops)
        teacher_out = self.teacher_probs(teacher_output, teacher_temp).chunk(2)
        total_loss = student_output.new_zeros((), dtype=torch.float32)
        n_loss_terms = 0
        for iq, q in enumerate(teacher_out):
            for v, s in enumerate(student_out):
                if v == iq:  # skip the case where student and teacher see the same view
                    continue
                total_loss = total_loss + torch.sum(-q * F.log_softmax(s, dim=-1), dim=-1).mean()
                n_loss_terms += 1
        return total_loss / n_loss_terms

    @torch.no_grad()
    def teacher_probs(self, teacher_output: Tensor, teacher_temp: float) -> Tensor:
        """Teacher targets (2 * B, K), rows summing to 1, float32, no gradient.

        With ``sinkhorn_knopp`` every rank must call this together (the normalisation sums are all-reduced).
        """
        if self.centering == "sinkhorn_knopp":
            return sinkhorn_knopp(teacher_output, teacher_temp)
        return F.softmax((teacher_output.float() - self.center) / teacher_temp, dim=-1)

    @torch.no_grad()
    def update_center(self, teacher_output_sum: Tensor, count: int | float | Tensor) -> None:
        """EMA update of the center from a (global) batch of teacher outputs.

        ``center <- m * center + (1 - m) * teacher_output_sum / count``. Call once per optimizer step with the
        sum over every micro-batch and rank (upstream: ``dist.all_reduce`` of the per-rank sum, divided by
        ``len(teacher_output) * world_size``).

        Args:
            teacher_output_sum: Sum of the teacher outputs over the rows, shape (1, K) or (K,).
            count: Number of rows summed (2 * images per optimizer step, all ranks).
        """
        batch_center = teacher_output_sum.reshape(1, -1).float() / count
        self.center.mul_(self.center_momentum).add_(batch_center * (1 - self.center_momentum))
