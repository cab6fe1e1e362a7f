"""Writes expected values of the DINOv2 equality tests by running upstream code (not part of pathfm).

Run outside pathfm with its .venv python, from this folder:
``DINOV2_SRC=<facebookresearch/dinov2 at b8931f7bf91576930313be2c6d6af376033b35f0> python make_vit.py``
(``OPENMIDNIGHT_SRC``: MedARC-AI/OpenMidnight at f7d5a6457d7f34c0a7be194ed8d0b1199e5360ca, for KDE).
Results go to ``$OUT`` (default /tmp). ``make_step.py`` also needs omegaconf on ``sys.path`` and uses
``xformers_shim/`` (a stand-in for xFormers' block-diagonal head batching; the head is row-wise).
"""

import os
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
DINOV2 = os.environ.get("DINOV2_SRC", "/tmp/dv2")
OPENMIDNIGHT = os.environ.get("OPENMIDNIGHT_SRC", "/tmp/om")
SHIM = str(HERE / "xformers_shim")
OUT = os.environ.get("OUT", "/tmp")
import json, sys

sys.path[:0] = [DINOV2, str(HERE.parent)]
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
