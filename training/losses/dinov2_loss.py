"""The DINOv2 objective's loss: DINO CLS terms + iBOT masked-patch term + KoLeo (or KDE), weighted as
upstream.

The sum that facebookresearch/dinov2 ``dinov2/train/ssl_meta_arch.py`` (``SSLMetaArch.forward_backward``)
back-propagates, with its config names as weights (``dinov2/configs/ssl_default_config.yaml``):

    loss = dino.loss_weight * (dino_local + dino_global)          # losses/dino_v2.py, global term x 2 inside
         + dino.koleo_loss_weight * sum_{global crop c} KoLeo(student CLS of c)   # losses/koleo.py
         + dino.kde_loss_weight * sum_c KDE(student CLS of c)      # losses/kde.py (Midnight), 0 by default
         + ibot.loss_weight * iBOT(masked patches)                 # losses/ibot.py (2 * 1/2 = 1 upstream)

This module owns the two teacher centers (DINO CLS and iBOT patch, saved in ``state_dict``), so one
registered object carries them through checkpoints.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .dino_v2 import DINOv2CLSLoss
from .ibot import IBOTPatchLoss
from .kde import kde_per_crop
from .koleo import koleo_per_crop

__all__ = ["DINOv2Loss"]


class DINOv2Loss(nn.Module):
    """Weighted DINOv2 loss with EMA or Sinkhorn-Knopp teacher centering for both the CLS and patch terms.

    Args:
        out_dim: DINO head prototypes (``dino.head_n_prototypes``).
        patch_out_dim: Prototypes of the head used for patches (``out_dim`` when the head is shared).
        centering: ``centering`` (EMA center, dinov2 default) or ``sinkhorn_knopp`` (ViT-L/g configs).
        student_temp: Student temperature (0.1).
        center_momentum: EMA momentum of both centers (0.9).
        weights: ``dino_loss_weight``, ``ibot_loss_weight``, ``koleo_loss_weight``, ``kde_loss_weight``.

    Raises:
        ValueError: On an unknown centering.
    """

    def __init__(
        self,
        out_dim: int,
        patch_out_dim: int,
        centering: str = "centering",
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        weights: dict[str, float] | None = None,
    ) -> None:
        super().__init__()
        if centering not in ("centering", "sinkhorn_knopp"):
            raise ValueError(f"DINOv2Loss: centering must be centering or sinkhorn_knopp, got {centering!r}")
        self.centering = centering
        self.dino = DINOv2CLSLoss(out_dim, student_temp, center_momentum)
        self.ibot = IBOTPatchLoss(patch_out_dim, student_temp, center_momentum)
        defaults = {"dino_loss_weight": 1.0, "ibot_loss_weight": 1.0, "koleo_loss_weight": 0.1}
        self.weights = {**defaults, "kde_loss_weight": 0.0, **(weights or {})}

    @torch.no_grad()
    def targets(self, teacher: Any, teacher_temp: float) -> tuple[Tensor, Tensor | None]:
        """Teacher targets: CLS (2 * B, K) and masked patches (M, K_ibot) or None, float32, rows sum to 1.

        Every rank must call this together with Sinkhorn-Knopp (its sums are all-reduced).

        Args:
            teacher: The teacher's ``DINOv2Output`` (``cls_logits`` of the 2 global crops, ``patch_logits``).
            teacher_temp: Teacher temperature of this step (the same for both terms, as upstream).
        """
        cls = self.dino.teacher_targets(teacher.cls_logits, teacher_temp, self.centering)
        patches = None
        if teacher.patch_logits is not None:
            patches = self.ibot.teacher_targets(teacher.patch_logits, teacher_temp, self.centering)
        return cls, patches

    def forward(
        self,
        student: Any,
        cls_targets: Tensor,
        patch_targets: Tensor | None,
        masks: Tensor | None,
        masks_weight: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """The weighted loss and its terms.

        Args:
            student: The student's ``DINOv2Output`` (all crops, masked global crops).
            cls_targets: (2 * B, K) from :meth:`targets`.
            patch_targets: (M, K_ibot) from :meth:`targets`, or None (no masks: no iBOT term).
            masks: Bool (2 * B, num_patches) masks of the global crops, or None.
            masks_weight: (M,) ``1 / max(masked patches of the crop, 1)``, or None to compute it.

        Returns:
            ``{"loss": total, "dino_local_crops_loss", "dino_global_crops_loss", "koleo_loss", "kde_loss",
            "ibot_loss"}`` (scalars; each term already weighted; KoLeo / KDE / iBOT only when their weight is
            not 0).
        """
        n_global = cls_targets.shape[0]
        s_global, s_local = student.cls_logits[:n_global], student.cls_logits[n_global:]
        local, global_ = self.dino(s_global, s_local if s_local.shape[0] else None, cls_targets)
        w = self.weights
        terms = {
            "dino_local_crops_loss": w["dino_loss_weight"] * local,
            "dino_global_crops_loss": w["dino_loss_weight"] * global_,
        }
        if w["koleo_loss_weight"]:
            terms["koleo_loss"] = w["koleo_loss_weight"] * koleo_per_crop(student.cls_tokens)
        if w["kde_loss_weight"]:
            terms["kde_loss"] = w["kde_loss_weight"] * kde_per_crop(student.cls_tokens)
        if w["ibot_loss_weight"] and patch_targets is not None:
            ibot = self.ibot.forward_masked(student.patch_logits, patch_targets, masks, masks_weight)
            terms["ibot_loss"] = w["ibot_loss_weight"] * ibot
        return {"loss": sum(terms.values()), **terms}

    @torch.no_grad()
    def update_centers(self, teacher_cls: Tensor, teacher_patches: Tensor | None) -> None:
        """EMA update of both centers (``centering`` only; Sinkhorn-Knopp uses none). All ranks call together.

        Args:
            teacher_cls: (rows, K) teacher CLS logits of this optimizer step (all micro-batches).
            teacher_patches: (M, K_ibot) teacher logits of this step's masked patches, or None.
        """
        if self.centering != "centering":
            return
        self.dino.update_center(teacher_cls)
        if teacher_patches is not None:
            self.ibot.update_center(teacher_patches)
