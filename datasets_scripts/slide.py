"""Whole-slide image access: one small reader interface over OpenSlide (openslide-bin wheel).

A reader answers "give me T x T px of this slide at m µm/px, starting at level-0 pixel (x, y)":

* the slide's level-0 mpp comes from the chain of :mod:`pathfm.datasets_scripts.mpp` (a given value,
  OpenSlide, vendor properties, TIFF resolution tags with their unit, a default), per axis, with its source;
  a slide with no mpp or an absurd one is refused with :class:`MissingMppError`, which says how to override;
* an embedded ICC profile is applied or ignored by an explicit option (:mod:`pathfm.datasets_scripts.colour`);
* the tile is read from the coarsest pyramid level that is still at least as fine as m (within
  ``mpp_tolerance``), using the level's *measured* downsample (never assuming 2/4/8...), covering
  ``T * m / mpp_level`` level px with sub-pixel precision, and resized to T px with an antialiasing filter;
* targets finer than the native mpp are refused rather than upsampled beyond the tolerance;
* transparent pixels (outside the scanned area, past the slide edge) are composited onto the slide's
  background colour (``openslide.background-color``, else white), never black;
* ``openslide.bounds-*`` give :attr:`SlideReader.bounds`, the rectangle that holds image data; samplers and
  tissue masks stay inside it. Coordinates are always level-0 pixels of the full OpenSlide frame.

Another backend (tiffslide, cuCIM) only needs to subclass :class:`SlideReader` and implement ``_read_level``.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any, Self

import numpy as np
from PIL import Image

from pathfm.datasets_scripts.colour import ICC_OPTIONS, IccTransform
from pathfm.datasets_scripts.mpp import (
    MAX_LEVEL0_MPP,
    MIN_LEVEL0_MPP,
    NON_SQUARE_TOLERANCE,
    OVERRIDE_HINT,
    Level0Mpp,
    MissingMppError,
    MppError,
    SlideError,
    resolve_level0_mpp,
)
from pathfm.datasets_scripts.skips import warn_given_mpp_disagreement

DEFAULT_MPP_TOLERANCE = 0.05
"""Relative tolerance on mpp: a level up to 5 % coarser than the target still counts as fine enough (the tile
is then upsampled by at most 5 %), e.g. a 0.2631 µm/px scan serves the 0.25 µm/px magnification."""

__all__ = [
    "DEFAULT_MPP_TOLERANCE",
    "MAX_LEVEL0_MPP",
    "MIN_LEVEL0_MPP",
    "NON_SQUARE_TOLERANCE",
    "OVERRIDE_HINT",
    "MissingMppError",
    "MppError",
    "OpenSlideReader",
    "SlideError",
    "SlideReader",
    "add_reading_arguments",
    "open_slide",
]


def _parse_hex_color(value: str | None) -> tuple[int, int, int]:
    """Parse ``openslide.background-color`` ('RRGGBB'); white when absent or malformed."""
    if value and len(value) == 6:
        try:
            return (int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16))
        except ValueError:
            pass
    return (255, 255, 255)


def bounds_from_properties(
    properties: dict[str, str], dimensions: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Rectangle holding image data, from ``openslide.bounds-{x,y,width,height}``.

    Args:
        properties: OpenSlide properties.
        dimensions: level-0 (width, height) px.

    Returns:
        (x, y, width, height) in level-0 px; the whole slide when the properties are absent.
    """
    w, h = dimensions
    try:
        bx = int(properties.get("openslide.bounds-x", 0))
        by = int(properties.get("openslide.bounds-y", 0))
        bw = int(properties.get("openslide.bounds-width", w - bx))
        bh = int(properties.get("openslide.bounds-height", h - by))
    except ValueError:
        return (0, 0, w, h)
    if bw <= 0 or bh <= 0:
        return (0, 0, w, h)
    return (bx, by, bw, bh)


