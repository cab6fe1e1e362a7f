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
from pathfm.training.heads import DINOHead, DINOv2Wrapper, MultiCropWrapper
from pathfm.training.teacher import make_teacher


def build_backbone(
    model_args: DINOModelArguments, drop_path_rate: float, use_mask_token: bool = False
) -> PathFMViTModel:
    """The backbone: random init, or ImageNet (timm / pathfm) weights from a local file via the converter.

    Args:
        model_args: Model config (``backbone_preset``, ``pretrained_weights``).
        drop_path_rate: Stochastic depth (student: config value; teacher: 0, as upstream).
        use_mask_token: Give the backbone iBOT's learned mask token (DINOv2 student).

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
        backbone = load_pretrained_backbone(
            model_args.pretrained_weights,
            model_args.backbone_preset,
            drop_path_rate=drop_path_rate,
            attn_implementation=model_args.attn_implementation,
            drop_path_uniform=getattr(model_args, "drop_path_uniform", False),
        )
        return with_mask_token(backbone, model_args.attn_implementation) if use_mask_token else backbone
    config = PathFMViTConfig.from_preset(
        model_args.backbone_preset,
        drop_path_rate=drop_path_rate,
        attn_implementation=model_args.attn_implementation,
        drop_path_uniform=getattr(model_args, "drop_path_uniform", False),
        use_mask_token=use_mask_token,
    )
    return PathFMViTModel(config)


def with_mask_token(backbone: PathFMViTModel, attn_implementation: str = "sdpa") -> PathFMViTModel:
    """The same backbone with a learned ``mask_token`` (zeros, as dinov2) for iBOT's masked student crops.

    Raises:
        RuntimeError: If anything but the mask token differs (a bug, not an input problem).
    """
    if backbone.config.use_mask_token:
        return backbone
    config = PathFMViTConfig.from_dict(
        {**backbone.config.to_dict(), "use_mask_token": True},
        attn_implementation=attn_implementation,
    )
    masked = PathFMViTModel(config)
    result = masked.load_state_dict(backbone.state_dict(), strict=False)
    if result.unexpected_keys or result.missing_keys != ["embeddings.mask_token"]:
        raise RuntimeError(f"with_mask_token: unexpected state-dict difference {result}")
    with torch.no_grad():
        masked.embeddings.mask_token.zero_()
    return masked


def build_head(model_args: DINOModelArguments, in_dim: int, ibot: bool = False) -> DINOHead:
    """The DINO projection head on ``in_dim`` backbone features (``pooler_output`` size), or with ``ibot`` the
    separate iBOT head of DINOv2 (``ibot_head_*`` sizes)."""
    prefix = "ibot_head_" if ibot else "head_"
    return DINOHead(
        in_dim,
        model_args.ibot_head_n_prototypes if ibot else model_args.out_dim,
        use_bn=model_args.use_bn_in_head,
        norm_last_layer=model_args.norm_last_layer,
        nlayers=getattr(model_args, prefix + "nlayers"),
        hidden_dim=getattr(model_args, prefix + "hidden_dim"),
        bottleneck_dim=getattr(model_args, prefix + "bottleneck_dim"),
    )


def _teacher_backbone(student_backbone: PathFMViTModel, model_args: DINOModelArguments) -> PathFMViTModel:
    """Upstream builds the teacher without drop path, then loads the student's weights into it."""
    teacher_config = PathFMViTConfig.from_dict(
        student_backbone.config.to_dict(), attn_implementation=model_args.attn_implementation
    )
    teacher_config.drop_path_rate = 0.0
    return PathFMViTModel(teacher_config)


def build_dinov2_student_teacher(model_args: DINOModelArguments) -> tuple[DINOv2Wrapper, DINOv2Wrapper]:
    """DINOv2 student (backbone with mask token and drop path, DINO head, iBOT head if separate) and teacher.

    Heads follow dinov2's ``DINOHead`` sizes (``dino.head_*``, ``ibot.head_*``); with ``norm_last_layer``
    False the weight-norm magnitude is trained, as in dinov2 (whose head has no such option).
    """
    student_backbone = build_backbone(model_args, model_args.drop_path_rate, use_mask_token=True)
    dim = student_backbone.config.hidden_size  # DINOv2 heads read the CLS token (and patch tokens) only

    def heads() -> tuple[DINOHead, DINOHead | None]:
        dino_head = build_head(model_args, dim)
        return dino_head, build_head(model_args, dim, ibot=True) if model_args.ibot_separate_head else None

    student = DINOv2Wrapper(student_backbone, *heads())
    teacher = make_teacher(student, DINOv2Wrapper(_teacher_backbone(student_backbone, model_args), *heads()))
    if model_args.gradient_checkpointing:
        enable_activation_checkpointing(student_backbone)
    return student, teacher


def enable_activation_checkpointing(backbone: torch.nn.Module) -> None:
    """``--gradient_checkpointing`` (TrainingArguments' name): recent transformers (5.25 here) call it
    ``activation_checkpointing_enable`` and deprecate the old name; older ones (e.g. the GPU machine's) only
    have ``gradient_checkpointing_enable``."""
    enable = getattr(backbone, "activation_checkpointing_enable", None) or backbone.gradient_checkpointing_enable
    enable()


def build_student_teacher(model_args: DINOModelArguments) -> tuple[MultiCropWrapper, MultiCropWrapper]:
    """Student (backbone with drop path + head) and teacher (same weights, no drop path, no gradients)."""
    student_backbone = build_backbone(model_args, model_args.drop_path_rate)
    embed_dim = student_backbone.config.hidden_size * (
        2 if student_backbone.config.pooling == "cls_mean" else 1
    )
    student = MultiCropWrapper(student_backbone, build_head(model_args, embed_dim))
    teacher = make_teacher(
        student,
        MultiCropWrapper(_teacher_backbone(student_backbone, model_args), build_head(model_args, embed_dim)),
    )
    if model_args.gradient_checkpointing:
        enable_activation_checkpointing(student_backbone)
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
