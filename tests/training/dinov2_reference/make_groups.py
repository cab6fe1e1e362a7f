"""Expected values for the DINOv2 tests (groups) from upstream code; see reference_paths.py."""

from reference_paths import DINOV2, OPENMIDNIGHT, OUT, SHIM, TESTS  # noqa: F401
import json, sys

sys.path[:0] = [DINOV2]
from functools import partial
import torch
from dinov2.models.vision_transformer import DinoVisionTransformer
from dinov2.layers import DINOHead, MemEffAttention
from dinov2.layers.block import NestedTensorBlock as Block
from dinov2.utils.param_groups import get_params_groups_with_decay, fuse_params_groups

vit = DinoVisionTransformer(
    img_size=28,
    patch_size=14,
    embed_dim=32,
    depth=3,
    num_heads=4,
    mlp_ratio=4,
    num_register_tokens=4,
    init_values=1e-5,
    block_chunks=0,
    block_fn=partial(Block, attn_class=MemEffAttention),
)
head = DINOHead(32, 16, hidden_dim=24, bottleneck_dim=8, nlayers=3)
out = {}
for key, m in (("backbone", vit), ("head", head)):
    g = get_params_groups_with_decay(m, lr_decay_rate=0.9, patch_embed_lr_mult=0.2)
    out[key] = [(d["name"], d["lr_multiplier"], d["wd_multiplier"], d["is_last_layer"]) for d in g]
    out[key + "_fused"] = [
        (d["lr_multiplier"], d["wd_multiplier"], d["is_last_layer"], len(d["params"]))
        for d in fuse_params_groups(g)
    ]
json.dump(out, open(OUT + f"/groups.json", "w"), indent=0)
for k, v in out.items():
    print(k)
    [print(" ", r) for r in v]
