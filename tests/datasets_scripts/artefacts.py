"""Test slides with a known tissue truth, painted with real H&E texture from the embedded CMU-1 slide.

The texture is a 456 µm square fully inside the tissue of ``data/slides/CMU-1-Small-Region.svs``, read at
``MPP`` and mirror-tiled; the slides are written at ``MPP`` with tifffile. Artefacts are painted the way they
form on a glass slide: stains and inks attenuate transmitted light, so they multiply the colour below them
(Beer-Lambert), a faint stain is the same tissue with its optical density scaled down, an air bubble's rim is
a dark refraction ring and its inside is slightly brighter than its surroundings.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from pathfm.datasets_scripts.embedded import SLIDES_DIR
from pathfm.datasets_scripts.slide import open_slide

MPP = 2.0
"""Level-0 µm/px of the painted slides (marker strokes are ~0.3-1 mm wide: a coarse level 0 keeps them
small)."""
GLASS = (244, 244, 247)  # CMU-1's glass at 8 µm/px: brightness 244-246, saturation 1-2
INKS = {  # transmittance (0-255) of a dense marker stroke, as scanned: blue, green and black felt-tip pens
    "blue": (40, 75, 165),
    "green": (45, 140, 95),
    "black": (38, 40, 46),
}


@functools.lru_cache(maxsize=1)
def he_texture() -> np.ndarray:
    """uint8 (228, 228, 3): CMU-1-Small-Region level-0 px (756, 1978) + 917 px square, at ``MPP`` µm/px."""
    with open_slide(Path(SLIDES_DIR) / "CMU-1-Small-Region.svs") as r:
        return r.read_tile(756, 1978, 228, MPP)


def texture(width: int, height: int) -> np.ndarray:
    """The H&E texture mirror-tiled to uint8 (height, width, 3)."""
    tex = he_texture()
    reps = (-(-height // tex.shape[0]), -(-width // tex.shape[1]))
    tile = np.concatenate([tex, tex[:, ::-1]], axis=1)
    tile = np.concatenate([tile, tile[::-1]], axis=0)
    return np.tile(tile, (-(-reps[0] // 2), -(-reps[1] // 2), 1))[:height, :width].copy()


def ellipse(width: int, height: int, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """bool (height, width): pixel centres inside the ellipse."""
    yy, xx = np.mgrid[0:height, 0:width] + 0.5
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def stroke(width: int, height: int, points: list[tuple[float, float]], thickness: float) -> np.ndarray:
    """bool (height, width): pixels within ``thickness / 2`` of the polyline through ``points`` (x, y)."""
    yy, xx = np.mgrid[0:height, 0:width] + 0.5
    best = np.full((height, width), np.inf)
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
        best = np.minimum(best, np.hypot(xx - (x0 + t * dx), yy - (y0 + t * dy)))
    return best <= thickness / 2.0


def paint_tissue(tissue: np.ndarray, strength: float | np.ndarray = 1.0) -> np.ndarray:
    """Glass with the H&E texture where ``tissue`` is True, its optical density scaled by ``strength`` (1 = as
    scanned, 0.2 = a faint stain); ``strength`` may be a (h, w) array (a stain that fades)."""
    h, w = tissue.shape
    glass = np.asarray(GLASS, dtype=np.float64)
    tex = np.maximum(texture(w, h).astype(np.float64), 1.0)
    od = -np.log(tex / glass)  # optical density of the stain relative to the glass
    s = np.broadcast_to(np.asarray(strength, dtype=np.float64), (h, w))[..., None]
    out = np.where(tissue[..., None], glass * np.exp(-od * s), glass)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def ink(rgb: np.ndarray, where: np.ndarray, colour: str) -> np.ndarray:
    """A marker stroke over ``rgb`` (glass or tissue): the ink's transmittance multiplies what lies below."""
    out = rgb.astype(np.float64)
    out[where] *= np.asarray(INKS[colour], dtype=np.float64) / 255.0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def bubble(rgb: np.ndarray, cx: float, cy: float, radius: float, rim: float) -> tuple[np.ndarray, np.ndarray]:
    """An air bubble under the coverslip: inside it the image is a little brighter (less scatter), its rim
    is a dark grey refraction ring ``rim`` px wide with a brownish fringe outside.

    Returns:
        (painted uint8 (h, w, 3), bool (h, w) ring = rim and fringe).
    """
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    d = np.hypot(xx - cx, yy - cy)
    out = rgb.astype(np.float64)
    inside = d < radius - rim / 2
    out[inside] += 0.15 * (255.0 - out[inside])
    ring = np.abs(d - radius) <= rim / 2
    fringe = (d > radius + rim / 2) & (d <= radius + rim)
    out[ring] *= np.array([0.42, 0.42, 0.45])
    out[fringe] *= np.array([0.85, 0.75, 0.62])  # chromatic fringe: yellow-brown, saturated
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), ring | fringe


def on_grid(truth: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Level-0 bool truth -> fraction of each cell of a (rows, cols) grid spanning the same extent (float)."""
    h, w = truth.shape
    rows, cols = shape
    ys = np.linspace(0, h, rows + 1)
    xs = np.linspace(0, w, cols + 1)
    cy = np.cumsum(np.pad(truth.astype(np.float64), ((1, 0), (1, 0))), axis=0).cumsum(axis=1)

    def area(y0: np.ndarray, y1: np.ndarray, x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
        # integral image at (possibly fractional) corners, with bilinear interpolation of the summed table
        def at(y: np.ndarray, x: np.ndarray) -> np.ndarray:
            yi, xi = np.floor(y).astype(int), np.floor(x).astype(int)
            yj, xj = np.minimum(yi + 1, h), np.minimum(xi + 1, w)
            fy, fx = y - yi, x - xi
            return (
                cy[yi, xi] * (1 - fy) * (1 - fx) + cy[yj, xi] * fy * (1 - fx)
                + cy[yi, xj] * (1 - fy) * fx + cy[yj, xj] * fy * fx
            )  # fmt: skip

        return at(y1, x1) - at(y0, x1) - at(y1, x0) + at(y0, x0)

    y0, x0 = np.meshgrid(ys[:-1], xs[:-1], indexing="ij")
    y1, x1 = np.meshgrid(ys[1:], xs[1:], indexing="ij")
    return area(y0, y1, x0, x1) / ((y1 - y0) * (x1 - x0))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool arrays."""
    return float((a & b).sum() / max(1, (a | b).sum()))
