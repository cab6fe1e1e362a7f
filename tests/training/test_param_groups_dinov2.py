"""DINOv2 parameter groups against facebookresearch/dinov2's ``get_params_groups_with_decay``.

Expected values were produced by running ``get_params_groups_with_decay`` and ``fuse_params_groups``
(dinov2/utils/param_groups.py) of facebookresearch/dinov2 at commit b8931f7bf91576930313be2c6d6af376033b35f0
outside pathfm, with ``lr_decay_rate=0.9``, ``patch_embed_lr_mult=0.2``, on a ``DinoVisionTransformer``
(patch 14, image 28, width 32, 3 blocks, 4 heads, 4 registers, LayerScale) and a ``DINOHead`` (in 32, out 16,
hidden 24, bottleneck 8, 3 layers), each as its own model as ``SSLMetaArch.get_params_groups`` does.
"""

import pytest
import torch
from torch import nn

from pathfm.modeling.configuration_pathfm_vit import PathFMViTConfig
from pathfm.modeling.modeling_pathfm_vit import PathFMViTModel
from pathfm.training.heads import DINOHead, MultiCropWrapper
from pathfm.training.param_groups import (
    clip_grad_norm_per_module,
    fuse_params_groups,
    params_groups_with_decay,
)
from tests.training.dinov2_inputs import dinov2_names

# (name, lr_multiplier, wd_multiplier, is_last_layer) per parameter, dinov2 names; exact float values
DINOV2_BACKBONE = [
    ('cls_token', 0.6561, 1.0, False),
    ('pos_embed', 0.6561, 1.0, False),
    ('register_tokens', 0.6561, 1.0, False),
    ('mask_token', 0.6561, 1.0, False),
    ('patch_embed.proj.weight', 0.13122, 1.0, False),
    ('patch_embed.proj.bias', 0.13122, 0.0, False),
    ('blocks.0.norm1.weight', 0.7290000000000001, 0.0, False),
    ('blocks.0.norm1.bias', 0.7290000000000001, 0.0, False),
    ('blocks.0.attn.qkv.weight', 0.7290000000000001, 1.0, False),
    ('blocks.0.attn.qkv.bias', 0.7290000000000001, 0.0, False),
    ('blocks.0.attn.proj.weight', 0.7290000000000001, 1.0, False),
    ('blocks.0.attn.proj.bias', 0.7290000000000001, 0.0, False),
    ('blocks.0.ls1.gamma', 0.7290000000000001, 0.0, False),
    ('blocks.0.norm2.weight', 0.7290000000000001, 0.0, False),
    ('blocks.0.norm2.bias', 0.7290000000000001, 0.0, False),
    ('blocks.0.mlp.fc1.weight', 0.7290000000000001, 1.0, False),
    ('blocks.0.mlp.fc1.bias', 0.7290000000000001, 0.0, False),
    ('blocks.0.mlp.fc2.weight', 0.7290000000000001, 1.0, False),
    ('blocks.0.mlp.fc2.bias', 0.7290000000000001, 0.0, False),
    ('blocks.0.ls2.gamma', 0.7290000000000001, 0.0, False),
    ('blocks.1.norm1.weight', 0.81, 0.0, False),
    ('blocks.1.norm1.bias', 0.81, 0.0, False),
    ('blocks.1.attn.qkv.weight', 0.81, 1.0, False),
    ('blocks.1.attn.qkv.bias', 0.81, 0.0, False),
    ('blocks.1.attn.proj.weight', 0.81, 1.0, False),
    ('blocks.1.attn.proj.bias', 0.81, 0.0, False),
    ('blocks.1.ls1.gamma', 0.81, 0.0, False),
    ('blocks.1.norm2.weight', 0.81, 0.0, False),
    ('blocks.1.norm2.bias', 0.81, 0.0, False),
    ('blocks.1.mlp.fc1.weight', 0.81, 1.0, False),
    ('blocks.1.mlp.fc1.bias', 0.81, 0.0, False),
    ('blocks.1.mlp.fc2.weight', 0.81, 1.0, False),
    ('blocks.1.mlp.fc2.bias', 0.81, 0.0, False),
    ('blocks.1.ls2.gamma', 0.81, 0.0, False),
    ('blocks.2.norm1.weight', 0.9, 0.0, False),
    ('blocks.2.norm1.bias', 0.9, 0.0, False),
    ('blocks.2.attn.qkv.weight', 0.9, 1.0, False),
    ('blocks.2.attn.qkv.bias', 0.9, 0.0, False),
    ('blocks.2.attn.proj.weight', 0.9, 1.0, False),
    ('blocks.2.attn.proj.bias', 0.9, 0.0, False),
    ('blocks.2.ls1.gamma', 0.9, 0.0, False),
    ('blocks.2.norm2.weight', 0.9, 0.0, False),
    ('blocks.2.norm2.bias', 0.9, 0.0, False),
    ('blocks.2.mlp.fc1.weight', 0.9, 1.0, False),
    ('blocks.2.mlp.fc1.bias', 0.9, 0.0, False),
    ('blocks.2.mlp.fc2.weight', 0.9, 1.0, False),
    ('blocks.2.mlp.fc2.bias', 0.9, 0.0, False),
    ('blocks.2.ls2.gamma', 0.9, 0.0, False),
    ('norm.weight', 1.0, 0.0, False),
    ('norm.bias', 1.0, 0.0, False),
]
DINOV2_BACKBONE_FUSED = [
    (0.6561, 1.0, False, 4),
    (0.13122, 1.0, False, 1),
    (0.13122, 0.0, False, 1),
    (0.7290000000000001, 0.0, False, 10),
    (0.7290000000000001, 1.0, False, 4),
    (0.81, 0.0, False, 10),
    (0.81, 1.0, False, 4),
    (0.9, 0.0, False, 10),
    (0.9, 1.0, False, 4),
    (1.0, 0.0, False, 2),
]
DINOV2_HEAD = [
    ('mlp.0.weight', 1.0, 1.0, False),
    ('mlp.0.bias', 1.0, 0.0, False),
    ('mlp.2.weight', 1.0, 1.0, False),
    ('mlp.2.bias', 1.0, 0.0, False),
    ('mlp.4.weight', 1.0, 1.0, False),
    ('mlp.4.bias', 1.0, 0.0, False),
    ('last_layer.weight_g', 1.0, 1.0, True),
    ('last_layer.weight_v', 1.0, 1.0, True),
]
DINOV2_HEAD_FUSED = [
    (1.0, 1.0, False, 3),
    (1.0, 0.0, False, 3),
    (1.0, 1.0, True, 2),
]

