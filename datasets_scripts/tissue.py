"""Tissue (foreground) masks from a coarse thumbnail (~8 µm/px): HSV saturation against the glass, pen ink
excluded, morphology.

The paper used an unreleased U-Net; this is a public, thumbnail-only method in the CLAM / eva family (CLAM
``create_patches``: HSV saturation thresholded on a thumbnail, closing, small-object filter; eva
``vision/data/wsi/patching/mask.py``: saturation threshold 20). Stained tissue is saturated, glass is grey;
what that family gets wrong, and what is done here instead (own code; the sources gave the ideas):

* **The threshold is relative to the glass.** Otsu splits the saturation histogram in two classes. If their
  means differ by less than :data:`MIN_CONTRAST` the thumbnail is one population: glass (a tinted glass has a
  uniform saturation of 10-15: no tissue) or, above ``saturation_floor``, tissue everywhere. If the lower
  class's median is above ``saturation_floor`` it is not glass but lighter tissue (a slide covered edge to
  edge: plain Otsu would drop a third of it); the threshold is then ``saturation_floor``. Otherwise the lower
  class is glass and the threshold sits a quarter of the way from the glass level to the tissue class's
  mean (at least 3 robust sigmas of the glass and :data:`MIN_SATURATION_THRESHOLD`): faint stains (saturation
  ~10-25 on glass ~0-5), which a fixed floor of 20 lost, are kept.
* **Pen ink is excluded** (:func:`pen_ink`, grown by ``ink_margin_um``): blue and green marker has hues that
  H&E never has (G above R, or R far below B), black marker is darker than any stained tissue. Colour
  thresholds for pens are histolab's idea (``filters/image_filters_functional.py``, ``blue_pen_filter``,
  ``green_pen_filter``; HistoQC ``PenMarkingModule`` trains a pixel classifier instead); here they are
  written as channel ratios so that ink over tissue is caught too (tissue under thick ink is unreadable).
* **Bubble rims and other thin structures go**: after the closing (``closing_um``) and opening
  (``opening_um``), only what lies within ``min_width_um / 2`` of a part at least ``min_width_um`` wide is
  kept, so a bubble's refraction ring on the glass (HistoQC ``BubbleRegionByRegion`` finds these as dark
  ridges) is dropped while the tissue under the bubble stays; components under ``min_object_um2`` are
  dropped (small needle-biopsy or TMA pieces are kept by lowering it).
* **The slide's edge is not a tissue edge**: morphology runs on an edge-padded mask, and the mask's x and y
  px sizes are kept separately (:attr:`TissueMask.mpp_y`), so tile tissue fractions at the right and bottom
  edges match a full-resolution count.

Grayscale / unstained slides (no colour at all, :func:`choose_mask_method`) use darkness (255 - mean RGB)
with Otsu and the floor, and no ink step (black ink and dark tissue look alike there).

Masks are cached per slide (path, size, mtime, mpp, parameters and :data:`MASK_VERSION`) in memory and, when
``cache_dir`` is given, as ``.npz`` files.
"""

from __future__ import annotations

