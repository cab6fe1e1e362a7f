"""DINOv2 parameter groups: layer-wise lr decay, patch-embedding lr multiplier, weight-decay multipliers, and
gradient clipping per submodule.

Port of ``get_vit_lr_decay_rate`` / ``get_params_groups_with_decay`` / ``fuse_params_groups`` of
facebookresearch/dinov2 ``dinov2/utils/param_groups.py`` and of the per-submodule ``clip_grad_norm_`` of
``dinov2/train/train.py``, for pathfm's parameter names (``modeling_pathfm_vit.py``):

- lr multiplier ``layerwise_decay ** (L + 1 - layer_id)`` with ``layer_id`` 0 for ``embeddings.*`` (CLS,
  registers, mask token, position and patch embeddings), ``i + 1`` for ``layers.i.*`` and ``L + 1`` for the
  rest (final LayerNorm, heads): the last block keeps ``layerwise_decay``, the embeddings get the smallest lr;
- ``patch_embed_lr_mult`` on top for ``embeddings.patch_embeddings.*`` (0.2 in DINOv2);
- weight-decay multiplier 0 for biases, norms (``norm`` in the name) and LayerScale ``gamma``, 1 otherwise.
  DINOv2 (like DINO) does decay the CLS / register / mask tokens and the position embeddings;
  ``no_weight_decay_on_tokens=True`` exempts them too (timm's ``no_weight_decay`` convention);
- ``is_last_layer`` for the head's ``last_layer`` (its lr is 0 while frozen in the first epoch).

The optimizer step sets ``lr = schedule_lr * lr_multiplier`` and
``weight_decay = schedule_wd * wd_multiplier`` per group, as dinov2's ``apply_optim_scheduler``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

__all__ = [
    "apply_optim_schedule",
    "build_dinov2_optimizer",
    "clip_grad_norm_per_module",
    "fuse_params_groups",
    "layer_id",
    "params_groups_with_decay",
]

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_TOKENS = ("cls_token", "register_tokens", "mask_token", "position_embeddings")


def layer_id(name: str, num_layers: int) -> int:
    """Depth for layer-wise lr decay: 0 embeddings, ``i + 1`` block i, ``num_layers + 1`` the rest."""
    if "embeddings." in name:
        return 0
    match = _LAYER.search(name)
    return int(match.group(1)) + 1 if match else num_layers + 1


def params_groups_with_decay(
    model: nn.Module, num_layers: int, layerwise_decay: float = 1.0, patch_embed_lr_mult: float = 1.0,
    no_weight_decay_on_tokens: bool = False,
) -> list[dict]:
    """One group per trainable parameter with its lr / wd multipliers (``get_params_groups_with_decay``).

    Args:
        model: A backbone (``PathFMViTModel``), a head, or a wrapper of both (names are matched by fragment,
            so prefixes such as ``backbone.`` do not matter).
        num_layers: Transformer blocks L of the backbone (``config.num_hidden_layers``); any value for a head
            alone (all its parameters are "rest" and get multiplier 1).
        layerwise_decay: Per-block lr decay (0.9 in DINOv2's ViT-L recipe, 1.0 = off).
        patch_embed_lr_mult: Extra lr multiplier of the patch embedding (0.2 in DINOv2).
        no_weight_decay_on_tokens: Also exempt CLS / register / mask tokens and position embeddings.

    Returns:
        Dicts with keys ``params`` (one tensor), ``name``, ``lr_multiplier``, ``wd_multiplier``,
        ``is_last_layer``, in ``named_parameters`` order; frozen parameters are left out.
    """
    groups = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr_multiplier = layerwise_decay ** (num_layers + 1 - layer_id(name, num_layers))
        if "patch_embeddings" in name:
            lr_multiplier *= patch_embed_lr_mult
        no_decay = name.endswith(".bias") or "norm" in name or "gamma" in name
        no_decay |= no_weight_decay_on_tokens and any(token in name for token in _TOKENS)
        groups.append(
            {
                "params": param,
                "name": name,
                "lr_multiplier": lr_multiplier,
                "wd_multiplier": 0.0 if no_decay else 1.0,
                "is_last_layer": "last_layer" in name,
            }
        )
    return groups


def fuse_params_groups(
    groups: Iterable[dict], keys: tuple[str, ...] = ("lr_multiplier", "wd_multiplier", "is_last_layer")
) -> list[dict]:
    """Merge per-parameter groups with equal ``keys`` into optimizer param groups (fewer foreach launches).

    Args:
        groups: ``params_groups_with_decay`` output.
        keys: Fields that must agree within a fused group.

    Returns:
        Dicts with ``params`` (list of tensors) and the ``keys`` fields, in order of first appearance.
    """
    fused: dict[tuple, dict] = {}
    for group in groups:
        ident = tuple(group[key] for key in keys)
        if ident not in fused:
            fused[ident] = {"params": [], **{key: group[key] for key in keys}}
        fused[ident]["params"].append(group["params"])
    return list(fused.values())


@torch.no_grad()
def clip_grad_norm_per_module(modules: Mapping[str, nn.Module], max_norm: float) -> dict[str, Tensor]:
    """Clip the gradient norm of each submodule (backbone, dino_head, ibot_head) separately, as DINOv2.

    Args:
        modules: Student submodules by name.
        max_norm: Maximum total L2 norm per submodule (``optim.clip_grad``, 3.0 in DINOv2); ``<= 0`` only
            measures.

    Returns:
        Each submodule's total gradient norm before clipping (float32 scalars), for logging.
    """
    norms = {}
    for name, module in modules.items():
        params = [p for p in module.parameters() if p.grad is not None]
        limit = max_norm if max_norm > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, limit)
        # sharded (FSDP2) gradients give a DTensor norm: the full value, as every rank logs the same number
        norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
        norms[name] = norm.float()
    return norms


def build_dinov2_optimizer(
    student: nn.Module,
    num_layers: int,
    layerwise_decay: float,
    patch_embed_lr_mult: float,
    fused: bool = False,
) -> torch.optim.AdamW:
    """AdamW (betas 0.9, 0.999 as dinov2's ``adamw_beta1/2``) over the fused DINOv2 parameter groups.

    Args:
        student: The student wrapper (backbone + heads), not yet prepared by Accelerate.
        num_layers: Backbone blocks L.
        layerwise_decay: ``optim.layerwise_decay``.
        patch_embed_lr_mult: ``optim.patch_embed_lr_mult``.
        fused: One kernel per group (``--optim adamw_torch_fused``).

    Returns:
        The optimizer; :func:`apply_optim_schedule` sets each group's lr and weight decay per step.
    """
    groups = params_groups_with_decay(student, num_layers, layerwise_decay, patch_embed_lr_mult)
    groups = fuse_params_groups(groups)
    return torch.optim.AdamW(groups, betas=(0.9, 0.999), **({"fused": True} if fused else {}))


def apply_optim_schedule(
    optimizer: torch.optim.Optimizer, lr: float, wd: float, freeze_last_layer: bool
) -> None:
    """This step's lr and weight decay per group, as dinov2's ``apply_optim_scheduler``.

    ``lr * lr_multiplier`` (0 for the head's last layer while frozen: dinov2's ``last_layer_lr`` schedule) and
    ``wd * wd_multiplier``.
    """
    for group in optimizer.param_groups:
        frozen = freeze_last_layer and group["is_last_layer"]
        group["lr"] = (0.0 if frozen else lr) * group["lr_multiplier"]
        group["weight_decay"] = wd * group["wd_multiplier"]