_FIELDS = dict(
    image_size=28, patch_size=14, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
    intermediate_size=128, num_register_tokens=4, layerscale_value=1e-5, pos_embed_has_prefix_tokens=False,
)
_HEAD_NAMES = {
    "last_layer.parametrizations.weight.original0": "last_layer.weight_g",
    "last_layer.parametrizations.weight.original1": "last_layer.weight_v",
}


def _backbone() -> PathFMViTModel:
    return PathFMViTModel(PathFMViTConfig(**_FIELDS, use_mask_token=True))


def _as_rows(groups: list[dict], names: dict[str, str]) -> dict[str, tuple]:
    return {names[g["name"]]: (g["lr_multiplier"], g["wd_multiplier"], g["is_last_layer"]) for g in groups}


def _fused_rows(groups: list[dict]) -> list[tuple]:
    keys = ("lr_multiplier", "wd_multiplier", "is_last_layer")
    return sorted((*(g[key] for key in keys), len(g["params"])) for g in groups)


def test_backbone_groups_equal_dinov2():
    model = _backbone()
    groups = params_groups_with_decay(model, num_layers=3, layerwise_decay=0.9, patch_embed_lr_mult=0.2)
    expected = {name: (lr, wd, last) for name, lr, wd, last in DINOV2_BACKBONE}
    assert _as_rows(groups, dinov2_names(model)) == expected
    assert _fused_rows(fuse_params_groups(groups)) == sorted(DINOV2_BACKBONE_FUSED)


def test_head_groups_equal_dinov2():
    head = DINOHead(32, 16, norm_last_layer=False, nlayers=3, hidden_dim=24, bottleneck_dim=8)
    groups = params_groups_with_decay(head, num_layers=3, layerwise_decay=0.9, patch_embed_lr_mult=0.2)
    names = {g["name"]: _HEAD_NAMES.get(g["name"], g["name"]) for g in groups}
    assert _as_rows(groups, names) == {name: (lr, wd, last) for name, lr, wd, last in DINOV2_HEAD}
    assert _fused_rows(fuse_params_groups(groups)) == sorted(DINOV2_HEAD_FUSED)


def test_wrapped_student_keeps_multipliers_and_tokens_option():
    backbone = _backbone()
    head = DINOHead(32, 16, nlayers=3, hidden_dim=24, bottleneck_dim=8)
    wrapped = params_groups_with_decay(MultiCropWrapper(backbone, head), 3, 0.9, 0.2)
    alone = params_groups_with_decay(backbone, 3, 0.9, 0.2)
    for group, reference in zip(wrapped, alone):
        assert group["name"] == "backbone." + reference["name"]
        assert group["lr_multiplier"] == reference["lr_multiplier"]
    # norm_last_layer=True freezes the weight-norm magnitude: it is left out, the direction stays
    last = [g["name"] for g in wrapped if g["is_last_layer"]]
    assert last == ["head.last_layer.parametrizations.weight.original1"]
    exempt = params_groups_with_decay(backbone, 3, 0.9, 0.2, no_weight_decay_on_tokens=True)

    def no_decay(groups):
        return {g["name"] for g in groups if g["wd_multiplier"] == 0.0}

    assert no_decay(exempt) - no_decay(alone) == {
        "embeddings.cls_token", "embeddings.register_tokens", "embeddings.mask_token",
        "embeddings.position_embeddings",
    }


@pytest.mark.parametrize("max_norm", [0.5, 0.0])
def test_clip_grad_norm_per_module_clips_each_module_separately(max_norm):
    modules = {"backbone": nn.Linear(4, 3), "dino_head": nn.Linear(3, 2)}
    for scale, module in zip((3.0, 0.01), modules.values()):
        for p in module.parameters():
            p.grad = torch.full_like(p, scale)

    def grad_norm(module):
        return torch.cat([p.grad.flatten() for p in module.parameters()]).norm()

    before = {name: grad_norm(module) for name, module in modules.items()}
    norms = clip_grad_norm_per_module(modules, max_norm)
    for name, module in modules.items():
        after = grad_norm(module)
        torch.testing.assert_close(norms[name], before[name])
        limit = before[name] if max_norm <= 0 else min(float(before[name]), max_norm)
        torch.testing.assert_close(after, torch.as_tensor(limit, dtype=after.dtype), rtol=1e-5, atol=1e-6)
