"""Student and teacher networks: a pathfm ViT backbone with a DINO head, wrapped for multi-crop input.

Follows the "building student and teacher networks" section of facebookresearch/dino ``main_dino.py``: the
student has drop path, the teacher is built without it and starts from the student's weights.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from pathfm.modeling import PathFMViTConfig, PathFMViTModel
from pathfm.training.config import DINOModelArguments
from pathfm.training.heads import DINOHead, MultiCropWrapper
from pathfm.training.teacher import make_teacher


def build_backbone(model_args: DINOModelArguments, drop_path_rate: float) -> PathFMViTModel:
    """The backbone: random init, or ImageNet (timm / pathfm) weights from a local file via the converter.

    Args:
        model_args: Model config (``backbone_preset``, ``pretrained_weights``).
        drop_path_rate: Stochastic depth (student: config value; teacher: 0, as upstream).

    Returns:
        A ``PathFMViTModel`` (fp32).

    Raises:
        FileNotFoundError: If ``pretrained_weights`` does not exist.
    """
    if model_args.pretrained_weights:
        from pathfm.modeling.convert_timm_to_pathfm import load_pretrained_backbone

        if not Path(model_args.pretrained_weights).exists():
            raise FileNotFoundError(
                f"--pretrained_weights {model_args.pretrained_weights}: no such file or folder"
            )
        return load_pretrained_backbone(
            model_args.pretrained_weights,
            model_args.backbone_preset,
            drop_path_rate=drop_path_rate,
            attn_implementation=model_args.attn_implementation,
        )
    config = PathFMViTConfig.from_preset(
        model_args.backbone_preset,
        drop_path_rate=drop_path_rate,
        attn_implementation=model_args.attn_implementation,
    )
    return PathFMViTModel(config)


def build_head(model_args: DINOModelArguments, in_dim: int) -> DINOHead:
    """The DINO projection head on ``in_dim`` backbone features (``pooler_output`` size)."""
    return DINOHead(
        in_dim,
        model_args.out_dim,
        use_bn=model_args.use_bn_in_head,
        norm_last_layer=model_args.norm_last_layer,
        nlayers=model_args.head_nlayers,
        hidden_dim=model_args.head_hidden_dim,
        bottleneck_dim=model_args.head_bottleneck_dim,
    )


def build_student_teacher(model_args: DINOModelArguments) -> tuple[MultiCropWrapper, MultiCropWrapper]:
    """Student (backbone with drop path + head) and teacher (same weights, no drop path, no gradients)."""
    student_backbone = build_backbone(model_args, model_args.drop_path_rate)
    embed_dim = student_backbone.config.hidden_size * (
        2 if student_backbone.config.pooling == "cls_mean" else 1
    )
    student = MultiCropWrapper(student_backbone, build_head(model_args, embed_dim))
    # upstream builds the teacher without drop path, then loads the student's weights into it
    teacher_config = PathFMViTConfig.from_dict(
        student_backbone.config.to_dict(), attn_implementation=model_args.attn_implementation
    )
    teacher_config.drop_path_rate = 0.0
    teacher = make_teacher(
        student, MultiCropWrapper(PathFMViTModel(teacher_config), build_head(model_args, embed_dim))
    )
    if model_args.gradient_checkpointing:
        student_backbone.gradient_checkpointing_enable()
    return student, teacher


def param_digest(module: torch.nn.Module) -> str:
    """sha256 of all parameters (fp32 bytes, name order) — equal across DDP ranks when they are in sync."""
    return state_digest(module.state_dict())


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a state dict's tensors (fp32 bytes, name order)."""
    h = hashlib.sha256()
    for name, p in sorted(state.items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
