"""iBOT masked-patch loss of DINOv2: student patch tokens at masked positions predict the teacher's.

Port of ``iBOTPatchLoss.forward_masked`` (and its teacher centering) of facebookresearch/dinov2
``dinov2/loss/ibot_patch_loss.py`` (Zhou et al. 2022, iBOT Sec. 3.2; Oquab et al. 2023, Sec. 4):

    loss = -(1 / n_crops) * sum_{masked patches p of crop i} (1 / max(m_i, 1)) * sum_k t_pk log_softmax(s_p /
    T)_k

where ``m_i`` is the number of masked patches of global-crop image i and ``n_crops`` counts every global-crop
image, masked or not (crops with no mask add nothing to the sum but count in the mean, as upstream).
``SSLMetaArch`` then multiplies this by ``loss_scales * ibot_loss_scale = 2 * 1/2 = 1``.

Only masked patches go through the head: callers gather them with ``masks.flatten().nonzero()`` indices, row
order = flattened (crop image, patch) order, the same order for student and teacher.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .dino_v2 import Centering, soft_cross_entropy
from .sinkhorn import sinkhorn_knopp

__all__ = ["IBOTPatchLoss", "masked_patch_weights"]


def masked_patch_weights(masks: Tensor) -> Tensor:
    """Weight ``1 / max(m_i, 1)`` of each masked patch, in ``masks.flatten().nonzero()`` order.

    Args:
        masks: Bool (n_crops, num_patches), True where the student's patch was replaced by the mask token.

    Returns:
        (M,) float32, M = ``masks.sum()``.
    """
    per_crop = 1.0 / masks.sum(dim=-1).clamp(min=1).float()
    return per_crop.unsqueeze(-1).expand_as(masks)[masks]


class IBOTPatchLoss(nn.Module):
    """Masked-patch self-distillation with EMA or Sinkhorn-Knopp teacher centering.

    Args:
        patch_out_dim: Prototypes K of the head used for patches (the DINO head's when shared,
            ``ibot.head_n_prototypes`` when separate).
        student_temp: Student temperature (0.1 in DINOv2).
        center_momentum: EMA momentum of the center (0.9 in DINOv2).

    Attributes:
        center: Buffer (1, K), float32 (upstream stores (1, 1, K); same values).
    """

    center: Tensor

    def __init__(self, patch_out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        self.patch_out_dim = patch_out_dim
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, patch_out_dim))

    @torch.no_grad()
    def teacher_targets(self, teacher_patches: Tensor, teacher_temp: float, centering: Centering) -> Tensor:
        """Teacher target distributions of the masked patches.

        Args:
            teacher_patches: Teacher head logits of this rank's masked patches, (M, K).
            teacher_temp: Teacher temperature of this step.
            centering: ``"centering"`` (EMA center) or ``"sinkhorn_knopp"`` (3 iterations, global batch size =
                masked patches summed over ranks, as upstream).

        Returns:
            (M, K) float32 probabilities.

        Raises:
            ValueError: On a wrong shape or an unknown ``centering``.
        """
        self._check(teacher_patches, "teacher_patches")
        if centering == "centering":
            return F.softmax((teacher_patches.float() - self.center) / teacher_temp, dim=-1)
        if centering == "sinkhorn_knopp":
            return sinkhorn_knopp(teacher_patches, teacher_temp, n_samples=teacher_patches.shape[0])
        raise ValueError(f"IBOTPatchLoss: centering must be centering or sinkhorn_knopp, not {centering!r}")

    def forward_masked(
        self,
        student_patches: Tensor,
        teacher_probs: Tensor,
        masks: Tensor,
        masks_weight: Tensor | None = None,
    ) -> Tensor:
        """iBOT loss over the masked patches.

        Args:
            student_patches: Student head logits of the masked patches, (M, K).
            teacher_probs: ``teacher_targets`` output for the same patches, (M, K).
            masks: Bool (n_crops, num_patches) masks of all global-crop images (n_crops = 2 * B).
            masks_weight: Optional precomputed ``masked_patch_weights(masks)``, (M,).

        Returns:
            Scalar float32 loss; 0 when no patch is masked.

        Raises:
            ValueError: If M differs between the inputs and ``masks.sum()``.
        """
        self._check(student_patches, "student_patches")
        self._check(teacher_probs, "teacher_probs")
        if masks.dtype != torch.bool or masks.ndim != 2:
            raise ValueError(f"IBOTPatchLoss: masks must be bool (n_crops, num_patches), got {masks.dtype} "
                             f"{tuple(masks.shape)}")
        n_masked = int(masks.sum())
        if student_patches.shape[0] != n_masked or teacher_probs.shape[0] != n_masked:
            raise ValueError(
                f"IBOTPatchLoss: {n_masked} masked patches in masks but student has "
                f"{student_patches.shape[0]} "
                f"rows and teacher {teacher_probs.shape[0]}"
            )
        weights = masked_patch_weights(masks) if masks_weight is None else masks_weight.float()
        loss = soft_cross_entropy(student_patches, teacher_probs, self.student_temp)
        return (loss * weights).sum() / masks.shape[0]

    @torch.no_grad()
    def update_center(self, teacher_patches: Tensor) -> None:
        """EMA update of the center with the mean teacher logit over this rank's masked patches, averaged
        over ranks (upstream averages per-rank means, not all patches; kept for equality).

        Args:
            teacher_patches: (M, K) teacher head logits of the masked patches. A rank with M = 0 contributes a
                zero mean (upstream's mean of nothing is NaN, which would poison the center for good).
        """
        self._check(teacher_patches, "teacher_patches")
        rows = max(teacher_patches.shape[0], 1)
        batch_center = teacher_patches.float().sum(dim=0, keepdim=True) / rows
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_center)
            batch_center /= dist.get_world_size()
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)

    def _check(self, tensor: Tensor, name: str) -> None:
        if tensor.ndim != 2 or tensor.shape[-1] != self.patch_out_dim:
            raise ValueError(
                f"IBOTPatchLoss: {name} must be (masked patches, {self.patch_out_dim}), "
                f"got {tuple(tensor.shape)}"
            )
