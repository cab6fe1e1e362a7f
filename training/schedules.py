"""Per-step schedules of DINO: learning rate, weight decay, teacher momentum and teacher temperature.

Ports of ``cosine_scheduler`` (facebookresearch/dino ``utils.py``) and of the teacher-temperature warm-up in
``DINOLoss.__init__`` (``main_dino.py``). Upstream builds arrays of length ``epochs * niter_per_ep``;
streaming sets have no natural epoch, so pathfm defines an *epoch* as ``steps_per_epoch`` optimizer steps
(a config field) and every schedule here is a per-optimizer-step array indexed by the global step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "RunSchedules",
    "build_schedules",
    "cosine_scheduler",
    "epoch_of_step",
    "scaled_lr",
    "teacher_temp_schedule",
]


def cosine_scheduler(
    base_value: float,
    final_value: float,
    total_steps: int,
    warmup_steps: int = 0,
    start_warmup_value: float = 0.0,
) -> np.ndarray:
    """Linear warm-up then half-cosine decay, one value per optimizer step.

    Same values as upstream ``cosine_scheduler(base, final, epochs, niter_per_ep, warmup_epochs,
    start_warmup_value)`` with ``total_steps = epochs * niter_per_ep`` and ``warmup_steps = warmup_epochs *
    niter_per_ep``: ``linspace(start, base, warmup_steps)`` then
    ``final + 0.5 * (base - final) * (1 + cos(pi * i / n))`` for ``i = 0 .. n - 1``, ``n = total - warmup``.

    Args:
        base_value: Value at the end of warm-up (peak).
        final_value: Value reached (asymptotically) at the last step.
        total_steps: Length of the schedule (optimizer steps).
        warmup_steps: Linear warm-up steps (clipped to ``total_steps``).
        start_warmup_value: Value at step 0 of the warm-up.

    Returns:
        Float64 array of shape (total_steps,).

    Raises:
        ValueError: If ``total_steps < 1`` or ``warmup_steps < 0``.
    """
    if total_steps < 1:
        raise ValueError(f"cosine_scheduler needs total_steps >= 1, got {total_steps}")
    if warmup_steps < 0:
        raise ValueError(f"cosine_scheduler needs warmup_steps >= 0, got {warmup_steps}")
    warmup_steps = min(warmup_steps, total_steps)
    warmup = np.linspace(start_warmup_value, base_value, warmup_steps) if warmup_steps > 0 else np.array([])
    iters = np.arange(total_steps - warmup_steps)
    n = max(len(iters), 1)
    schedule = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / n))
    out = np.concatenate((warmup, schedule))
    assert len(out) == total_steps
    return out


def teacher_temp_schedule(
    warmup_teacher_temp: float,
    teacher_temp: float,
    warmup_teacher_temp_steps: int,
    total_steps: int,
) -> np.ndarray:
    """Teacher temperature: linear warm-up then constant.

    Upstream (``DINOLoss``) is per epoch: ``concatenate(linspace(warmup_teacher_temp, teacher_temp,
    warmup_teacher_temp_epochs), ones(nepochs - warmup_teacher_temp_epochs) * teacher_temp)``; here the same
    shape per optimizer step.

    Args:
        warmup_teacher_temp: Temperature at step 0 (0.04 in DINO).
        teacher_temp: Temperature after warm-up (0.04-0.07 in DINO).
        warmup_teacher_temp_steps: Warm-up length in optimizer steps (clipped to ``total_steps``).
        total_steps: Length of the schedule.

    Returns:
        Float64 array of shape (total_steps,).
    """
    if total_steps < 1:
        raise ValueError(f"teacher_temp_schedule needs total_steps >= 1, got {total_steps}")
    w = min(max(warmup_teacher_temp_steps, 0), total_steps)
    return np.concatenate(
        (np.linspace(warmup_teacher_temp, teacher_temp, w), np.ones(total_steps - w) * teacher_temp)
    )


def epoch_of_step(step: int, steps_per_epoch: int) -> int:
    """The (0-based) epoch an optimizer step belongs to, with an epoch = ``steps_per_epoch`` optimizer steps.

    Args:
        step: 0-based global optimizer step.
        steps_per_epoch: Optimizer steps per epoch (>= 1).

    Returns:
        ``step // steps_per_epoch``.
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    return int(math.floor(step / steps_per_epoch))


