"""One DINOv2 optimizer step: k micro-batches of crops + iBOT masks -> weighted loss, backward, per-submodule
clipping, AdamW, centers, teacher EMA over backbone and heads.

Follows ``SSLMetaArch.forward_backward`` and the body of ``do_train`` in facebookresearch/dinov2
(``dinov2/train/ssl_meta_arch.py``, ``dinov2/train/train.py``): the teacher sees the 2 unmasked global crops,
the student the masked global crops and the local crops; the loss is ``losses/dinov2_loss.py``; gradients
are clipped per submodule (backbone, dino_head, ibot_head) to ``clip_grad``; the last layer is frozen through
its lr (``param_groups.apply_optim_schedule``, set by the caller). As ``step.py`` for DINO, the centers are
updated once per optimizer step from the teacher outputs of all micro-batches, after the targets were
computed, and the EMA runs once per optimizer step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator
from torch import Tensor, nn

from pathfm.training.losses.dinov2_loss import DINOv2Loss
from pathfm.training.masking import MaskSampler
from pathfm.training.monitoring import entropy as row_entropy
from pathfm.training.param_groups import clip_grad_norm_per_module
from pathfm.training.step import NonFiniteLossError, StepOutput
from pathfm.training.teacher import update_teacher

__all__ = ["train_step_dinov2"]


def train_step_dinov2(
    accelerator: Accelerator,
    student: nn.Module,
    teacher: nn.Module,
    loss_fn: DINOv2Loss,
    optimizer: torch.optim.Optimizer,
    next_crops: Callable[[], list[Tensor]],
    masks: MaskSampler,
    *,
    teacher_temp: float,
    momentum: float,
    clip_grad: float,
    step_index: int,
    last_good: Path | None = None,
    sync_free: bool = False,
    read_monitors: bool = True,
) -> StepOutput:
    """Run one optimizer step over ``accelerator.gradient_accumulation_steps`` micro-batches.

    Args:
        accelerator: The run's Accelerator (student and optimizer prepared by it).
        student: Prepared ``DINOv2Wrapper``.
        teacher: ``DINOv2Wrapper`` on the device, not prepared, no gradients.
        loss_fn: The weighted loss holding both centers.
        optimizer: Prepared optimizer whose groups' lr / weight decay are already set for this step.
        next_crops: Returns the next micro-batch [(B, 3, G, G) x 2, (B, 3, L, L) x n].
        masks: This rank's mask sampler (advanced once per micro-batch).
        teacher_temp: Teacher temperature of this step (DINO and iBOT targets).
        momentum: Teacher EMA momentum of this step.
        clip_grad: Max gradient norm per submodule (0 = measure only).
        step_index: 0-based optimizer step (named in errors).
        last_good: Last complete checkpoint (named in errors).
        sync_free: Keep the loss and grad norm on the device (checked by the caller when read).
        read_monitors: Compute the teacher entropy of the CLS targets (a host read).

    Returns:
        A :class:`StepOutput` whose ``terms`` hold the weighted loss terms (this rank, micro-batch mean).

    Raises:
        NonFiniteLossError: The all-rank mean loss is NaN/Inf (every rank raises together).
    """
    k, device = accelerator.gradient_accumulation_steps, accelerator.device
    step_loss: float | Tensor = torch.zeros((), device=device) if sync_free else 0.0
    terms: dict[str, Tensor] = {}
    teacher_cls, teacher_patches, grad_norm, cls_targets = [], [], None, None
    for _ in range(k):
        crops = next_crops()
        batch = masks(2 * crops[0].shape[0])  # on the CPU: the loss counts masked patches without a sync
        masks_dev, indices = (t.to(device, non_blocking=True) for t in (batch.masks, batch.mask_indices))
        with accelerator.accumulate(student):
            with torch.no_grad(), accelerator.autocast():
                t_out = teacher(crops[:2], masks_dev, mask_input=False, mask_indices=indices)
            cls_targets, patch_targets = loss_fn.targets(t_out, teacher_temp)
            with accelerator.autocast():
                s_out = student(crops, masks_dev, mask_indices=indices)
            weight = batch.masks_weight.to(device, non_blocking=True)
            out = loss_fn(s_out, cls_targets, patch_targets, batch.masks, weight)
            loss = out["loss"]
            loss_all = accelerator.reduce(loss.detach().clone(), reduction="mean")
            if not sync_free and not math.isfinite(loss_all.item()):
                raise NonFiniteLossError(
                    f"loss is {loss_all.item()} at step {step_index} (0-based optimizer step); training "
                    f"stopped, last good checkpoint: {last_good or 'none saved yet'}"
                )
            accelerator.backward(loss)
            step_loss += (loss_all.float() if sync_free else loss_all.item()) / k
            for name, value in out.items():
                if name != "loss":
                    terms[name] = terms.get(name, 0.0) + value.detach().float() / k
            teacher_cls.append(t_out.cls_logits.detach().float())
            if t_out.patch_logits is not None:
                teacher_patches.append(t_out.patch_logits.detach().float())
            if accelerator.sync_gradients:
                if accelerator.mixed_precision == "fp16":
                    accelerator.unscale_gradients()
                norms = clip_grad_norm_per_module(accelerator.unwrap_model(student).head_modules(), clip_grad)
                total = torch.stack([n**2 for n in norms.values()]).sum().sqrt()
                grad_norm = total if sync_free else float(total)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
    entropy = float(row_entropy(cls_targets).mean()) if read_monitors else None
    loss_fn.update_centers(torch.cat(teacher_cls), torch.cat(teacher_patches) if teacher_patches else None)
    with torch.no_grad():
        update_teacher(accelerator.unwrap_model(student), teacher, momentum)
    if not sync_free:
        terms = {name: float(value) for name, value in terms.items()}
    return StepOutput(step_loss, grad_norm, entropy, teacher_cls[-1], terms)
