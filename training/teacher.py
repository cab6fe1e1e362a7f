"""Teacher network of DINO: an exponential moving average (EMA) of the student.

Port of the momentum update in facebookresearch/dino ``main_dino.py`` (``train_one_epoch``: "EMA update for
the teacher"): ``theta_t <- m * theta_t + (1 - m) * theta_s``, with ``m`` following a cosine schedule
0.996 -> 1 (``schedules.cosine_scheduler``). The teacher never receives gradients.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.distributed.tensor import DTensor

__all__ = ["local", "make_teacher", "update_teacher"]


def make_teacher(student: nn.Module, teacher: nn.Module | None = None) -> nn.Module:
    """Initialise the teacher with the student's weights and switch off its gradients.

    Upstream builds the teacher without drop path and loads ``student.state_dict()`` into it; pass such a
    module as ``teacher`` (same parameter names). Without it, a deep copy of the student is used.

    Args:
        student: The student (unwrapped, not DDP).
        teacher: Optional teacher module of the same architecture.

    Returns:
        The teacher, in eval mode except its BatchNorm layers (batch statistics), with
        ``requires_grad=False`` on every parameter.
    """
    if teacher is None:
        teacher = copy.deepcopy(student)
    else:
        teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad_(False)
    teacher.eval()
    # BatchNorm (e.g. ``use_bn_in_head``) normalises with the batch's statistics, as the upstream teacher
    # (never switched to eval) does: the EMA updates parameters only, so running statistics would stay at
    # their initial values and the teacher would silently normalise with stale ones.
    for module in teacher.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm)):
            module.train()
    return teacher


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a ``DTensor`` (a view: in-place ops change the parameter); other tensors as is."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


@torch.no_grad()
def update_teacher(student: nn.Module, teacher: nn.Module, momentum: float) -> None:
    """EMA update ``teacher <- momentum * teacher + (1 - momentum) * student``, parameter by parameter.

    Args:
        student: The student (unwrapped from DDP), same parameter names as the teacher.
        teacher: The teacher, updated in place.
        momentum: EMA momentum in [0, 1]: 0 copies the student, 1 leaves the teacher unchanged.

    Raises:
        ValueError: If the momentum is outside [0, 1] or the parameter names differ.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"teacher momentum must be in [0, 1], got {momentum}")
    s_params = dict(student.named_parameters())
    t_params = dict(teacher.named_parameters())
    if s_params.keys() != t_params.keys():
        raise ValueError(
            f"student/teacher parameter names differ: only in student "
            f"{sorted(s_params.keys() - t_params.keys())}, "
            f"only in teacher {sorted(t_params.keys() - s_params.keys())}"
        )
    for name, pt in t_params.items():
        # sharded (FSDP2) networks: both are DTensors sharded alike (sharding.check_same_sharding), so the
        # update runs on this rank's local shards, without a gather
        pt, ps = local(pt), local(s_params[name].detach())
        pt.mul_(momentum).add_(ps.to(pt.dtype), alpha=1.0 - momentum)
