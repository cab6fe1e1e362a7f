"""DINOv2's DINO CLS-token loss: local and global student crops against the two teacher global crops.

Port of ``DINOLoss`` of facebookresearch/dinov2 ``dinov2/loss/dino_clstoken_loss.py`` together with the way
``dinov2/train/ssl_meta_arch.py`` (``SSLMetaArch.forward_backward``) weights its two terms (Oquab et al.
2023, Sec. 4):

    local  = sum_{l, g} CE(teacher_g, student_local_l) / (n_global_terms + n_local_terms)
    global = sum_{g}    CE(teacher_{1-g}, student_global_g) / (n_global_terms + n_local_terms)

with CE the batch-mean cross-entropy ``-sum_k t_k log_softmax(s / student_temp)_k``, ``n_global_terms = 2``,
``n_local_terms = max(2 * n_local_crops, 1)`` (upstream's ``max`` keeps the denominator 3, not 2, when there
are no local crops; kept for equality). Student global crop g is matched to teacher crop 1 - g: upstream swaps
the teacher chunks before its head, pathfm swaps inside the loss so callers keep crop order everywhere.

Teacher targets come from ``teacher_targets``: softmax of the centred, sharpened teacher (``centering``, EMA
center as in DINO) or Sinkhorn-Knopp (``sinkhorn_knopp``). As in ``training/loss.py`` the center update is a
separate call, made once per optimizer step after the targets of that step were computed (upstream applies the
update queued by the previous step before centering, which is the same order).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .sinkhorn import sinkhorn_knopp

__all__ = ["DINOv2CLSLoss", "DINOv2CLSLossOutput", "Centering", "soft_cross_entropy"]

Centering = Literal["centering", "sinkhorn_knopp"]


class DINOv2CLSLossOutput(NamedTuple):
    """The two logged terms; their sum is the DINO part of the DINOv2 loss (before ``dino.loss_weight``)."""

    local_crops_loss: Tensor
    global_crops_loss: Tensor


def soft_cross_entropy(student_logits: Tensor, teacher_probs: Tensor, student_temp: float) -> Tensor:
    """Per-row cross-entropy ``-sum_k t_k log_softmax(s / student_temp)_k`` in float32.

    Args:
        student_logits: (..., K) student head outputs.
        teacher_probs: (..., K) teacher target distributions (rows sum to 1).
        student_temp: Student softmax temperature.

    Returns:
        (...) float32 losses.
    """
    return -(teacher_probs.float() * F.log_softmax(student_logits.float() / student_temp, dim=-1)).sum(dim=-1)


class DINOv2CLSLoss(nn.Module):
    """DINO CLS loss of DINOv2 with EMA or Sinkhorn-Knopp teacher centering.

    Args:
        out_dim: Number of prototypes K (``dino.head_n_prototypes``, 65536 in DINOv2).
        student_temp: Student temperature (0.1 in DINOv2).
        center_momentum: EMA momentum of the center (0.9 in DINOv2).

    Attributes:
        center: Buffer (1, K), float32, saved in ``state_dict``; used only by ``centering="centering"``.
    """

    center: Tensor

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    @torch.no_grad()
    def teacher_targets(self, teacher_output: Tensor, teacher_temp: float, centering: Centering) -> Tensor:
        """Teacher target distributions for the 2 global crops.

        Args:
            teacher_output: Teacher head logits, crop-major (2 * B, K): rows [g * B, (g + 1) * B) are crop g.
            teacher_temp: Teacher temperature of this step.
            centering: ``"centering"`` (EMA center, no update here) or ``"sinkhorn_knopp"`` (3 iterations).

        Returns:
            (2 * B, K) float32 probabilities, same row order as ``teacher_output``.

        Raises:
            ValueError: On a wrong last dimension or an unknown ``centering``.
        """
        self._check_dim(teacher_output, "teacher_output")
        if centering == "centering":
            return F.softmax((teacher_output.float() - self.center) / teacher_temp, dim=-1)
        if centering == "sinkhorn_knopp":
            return sinkhorn_knopp(teacher_output, teacher_temp, n_iterations=3)
        raise ValueError(f"DINOv2CLSLoss: centering must be centering or sinkhorn_knopp, not {centering!r}")

    def forward(
        self, student_global: Tensor, student_local: Tensor | None, teacher_probs: Tensor
    ) -> DINOv2CLSLossOutput:
        """Local-crop and global-crop terms of the DINOv2 CLS loss.

        Args:
            student_global: Student head logits of the 2 global crops, crop-major (2 * B, K).
            student_local: Student head logits of the local crops, crop-major (n_local * B, K), or ``None``.
            teacher_probs: ``teacher_targets`` output (2 * B, K), crop order (not swapped).

        Returns:
            ``DINOv2CLSLossOutput``; ``local_crops_loss`` is 0 without local crops.

        Raises:
            ValueError: If the row counts are not multiples of the batch B = teacher rows / 2.
        """
        for name, tensor in (("student_global", student_global), ("teacher_probs", teacher_probs)):
            self._check_dim(tensor, name)
        if teacher_probs.shape[0] % 2 or student_global.shape[0] != teacher_probs.shape[0]:
            raise ValueError(
                f"DINOv2CLSLoss: student_global {tuple(student_global.shape)} and teacher_probs "
                f"{tuple(teacher_probs.shape)} must both hold 2 * B rows"
            )
        batch = teacher_probs.shape[0] // 2
        n_local = 0
        if student_local is not None:
            self._check_dim(student_local, "student_local")
            if student_local.shape[0] % batch:
                raise ValueError(
                    f"DINOv2CLSLoss: student_local has {student_local.shape[0]} rows, "
                    f"not a multiple of B={batch}"
                )
            n_local = student_local.shape[0] // batch
        denominator = 2 + max(2 * n_local, 1)
        teacher_chunks = teacher_probs.chunk(2)
        local_loss = student_global.new_zeros((), dtype=torch.float32)
        for student_chunk in student_local.chunk(n_local) if n_local else ():
            for teacher_chunk in teacher_chunks:
                pair = soft_cross_entropy(student_chunk, teacher_chunk, self.student_temp)
                local_loss = local_loss + pair.mean()
        swapped = torch.cat((teacher_chunks[1], teacher_chunks[0]))
        # upstream takes one mean over both global crops and multiplies it by 2 (loss_scales)
        global_loss = soft_cross_entropy(student_global, swapped, self.student_temp).mean() * 2
        return DINOv2CLSLossOutput(local_loss / denominator, global_loss / denominator)

    @torch.no_grad()
    def update_center(self, teacher_output: Tensor) -> None:
        """EMA update of the center from this step's teacher logits, averaged over all rows of all ranks.

        Args:
            teacher_output: (2 * B, K) teacher head logits of this rank (the same tensor given to
                ``teacher_targets``).
        """
        self._check_dim(teacher_output, "teacher_output")
        total = teacher_output.float().sum(dim=0, keepdim=True)
        count = torch.tensor(float(teacher_output.shape[0]), device=total.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(total)
            dist.all_reduce(count)
        self.center.mul_(self.center_momentum).add_(total / count, alpha=1 - self.center_momentum)

    def _check_dim(self, tensor: Tensor, name: str) -> None:
        if tensor.ndim != 2 or tensor.shape[-1] != self.out_dim:
            raise ValueError(
                f"DINOv2CLSLoss: {name} must be (rows, out_dim={self.out_dim}), got {tuple(tensor.shape)}"
            )
