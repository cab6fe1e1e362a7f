"""Expected values for the DINOv2 tests (step) from upstream code; see reference_paths.py."""

from reference_paths import DINOV2, OPENMIDNIGHT, OUT, SHIM, TESTS  # noqa: F401
# One SSLMetaArch training step of facebookresearch/dinov2 on CPU, ViT-S/14 with 4 registers, tiny head.
import json, os, random, sys

os.environ["XFORMERS_DISABLED"] = "1"
sys.path[:0] = [SHIM, DINOV2, TESTS]  # omegaconf must be importable too (pip install --target)
import torch

torch.Tensor.cuda = lambda self, *a, **k: self
torch.cuda.synchronize = lambda *a, **k: None
from omegaconf import OmegaConf
from dinov2.configs import dinov2_default_config
from dinov2.models.vision_transformer import DinoVisionTransformer
import types

_pkg = types.ModuleType("dinov2.train")
_pkg.__path__ = [DINOV2 + "/dinov2/train"]
sys.modules["dinov2.train"] = _pkg
_fsdp = types.ModuleType(
    "dinov2.fsdp"
)  # single process, no FSDP: only reshard_fsdp_model is called (a no-op)
_fsdp.get_fsdp_wrapper = _fsdp.ShardedGradScaler = _fsdp.get_fsdp_modules = None
_fsdp.reshard_fsdp_model = lambda module: None
sys.modules["dinov2.fsdp"] = _fsdp  # skip the package __init__ (imports train.py and fvcore)
from dinov2.train.ssl_meta_arch import SSLMetaArch
from dinov2.data.masking import MaskingGenerator
from dinov2.data.collate import collate_data_and_cast
from dinov2_inputs import wave, param_value

from functools import partial
import dinov2.models.vision_transformer as vits
from dinov2.layers import MemEffAttention
from dinov2.layers.block import NestedTensorBlock

# a tiny ViT-S/14-reg4-shaped arch (width 32, 2 blocks, 4 heads), built the way vit_small is
vits.vit_tiny_test = lambda patch_size=16, num_register_tokens=0, **kw: DinoVisionTransformer(
    patch_size=patch_size,
    embed_dim=32,
    depth=2,
    num_heads=4,
    mlp_ratio=4,
    block_fn=partial(NestedTensorBlock, attn_class=MemEffAttention),
    num_register_tokens=num_register_tokens,
    **kw,
)
# nested (list) forward needs xformers; per-crop forward is the same computation
DinoVisionTransformer.forward_features_list = lambda self, xs, ms: [
    self.forward_features(x, m) for x, m in zip(xs, ms)
]

centering = sys.argv[1]
if centering == "sinkhorn_knopp":  # upstream's iBOT Sinkhorn-Knopp all-reduces unguarded: 1-process group
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29561")
    dist.init_process_group("gloo", rank=0, world_size=1)
cfg = OmegaConf.merge(
    OmegaConf.create(dinov2_default_config),
    OmegaConf.create(
        {
            "compute_precision": {"grad_scaler": False},
            "dino": {
                "head_n_prototypes": 16,
                "head_bottleneck_dim": 8,
                "head_hidden_dim": 24,
                "koleo_loss_weight": 0.1,
            },
            "ibot": {"separate_head": False},
            "train": {"centering": centering},
            "student": {
                "arch": "vit_tiny_test",
                "patch_size": 14,
                "drop_path_rate": 0.0,
                "num_register_tokens": 4,
                "interpolate_offset": 0.0,
                "interpolate_antialias": True,
            },
            "crops": {"global_crops_size": 28, "local_crops_size": 14, "local_crops_number": 2},
            "optim": {"clip_grad": 3.0, "layerwise_decay": 0.9, "patch_embed_lr_mult": 0.2},
        }
    ),
)
model = SSLMetaArch(cfg)
model.need_to_synchronize_fsdp_streams = False
with torch.no_grad():
    for name, p in model.student.named_parameters():
        value = param_value(name, tuple(p.shape))
        if name == "backbone.pos_embed":
            value[:, 0] = 0  # pathfm's layout has no CLS position (see the test)
        p.copy_(value)