def composite_image(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Composite a PIL RGBA image (straight alpha, as openslide-python returns) onto an opaque colour.

    Args:
        img: RGBA image.
        background: (r, g, b) 0-255.

    Returns:
        RGB image; fully transparent pixels become exactly ``background``, opaque ones keep their colour.
    """
    if img.mode == "RGB":
        return img
    lo, _ = img.getchannel("A").getextrema()
    if lo == 255:  # the common case: opaque everywhere, a plain channel drop
        return img.convert("RGB")
    bg = Image.new("RGBA", img.size, (*background, 255))
    return Image.alpha_composite(bg, img).convert("RGB")


def composite_on_background(rgba: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """Numpy front-end of :func:`composite_image`: uint8 (h, w, 4) -> uint8 (h, w, 3)."""
    return np.array(composite_image(Image.fromarray(np.ascontiguousarray(rgba), "RGBA"), background))


RESIZE_SKIP_PX = 0.01
"""A region within this many output px of the tile size (or of twice it) is cut (or 2x box-reduced), not
resampled: the tile is then off by at most this much, and the sub-pixel offset is rounded (<= 0.5 px)."""


def resize_mode(
    box: tuple[float, float, float, float], size: int, width: int, height: int
) -> tuple[str, int, int]:
    """Which resampling :func:`resize_region` applies to ``box`` of a ``width`` x ``height`` px region.

    Returns:
        ("crop", x, y): the box is ``size`` px within :data:`RESIZE_SKIP_PX`: cut ``size`` px at (x, y), the
        rounded box origin; ("reduce", x, y): it is ``2 * size`` px within twice that: 2x box reduction of
        ``2 * size`` px from (x, y); ("resample", 0, 0): anything else.
    """
    x0, y0, x1, y1 = box
    ix, iy = round(x0), round(y0)
    for factor, mode in ((1, "crop"), (2, "reduce")):
        side, slack = factor * size, factor * RESIZE_SKIP_PX
        near = abs(x1 - x0 - side) <= slack and abs(y1 - y0 - side) <= slack
        if near and ix >= 0 and iy >= 0 and ix + side <= width and iy + side <= height:
            return mode, ix, iy
    return "resample", 0, 0


def resize_region(
    region: Image.Image | np.ndarray, box: tuple[float, float, float, float], size: int
) -> np.ndarray:
    """Resample the ``box`` of a region to a ``size`` x ``size`` tile: the one resize policy of every reader.

    * box already ``size`` px wide and high (within :data:`RESIZE_SKIP_PX`): a plain crop at the rounded offset;
    * box ``2 * size`` px (within ``2 * RESIZE_SKIP_PX``): an exact 2x box reduction (PIL ``reduce(2)``);
    * else PIL bilinear with support scaled to the reduction (antialiased), sub-pixel box; ``reducing_gap=2``
      first box-reduces by the integer part of large factors (~30 % faster, same antialiasing).

    Args:
        region: RGB / RGBX PIL image or C-contiguous uint8 (h, w, 3 or 4) array (4: RGBX, mapped into PIL
            without a copy) holding the box.
        box: (x0, y0, x1, y1) in region px (floats).
        size: output side in px.

    Returns:
        uint8 (size, size, 3).
    """
    if isinstance(region, np.ndarray):
        h, w = region.shape[:2]
        mode, ix, iy = resize_mode(box, size, w, h)
        if mode == "crop":
            return np.ascontiguousarray(region[iy : iy + size, ix : ix + size, :3])
        if region.shape[2] == 4:
            img = Image.frombuffer("RGBX", (w, h), region, "raw", "RGBX", 0, 1)
        else:
            img = Image.fromarray(np.ascontiguousarray(region), "RGB")
    else:
        img = region
        mode, ix, iy = resize_mode(box, size, *img.size)
        if mode == "crop":
            whole = (ix, iy, size, size) == (0, 0, *img.size)
            img = img if whole else img.crop((ix, iy, ix + size, iy + size))
    if mode == "reduce":
        img = img.reduce(2, box=(ix, iy, ix + 2 * size, iy + 2 * size))
    elif mode == "resample":
        img = img.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=2.0)
    return rgb_array(img)


def rgb_array(img: Image.Image) -> np.ndarray:
    """A writable uint8 (h, w, 3) copy of an RGB or RGBX PIL image: one C pack of the pixels plus a memcpy
    (``np.array(img.convert("RGB"))`` makes three passes)."""
    w, h = img.size
    return np.frombuffer(img.tobytes("raw", "RGB"), dtype=np.uint8).reshape(h, w, 3).copy()


class SlideReader:
    """Backend-independent reading logic: mpp, level choice, resampling, compositing.

    Subclasses set ``path``, ``dimensions``, ``level_dimensions``, ``level_downsamples``, ``background_color``,
    ``bounds``, ``native_mpp`` (from metadata, may be None) and implement :meth:`_read_level` and
    :meth:`close`.

    Attributes:
        path: slide file path (str).
        slide_id: file stem.
        dimensions: level-0 (width, height) px.
        level_count: number of pyramid levels.
        level_dimensions: per-level (width, height) px.
        level_downsamples: per-level measured downsample (float, not necessarily a power of two).
        mpp: level-0 µm/px actually used (x; y agrees within ``NON_SQUARE_TOLERANCE``).
        mpp_x, mpp_y: level-0 µm/px per axis as found; mpp_source: where (``mpp_override``, ``manifest``,
            ``openslide``, ``vendor``, ``tiff-resolution``, ``default_mpp``; see :mod:`.mpp`).
        colour: the ICC step (:class:`~pathfm.datasets_scripts.colour.IccTransform`) applied to every region.
        background_color: (r, g, b) used for transparent pixels.
        bounds: (x, y, width, height) level-0 px holding image data.
        mpp_tolerance: relative mpp tolerance used for level choice and for refusing upsampling.
    """

    path: str
    slide_id: str
    dimensions: tuple[int, int]
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    background_color: tuple[int, int, int]
    bounds: tuple[int, int, int, int]
    native_mpp: float | None
    mpp: float
    mpp_x: float
    mpp_y: float
    mpp_source: str
    colour: IccTransform | None = None
    mpp_tolerance: float = DEFAULT_MPP_TOLERANCE

    # ---------------------------------------------------------------- set-up
    def _resolve_mpp(
        self, props: dict[str, str], mpp: float | None, mpp_source: str, default_mpp: float | None
    ) -> Level0Mpp:
        """Level-0 mpp through the chain of :mod:`pathfm.datasets_scripts.mpp`; sets ``mpp``, ``mpp_x``,
        ``mpp_y``, ``mpp_source`` and ``native_mpp`` (metadata's x, None without a plausible one). A manifest
        mpp the metadata contradicts is warned once per slide (:mod:`pathfm.datasets_scripts.skips`)."""
        found = resolve_level0_mpp(props, self.path, self.slide_id, mpp, mpp_source, default_mpp)
        self.mpp, self.mpp_x, self.mpp_y, self.mpp_source = float(found.x), found.x, found.y, found.source
        warn_given_mpp_disagreement(props, self.path, self.slide_id, found.x, found.source)
        self.native_mpp = found.x if found.source in ("openslide", "vendor", "tiff-resolution") else None
        return found

    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""
        return len(self.level_dimensions)

    def level_mpp(self, level: int) -> float:
        """µm/px of a level, using its measured downsample."""
        return self.mpp * float(self.level_downsamples[level])

    # ---------------------------------------------------------------- level choice
    def check_mpp(self, mpp: float) -> None:
        """Raise ValueError if ``mpp`` would need upsampling beyond the tolerance (finer than native)."""
        if not (mpp > 0 and math.isfinite(mpp)):
            raise ValueError(f"{self.path}: target mpp must be positive, got {mpp!r}")
        if mpp < self.mpp * (1.0 - self.mpp_tolerance):
            raise ValueError(
                f"slide '{self.slide_id}': target {mpp} µm/px is finer than its native {self.mpp:.4g} µm/px "
                f"(beyond the {self.mpp_tolerance:.0%} tolerance); refusing to upsample"
            )

    def supports_mpp(self, mpp: float) -> bool:
        """Whether ``mpp`` can be served without upsampling beyond the tolerance."""
        return mpp >= self.mpp * (1.0 - self.mpp_tolerance)

    def best_level(self, mpp: float) -> int:
        """Coarsest level whose mpp is at most ``mpp * (1 + tolerance)`` (level 0 if none is).

        Args:
            mpp: target µm/px.

        Returns:
            level index.
        """
        limit = mpp * (1.0 + self.mpp_tolerance)
        best = 0
        for level, ds in enumerate(self.level_downsamples):
            if self.mpp * ds <= limit and ds >= self.level_downsamples[best]:
                best = level
        return best

    # ---------------------------------------------------------------- reading
    def _read_level(self, x: int, y: int, level: int, width: int, height: int) -> Image.Image:
        """Read an RGBA PIL image (straight alpha); (x, y) level-0 px, size in level px."""
        raise NotImplementedError

    def _region(self, x: int, y: int, level: int, width: int, height: int) -> Image.Image:
        """An RGB region after the colour step (ICC profile applied or ignored: :attr:`colour`)."""
        img = self._read_rgb(x, y, level, width, height)
        return img if self.colour is None else self.colour(img)

    def _read_rgb(self, x: int, y: int, level: int, width: int, height: int) -> Image.Image:
        # Kept as a PIL image until the end: every numpy round trip of a 1000 px RGBA region costs ms.
        return composite_image(self._read_level(x, y, level, width, height), self.background_color)

    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """Read a region at a pyramid level and composite transparency onto the background colour.

        Args:
            x, y: level-0 px of the top-left corner.
            level: pyramid level.
            width, height: size in px of that level.

        Returns:
            uint8 (height, width, 3).
        """
        return np.array(self._region(x, y, level, width, height))

    def read_tile(self, x: int, y: int, tile_size: int, mpp: float) -> np.ndarray:
        """Read a square tile at a target resolution.

        The tile covers ``tile_size * mpp / self.mpp`` level-0 px from (x, y); it is read from
        :meth:`best_level` and resized to ``tile_size`` with an antialiasing filter (PIL bilinear with support
        scaled to the reduction; exact sub-pixel box, so non-integer downsamples are handled).

        Args:
            x, y: level-0 px of the top-left corner (may lie partly outside the slide: outside is background).
            tile_size: output side in px.
            mpp: target µm/px.

        Returns:
            uint8 (tile_size, tile_size, 3).

        Raises:
            ValueError: ``mpp`` finer than the slide allows.
            SlideError: the slide cannot be decoded there.
        """
        self.check_mpp(mpp)
        level = self.best_level(mpp)
        ds = float(self.level_downsamples[level])
        extent = tile_size * mpp / (self.mpp * ds)  # level px covered by the tile (float)
        n = math.ceil(extent - 1e-9)
        if abs(extent - round(extent)) < 1e-6:
            n = round(extent)
        # The sampler keeps tiles inside the slide, but reading ceil(extent) px can poke < 1 px past the edge,
        # which would force an alpha-composite of the whole region: read only what exists in that case (a tile
        # overshooting by < 0.5 level px is resampled from the existing px; beyond that, background fills in).
        lw, lh = self.level_dimensions[level]
        lx, ly = x / ds, y / ds
        nw = n if lx + n <= lw or lx + extent > lw + 0.5 else max(1, math.floor(lw - lx))
        nh = n if ly + n <= lh or ly + extent > lh + 0.5 else max(1, math.floor(lh - ly))
        img = self._region(int(x), int(y), level, nw, nh)
        return resize_region(img, (0.0, 0.0, min(extent, nw), min(extent, nh)), tile_size)

    def thumbnail(self, mpp: float) -> np.ndarray:
        """The :attr:`bounds` rectangle rendered at ``mpp`` (coarser than native), antialiased.

        Args:
            mpp: µm/px of the output; must not be finer than the slide.

        Returns:
            uint8 (h, w, 3) with ``h = round(bounds_h * self.mpp / mpp)`` (at least 1), same for w.
        """
        self.check_mpp(mpp)
        bx, by, bw, bh = self.bounds
        scale = self.mpp / mpp  # output px per level-0 px
        out_w, out_h = max(1, round(bw * scale)), max(1, round(bh * scale))
        level = self.best_level(mpp)
        ds = float(self.level_downsamples[level])
        f = 1.0 / (scale * ds)  # level px per output px
        ext_w = bw / ds
        rw = max(1, math.ceil(ext_w - 1e-9))
        out = np.empty((out_h, out_w, 3), dtype=np.uint8)
        # Horizontal stripes of at most ~16 Mpx read at a time, so a single-level gigapixel slide never needs its
        # whole level in memory.
        stripe = max(1, min(out_h, int(16_000_000 / rw / max(f, 1e-6))))
        for row in range(0, out_h, stripe):
            rows = min(stripe, out_h - row)
            y0, y1 = row * f, (row + rows) * f
            iy0 = math.floor(y0)
            ih = max(1, math.ceil(y1 - 1e-9) - iy0)
            img = self._region(bx, round(by + iy0 * ds), level, rw, ih).resize(
                (out_w, rows), Image.Resampling.BILINEAR, box=(0.0, y0 - iy0, ext_w, y1 - iy0)
            )
            out[row : row + rows] = np.asarray(img)
        return out

    def close(self) -> None:
        """Release the file handle."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.slide_id!r}, dimensions={self.dimensions}, levels={self.level_count}, "
            f"mpp={self.mpp:.4g})"
        )


OPENSLIDE_CACHE_MB = int(os.environ.get("PATHFM_OPENSLIDE_CACHE_MB", "64"))
"""Decoded-tile cache shared by every slide a process opens (MiB). OpenSlide's default is a private cache per
handle, so memory would grow with the number of open slides; one shared cache keeps it flat."""

_SHARED_CACHE: dict[int, object] = {}


def _shared_openslide_cache() -> object | None:
    """One OpenSlideCache per process (re-created after fork), or None when the binding lacks it."""
    import openslide

    if not hasattr(openslide, "OpenSlideCache"):
        return None
    pid = os.getpid()
    cache = _SHARED_CACHE.get(pid)
    if cache is None:
        _SHARED_CACHE.clear()  # a forked child must not reuse its parent's cache object
        cache = openslide.OpenSlideCache(OPENSLIDE_CACHE_MB * 1024 * 1024)
        _SHARED_CACHE[pid] = cache
    return cache


class OpenSlideReader(SlideReader):
    """:class:`SlideReader` backed by openslide-python and the openslide-bin wheel.

    Args:
        path: slide file (any format OpenSlide reads: SVS, generic tiled TIFF, NDPI, MRXS, ...).
        mpp: level-0 µm/px given for this slide (wins over metadata).
        mpp_tolerance: relative tolerance for level choice / upsampling refusal.
        mpp_source: what ``mpp`` is, recorded in :attr:`mpp_source` (``manifest``, ``mpp_override``...).
        default_mpp: level-0 µm/px when neither ``mpp`` nor the metadata give one.
        icc_profile: ``"ignore"`` or ``"apply"`` the embedded ICC profile (:mod:`.colour`).

    Raises:
        SlideError: missing, unreadable or unsupported file (message names the path).
        MissingMppError: no usable mpp (see :mod:`.mpp`); MppError: an implausible given mpp.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        mpp: float | None = None,
        mpp_tolerance: float = DEFAULT_MPP_TOLERANCE,
        mpp_source: str = "manifest",
        default_mpp: float | None = None,
        icc_profile: str = "ignore",
    ) -> None:
        import openslide

        self.path = str(path)
        self.slide_id = Path(self.path).stem
        self.mpp_tolerance = float(mpp_tolerance)
        if icc_profile not in ICC_OPTIONS:
            raise ValueError(f"icc_profile must be one of {', '.join(ICC_OPTIONS)}, got {icc_profile!r}")
        if not os.path.isfile(self.path):
            raise SlideError(f"{self.path}: slide file not found")
        try:
            self._osr = openslide.OpenSlide(self.path)
        except (openslide.OpenSlideError, openslide.OpenSlideUnsupportedFormatError, OSError) as err:
            raise SlideError(f"{self.path}: cannot open slide ({type(err).__name__}: {err})") from err
        cache = _shared_openslide_cache()
        if cache is not None:
            self._osr.set_cache(cache)
        try:
            props = dict(self._osr.properties)
            self.dimensions = tuple(self._osr.dimensions)
            self.level_dimensions = tuple(tuple(d) for d in self._osr.level_dimensions)
            self.level_downsamples = tuple(float(d) for d in self._osr.level_downsamples)
            self.colour = IccTransform(getattr(self._osr, "color_profile", None), icc_profile)
        except (openslide.OpenSlideError, ValueError) as err:
            self._osr.close()
            raise SlideError(f"{self.path}: cannot read slide metadata ({err})") from err
        self.properties = props
        self.background_color = _parse_hex_color(props.get("openslide.background-color"))
        self.bounds = bounds_from_properties(props, self.dimensions)
        try:
            self._resolve_mpp(props, mpp, mpp_source, default_mpp)
        except SlideError:
            self._osr.close()
            raise

    def _read_level(self, x: int, y: int, level: int, width: int, height: int) -> Image.Image:
        import openslide

        try:
            return self._osr.read_region((int(x), int(y)), int(level), (int(width), int(height)))
        except openslide.OpenSlideError as err:
            raise SlideError(f"{self.path}: read_region failed at ({x}, {y}) level {level}: {err}") from err

    def _read_rgb(self, x: int, y: int, level: int, width: int, height: int) -> Image.Image:
        """Fast path: OpenSlide's premultiplied ARGB buffer straight to an RGB image.

        openslide-python's ``read_region`` un-premultiplies into RGBA (one pass) and we would then drop alpha
        (a second pass); here one C unpack (``BGRX`` -> RGB on little-endian machines) does both when the region
        is opaque, and transparent regions are composited directly from the premultiplied values:
        ``out = rgb_premultiplied + background * (1 - alpha)``. Falls back to the public API when the
        low-level entry point is not there (other openslide-python versions).
        """
        import ctypes

        from openslide import lowlevel

        raw_read = getattr(lowlevel, "_read_region", None)
        handle = getattr(self._osr, "_osr", None)
        if raw_read is None or handle is None or sys.byteorder != "little" or width <= 0 or height <= 0:
            return super()._read_rgb(x, y, level, width, height)
        buf = (ctypes.c_uint32 * (width * height))()
        try:
            raw_read(handle, buf, int(x), int(y), int(level), int(width), int(height))
        except lowlevel.OpenSlideError as err:
            raise SlideError(f"{self.path}: read_region failed at ({x}, {y}) level {level}: {err}") from err
        bgra = np.frombuffer(buf, dtype=np.uint8).reshape(height, width, 4)
        if np.frombuffer(buf, dtype=np.uint32).min() >= 0xFF000000:  # alpha is the top byte: all opaque
            return Image.frombuffer("RGB", (width, height), buf, "raw", "BGRX", 0, 1)
        alpha = bgra[..., 3:4].astype(np.float32) * (1.0 / 255.0)
        background = np.asarray(self.background_color, np.float32)
        rgb = bgra[..., 2::-1].astype(np.float32) + background * (1.0 - alpha)
        return Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), "RGB")

    def close(self) -> None:
        """Release the OpenSlide handle (idempotent)."""
        osr = getattr(self, "_osr", None)
        self._osr = None
        if osr is not None:
            try:
                osr.close()
            except (TypeError, ValueError):
                # A stream's generator closed by the garbage collector or at interpreter exit may run after
                # openslide-python finalised the handle ("Passing closed slide object"): already released.
                pass


def add_reading_arguments(parser: Any) -> None:
    """The ``--mpp_override``, ``--default_mpp``, ``--icc_profile`` and ``--reader`` flags of the catalogue and
    grid-tiling command lines (training has the same names as ``DINODataArguments`` fields)."""
    parser.add_argument(
        "--reader", choices=READERS, default="auto",
        help="pixel reader: auto (stored JPEG tiles of TIFF/SVS pyramids decoded directly, OpenSlide for "
        "every other format), tiff (the fast reader; a slide it cannot read is skipped, named and counted) or "
        "openslide (reference)",
    )  # fmt: skip
    parser.add_argument(
        "--mpp_override", type=float, default=None,
        help="level-0 µm/px for every slide (wins over a manifest column and the slide metadata)",
    )  # fmt: skip
    parser.add_argument(
        "--default_mpp", type=float, default=None,
        help="level-0 µm/px for slides whose metadata (OpenSlide, vendor, TIFF resolution tags) has none; "
        "without it they are 'no mpp'",
    )  # fmt: skip
    parser.add_argument(
        "--icc_profile", choices=ICC_OPTIONS, default="ignore",
        help="embedded ICC colour profiles: ignore (default: stored RGB values, as eva's tile benchmarks) or "
        "apply (convert to sRGB)",
    )  # fmt: skip


READERS = ("auto", "openslide", "tiff")
"""Pixel readers: ``openslide`` (OpenSlide for every read, the reference), ``tiff`` (stored JPEG tiles decoded
directly, :mod:`pathfm.datasets_scripts.tiff_reader`; a slide it cannot read is an error naming why) and
``auto`` (``tiff`` for the levels it can read, OpenSlide for the rest and for every other format)."""


def open_slide(
    path: str | os.PathLike,
    mpp: float | None = None,
    mpp_tolerance: float = DEFAULT_MPP_TOLERANCE,
    reader: str = "openslide",
    threads: int = 1,
    **options: Any,
) -> SlideReader:
    """Open a whole-slide image.

    Args:
        path: slide file.
        mpp: level-0 µm/px given for this slide (manifest column, ``--mpp_override``, argument); None follows
            the metadata chain of :mod:`pathfm.datasets_scripts.mpp`.
        mpp_tolerance: relative mpp tolerance (level choice; refusing to upsample).
        reader: one of :data:`READERS`.
        threads: decoder threads per region of the ``tiff`` / ``auto`` reader.
        options: further keyword arguments of :class:`OpenSlideReader`: ``mpp_source`` (what ``mpp`` is),
            ``default_mpp`` (level-0 µm/px for a slide whose metadata has none), ``icc_profile``
            (``"ignore"``, the default, or ``"apply"`` an embedded ICC profile, :mod:`.colour`).

    Returns:
        a :class:`SlideReader` (use as a context manager or call ``close()``).

    Raises:
        SlideError: the file is missing, corrupt or not a slide (message names the path).
        MissingMppError: no mpp anywhere in the chain (or only implausible ones, named) and no default.
        MppError: a given ``mpp`` / ``default_mpp`` is implausible.
        ValueError: ``reader`` is not one of :data:`READERS`, or an unknown ``icc_profile``.
    """
    if reader not in READERS:
        raise ValueError(f"reader must be one of {', '.join(READERS)}, got {reader!r}")
    if reader == "openslide":
        return OpenSlideReader(path, mpp=mpp, mpp_tolerance=mpp_tolerance, **options)
    from pathfm.datasets_scripts.tiff_reader import TiffJpegReader

    return TiffJpegReader(
        path, mpp=mpp, mpp_tolerance=mpp_tolerance, threads=threads, require=reader == "tiff", **options
    )
