"""Tiny synthetic whole-slide images written with tifffile, readable by OpenSlide (generic tiled TIFF).

OpenSlide reads a tifffile pyramid only as one page per level, tiled, photometric RGB; its mpp comes from the
resolution tags (unit centimetre). Tissue is drawn as saturated pink on white glass.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

PINK = (200, 60, 140)
WHITE = (255, 255, 255)


def downscale(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average resize (PIL box filter) to (width, height)."""
    return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BOX))


def write_slide(
    path: Path,
    level0: np.ndarray,
    level_sizes: list[tuple[int, int]] | None = None,
    mpp: float | None = 0.5,
    tile: int = 64,
    compression: str = "zlib",
    jpeg_rgb: bool = False,
) -> Path:
    """Write a pyramid: level 0 = ``level0`` (h, w, 3|4 uint8), further levels resized to ``level_sizes`` (w, h).

    Args:
        path: output .tiff.
        level0: RGB or RGBA (straight alpha) image.
        level_sizes: sizes of levels 1.. as (width, height); any sizes (non-integer downsamples allowed).
        mpp: level-0 µm/px written as resolution tags (None: no usable resolution).
        tile: TIFF tile side (multiple of 16).
        compression: "zlib" or "jpeg" (quality 90; tifffile stores JPEG as YCbCr 4:2:0 with a JFIF marker).
        jpeg_rgb: with "jpeg", store untransformed RGB without a JFIF marker, as Aperio SVS files do.
    """
    levels = [level0] + [downscale(level0, s) for s in (level_sizes or [])]
    _h0, w0 = level0.shape[:2]
    with tifffile.TiffWriter(path) as tw:
        for i, arr in enumerate(levels):
            kw: dict = {}
            if mpp is not None:
                ds = w0 / arr.shape[1]
                res = 1e4 / (mpp * ds)  # px per cm
                kw = {"resolution": (res, res), "resolutionunit": "CENTIMETER"}
            if arr.shape[2] == 4:
                kw["extrasamples"] = [2]  # unassociated alpha
            if compression == "jpeg":
                kw["compressionargs"] = {"level": 90, **({"outcolorspace": "RGB"} if jpeg_rgb else {})}
            tw.write(
                arr,
                tile=(tile, tile),
                photometric="rgb",
                compression=compression,
                subfiletype=0 if i == 0 else 1,
                metadata=None,
                **kw,
            )
    return path


def blank(width: int, height: int, color: tuple[int, int, int] = WHITE) -> np.ndarray:
    """Uniform RGB image (h, w, 3)."""
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[...] = color
    return img


def tissue_rect_slide(
    path: Path,
    width: int,
    height: int,
    rect: tuple[int, int, int, int],
    mpp: float = 0.5,
    level_sizes: list[tuple[int, int]] | None = None,
) -> Path:
    """White slide with one pink rectangle (x, y, w, h) level-0 px, with mild texture so it looks stained."""
    img = blank(width, height)
    x, y, w, h = rect
    rng = np.random.default_rng(0)
    patch = np.empty((h, w, 3), dtype=np.int16)
    patch[...] = PINK
    patch += rng.integers(-15, 16, size=(h, w, 1), dtype=np.int16)
    img[y : y + h, x : x + w] = np.clip(patch, 0, 255).astype(np.uint8)
    return write_slide(path, img, level_sizes, mpp=mpp)


def gradient_image(width: int, height: int) -> np.ndarray:
    """R = x / 8 (mod 256 never reached for w <= 2040), G = y / 8, B = 128: linear, so area-averaging and
    bilinear resampling preserve it and any tile's pixel values reveal its level-0 coordinates."""
    xs = np.arange(width, dtype=np.float64)
    ys = np.arange(height, dtype=np.float64)
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[..., 0] = np.clip(np.rint(xs[None, :] / 8.0), 0, 255)
    img[..., 1] = np.clip(np.rint(ys[:, None] / 8.0), 0, 255)
    img[..., 2] = 128
    return img
