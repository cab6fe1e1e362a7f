"""Tissue (foreground) masks from a coarse thumbnail: HSV saturation, Otsu with a floor, morphology.

The paper used an unreleased U-Net; this is the public CLAM-style fallback eva uses (saturation threshold on a
thumbnail): H&E-stained tissue is saturated, glass / background is grey-white. Otsu picks the split between
the two populations; ``saturation_floor`` (0-255, eva's value 20) keeps a slide with no tissue from being
split into "less grey" and "grey". A closing then an opening (disks of ``closing_um`` / ``opening_um``) and
removal of specks smaller than ``min_object_um2`` clean the result.

Masks are cached per slide (path, size, mtime, mpp and parameters) in memory and, when ``cache_dir`` is
given, as ``.npz`` files.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pathfm.datasets_scripts.slide import SlideReader


@dataclass
class TissueMask:
    """A boolean tissue mask on a coarse grid aligned with level 0.

    Attributes:
        mask: bool (h, w); True = tissue. Mask pixel (i, j) covers level-0 px
            ``origin + (j, i) * mpp / slide_mpp`` onward.
        mpp: µm/px of the mask grid.
        slide_mpp: level-0 µm/px of the slide the mask belongs to.
        origin: level-0 (x, y) of the mask's top-left corner (the slide bounds' origin).
        threshold: threshold used (0-255) on the signal named by ``method``.
        method: ``"hsv-saturation-otsu"`` (stained slides) or ``"darkness-otsu"`` (grayscale / unstained
            slides, where saturation finds nothing; darkness = 255 - mean of R, G, B).
    """

    mask: np.ndarray
    mpp: float
    slide_mpp: float = 1.0
    origin: tuple[int, int] = (0, 0)
    threshold: float = 0.0
    method: str = "hsv-saturation-otsu"
    _rows: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def scale(self) -> float:
        """Mask px per level-0 px."""
        return self.slide_mpp / self.mpp

    @property
    def tissue_pixels(self) -> int:
        """Number of tissue pixels in the mask."""
        rows = self._row_cumsum()
        return int(rows[-1]) if len(rows) else 0

    def fraction(self, x: float, y: float, size_level0: float) -> float:
        """Tissue fraction of a square region, measured on the mask (area-weighted, sub-pixel exact).

        Args:
            x, y: level-0 px of the region's top-left corner.
            size_level0: side of the region in level-0 px.

        Returns:
            fraction in [0, 1]; parts outside the mask count as background.
        """
        s = self.scale
        x0 = (x - self.origin[0]) * s
        y0 = (y - self.origin[1]) * s
        side = size_level0 * s
        if side <= 0:
            return 0.0
        return self._area(x0, y0, x0 + side, y0 + side) / (side * side)

    def _area(self, x0: float, y0: float, x1: float, y1: float) -> float:
        """Tissue area (mask px units) in [x0, x1) x [y0, y1): exact, each mask px weighted by its overlap."""
        h, w = self.mask.shape
        x0, x1 = min(max(x0, 0.0), w), min(max(x1, 0.0), w)
        y0, y1 = min(max(y0, 0.0), h), min(max(y1, 0.0), h)
        if x1 <= x0 or y1 <= y0:
            return 0.0
        c0, c1 = int(np.floor(x0)), int(np.ceil(x1))
        r0, r1 = int(np.floor(y0)), int(np.ceil(y1))
        wx = np.minimum(np.arange(c0, c1) + 1.0, x1) - np.maximum(np.arange(c0, c1, dtype=np.float64), x0)
        wy = np.minimum(np.arange(r0, r1) + 1.0, y1) - np.maximum(np.arange(r0, r1, dtype=np.float64), y0)
        return float(wy @ self.mask[r0:r1, c0:c1] @ wx)

    def _row_cumsum(self) -> np.ndarray:
        if self._rows is None:
            self._rows = np.cumsum(self.mask.sum(axis=1, dtype=np.int64))
        return self._rows

    def sample_pixel(self, rng: np.random.Generator) -> tuple[int, int]:
        """A tissue pixel uniformly at random: the k-th tissue pixel in row-major order, k ~ U{0..n-1}.

        Memory O(h) (row counts) instead of an (n, 2) coordinate list.

        Args:
            rng: numpy generator (one ``integers`` draw).

        Returns:
            (row, col) of the mask.

        Raises:
            ValueError: the mask has no tissue.
        """
        rows = self._row_cumsum()
        n = int(rows[-1]) if len(rows) else 0
        if n == 0:
            raise ValueError("empty tissue mask")
        k = int(rng.integers(n))
        r = int(np.searchsorted(rows, k, side="right"))
        before = int(rows[r - 1]) if r > 0 else 0
        c = int(np.flatnonzero(self.mask[r])[k - before])
        return r, c

    def tissue_coordinates(self) -> np.ndarray:
        """(row, col) indices of the tissue pixels, int64 (n, 2), row-major order."""
        return np.argwhere(self.mask)


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation scaled to 0-255.

    Args:
        rgb: uint8 (h, w, 3).

    Returns:
        float32 (h, w): ``255 * (max - min) / max`` (0 where max == 0).
    """
    rgb = rgb.astype(np.float32)
    mx = rgb.max(axis=2)
    mn = rgb.min(axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0)
    return (s * 255.0).astype(np.float32)


