"""The DINOv2 objective (facebookresearch/dinov2, Oquab et al. 2023): DINO CLS loss + iBOT masked-patch loss +
KoLeo (or Midnight's KDE), layer-wise lr decay, per-submodule clipping, teacher EMA over backbone and heads.

Pieces: ``heads.DINOv2Wrapper`` (backbone with mask token, DINO head, iBOT head shared or separate),
``losses/dinov2_loss.py`` (weighted terms, both centers), ``masking.MaskSampler`` (block masks, per-rank RNG
saved with checkpoints), ``param_groups`` (lr / wd multipliers, clipping), ``step_dinov2`` (the step).

Where pathfm deviates from upstream, on purpose: epochs are ``steps_per_epoch`` optimizer steps of a stream;
masks are drawn on the training process (upstream: in the DataLoader's collate) from a generator seeded by
(seed, rank); the centers are updated once per optimizer step from all micro-batches (upstream has no gradient
accumulation); KoLeo skips duplicate / blank tiles (``losses/koleo.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from pathfm.training.losses.dinov2_loss import DINOv2Loss
from pathfm.training.masking import MaskSampler
from pathfm.training.networks import build_dinov2_student_teacher
from pathfm.training.param_groups import apply_optim_schedule, build_dinov2_optimizer
from pathfm.training.schedules import RunSchedules
from pathfm.training.step import StepOutput
from pathfm.training.step_dinov2 import train_step_dinov2

__all__ = ["DINOv2Objective", "LOSS_WEIGHTS"]

#: dinov2 config names of the loss weights (``DINOTrainingArguments`` fields of the same names).
LOSS_WEIGHTS = ("dino_loss_weight", "ibot_loss_weight", "koleo_loss_weight", "kde_loss_weight")


class DINOv2Objective:
    """DINOv2 networks, loss, optimizer, masks and step for one rank.

    Args:
        model_args, data_args, training_args: The run's config dataclasses.
        rank: Process index (seeds this rank's mask generator).
    """

    name = "dinov2"

    def __init__(self, model_args: Any, data_args: Any, training_args: Any, rank: int) -> None:
        self.m_args, self.d_args, self.t_args = model_args, data_args, training_args
        self.rank = rank
        self.masks: MaskSampler | None = None
        self.num_layers = 0

    def build_networks(self) -> tuple[nn.Module, nn.Module]:
        """Student and teacher ``DINOv2Wrapper`` (``networks.build_dinov2_student_teacher``); also sets up the
        mask sampler for the backbone's global-crop patch grid."""
        student, teacher = build_dinov2_student_teacher(self.m_args)
        config = student.backbone.config
        self.num_layers = config.num_hidden_layers
        side = self.d_args.global_crop_size // config.patch_size
        self.masks = MaskSampler(
            (side, side),
            self.t_args.seed,
            self.rank,
            self.t_args.mask_sample_probability,
            tuple(self.t_args.mask_ratio_min_max),
        )
        return student, teacher

    def build_loss(self, ncrops: int) -> DINOv2Loss:
        """The weighted loss with both centers (registered for checkpointing as ``loss``)."""
        m, t = self.m_args, self.t_args
        patch_dim = m.ibot_head_n_prototypes if m.ibot_separate_head else m.out_dim
        weights = {name: float(getattr(t, name)) for name in LOSS_WEIGHTS}
        return DINOv2Loss(m.out_dim, patch_dim, t.centering, t.student_temp, t.center_momentum, weights)

    def build_optimizer(self, student: nn.Module, fused: bool = False) -> torch.optim.Optimizer:
        """AdamW over dinov2's parameter groups (layer-wise decay, patch-embed lr multiplier, wd
        multipliers)."""
        t = self.t_args
        num_layers = self.num_layers or student.backbone.config.num_hidden_layers
        return build_dinov2_optimizer(student, num_layers, t.layerwise_decay, t.patch_embed_lr_mult, fused)

    def rank_objects(self) -> dict[str, Any]:
        """Per-rank state saved with checkpoints: the mask generator (``masks_state_rank<r>.json``)."""
        return {"masks": self.masks}

    def step(
        self,
        accelerator: Accelerator,
        student: nn.Module,
        teacher: nn.Module,
        loss: nn.Module,
        optimizer: torch.optim.Optimizer,
        next_crops: Any,
        schedules: RunSchedules,
        it: int,
        last_good: Path | None = None,
        sync_free: bool = False,
        read_monitors: bool = True,
    ) -> StepOutput:
        """Set step ``it``'s per-group lr / weight decay (last layer at lr 0 while frozen), then the step."""
        apply_optim_schedule(
            optimizer,
            float(schedules.lr[it]),
            float(schedules.weight_decay[it]),
            freeze_last_layer=it < schedules.freeze_last_layer_steps,
        )
        return train_step_dinov2(
            accelerator,
            student,
            teacher,
            loss,
            optimizer,
            next_crops,
            self.masks,
            teacher_temp=float(schedules.teacher_temp[it]),
            momentum=float(schedules.momentum[it]),
            clip_grad=self.t_args.clip_grad,
            step_index=it,
            last_good=last_good,
            sync_free=sync_free,
            read_monitors=read_monitors,
        )
