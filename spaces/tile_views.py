"""Pictures of what the model sees on one tile: attention overlays and PCA colours of the patch tokens.

- Attention: the last layer's attention from the CLS query to every patch key, one map per head, as in DINO's
  ``visualize_attention.py`` (facebookresearch/dino; Caron et al. 2021, Fig. 1), which also takes
  ``attentions[0, :, 0, 1:]`` of the last block. Maps are min-max scaled per head for display (the caption keeps
  the raw range).
- PCA as RGB: the patch tokens projected on their first three principal components, shown as red, green and
  blue, as in DINOv2's feature visualisation (Oquab et al. 2023, Fig. 1)."""

from __future__ import annotations

import matplotlib
import numpy as np
import PIL.Image

ATTENTION_ALPHA = 0.55
"""Opacity of the attention heat map drawn over the tile."""


def _normalise(values: np.ndarray) -> np.ndarray:
    """Min-max scale to [0, 1] (a constant array maps to zeros)."""
    low, high = float(values.min()), float(values.max())
    if high - low <= 1e-12:
        return np.zeros_like(values, dtype=np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


def heatmap_overlay(tile: np.ndarray, scores: np.ndarray, cmap: str = "inferno") -> np.ndarray:
    """Draw a patch-grid score map over a tile.

    Args:
        tile: uint8 (S, S, 3) the pixels the model saw.
        scores: (gh, gw) one value per patch; min-max scaled, upsampled bilinearly to the tile size.
        cmap: matplotlib colour map name.

    Returns:
        uint8 (S, S, 3) blend of the tile and the coloured map (opacity :data:`ATTENTION_ALPHA`).
    """
    height, width = tile.shape[:2]
    scaled = PIL.Image.fromarray(_normalise(scores)).resize((width, height), PIL.Image.BILINEAR)
    colours = matplotlib.colormaps[cmap](np.asarray(scaled).clip(0.0, 1.0))[:, :, :3] * 255.0
    blend = (1.0 - ATTENTION_ALPHA) * tile.astype(np.float32) + ATTENTION_ALPHA * colours
    return blend.round().clip(0, 255).astype(np.uint8)


def attention_overlays(tile: np.ndarray, cls_attention: np.ndarray) -> list[tuple[np.ndarray, str]]:
    """One overlay per head of the last layer's CLS attention, then their mean.

    Args:
        tile: uint8 (S, S, 3).
        cls_attention: (heads, gh, gw) attention of the CLS query to each patch key.

    Returns:
        heads + 1 (image uint8 (S, S, 3), caption) pairs; captions say the head and its attention range.
    """
    views = []
    for head, scores in enumerate(cls_attention):
        caption = f"head {head}: CLS→patch attention {scores.min():.4f}–{scores.max():.4f}"
        views.append((heatmap_overlay(tile, scores), caption))
    mean = cls_attention.mean(axis=0)
    views.append((heatmap_overlay(tile, mean), f"mean of {cls_attention.shape[0]} heads"))
    return views


def pca_components(features: np.ndarray, n_components: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Principal component scores of row vectors, with a deterministic sign.

    Args:
        features: (N, D).
        n_components: K, at most min(N, D); missing components (N or D too small) are zeros.

    Returns:
        scores (N, K) and explained-variance ratios (K,). Each component's sign is chosen so that its
        largest-magnitude loading is positive (SVD signs are arbitrary).
    """
    x = features.astype(np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    _, singular, vt = np.linalg.svd(x, full_matrices=False)
    k = min(n_components, vt.shape[0])
    vt = vt[:k]
    signs = np.sign(vt[np.arange(k), np.abs(vt).argmax(axis=1)])
    signs[signs == 0] = 1.0
    vt = vt * signs[:, None]
    scores = np.zeros((x.shape[0], n_components))
    scores[:, :k] = x @ vt.T
    total = float((singular**2).sum())
    ratios = np.zeros(n_components)
    if total > 0:
        ratios[:k] = singular[:k] ** 2 / total
    return scores, ratios


def scores_to_rgb(scores: np.ndarray, low_q: float = 0.01, high_q: float = 0.99) -> np.ndarray:
    """Map (N, 3) scores to colours by scaling each component between its 1st and 99th percentile.

    Args:
        scores: (N, 3).
        low_q: Lower quantile mapped to 0.
        high_q: Upper quantile mapped to 255.

    Returns:
        uint8 (N, 3).
    """
    low = np.quantile(scores, low_q, axis=0)
    high = np.quantile(scores, high_q, axis=0)
    span = np.where(high - low > 1e-12, high - low, 1.0)
    return (((scores - low) / span).clip(0.0, 1.0) * 255.0).round().astype(np.uint8)


def pca_rgb_image(
    patch_tokens: np.ndarray, grid: tuple[int, int], size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The PCA-as-RGB picture of one tile's patch tokens.

    Args:
        patch_tokens: (gh * gw, hidden) row-major patch tokens of one tile.
        grid: (gh, gw).
        size: Output side in px (each patch becomes a size/gw block, nearest-neighbour upsampling).

    Returns:
        uint8 (size, size, 3) image and the explained-variance ratios (3,) of the components.
    """
    scores, ratios = pca_components(patch_tokens, 3)
    colours = scores_to_rgb(scores).reshape(grid[0], grid[1], 3)
    image = PIL.Image.fromarray(colours).resize((size, size), PIL.Image.NEAREST)
    return np.asarray(image), ratios
