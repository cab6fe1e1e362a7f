"""One full DINOv2 training step of a tiny ViT-S/14-reg4-shaped model, composed from pathfm's modules, against
facebookresearch/dinov2's ``SSLMetaArch``.

Expected values (``data/dinov2_step_<centering>.json``) were produced by running facebookresearch/dinov2 at
commit b8931f7bf91576930313be2c6d6af376033b35f0 outside pathfm on CPU: ``SSLMetaArch.forward_backward``
(dinov2/train/ssl_meta_arch.py) with the default config (dinov2/configs/ssl_default_config.yaml) except: a ViT
of width 32, 2 blocks, 4 heads, patch 14, 4 registers, LayerScale 1e-5, no drop path, position interpolation
by size with antialias (``interpolate_offset 0``, pathfm's and timm's way); head 16 prototypes, hidden 24,
bottleneck 8, shared with iBOT; 2 images, global crops 28 px, 2 local crops 14 px, fixed masks; teacher
temperature 0.04; then ``clip_grad_norm_`` (3.0) per student submodule, AdamW with dinov2's parameter groups
(layer-wise decay 0.9, patch-embed lr x0.2, lr 1e-3, wd 0.04, last-layer lr 0 as in the first epoch) and the
teacher EMA (0.992). Stand-ins the reference needed on CPU without xFormers / FSDP: the nested list forward
replaced by one forward per crop size, the head's block-diagonal concatenation by a plain concatenation
(the head is row-wise), FSDP's per-module clipping and EMA by the unsharded equivalents, and a 1-process gloo
group for the Sinkhorn-Knopp run (upstream's iBOT all-reduce is unguarded). Initial weights: ``param_value``
of ``dinov2_inputs.py``. pathfm's ``pos_embed_has_prefix_tokens=False`` layout has no CLS position, so the
reference keeps that slot at 0 (initial value 0, gradient hooked to 0) and stores the patch positions only.

Stored per parameter: the projection ``sum(t * wave)`` of its gradient, the student after the step and the
teacher after the EMA, in float64 from float32 tensors (the key third of ``qkv.bias`` left out, see
``_projection``).
"""

import copy
import json
from pathlib import Path

import pytest
import torch

from pathfm.modeling.configuration_pathfm_vit import PathFMViTConfig
from pathfm.modeling.modeling_pathfm_vit import PathFMViTModel
from pathfm.training.heads import DINOHead
from pathfm.training.losses.dino_v2 import DINOv2CLSLoss
from pathfm.training.losses.ibot import IBOTPatchLoss
from pathfm.training.losses.koleo import koleo_per_crop
from pathfm.training.param_groups import (
    clip_grad_norm_per_module,
    fuse_params_groups,
    params_groups_with_decay,
)
from tests.training.dinov2_inputs import dinov2_names, fill_like_dinov2, param_value, wave

DATA = Path(__file__).parent / "data"
B, PREFIX, TEACHER_TEMP = 2, 5, 0.04
_HEAD = {"last_layer.weight_g": "last_layer.parametrizations.weight.original0",
         "last_layer.weight_v": "last_layer.parametrizations.weight.original1"}


def _student() -> dict[str, torch.nn.Module]:
    config = PathFMViTConfig(
        image_size=28, patch_size=14, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, num_register_tokens=4, layerscale_value=1e-5,
        pos_embed_has_prefix_tokens=False, use_mask_token=True,
    )
    backbone = PathFMViTModel(config)
    fill_like_dinov2(backbone, zero_cls_position=True, prefix="backbone.")
    head = DINOHead(32, 16, norm_last_layer=False, nlayers=3, hidden_dim=24, bottleneck_dim=8)
    with torch.no_grad():
        for name, param in head.named_parameters():
            upstream = {v: k for k, v in _HEAD.items()}.get(name, name)
            param.copy_(param_value("dino_head." + upstream, tuple(param.shape)))
    return {"backbone": backbone, "dino_head": head}


