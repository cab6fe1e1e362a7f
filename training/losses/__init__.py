"""Self-supervised losses, one module per term (DINO CLS, iBOT patch, KoLeo, KDE, Sinkhorn-Knopp)."""

from pathfm.training.losses.dino import DINOLoss

__all__ = ["DINOLoss"]