@dataclass
class RunSchedules:
    """Per-optimizer-step values of a run (DINO ``main_dino.py`` "init schedulers" section).

    Attributes:
        lr: (total,) learning rate, peak = ``scaled_lr(lr, global_batch, lr_scaling_rule)``.
        weight_decay: (total,) weight decay.
        momentum: (total,) teacher EMA momentum.
        teacher_temp: (total,) teacher temperature.
        freeze_last_layer_steps: Optimizer steps during which the head's last layer gets no update.
        global_batch: Tiles per optimizer step over all processes and micro-batches.
    """

    lr: np.ndarray
    weight_decay: np.ndarray
    momentum: np.ndarray
    teacher_temp: np.ndarray
    freeze_last_layer_steps: int
    global_batch: int


def build_schedules(t_args: Any, world_size: int) -> RunSchedules:
    """The schedules of ``DINOTrainingArguments`` for ``world_size`` processes (epochs of steps_per_epoch)."""
    total, spe = t_args.total_steps, t_args.steps_per_epoch
    global_batch = t_args.per_device_batch_size * world_size * t_args.gradient_accumulation_steps
    return RunSchedules(
        lr=cosine_scheduler(
            scaled_lr(t_args.lr, global_batch, getattr(t_args, "lr_scaling_rule", "linear_wrt_256")),
            t_args.min_lr,
            total,
            warmup_steps=round(t_args.warmup_epochs * spe),
        ),
        weight_decay=cosine_scheduler(t_args.weight_decay, t_args.weight_decay_end, total),
        momentum=cosine_scheduler(t_args.momentum_teacher, 1.0, total),
        teacher_temp=run_teacher_temp(t_args, total, spe),
        freeze_last_layer_steps=round(t_args.freeze_last_layer * spe),
        global_batch=global_batch,
    )


def run_teacher_temp(t_args: Any, total: int, steps_per_epoch: int) -> np.ndarray:
    """(total,) teacher temperature per optimizer step.

    With ``teacher_temp_per_epoch`` the warm-up is facebookresearch/dino's per-epoch array
    (``DINOLoss.__init__``: one value per epoch, linear over ``warmup_teacher_temp_epochs`` epochs) held for
    the ``steps_per_epoch`` steps of each epoch; otherwise the same ramp is spread over optimizer steps, which
    is what
    facebookresearch/dinov2 does (``train.py`` ``build_schedulers``: a linear warm-up over
    ``warmup_teacher_temp_epochs * OFFICIAL_EPOCH_LENGTH`` iterations, then constant).
    """
    if not t_args.teacher_temp_per_epoch:
        warmup = round(t_args.warmup_teacher_temp_epochs * steps_per_epoch)
        return teacher_temp_schedule(t_args.warmup_teacher_temp, t_args.teacher_temp, warmup, total)
    epochs = math.ceil(total / steps_per_epoch)
    per_epoch = teacher_temp_schedule(
        t_args.warmup_teacher_temp, t_args.teacher_temp, round(t_args.warmup_teacher_temp_epochs), epochs
    )
    return np.repeat(per_epoch, steps_per_epoch)[:total]


def scaled_lr(base_lr: float, global_batch_size: int, rule: str = "linear_wrt_256") -> float:
    """Peak learning rate for a global batch, by DINO's or DINOv2's scaling rule.

    ``"linear_wrt_256"``: ``base_lr * batch / 256`` (DINO ``main_dino.py``). ``"sqrt_wrt_1024"``:
    ``base_lr * sqrt(batch / 1024)`` (DINOv2 ``dinov2/utils/config.py`` ``apply_scaling_rules_to_cfg``, base
    0.004).

    Args:
        base_lr: Learning rate at the rule's reference batch size.
        global_batch_size: Images per optimizer step over all processes and accumulation steps.
        rule: ``"linear_wrt_256"`` or ``"sqrt_wrt_1024"``.

    Returns:
        The scaled learning rate.

    Raises:
        ValueError: On an unknown rule or a non-positive batch size.
    """
    if global_batch_size < 1:
        raise ValueError(f"scaled_lr needs global_batch_size >= 1, got {global_batch_size}")
    if rule == "linear_wrt_256":
        return base_lr * global_batch_size / 256.0
    if rule == "sqrt_wrt_1024":
        return base_lr * math.sqrt(global_batch_size / 1024.0)
    raise ValueError(f"scaled_lr: rule must be linear_wrt_256 or sqrt_wrt_1024, got {rule!r}")