# pathfm's layout has no CLS position: keep that slot at 0 (no gradient, so AdamW and weight decay leave it 0)
model.student.backbone.pos_embed.register_hook(lambda g: g.index_fill(1, torch.tensor([0]), 0.0))
for k in model.student.keys():
    model.teacher[k].load_state_dict(model.student[k].state_dict())
model.train()

B = 2
samples = []
for i in range(B):
    samples.append(
        (
            {
                "global_crops": [
                    wave(1, 3 * 28 * 28, 0.1 * i + 0.3 * g, 1.0).reshape(3, 28, 28) for g in range(2)
                ],
                "local_crops": [
                    wave(1, 3 * 14 * 14, 0.2 * i + 0.7 * l, 1.0).reshape(3, 14, 14) for l in range(2)
                ],
            },
            None,
        )
    )
gen = MaskingGenerator(input_size=(2, 2), max_num_patches=0.5 * 28 // 14 * 28 // 14)
random.seed(3)
data = collate_data_and_cast(samples, (0.1, 0.5), 0.5, torch.float32, n_tokens=4, mask_generator=gen)
# the tiny 2x2 grid rarely gets a block: fix the masks (image 0 crop 0 two patches, image 1 crop 1 one patch)
masks = torch.zeros(2 * B, 4, dtype=torch.bool)
masks[0, [1, 2]] = True
masks[3, 3] = True
data["collated_masks"] = masks
data["mask_indices_list"] = masks.flatten().nonzero().flatten()
data["masks_weight"] = (1 / masks.sum(-1).clamp(min=1.0)).unsqueeze(-1).expand_as(masks)[masks]
data["n_masked_patches"] = torch.full((1,), int(masks.sum()), dtype=torch.long)
data["upperbound"] = 4

optimizer = torch.optim.AdamW(model.get_params_groups(), betas=(0.9, 0.999))
lr, wd, last_layer_lr, mom, teacher_temp = 1e-3, 0.04, 0.0, 0.992, 0.04
for g in optimizer.param_groups:  # train.py apply_optim_scheduler
    g["weight_decay"] = wd * g["wd_multiplier"]
    g["lr"] = (last_layer_lr if g["is_last_layer"] else lr) * g["lr_multiplier"]
optimizer.zero_grad(set_to_none=True)
loss_dict = model.forward_backward(data, teacher_temp=teacher_temp)
grads = {n: p.grad.clone() for n, p in model.student.named_parameters() if p.grad is not None}
for v in model.student.values():  # FSDP's clip_grad_norm_ per submodule, unsharded
    torch.nn.utils.clip_grad_norm_(v.parameters(), cfg.optim.clip_grad)
optimizer.step()
with torch.no_grad():  # update_teacher without FSDP handles
    for (ns, ps), (nt, pt) in zip(model.student.named_parameters(), model.teacher.named_parameters()):
        pt.mul_(mom).add_(ps, alpha=1 - mom)


def proj(t):
    return float((t.double().flatten() * wave(1, t.numel(), 0.4, 1.0).double().flatten()).sum())


def named(items):
    # pathfm has no CLS position slot: compare the patch positions only. The key third of qkv.bias is a null
    # direction of the loss (softmax ignores a shift of all keys): its gradient is rounding noise that AdamW
    # turns into lr-sized steps of arbitrary sign, so it is left out of the projection.
    out = {}
    for n, t in items:
        t = t.detach().clone()
        if n.endswith("pos_embed"):
            t = t[:, 1:]
        if n.endswith("attn.qkv.bias"):
            t[t.numel() // 3 : 2 * t.numel() // 3] = 0
        out[n] = t
    return out


out = {
    "losses": {k: float(v) for k, v in loss_dict.items()},
    "grad": {n: proj(g) for n, g in named(grads.items()).items()},
    "student": {n: proj(p) for n, p in named(model.student.named_parameters()).items()},
    "teacher": {n: proj(p) for n, p in named(model.teacher.named_parameters()).items()},
    "masks": masks.tolist(),
}
json.dump(out, open(OUT + f"/step_{centering}.json", "w"), indent=0)
print(out["losses"])
print(len(out["grad"]), len(out["student"]))
