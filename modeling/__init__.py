"""pathfm.modeling: the transformers-compatible pathfm ViT (config, model, image processor, timm converter).

``register_auto_classes()`` (called by ``import pathfm``) makes ``AutoConfig`` / ``AutoModel`` /
``AutoModelForImageClassification`` / ``AutoImageProcessor`` know ``model_type = "pathfm_vit"`` and marks the
classes with ``register_for_auto_class`` so that ``save_pretrained`` writes the modeling code and ``auto_map``
next to the weights (loadable elsewhere with ``trust_remote_code=True``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .configuration_pathfm_vit import PRESETS, TIMM_ARCHITECTURES, PathFMViTConfig
    from .image_processing_pathfm_vit import KAIKO_MEAN, KAIKO_STD, PathFMViTImageProcessor
    from .modeling_pathfm_vit import PathFMViTForImageClassification, PathFMViTModel, PathFMViTPreTrainedModel

_SUBMODULE_OF = {
    "PRESETS": "configuration_pathfm_vit",
    "TIMM_ARCHITECTURES": "configuration_pathfm_vit",
    "PathFMViTConfig": "configuration_pathfm_vit",
    "KAIKO_MEAN": "image_processing_pathfm_vit",
    "KAIKO_STD": "image_processing_pathfm_vit",
    "PathFMViTImageProcessor": "image_processing_pathfm_vit",
    "PathFMViTForImageClassification": "modeling_pathfm_vit",
    "PathFMViTModel": "modeling_pathfm_vit",
    "PathFMViTPreTrainedModel": "modeling_pathfm_vit",
}
"""Public name -> submodule; imported on first access (PEP 562), so that a command's ``--help`` that needs
only the presets does not import torch and torchvision."""


def __getattr__(name: str) -> Any:
    if name in _SUBMODULE_OF:
        value = getattr(importlib.import_module(f".{_SUBMODULE_OF[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_REGISTERED = False


def register_auto_classes() -> None:
    """Register the pathfm ViT with the transformers Auto classes (idempotent; safe to call many times).

    After this, ``AutoConfig.for_model("pathfm_vit")``, ``AutoModel.from_pretrained(dir)``,
    ``AutoModelForImageClassification.from_pretrained(dir)`` and ``AutoImageProcessor.from_pretrained(dir)``
    resolve to the pathfm classes without ``trust_remote_code``.
    """
    global _REGISTERED
    if _REGISTERED:
        return
    from transformers import (
        AutoConfig,
        AutoImageProcessor,
        AutoModel,
        AutoModelForImageClassification,
    )

    from .configuration_pathfm_vit import PathFMViTConfig
    from .image_processing_pathfm_vit import PathFMViTImageProcessor
    from .modeling_pathfm_vit import PathFMViTForImageClassification, PathFMViTModel

    AutoConfig.register(PathFMViTConfig.model_type, PathFMViTConfig, exist_ok=True)
    AutoModel.register(PathFMViTConfig, PathFMViTModel, exist_ok=True)
    AutoModelForImageClassification.register(PathFMViTConfig, PathFMViTForImageClassification, exist_ok=True)
    AutoImageProcessor.register(
        PathFMViTConfig, image_processor_classes={"torchvision": PathFMViTImageProcessor}, exist_ok=True
    )
    # save_pretrained copies the class's source file (+ its relative imports) and writes auto_map
    PathFMViTConfig.register_for_auto_class("AutoConfig")
    PathFMViTModel.register_for_auto_class("AutoModel")
    PathFMViTForImageClassification.register_for_auto_class("AutoModelForImageClassification")
    PathFMViTImageProcessor.register_for_auto_class("AutoImageProcessor")
    _REGISTERED = True


__all__ = [
    "KAIKO_MEAN",
    "KAIKO_STD",
    "PRESETS",
    "TIMM_ARCHITECTURES",
    "PathFMViTConfig",
    "PathFMViTForImageClassification",
    "PathFMViTImageProcessor",
    "PathFMViTModel",
    "PathFMViTPreTrainedModel",
    "register_auto_classes",
]
