"""Frozen-backbone semantic segmentation as eva runs it: decoders, Dice loss, training loop."""
