"""Slide-level classification with attention MIL over cached tile embeddings (eva's protocol)."""
