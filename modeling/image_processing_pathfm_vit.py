"""Image processor reproducing kaiko's preprocessing for the pathfm ViT.

kaiko's ``towards_large_pathology_fms`` transforms (arXiv 2404.15217): ``Resize(224)`` (shorter side, bilinear),
``CenterCrop(224)``, scale to [0, 1], ``Normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))``. Every value is a
field saved in ``preprocessor_config.json``, so other statistics (e.g. ImageNet's) can be set explicitly.

This file travels to the Hugging Face Hub as remote code: it imports only transformers.
"""

from __future__ import annotations

from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_utils import PILImageResampling

KAIKO_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
"""Normalisation mean of kaiko's models (per channel, after rescaling to [0, 1])."""
KAIKO_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)
"""Normalisation std of kaiko's models (per channel, after rescaling to [0, 1])."""


class PathFMViTImageProcessor(TorchvisionBackend):
    """Resize the shorter side to 224 px, center-crop 224 x 224, rescale by 1/255, normalise with mean = std =
    (0.5, 0.5, 0.5).

    Takes PIL images, uint8 numpy arrays (H, W, 3) or tensors; returns ``pixel_values`` (B, 3, 224, 224) float32.
    Override any field at construction, e.g. ``PathFMViTImageProcessor(image_mean=[0.485, 0.456, 0.406],
    image_std=[0.229, 0.224, 0.225], size={"shortest_edge": 256})``.
    """

    resample = PILImageResampling.BILINEAR
    image_mean = list(KAIKO_MEAN)
    image_std = list(KAIKO_STD)
    size = {"shortest_edge": 224}
    default_to_square = False
    crop_size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    do_convert_rgb = True


__all__ = ["KAIKO_MEAN", "KAIKO_STD", "PathFMViTImageProcessor"]
