"""Self-supervised losses, one module per objective term (DINO CLS, iBOT patch, KoLeo, KDE, Sinkhorn-Knopp)."""
