"""The DINO objective (facebookresearch/dino): the networks, loss, optimizer and step that ``training/`` had
before objectives were pluggable, unchanged (``networks``, ``losses/dino.py``, ``optim``, ``step``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from pathfm.training.losses.dino import DINOLoss
from pathfm.training.networks import build_student_teacher
from pathfm.training.optim import build_optimizer, set_lr_wd
from pathfm.training.schedules import RunSchedules
from pathfm.training.step import StepOutput, train_step

__all__ = ["DINOObjective"]


class DINOObjective:
    """DINO: ``MultiCropWrapper`` student / teacher, ``DINOLoss``, AdamW over two groups, ``step.train_step``.

    Args:
        model_args, data_args, training_args: The run's config dataclasses.
        rank: Process index (unused: DINO has no per-rank state besides the tile stream).
    """

    name = "dino"

    def __init__(self, model_args: Any, data_args: Any, training_args: Any, rank: int) -> None:
        self.m_args, self.d_args, self.t_args = model_args, data_args, training_args

    def build_networks(self) -> tuple[nn.Module, nn.Module]:
        """Student and teacher (``networks.build_student_teacher``)."""
        return build_student_teacher(self.m_args)

    def build_loss(self, ncrops: int) -> DINOLoss:
        """The DINO loss with its center (registered for checkpointing as ``loss``)."""
        t = self.t_args
        return DINOLoss(self.m_args.out_dim, ncrops, t.student_temp, t.center_momentum, t.centering)

    def build_optimizer(self, student: nn.Module, fused: bool = False) -> torch.optim.Optimizer:
        """AdamW, weight decay on weights only (``optim.build_optimizer``)."""
        return build_optimizer(student, fused=fused)

    def rank_objects(self) -> dict[str, Any]:
        """Per-rank state saved with checkpoints: none."""
        return {}

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
        """Set step ``it``'s lr / weight decay, then ``step.train_step``."""
        set_lr_wd(optimizer, float(schedules.lr[it]), float(schedules.weight_decay[it]))
        return train_step(
            accelerator,
            student,
            teacher,
            loss,
            optimizer,
            next_crops,
            teacher_temp=float(schedules.teacher_temp[it]),
            momentum=float(schedules.momentum[it]),
            freeze_last_layer=it < schedules.freeze_last_layer_steps,
            clip_grad=self.t_args.clip_grad,
            step_index=it,
            last_good=last_good,
            sync_free=sync_free,
            read_monitors=read_monitors,
        )
