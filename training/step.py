"""One DINO optimizer step: k micro-batches of crops -> loss, backward, clip, freeze, AdamW, center, EMA.

Follows the body of ``train_one_epoch`` in facebookresearch/dino ``main_dino.py`` with two deliberate
differences: the center is updated once per optimizer step from the teacher outputs of all micro-batches and
ranks (so accumulation over k micro-batches gives the center of one big batch, see ``losses/dino.py``), and
the teacher EMA runs once per optimizer step, after it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from torch import Tensor, nn

from pathfm.training.fast_paths import clip_gradients_no_sync
from pathfm.training.losses.dino import DINOLoss
from pathfm.training.monitoring import entropy as row_entropy
from pathfm.training.optim import cancel_gradients_last_layer, clip_gradients
from pathfm.training.sharding import clip_gradients_sharded, is_sharded
from pathfm.training.teacher import update_teacher


class NonFiniteLossError(FloatingPointError):
    """Raised when the loss is NaN/Inf; the message names the step and the last good checkpoint."""


@dataclass
class StepOutput:
    """What one optimizer step reports.

    Attributes:
        loss: Mean over micro-batches of the all-rank mean loss (a 0-d device tensor with ``sync_free``).
        grad_norm: Global gradient norm before clipping (None if no optimizer step ran; a 0-d device tensor
            with ``sync_free``).
        teacher_entropy: Entropy of the teacher's centred, sharpened output (last micro-batch, nats); None
            when monitors were not read.
        teacher_output: Teacher logits of the last micro-batch, (2 * B, out_dim).
        terms: The objective's loss terms (mean over micro-batches of this rank), logged by name; empty for
            DINO.
    """

    loss: float | Tensor
    grad_norm: float | Tensor | None
    teacher_entropy: float | None
    teacher_output: Tensor
    terms: dict[str, float | Tensor] = field(default_factory=dict)


def train_step(
    accelerator: Accelerator,
    student: nn.Module,
    teacher: nn.Module,
    dino_loss: DINOLoss,
    optimizer: torch.optim.Optimizer,
    next_crops: Callable[[], list[Tensor]],
    *,
    teacher_temp: float,
    momentum: float,
    freeze_last_layer: bool,
    clip_grad: float,
    step_index: int,
    last_good: Path | None = None,
    sync_free: bool = False,
    read_monitors: bool = True,
) -> StepOutput:
    """Run one optimizer step over ``accelerator.gradient_accumulation_steps`` micro-batches.

    Args:
        accelerator: The run's Accelerator (the student and optimizer are prepared by it).
        student: Prepared student; ``student(crops)`` -> (n_crops * B, out_dim).
        teacher: Teacher on the device (not prepared); sees the first two (global) crops only.
        dino_loss: The loss holding the center.
        optimizer: Prepared optimizer with this step's lr / weight decay already set.
        next_crops: Returns the next micro-batch as a list of crops [(B, 3, G, G) x 2, (B, 3, L, L) x n].
        teacher_temp: Teacher temperature of this step.
        momentum: Teacher EMA momentum of this step.
        freeze_last_layer: Cancel the gradient of the head's last layer (first epoch).
        clip_grad: Per-parameter gradient-norm clip (0 = off).
        step_index: 0-based optimizer step (named in errors).
        last_good: Last complete checkpoint (named in errors).
        sync_free: No host-device sync: the loss and grad norm stay on the device and are not checked here
            (the caller checks them when it reads them, ``fast_paths.StepMeter``).
        read_monitors: Compute the teacher entropy (a host read; the loop asks only at logging steps when
            ``sync_free``).

    Returns:
        A :class:`StepOutput`.

    Raises:
        NonFiniteLossError: The all-rank mean loss is NaN/Inf (every rank raises together).
    """
    k = accelerator.gradient_accumulation_steps
    center_sum = torch.zeros(1, dino_loss.center.shape[-1], device=accelerator.device)
    rows, grad_norm = 0, None
    step_loss: float | Tensor = torch.zeros((), device=accelerator.device) if sync_free else 0.0
    for _ in range(k):
        crops = next_crops()
        # accumulate: no DDP all-reduce and no optimizer step until the last micro-batch of the step
        with accelerator.accumulate(student):
            with torch.no_grad(), accelerator.autocast():
                teacher_output = teacher(crops[:2])  # only the 2 global views pass through the teacher
            student_output = student(crops)
            loss = dino_loss(student_output, teacher_output, teacher_temp)
            # every rank must agree to stop, so the finiteness test uses the all-rank mean
            loss_all = accelerator.reduce(loss.detach().clone(), reduction="mean")
            if not sync_free and not math.isfinite(loss_all.item()):
                raise NonFiniteLossError(
                    f"loss is {loss_all.item()} at step {step_index} (0-based optimizer step); training "
                    f"stopped, last good checkpoint: {last_good or 'none saved yet'}"
                )
            accelerator.backward(loss)  # divides by gradient_accumulation_steps
            center_sum += teacher_output.detach().float().sum(dim=0, keepdim=True)
            rows += teacher_output.shape[0]
            step_loss += (loss_all.float() if sync_free else loss_all.item()) / k
            if accelerator.sync_gradients:
                if accelerator.mixed_precision == "fp16":
                    accelerator.unscale_gradients()
                grad_norm = clip_step_gradients(student, clip_grad, sync_free)
                cancel_gradients_last_layer(student, frozen=freeze_last_layer)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
    # once per optimizer step: center from all micro-batches of all ranks, then the teacher EMA
    center_sum = accelerator.reduce(center_sum, reduction="sum")
    # entropy of the last micro-batch's actual targets (centred softmax or Sinkhorn-Knopp), before the update
    entropy = None
    if read_monitors:
        entropy = float(row_entropy(dino_loss.teacher_probs(teacher_output, teacher_temp)).mean())
    dino_loss.update_center(center_sum, rows * accelerator.num_processes)
    with torch.no_grad():
        update_teacher(accelerator.unwrap_model(student), teacher, momentum)
    return StepOutput(step_loss, grad_norm, entropy, teacher_output)


def clip_step_gradients(student: nn.Module, clip_grad: float, sync_free: bool) -> float | Tensor:
    """Per-parameter clipping (upstream DINO) of full, DDP or FSDP2-sharded gradients; the global norm
    before clipping as a host float, or a device tensor with ``sync_free``."""
    if is_sharded(student):
        norm = clip_gradients_sharded(student, clip_grad)
        return norm if sync_free else float(norm)
    clip = clip_gradients_no_sync if sync_free else clip_gradients
    return clip(student, clip_grad)