def _upstream_names(student: dict[str, torch.nn.Module]) -> dict[str, torch.nn.Parameter]:
    names = dinov2_names(student["backbone"])
    out = {"backbone." + names[n]: p for n, p in student["backbone"].named_parameters()}
    head_names = {v: k for k, v in _HEAD.items()}
    out.update({"dino_head." + head_names.get(n, n): p for n, p in student["dino_head"].named_parameters()})
    return out


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Crop-major global (2B, 3, 28, 28) and local (2B, 3, 14, 14) crops, as dinov2's collate stacks them."""
    global_crops = torch.stack([wave(1, 3 * 28 * 28, 0.1 * i + 0.3 * g, 1.0).reshape(3, 28, 28)
                                for g in range(2) for i in range(B)])
    local_crops = torch.stack([wave(1, 3 * 14 * 14, 0.2 * i + 0.7 * c, 1.0).reshape(3, 14, 14)
                               for c in range(2) for i in range(B)])
    return global_crops, local_crops


def _step(student, teacher, masks, centering: str) -> dict[str, torch.Tensor]:
    """DINO CLS + KoLeo + iBOT losses of one batch (weights 1, 0.1, 1), backward; returns the logged terms."""
    global_crops, local_crops = _batch()
    dino_loss, ibot_loss = DINOv2CLSLoss(16), IBOTPatchLoss(16)
    with torch.no_grad():
        t_tokens = teacher["backbone"](global_crops).last_hidden_state
        t_cls = teacher["dino_head"](t_tokens[:, 0])
        t_patches = teacher["dino_head"](t_tokens[:, PREFIX:][masks])
        cls_targets = dino_loss.teacher_targets(t_cls, TEACHER_TEMP, centering)
        patch_targets = ibot_loss.teacher_targets(t_patches, TEACHER_TEMP, centering)
    s_global = student["backbone"](global_crops, bool_masked_pos=masks).last_hidden_state
    s_local = student["backbone"](local_crops).last_hidden_state
    head = student["dino_head"]
    local_term, global_term = dino_loss(head(s_global[:, 0]), head(s_local[:, 0]), cls_targets)
    koleo = 0.1 * koleo_per_crop(s_global[:, 0])
    ibot = ibot_loss.forward_masked(head(s_global[:, PREFIX:][masks]), patch_targets, masks)
    (local_term + global_term + koleo + ibot).backward()
    # as SSLMetaArch logs them: KoLeo and iBOT divided by loss_scales = 2
    return {"dino_local_crops_loss": local_term, "dino_global_crops_loss": global_term,
            "koleo_loss": koleo / 2, "ibot_loss": ibot / 2}


def _projection(tensor: torch.Tensor, name: str) -> float:
    """``sum(t * wave)``; the key third of ``qkv.bias`` is zeroed first, as in the reference: it is a null
    direction of the loss (softmax ignores a shift of all keys), so its gradient is rounding noise that AdamW
    turns into lr-sized steps of arbitrary sign in either implementation."""
    tensor = tensor.detach().double().flatten().clone()
    if name.endswith("attn.qkv.bias"):
        tensor[tensor.numel() // 3 : 2 * tensor.numel() // 3] = 0
    return float((tensor * wave(1, tensor.numel(), 0.4, 1.0).double().flatten()).sum())


@pytest.mark.parametrize("centering", ["centering", "sinkhorn_knopp"])
def test_one_step_equals_dinov2_ssl_meta_arch(centering):
    expected = json.loads((DATA / f"dinov2_step_{centering}.json").read_text())
    student = _student()
    teacher = copy.deepcopy(student)
    for module in teacher.values():
        module.requires_grad_(False)
    groups = []
    for name, module in student.items():
        layers = 2 if name == "backbone" else 0
        groups += fuse_params_groups(params_groups_with_decay(module, layers, 0.9, 0.2))
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.999))
    for group in optimizer.param_groups:
        group["weight_decay"] = 0.04 * group["wd_multiplier"]
        group["lr"] = (0.0 if group["is_last_layer"] else 1e-3) * group["lr_multiplier"]
    masks = torch.tensor(expected["masks"])

    losses = _step(student, teacher, masks, centering)
    for key, value in expected["losses"].items():
        assert float(losses[key].detach()) == pytest.approx(value, abs=1e-6), key
    params = _upstream_names(student)
    assert sorted(params) == sorted(expected["student"])
    for name, value in expected["grad"].items():
        assert _projection(params[name].grad, name) == pytest.approx(value, abs=1e-5), name
    clip_grad_norm_per_module(student, 3.0)
    optimizer.step()
    with torch.no_grad():
        for key in student:
            for s, t in zip(student[key].parameters(), teacher[key].parameters()):
                t.mul_(0.992).add_(s, alpha=1 - 0.992)
    teacher_params = _upstream_names(teacher)
    for name in expected["student"]:
        for tensor, which in ((params[name], "student"), (teacher_params[name], "teacher")):
            assert _projection(tensor, name) == pytest.approx(expected[which][name], abs=1e-5), (which, name)


