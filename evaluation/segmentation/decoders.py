"""Segmentation decoders over a frozen backbone's patch-token grid, with the layer layout of eva's.

Both map features (B, D, h, w) (h = H/p, w = W/p; a list of such grids is upsampled to the first one's size
and concatenated along D) to logits (B, C, H, W) at the image size (H, W).

Source of the architectures: kaiko-ai/eva 0.4.5,
``eva/vision/models/networks/decoders/segmentation/semantic/{common,with_image}.py`` and ``decoder2d.py``
(ConvDecoderMS after DINOv2's ``+ms`` decoder, arXiv 2304.07193). ``tests/evaluation/test_eva_parity.py``
checks the outputs against eva's modules with the weights copied by name (``EVA_NAMES``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def merge_feature_grids(features: Tensor | Sequence[Tensor]) -> Tensor:
    """One (B, sum D_i, h, w) grid from one or several (B, D_i, h_i, w_i) grids (bilinear to the first size).

    Raises:
        ValueError: a grid that is not 4-D.
    """
    grids = [features] if isinstance(features, Tensor) else list(features)
    if not grids or any(g.ndim != 4 for g in grids):
        raise ValueError(f"features must be (B, D, h, w) grids, got shapes {[tuple(g.shape) for g in grids]}")
    size = grids[0].shape[2:]
    return torch.cat([F.interpolate(g, size=size, mode="bilinear", align_corners=False) for g in grids], 1)


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 conv (padding 1) -> BatchNorm -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ConvDecoderMS(nn.Module):
    """Upsample x2 (nearest) -> conv3x3 D->64 -> upsample x2 -> conv3x3 64->C -> bilinear to image size.

    Args:
        in_features: D (summed over grids when several are given).
        num_classes: C (background included).
    """

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_features, 64, 3, padding=1)
        self.conv2 = nn.Conv2d(64, num_classes, 3, padding=1)

    def forward(self, features: Tensor | Sequence[Tensor], image_size: tuple[int, int]) -> Tensor:
        """Logits (B, C, H, W) from grids (B, D, h, w) for images of ``image_size`` (H, W) pixels."""
        x = merge_feature_grids(features)
        x = self.conv1(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        x = self.conv2(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return F.interpolate(x, size=tuple(image_size), mode="bilinear", align_corners=False)


class ConvDecoderWithImage(nn.Module):
    """eva's leaderboard decoder: features and the (normalised) input image.

    Upsample x2 (nearest) -> conv3x3 D->64 + BN + ReLU -> bilinear to the image size -> concat RGB ->
    conv3x3 67->32 + BN + ReLU -> conv3x3 32->32 + BN + ReLU -> conv1x1 32->C.

    Args:
        in_features: D.
        num_classes: C (background included).
        hidden_dims: the three hidden widths (default 64, 32, 32).
    """

    def __init__(self, in_features: int, num_classes: int, hidden_dims: Sequence[int] = (64, 32, 32)) -> None:
        super().__init__()
        if len(hidden_dims) != 3:
            raise ValueError(f"hidden_dims needs 3 widths, got {list(hidden_dims)}")
        self.feature_block = conv_bn_relu(in_features, hidden_dims[0])
        self.image_block = nn.Sequential(
            conv_bn_relu(hidden_dims[0] + 3, hidden_dims[1]), conv_bn_relu(hidden_dims[1], hidden_dims[2])
        )
        self.classifier = nn.Conv2d(hidden_dims[2], num_classes, 1)

    def forward(self, features: Tensor | Sequence[Tensor], images: Tensor) -> Tensor:
        """Logits (B, C, H, W) from grids (B, D, h, w) and normalised images (B, 3, H, W).

        Raises:
            ValueError: images that are not (B, 3, H, W).
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        x = self.feature_block(F.interpolate(merge_feature_grids(features), scale_factor=2.0, mode="nearest"))
        x = F.interpolate(x, size=tuple(images.shape[2:]), mode="bilinear", align_corners=False)
        return self.classifier(self.image_block(torch.cat([x, images.to(x.dtype)], dim=1)))


DECODERS = {"conv_with_image": ConvDecoderWithImage, "conv_ms": ConvDecoderMS}

# Our parameter name -> eva 0.4.5's, for copying weights between the two (tests, importing eva heads).
EVA_NAMES = {
    "ConvDecoderMS": {"conv1": "_layers.1", "conv2": "_layers.3"},
    "ConvDecoderWithImage": {
        "feature_block": "_layers.1",
        "image_block": "image_block",
        "classifier": "classifier",
    },
}
