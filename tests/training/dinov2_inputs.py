"""Fixed inputs of the DINOv2 reference-equality tests and of the script that produced their expected values.

Closed-form (sines), so that the values do not depend on a random generator's implementation. The scripts in
``dinov2_reference/`` regenerate every expected value from the upstream code.
"""

import zlib

import torch


def wave(rows: int, cols: int, phase: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    """(rows, cols) float32 ``scale * sin(0.37 * i + 0.11 * i * i / cols + phase)`` over the flat index i."""
    i = torch.arange(rows * cols, dtype=torch.float64)
    return (scale * torch.sin(0.37 * i + 0.11 * i * i / cols + phase)).reshape(rows, cols).float()


def param_value(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Fixed value of the parameter ``name``, in facebookresearch/dinov2 naming (``blocks.0.ls1.gamma``).

    Norm weights are near 1, everything else small, so that the forward pass stays well conditioned.
    """
    numel = 1
    for size in shape:
        numel *= size
    phase = zlib.crc32(name.encode()) % 1000 / 100
    base = 1.0 if ("norm" in name and name.endswith("weight")) else 0.0
    return (base + wave(1, numel, phase, 0.1)).reshape(shape)


def dinov2_names(model: torch.nn.Module) -> dict[str, str]:
    """pathfm backbone parameter name -> facebookresearch/dinov2 name (via the converter's timm table; dinov2
    differs from timm in ``register_tokens`` and ``mask_token``; ``position_embeddings`` maps to
    ``pos_embed``)."""
    from pathfm.modeling.convert_timm_to_pathfm import pathfm_to_timm_state_dict

    config = model.config.__class__(**{**model.config.to_dict(), "use_mask_token": False})
    ours = {name: p for name, p in model.named_parameters() if name != "embeddings.mask_token"}
    by_tensor = {id(p): name for name, p in ours.items()}
    timm = pathfm_to_timm_state_dict(ours, config)
    names = {by_tensor[id(p)]: key.replace("reg_token", "register_tokens") for key, p in timm.items()}
    if model.config.use_mask_token:
        names["embeddings.mask_token"] = "mask_token"
    return names


@torch.no_grad()
def fill_like_dinov2(model: torch.nn.Module, zero_cls_position: bool = False, prefix: str = "") -> None:
    """Give a pathfm ViT (``pos_embed_has_prefix_tokens=False``) the ``param_value`` weights of the
    same-shaped dinov2 ViT. dinov2 gives CLS a position embedding, pathfm's layout does not: that slot is
    folded into the CLS token (as timm does for DINOv2 weights), or set to 0 upstream with
    ``zero_cls_position``. ``prefix`` is the upstream module path the values were keyed by (``backbone.``
    inside ``SSLMetaArch.student``)."""
    names = dinov2_names(model)
    pos_shape = model.embeddings.position_embeddings.shape
    pos = param_value(prefix + "pos_embed", (1, pos_shape[1] + 1, pos_shape[2]))
    if zero_cls_position:
        pos[:, 0] = 0
    for name, param in model.named_parameters():
        upstream = names[name]
        if upstream == "pos_embed":
            param.copy_(pos[:, 1:])
        elif upstream == "cls_token":
            param.copy_(param_value(prefix + upstream, tuple(param.shape)) + pos[:, :1])
        else:
            param.copy_(param_value(prefix + upstream, tuple(param.shape)))