import hashlib
import os
import warnings
import zipfile
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
            ``origin + (j * mpp, i * mpp_y) / slide_mpp`` onward.
        mpp: µm/px of the mask grid along x.
        slide_mpp: level-0 µm/px of the slide the mask belongs to.
        origin: level-0 (x, y) of the mask's top-left corner (the slide bounds' origin).
        threshold: threshold used (0-255) on the signal named by ``method``.
        method: ``"hsv-saturation-glass-relative"`` (stained slides) or ``"darkness-otsu"`` (grayscale /
            unstained slides, where saturation finds nothing; darkness = 255 - mean of R, G, B).
        mpp_y: µm/px of the mask grid along y, on the same level-0 scale (``slide_mpp`` per level-0 px); the
            thumbnail's width and height are rounded separately, so a mask row can cover a little more or less
            level-0 px than a column (None: same as ``mpp``).
    """

    mask: np.ndarray
    mpp: float
    slide_mpp: float = 1.0
    origin: tuple[int, int] = (0, 0)
    threshold: float = 0.0
    method: str = "hsv-saturation-glass-relative"
    mpp_y: float | None = None
    _rows: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def scale(self) -> float:
        """Mask px per level-0 px along x."""
        return self.slide_mpp / self.mpp

    @property
    def scale_y(self) -> float:
        """Mask px per level-0 px along y."""
        return self.slide_mpp / (self.mpp if self.mpp_y is None else self.mpp_y)

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
        sx, sy = self.scale, self.scale_y
        x0 = (x - self.origin[0]) * sx
        y0 = (y - self.origin[1]) * sy
        side_x, side_y = size_level0 * sx, size_level0 * sy
        if side_x <= 0 or side_y <= 0:
            return 0.0
        return self._area(x0, y0, x0 + side_x, y0 + side_y) / (side_x * side_y)

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
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    # channel-wise maximum/minimum: several times faster than a reduction over the last (strided) axis
    mx = np.maximum(np.maximum(r, g), b)
    mn = np.minimum(np.minimum(r, g), b)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0)
    return (s * 255.0).astype(np.float32)


def darkness(rgb: np.ndarray) -> np.ndarray:
    """255 - mean(R, G, B) as float32 (h, w): glass ~0, tissue of any stain or none > 0."""
    return 255.0 - rgb.astype(np.float32).mean(axis=2)


METHODS = {"saturation": "hsv-saturation-glass-relative", "darkness": "darkness-otsu"}

MIN_CONTRAST = 8.0
"""Smallest gap (0-255) between the means of Otsu's two classes for them to count as two populations; under it
the thumbnail is one population (all glass, e.g. a tinted one, or all tissue)."""
GLASS_STEP = 0.25
"""Where the threshold sits between the glass level and the mean of the tissue class (0 = glass, 1 = the
mean): a boundary px counts as tissue when about a quarter of it is tissue, and faint tissue (a fifth of
the usual stain) still clears it."""
GLASS_NOISE_SIGMAS = 3.0
"""The threshold stays this many robust standard deviations of the glass class above the glass level."""
MIN_SATURATION_THRESHOLD = 6.0
"""Lowest saturation threshold ever used (0-255): thumbnail glass noise stays below it."""
INK_MIN_CHROMA = 15.0
"""max - min of R, G, B (0-255) under which a pixel is too grey to call its hue."""
INK_GREEN_OVER_RED = 0.25
"""Blue-green ink: G exceeds R by this fraction of the chroma (hue ~60-225°); H&E and DAB never do."""
INK_RED_OVER_BLUE = 0.5
"""Dense blue ink: B is the largest channel and R is under this fraction of it (hematoxylin: R/B >= ~0.6)."""
INK_BLACK_VALUE = 60.0
"""Black ink: max of R, G, B under this (the darkest H&E at 8 µm/px keeps a channel above ~60) ..."""
INK_GREY_VALUE, INK_GREY_SATURATION = 100.0, 80.0
"""... or a dark grey: max under 100 with saturation under 80 (dark H&E is saturated purple, >= ~90)."""


def choose_mask_method(rgb: np.ndarray, floor: float = 20.0) -> str:
    """``"saturation"`` unless the thumbnail has no colour (99th percentile of saturation under ``floor``)
    but has dark structure (darkness spans more than ``floor``): then ``"darkness"`` (grayscale, IHC
    counterstain-only or unstained slides)."""
    if rgb.size == 0 or float(np.percentile(saturation(rgb), 99)) >= floor:
        return "saturation"
    return "darkness" if float(np.ptp(darkness(rgb))) > floor else "saturation"


def pen_ink(rgb: np.ndarray, sat: np.ndarray | None = None) -> np.ndarray:
    """Marker ink (blue, green, black) by colour: hues and darkness that H&E never has at thumbnail scale.

    Hematoxylin and eosin both absorb green most, so in H&E G is the smallest channel (or close to it) and a
    blue pixel keeps R >= ~0.6 B; blue/green marker ink has G well above R or R far below B. Black ink is
    darker than any stained tissue, or a dark grey where dark tissue is saturated purple. The rules follow the
    colour-threshold idea of histolab's pen filters (``histolab/filters/image_filters_functional.py``,
    ``blue_pen_filter`` / ``green_pen_filter``) written as ratios, so that ink over tissue (the ink's
    transmittance multiplies the stain's) is caught as well as ink on glass.

    Args:
        rgb: uint8 (h, w, 3).
        sat: its :func:`saturation` if already computed.

    Returns:
        bool (h, w): True = ink.
    """
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    mx = np.maximum(np.maximum(r, g), b)
    chroma = mx - np.minimum(np.minimum(r, g), b)
    sat = saturation(rgb) if sat is None else sat
    coloured = (chroma >= INK_MIN_CHROMA) & (
        (g - r > INK_GREEN_OVER_RED * chroma) | ((b >= mx) & (r < INK_RED_OVER_BLUE * b))
    )
    black = (mx < INK_BLACK_VALUE) | ((mx < INK_GREY_VALUE) & (sat < INK_GREY_SATURATION))
    return coloured | black


def _threshold(signal: np.ndarray, floor: float, glass_relative: bool) -> float | None:
    """The threshold on ``signal`` (1-d, the non-ink pixels), or None when there is no tissue.

    Otsu splits the pixels in two classes. Under :data:`MIN_CONTRAST` between the class means they are one
    population: tissue everywhere if its median is above ``floor`` (threshold ``floor``), else glass (None).
    With ``glass_relative`` (saturation): a lower class whose median is above ``floor`` is not glass but
    lighter tissue (a slide covered edge to edge), threshold ``floor``; otherwise the lower class is glass
    and the threshold sits :data:`GLASS_STEP` of the way from the glass level (its median) to the mean of
    the upper class, at least :data:`GLASS_NOISE_SIGMAS` robust sigmas above the glass and at least
    :data:`MIN_SATURATION_THRESHOLD`, so that faint or light tissue counts while glass (even tinted) does
    not. Without it (darkness): Otsu's threshold, at least ``floor``.
    """
    from skimage.filters import threshold_otsu

    if signal.size < 2 or float(np.ptp(signal)) <= 0:
        return float(floor) if signal.size and float(np.median(signal)) > floor else None
    otsu = float(threshold_otsu(signal))
    low, high = signal[signal <= otsu], signal[signal > otsu]
    if not high.size or not low.size or float(high.mean() - low.mean()) < MIN_CONTRAST:
        return float(floor) if float(np.median(signal)) > floor else None
    if not glass_relative:
        return max(otsu, float(floor))
    level = float(np.median(low))
    if level > floor:
        return float(floor)
    noise = 1.4826 * float(np.median(np.abs(low - level)))
    step = max(GLASS_STEP * (float(high.mean()) - level), GLASS_NOISE_SIGMAS * noise)
    return max(level + step, MIN_SATURATION_THRESHOLD)


def _disk(radius_px: float) -> np.ndarray:
    r = max(0, round(radius_px))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (xx * xx + yy * yy) <= r * r + 1e-9


def _padded(op, mask: np.ndarray, radius_px: float) -> np.ndarray:
    """A binary morphology ``op`` with a disk, the mask edge-padded so that tissue touching the slide's border
    is neither eroded nor rounded off there (the slide's edge is not a tissue edge)."""
    pad = round(radius_px) + 1
    padded = np.pad(mask, pad, mode="edge")
    return op(padded, structure=_disk(radius_px))[pad:-pad, pad:-pad]


def tissue_mask_from_rgb(
    rgb: np.ndarray,
    mask_mpp: float,
    saturation_floor: float = 20.0,
    closing_um: float = 16.0,
    opening_um: float = 16.0,
    min_object_um2: float = 10_000.0,
    method: str = "saturation",
    ink_margin_um: float = 8.0,
    min_width_um: float = 48.0,
) -> tuple[np.ndarray, float]:
    """The mask algorithm on an RGB thumbnail (see the module docstring).

    Args:
        rgb: uint8 (h, w, 3) thumbnail at ``mask_mpp``.
        mask_mpp: µm/px of the thumbnail (converts the µm parameters to px).
        saturation_floor: 0-255; the most saturated glass can be, the threshold when there is no glass, and
            (darkness) the lowest threshold.
        closing_um: radius of the closing disk, µm (bridges gaps between tissue fragments).
        opening_um: radius of the opening disk, µm (removes thin debris and bubble rims).
        min_object_um2: connected components smaller than this (µm²) are dropped.
        method: ``"saturation"`` (HSV saturation, pen ink excluded) or ``"darkness"`` (255 - mean RGB, Otsu).
        ink_margin_um: ink found by :func:`pen_ink` is grown by this many µm (its blurred border).
        min_width_um: parts narrower than this, farther than half of it from a wider part, are dropped
            (bubble rims, fibres, scratches); small pieces at least this wide are kept.

    Returns:
        (bool mask (h, w), threshold used; ``saturation_floor`` when no tissue was found).

    Raises:
        ValueError: unknown ``method``.
    """
    from scipy import ndimage

    if method not in METHODS:
        raise ValueError(f"tissue mask method must be one of {sorted(METHODS)}, got {method!r}")
    if method == "saturation":
        signal = saturation(rgb)
        ink = pen_ink(rgb, signal)
        if ink.any() and ink_margin_um / mask_mpp >= 0.5:
            ink = ndimage.binary_dilation(ink, structure=_disk(ink_margin_um / mask_mpp))
    else:
        signal = darkness(rgb)
        ink = np.zeros(signal.shape, dtype=bool)
    threshold = _threshold(signal[~ink], saturation_floor, glass_relative=method == "saturation")
    if threshold is None:
        return np.zeros(signal.shape, dtype=bool), float(saturation_floor)
    mask = (signal > threshold) & ~ink
    if not mask.any():
        return mask, threshold
    if closing_um / mask_mpp >= 1:
        mask = _padded(ndimage.binary_closing, mask, closing_um / mask_mpp) & ~ink
    if opening_um / mask_mpp >= 1:
        mask = _padded(ndimage.binary_opening, mask, opening_um / mask_mpp)
    if min_width_um / 2 / mask_mpp >= 1 and mask.any():
        # Keep what lies within min_width/2 of a part at least min_width wide: thin rings (bubble rims),
        # fibres and scratches go, tissue contours keep their detail.
        core = _padded(ndimage.binary_opening, mask, min_width_um / 2 / mask_mpp)
        mask &= _padded(ndimage.binary_dilation, core, min_width_um / 2 / mask_mpp)
    min_px = min_object_um2 / (mask_mpp * mask_mpp)
    if min_px >= 1 and mask.any():
        labels, n = ndimage.label(mask)
        if n:
            sizes = np.bincount(labels.ravel())
            keep = sizes >= min_px
            keep[0] = False
            mask = keep[labels]
    return mask.astype(bool), threshold


MASK_VERSION = 2
"""Bumped when the algorithm changes, so that cached ``.npz`` masks of an older algorithm are not reused."""

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
    ink_margin_um: float = 8.0,
    min_width_um: float = 48.0,
) -> TissueMask:
    """Compute (or fetch from cache) a slide's tissue mask on its :attr:`SlideReader.bounds`.

    Args:
        reader: open slide.
        mask_mpp: µm/px of the mask (about 8-16 is enough; raised to the slide's native mpp if finer).
        saturation_floor: minimum HSV-saturation threshold (0-255) under Otsu's.
        closing_um, opening_um: morphology disk radii in µm.
        min_object_um2: smallest kept tissue component, µm².
        cache_dir: optional folder for ``.npz`` mask files.
        ink_margin_um, min_width_um: see :func:`tissue_mask_from_rgb`.

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
        ink_margin_um,
        min_width_um,
        MASK_VERSION,
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
        tm = _cached_mask(npz, reader)
        if tm is not None:
            _remember(key, tm)
            return tm
    thumb = reader.thumbnail(mask_mpp)
    # The thumbnail's width and height are each rounded to whole px: use the exact mpp of each axis so the
    # mask <-> level-0 mapping stays aligned up to the right and bottom edges.
    exact_mpp = reader.bounds[2] * reader.mpp / thumb.shape[1]
    exact_mpp_y = reader.bounds[3] * reader.mpp / thumb.shape[0]
    method = choose_mask_method(thumb, saturation_floor)
    mask, threshold = tissue_mask_from_rgb(
        thumb, exact_mpp, saturation_floor, closing_um, opening_um, min_object_um2, method,
        ink_margin_um, min_width_um,
    )  # fmt: skip
    tm = TissueMask(
        mask=mask,
        mpp=exact_mpp,
        slide_mpp=reader.mpp,
        origin=(int(reader.bounds[0]), int(reader.bounds[1])),
        threshold=threshold,
        method=METHODS[method],
        mpp_y=exact_mpp_y,
    )
    if npz is not None:
        npz.parent.mkdir(parents=True, exist_ok=True)
        tmp = npz.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez_compressed(
            tmp, mask=mask, mpp=exact_mpp, mpp_y=exact_mpp_y, threshold=threshold, method=METHODS[method]
        )
        os.replace(tmp, npz)
    _remember(key, tm)
    return tm


def _cached_mask(npz: Path, reader: SlideReader) -> TissueMask | None:
    """The mask stored in ``npz`` for ``reader``'s slide; None when there is none, or when the file cannot be
    read (cut short by a full disk, overwritten by hand): warned, then computed and written again."""
    if not npz.is_file():
        return None
    try:
        with np.load(npz, allow_pickle=False) as data:
            return TissueMask(
                mask=data["mask"].astype(bool),
                mpp=float(data["mpp"]),
                slide_mpp=reader.mpp,
                origin=(int(reader.bounds[0]), int(reader.bounds[1])),
                threshold=float(data["threshold"]),
                method=str(data["method"]),
                mpp_y=float(data["mpp_y"]),
            )
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        warnings.warn(
            f"mask cache file {npz} cannot be read ({type(err).__name__}: {err}): the mask of slide "
            f"{reader.slide_id} is computed and written again",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def _remember(key: tuple, tm: TissueMask) -> None:
    _CACHE[key] = tm
    while len(_CACHE) > _CACHE_MAX:
        _CACHE.popitem(last=False)
