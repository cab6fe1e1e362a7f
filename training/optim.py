"""Optimizer helpers of DINO: parameter groups, per-parameter gradient clipping, last-layer freeze.

Ports of ``get_params_groups``, ``clip_gradients`` and ``cancel_gradients_last_layer`` from
facebookresearch/dino ``utils.py``. Note that DINO clips each parameter's gradient to norm ``clip`` separately
(not the global norm); pathfm keeps that behaviour and logs the global norm before clipping.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "build_optimizer",
    "cancel_gradients_last_layer",
    "clip_gradients",
    "get_params_groups",
    "set_lr_wd",
]


def get_params_groups(model: nn.Module) -> list[dict]:
    """Split trainable parameters into a weight-decayed group and a group without weight decay.

    As upstream: biases (names ending in ``.bias``) and 1-D parameters (norm weights) get no weight decay;
    parameters with ``requires_grad=False`` (e.g. the fixed weight-norm magnitude) are left out.

    Args:
        model: The student.

    Returns:
        ``[{"params": regularized}, {"params": not_regularized, "weight_decay": 0.0}]``.
    """
    regularized, not_regularized = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.endswith(".bias") or len(param.shape) == 1:
            not_regularized.append(param)
        else:
            regularized.append(param)
    return [{"params": regularized}, {"params": not_regularized, "weight_decay": 0.0}]


@torch.no_grad()
def clip_gradients(model: nn.Module, clip: float) -> float:
    """Clip every parameter's gradient to L2 norm ``clip`` (upstream ``utils.clip_gradients``).

    Args:
        model: Module whose ``.grad`` tensors are clipped in place.
        clip: Per-parameter maximum norm; ``<= 0`` only measures.

    Returns:
        The global gradient norm before clipping, ``sqrt(sum_p ||g_p||^2)`` (for logging).
    """
    total = 0.0
    for p in model.parameters():
        if p.grad is None:
            continue
        param_norm = p.grad.detach().float().norm(2)
        total += float(param_norm) ** 2
        if clip > 0:
            clip_coef = clip / (param_norm + 1e-6)
            if clip_coef < 1:
                p.grad.mul_(clip_coef.to(p.grad.dtype))
    return total**0.5


def cancel_gradients_last_layer(model: nn.Module, frozen: bool, prefix: str = "last_layer") -> None:
    """Drop the gradients of the DINO head's last layer while it is frozen (first epoch).

    With ``grad=None`` AdamW skips the parameter entirely (no update, no weight decay), as upstream.

    Args:
        model: The student (possibly DDP-wrapped: names then start with ``module.``).
        frozen: Whether the freeze is active for this step.
        prefix: Name fragment of the last layer's parameters.
    """
    if not frozen:
        return
    for name, p in model.named_parameters():
        if prefix in name:
            p.grad = None


def build_optimizer(student: nn.Module) -> torch.optim.AdamW:
    """AdamW over :func:`get_params_groups`; lr and weight decay are set per step by :func:`set_lr_wd`."""
    return torch.optim.AdamW(get_params_groups(student))


def set_lr_wd(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float) -> None:
    """This step's lr on every group and weight decay on the first (regularized) group only, as upstream."""
    for i, group in enumerate(optimizer.param_groups):
        group["lr"] = lr
        group["weight_decay"] = weight_decay if i == 0 else 0.0