def darkness(rgb: np.ndarray) -> np.ndarray:
    """255 - mean(R, G, B) as float32 (h, w): glass ~0, tissue of any stain or none > 0."""
    return 255.0 - rgb.astype(np.float32).mean(axis=2)


METHODS = {"saturation": "hsv-saturation-otsu", "darkness": "darkness-otsu"}


def choose_mask_method(rgb: np.ndarray, floor: float = 20.0) -> str:
    """``"saturation"`` unless the thumbnail has no colour (99th percentile of saturation under ``floor``)
    but has dark structure (darkness spans more than ``floor``): then ``"darkness"`` (grayscale, IHC
    counterstain-only or unstained slides)."""
    if rgb.size == 0 or float(np.percentile(saturation(rgb), 99)) >= floor:
        return "saturation"
    return "darkness" if float(np.ptp(darkness(rgb))) > floor else "saturation"


def _disk(radius_px: float) -> np.ndarray:
    r = max(0, round(radius_px))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (xx * xx + yy * yy) <= r * r + 1e-9


def tissue_mask_from_rgb(
    rgb: np.ndarray,
    mask_mpp: float,
    saturation_floor: float = 20.0,
    closing_um: float = 16.0,
    opening_um: float = 16.0,
    min_object_um2: float = 10_000.0,
    method: str = "saturation",
) -> tuple[np.ndarray, float]:
    """The mask algorithm on an RGB thumbnail.

    Args:
        rgb: uint8 (h, w, 3) thumbnail at ``mask_mpp``.
        mask_mpp: µm/px of the thumbnail (converts the µm parameters to px).
        saturation_floor: minimum saturation threshold (0-255).
        closing_um: radius of the closing disk, µm (bridges gaps between tissue fragments).
        opening_um: radius of the opening disk, µm (removes thin debris).
        min_object_um2: connected components smaller than this (µm²) are dropped.
        method: ``"saturation"`` (HSV saturation) or ``"darkness"`` (255 - mean RGB); Otsu with the floor.

    Returns:
        (bool mask (h, w), threshold used).
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    if method not in METHODS:
        raise ValueError(f"tissue mask method must be one of {sorted(METHODS)}, got {method!r}")
    sat = saturation(rgb) if method == "saturation" else darkness(rgb)
    try:
        otsu = float(threshold_otsu(sat)) if sat.size > 1 and np.ptp(sat) > 0 else 0.0
    except ValueError:
        otsu = 0.0
    threshold = max(otsu, float(saturation_floor))
    mask = sat > threshold
    if not mask.any():
        return mask, threshold
    close_r = closing_um / mask_mpp
    open_r = opening_um / mask_mpp
    if close_r >= 1:
        # Pad so the closing does not erode tissue that touches the border.
        pad = round(close_r) + 1
        padded = np.pad(mask, pad, mode="edge")
        mask = ndimage.binary_closing(padded, structure=_disk(close_r))[pad:-pad, pad:-pad]
    if open_r >= 1:
        mask = ndimage.binary_opening(mask, structure=_disk(open_r))
    min_px = min_object_um2 / (mask_mpp * mask_mpp)
    if min_px >= 1 and mask.any():
        labels, n = ndimage.label(mask)
        if n:
            sizes = np.bincount(labels.ravel())
            keep = sizes >= min_px
            keep[0] = False
            mask = keep[labels]
    return mask.astype(bool), threshold


_CACHE: OrderedDict[tuple, TissueMask] = OrderedDict()
_CACHE_MAX = 32  # masks (1 byte/px, ~8 MB for a 100k x 80k px slide at 8 µm/px): bounded memory


def clear_mask_cache() -> None:
    """Empty the in-memory tissue-mask cache."""
    _CACHE.clear()


def compute_tissue_mask(
    reader: SlideReader,
    mask_mpp: float = 8.0,
    saturation_floor: float = 20.0,
    closing_um: float = 16.0,
    opening_um: float = 16.0,
    min_object_um2: float = 10_000.0,
    cache_dir: str | os.PathLike | None = None,
) -> TissueMask:
    """Compute (or fetch from cache) a slide's tissue mask on its :attr:`SlideReader.bounds`.

    Args:
        reader: open slide.
        mask_mpp: µm/px of the mask (about 8-16 is enough; raised to the slide's native mpp if finer).
        saturation_floor: minimum HSV-saturation threshold (0-255) under Otsu's.
        closing_um, opening_um: morphology disk radii in µm.
        min_object_um2: smallest kept tissue component, µm².
        cache_dir: optional folder for ``.npz`` mask files.

    Returns:
        :class:`TissueMask` (mask may be all False: the slide has no tissue).
    """
    mask_mpp = max(float(mask_mpp), reader.mpp)
    try:
        st = os.stat(reader.path)
        file_key = (os.path.abspath(reader.path), st.st_size, st.st_mtime_ns)
    except OSError:
        file_key = (reader.path, 0, 0)
    key = (
        *file_key,
        round(reader.mpp, 6),
        tuple(reader.bounds),
        mask_mpp,
        saturation_floor,
        closing_um,
        opening_um,
        min_object_um2,
        bool(getattr(reader.colour, "active", False)),  # an applied ICC profile changes the colours
    )
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    npz: Path | None = None
    if cache_dir is not None:
        digest = hashlib.sha1(repr(key).encode()).hexdigest()[:16]
        npz = Path(cache_dir) / f"{reader.slide_id}-{digest}.npz"
        if npz.is_file():
            data = np.load(npz)
            tm = TissueMask(
                mask=data["mask"].astype(bool),
                mpp=float(data["mpp"]),
                slide_mpp=reader.mpp,
                origin=(int(reader.bounds[0]), int(reader.bounds[1])),
                threshold=float(data["threshold"]),
                method=str(data["method"]) if "method" in data else METHODS["saturation"],
            )
            _remember(key, tm)
            return tm
    thumb = reader.thumbnail(mask_mpp)
    # The thumbnail is rounded to whole px: use its exact mpp so mask <-> level-0 mapping stays aligned.
    exact_mpp = reader.bounds[2] * reader.mpp / thumb.shape[1]
    method = choose_mask_method(thumb, saturation_floor)
    mask, threshold = tissue_mask_from_rgb(
        thumb, exact_mpp, saturation_floor, closing_um, opening_um, min_object_um2, method
    )
    tm = TissueMask(
        mask=mask,
        mpp=exact_mpp,
        slide_mpp=reader.mpp,
        origin=(int(reader.bounds[0]), int(reader.bounds[1])),
        threshold=threshold,
        method=METHODS[method],
    )
    if npz is not None:
        npz.parent.mkdir(parents=True, exist_ok=True)
        tmp = npz.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez_compressed(tmp, mask=mask, mpp=exact_mpp, threshold=threshold, method=METHODS[method])
        os.replace(tmp, npz)
    _remember(key, tm)
    return tm


def _remember(key: tuple, tm: TissueMask) -> None:
    _CACHE[key] = tm
    while len(_CACHE) > _CACHE_MAX:
        _CACHE.popitem(last=False)
