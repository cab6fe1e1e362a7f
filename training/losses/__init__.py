"""Self-supervised losses, one module per term (DINO CLS, iBOT patch, KoLeo, KDE, Sinkhorn-Knopp)."""