@pytest.mark.parametrize("centering", ["centering", "sinkhorn_knopp"])
def test_wired_train_step_equals_dinov2_ssl_meta_arch(centering):
    """The step the training loop runs for ``--objective dinov2`` (``DINOv2Wrapper``, ``DINOv2Loss``,
    ``build_dinov2_optimizer`` / ``apply_optim_schedule``, ``train_step_dinov2`` under Accelerate) reproduces
    the same reference step: logged losses, student after AdamW, teacher after the EMA."""
    from accelerate import Accelerator

    from pathfm.training.heads import DINOv2Wrapper
    from pathfm.training.losses.dinov2_loss import DINOv2Loss
    from pathfm.training.masking import MaskBatch
    from pathfm.training.losses.ibot import masked_patch_weights
    from pathfm.training.param_groups import apply_optim_schedule, build_dinov2_optimizer
    from pathfm.training.step_dinov2 import train_step_dinov2
    from pathfm.training.teacher import make_teacher

    expected = json.loads((DATA / f"dinov2_step_{centering}.json").read_text())
    parts = _student()
    student = DINOv2Wrapper(parts["backbone"], parts["dino_head"])
    teacher = make_teacher(student)
    accelerator = Accelerator(cpu=True)
    loss_fn = DINOv2Loss(16, 16, centering, weights={"koleo_loss_weight": 0.1})
    optimizer = build_dinov2_optimizer(student, 2, layerwise_decay=0.9, patch_embed_lr_mult=0.2)
    student, optimizer = accelerator.prepare(student, optimizer)
    apply_optim_schedule(optimizer, 1e-3, 0.04, freeze_last_layer=True)
    masks = torch.tensor(expected["masks"])
    flat = masks.flatten()
    batch = MaskBatch(masks, flat.nonzero().flatten(), masked_patch_weights(masks), 0)
    global_crops, local_crops = _batch()
    crops = [*global_crops.chunk(2), *local_crops.chunk(2)]

    out = train_step_dinov2(
        accelerator, student, teacher, loss_fn, optimizer, lambda: crops, lambda n: batch,
        teacher_temp=TEACHER_TEMP, momentum=0.992, clip_grad=3.0, step_index=0,
    )
    logged = {**out.terms, "koleo_loss": out.terms["koleo_loss"] / 2, "ibot_loss": out.terms["ibot_loss"] / 2}
    for key, value in expected["losses"].items():
        assert logged[key] == pytest.approx(value, abs=1e-6), key
    unwrapped = accelerator.unwrap_model(student)
    params = _upstream_names({"backbone": unwrapped.backbone, "dino_head": unwrapped.dino_head})
    teacher_params = _upstream_names({"backbone": teacher.backbone, "dino_head": teacher.dino_head})
    for name in expected["student"]:
        for tensor, which in ((params[name], "student"), (teacher_params[name], "teacher")):
            assert _projection(tensor, name) == pytest.approx(expected[which][name], abs=1e-5), (which, name)
