"""Expected values for the DINOv2 tests (vit) from upstream code; see reference_paths.py."""

from reference_paths import DINOV2, OPENMIDNIGHT, OUT, SHIM, TESTS  # noqa: F401
import json, sys

sys.path[:0] = [DINOV2, TESTS]
from functools import partial
import torch
from dinov2.models.vision_transformer import DinoVisionTransformer
from dinov2.layers import MemEffAttention
from dinov2.layers.block import NestedTensorBlock as Block
from dinov2_inputs import wave, param_value

vit = DinoVisionTransformer(
    img_size=28,
    patch_size=14,
    embed_dim=16,
    depth=2,
    num_heads=2,
    mlp_ratio=4,
    num_register_tokens=4,
    init_values=1e-5,
    block_chunks=0,
    block_fn=partial(Block, attn_class=MemEffAttention),
).eval()
with torch.no_grad():
    for n, p in vit.named_parameters():
        p.copy_(param_value(n, tuple(p.shape)))
x = wave(1, 2 * 3 * 28 * 28, 0.5, 1.0).reshape(2, 3, 28, 28)
masks = torch.tensor([[False, True, True, False], [False, False, False, False]])
proj = wave(16, 3, 0.25, 1.0)
out = {}
with torch.no_grad():
    for key, m in (("masked", masks), ("plain", None)):
        o = vit.forward_features(x, masks=m)
        seq = torch.cat(
            [o["x_norm_clstoken"].unsqueeze(1), o["x_norm_regtokens"], o["x_norm_patchtokens"]], 1
        )
        out[key] = (seq @ proj).tolist()
json.dump(out, open(OUT + f"/vit.json", "w"))
print(out["masked"][0][:3], out["plain"][0][5:])
