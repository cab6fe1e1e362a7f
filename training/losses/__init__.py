"""Self-supervised losses, one module each: ``dino`` (CLS self-distillation)."""

from pathfm.training.losses.dino import DINOLoss

__all__ = ["DINOLoss"]
