"""Fast reader for JPEG-tiled TIFF / SVS pyramids: decode only the stored tiles a region touches.

OpenSlide composites every pixel through cairo and interpolates whenever ``x / downsample`` is fractional,
which on real Aperio downsamples (4.0001, 16.0016, ...) is every read from levels 1 and up (openslide#440,
#552, #719). :class:`TiffJpegReader` keeps OpenSlide for everything but pixels (metadata, mpp, bounds,
background, level downsamples: one source of truth) and reads pixels itself:

* the stored tiles of a level page are located from the TIFF's TileOffsets / TileByteCounts (read once with
  tifffile at open) and read with ``os.pread`` (thread-safe, no shared file position);
* each tile is decoded by imagecodecs' libjpeg-turbo with the page's JPEGTables (abbreviated JPEG streams, as
  Aperio writes them) and the colour space the TIFF declares: Photometric RGB without a JFIF marker is decoded
  as RGB (Aperio stores untransformed RGB), YCbCr is converted to RGB (libjpeg's default);
* decoded tiles (RGBX, 4 bytes per px: whole-row copies into the window PIL maps) live in one LRU cache per
  process (``PATHFM_TILE_CACHE_MB``, default 256 MiB: ~1,000 tiles of 256 px), shared by all slides a worker
  reads, so grid tiling reads each stored tile once and cuts many tiles from it;
* a region's tiles can be decoded by a thread pool (``threads`` > 1): imagecodecs releases the GIL;
* pixels outside a level (partial edge tiles, reads past the slide edge) are the slide's background colour,
  and missing tiles (byte count 0) are background, as OpenSlide composites transparent pixels.

Resampling uses :func:`pathfm.datasets_scripts.slide.resize_region` (the same policy as OpenSlide's path): no
resize when the region already is the tile size within 0.01 px, an exact 2x box reduction when it is twice
the tile size, else PIL bilinear with antialiasing. The only difference from OpenSlide is where the sub-pixel
offset ``x / downsample - floor(x / downsample)`` goes: OpenSlide interpolates it (cairo), this reader folds
it into the one resize (or rounds it to the nearest pixel when no resize is needed). Level-0 reads at integer
coordinates are bit-identical to OpenSlide's; see ``tests/datasets_scripts/test_ds_tiff_reader.py`` for the
tolerances elsewhere.

Not handled here (OpenSlide reads them): formats other than TIFF (MRXS, NDPI's own JPEG layout is TIFF but
OpenSlide's vendor backend handles restart markers, ...), JPEG 2000 SVS (Aperio 33003/33005), LZW/deflate/
uncompressed tiles, stripped (untiled) levels, planar or non-8-bit or non-3-sample data, and any level whose
size OpenSlide reports differently from a tiled TIFF page. :func:`fast_support` says which one applies.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from pathfm.datasets_scripts.slide import (
    DEFAULT_MPP_TOLERANCE,
    OpenSlideReader,
    SlideError,
    resize_mode,
    resize_region,
    rgb_array,
)
from PIL import Image

__all__ = ["TiffJpegReader", "TileCache", "fast_support", "tile_cache"]

JPEG = 7
PHOTOMETRIC_RGB, PHOTOMETRIC_YCBCR = 2, 6
FAST_VENDORS = ("aperio", "generic-tiff")
"""OpenSlide vendors whose levels are plain TIFF pages of abutting tiles. Others built on TIFF
(Ventana/Trestle: overlapping tiles, Philips: sparse tiles, Leica: several images, Hamamatsu NDPI:
restart-marker strips) keep OpenSlide's vendor backend."""
TILE_CACHE_MB = int(os.environ.get("PATHFM_TILE_CACHE_MB", "256"))
"""Decoded-tile cache of one process (MiB), shared by every slide it reads with :class:`TiffJpegReader`."""
SPARE_MIN_TILES = 64
MAX_SPARES = 16

COMPRESSION_NAMES = {1: "uncompressed", 5: "LZW", 8: "deflate", 33003: "JPEG 2000 (Aperio YCbCr)"}
COMPRESSION_NAMES.update({33005: "JPEG 2000 (Aperio RGB)", 34712: "JPEG 2000", 50000: "zstd"})


@dataclass(frozen=True)
class TiffLevel:
    """Where one pyramid level's JPEG tiles are stored.

    Attributes:
        page: index of the TIFF page (IFD).
        width, height: level size in px.
        tile_width, tile_height: stored tile size in px.
        offsets, counts: byte offset and length of every tile, row-major (int64 arrays).
        tables: the page's JPEGTables (quantisation/Huffman tables of abbreviated streams), or None.
        colorspace: libjpeg input colour space to force ("RGB") or None for libjpeg's own choice.
    """

    page: int
    width: int
    height: int
    tile_width: int
    tile_height: int
    offsets: np.ndarray
    counts: np.ndarray
    tables: bytes | None
    colorspace: str | None

    @property
    def tiles_across(self) -> int:
        return -(-self.width // self.tile_width)


def _page_problem(page) -> str | None:
    """Why a TIFF page cannot be decoded here, or None when it can."""
    if not page.is_tiled:
        return "stored in strips, not tiles"
    if page.compression != JPEG:
        code = int(page.compression)
        return f"compression {COMPRESSION_NAMES.get(code, code)}, not JPEG"
    if page.photometric not in (PHOTOMETRIC_RGB, PHOTOMETRIC_YCBCR):
        return f"photometric {int(page.photometric)}, not RGB/YCbCr"
    if page.samplesperpixel != 3 or page.extrasamples or page.planarconfig != 1:
        return "not 3 interleaved samples per pixel"
    if page.bitspersample != 8 or page.imagedepth != 1:
        return "not 8 bits per sample, 2-D tiles"
    return None


def read_levels(path: str, level_dimensions) -> tuple[list[TiffLevel | None], list[str]]:
    """Match OpenSlide's levels with tiled JPEG pages of the TIFF.

    Args:
        path: slide file.
        level_dimensions: OpenSlide's per-level (width, height).

    Returns:
        (per-level TiffLevel or None, per-level reason when None); all None for a file tifffile cannot parse.
    """
    import tifffile

    try:
        tf = tifffile.TiffFile(path)
    except Exception as err:  # noqa: BLE001 - any parse failure means "not for this reader"
        return [None] * len(level_dimensions), [
            f"not a TIFF tifffile can parse ({type(err).__name__})"
        ] * len(level_dimensions)
    with tf:
        pages = list(tf.pages)
        levels: list[TiffLevel | None] = []
        reasons: list[str] = []
        for w, h in level_dimensions:
            matches = [i for i, p in enumerate(pages) if (p.imagewidth, p.imagelength) == (w, h)]
            if not matches:
                levels.append(None)
                reasons.append(f"no TIFF page of {w} x {h} px (OpenSlide builds this level itself)")
                continue
            i = next((i for i in matches if pages[i].is_tiled), matches[0])
            page = pages[i]
            problem = _page_problem(page)
            if problem is not None:
                levels.append(None)
                reasons.append(f"page {i} {problem}")
                continue
            colorspace = "RGB" if page.photometric == PHOTOMETRIC_RGB and not page.is_jfif else None
            levels.append(
                TiffLevel(
                    page=i,
                    width=int(w),
                    height=int(h),
                    tile_width=int(page.tilewidth),
                    tile_height=int(page.tilelength),
                    offsets=np.asarray(page.dataoffsets, dtype=np.int64),
                    counts=np.asarray(page.databytecounts, dtype=np.int64),
                    tables=page.jpegtables or None,
                    colorspace=colorspace,
                )
            )
            reasons.append("")
    return levels, reasons


def fast_support(path: str) -> str | None:
    """None when :class:`TiffJpegReader` decodes every level of ``path`` itself, else the reason in words."""
    import openslide

    try:
        with openslide.OpenSlide(str(path)) as osr:
            dims = tuple(osr.level_dimensions)
            vendor = osr.properties.get("openslide.vendor", "")
    except Exception as err:  # noqa: BLE001
        return f"OpenSlide cannot open it ({type(err).__name__})"
    if vendor not in FAST_VENDORS:
        return f"OpenSlide vendor '{vendor}' (its own tile layout)"
    levels, reasons = read_levels(str(path), dims)
    bad = [f"level {i}: {r}" for i, (lv, r) in enumerate(zip(levels, reasons)) if lv is None]
    return "; ".join(bad) or None


class TileCache:
    """Thread-safe LRU of decoded tiles (uint8 (tile_h, tile_w, 4) RGBX arrays), bounded in bytes.

    Dropped tiles are kept as spare buffers (a few) and handed out for the next decode: decoding into fresh
    memory page-faults every tile (~0.15 ms for a 256 px RGBX tile, as much as decoding it), reused memory
    does not. Only when the cache holds at least :data:`SPARE_MIN_TILES` tiles, so that a dropped tile is
    long out of use (the least recently used of hundreds) when its buffer is reused.

    Args:
        max_bytes: budget; the least recently used tiles are dropped beyond it.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._tiles: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._spares: list[np.ndarray] = []
        self.recycled = 0
        self._lock = threading.Lock()

    def take_spare(self, shape: tuple[int, ...]) -> np.ndarray | None:
        """A dropped tile's buffer of this shape to decode into, or None."""
        with self._lock:
            for i, spare in enumerate(self._spares):
                if spare.shape == shape:
                    self.recycled += 1
                    return self._spares.pop(i)
        return None

    def get(self, key: tuple) -> np.ndarray | None:
        with self._lock:
            tile = self._tiles.get(key)
            if tile is None:
                self.misses += 1
                return None
            self._tiles.move_to_end(key)
            self.hits += 1
            return tile

    def put(self, key: tuple, tile: np.ndarray) -> None:
        if tile.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._tiles.pop(key, None)
            if old is not None:
                self.nbytes -= old.nbytes
            self._tiles[key] = tile
            self.nbytes += tile.nbytes
            while self.nbytes > self.max_bytes:
                _, dropped = self._tiles.popitem(last=False)
                self.nbytes -= dropped.nbytes
                recycle = self.max_bytes >= SPARE_MIN_TILES * dropped.nbytes and dropped.flags.writeable
                if recycle and len(self._spares) < MAX_SPARES:
                    self._spares.append(dropped)

    def clear(self) -> None:
        """Drop every tile and zero the hit / miss counters."""
        with self._lock:
            self._tiles.clear()
            self._spares.clear()
            self.nbytes = self.hits = self.misses = self.recycled = 0

    def drop_file(self, file_key: tuple) -> None:
        """Forget every tile of one file (its key prefix)."""
        with self._lock:
            for key in [k for k in self._tiles if k[: len(file_key)] == file_key]:
                self.nbytes -= self._tiles.pop(key).nbytes

    def __len__(self) -> int:
        return len(self._tiles)


_CACHES: dict[int, TileCache] = {}
_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}


def tile_cache() -> TileCache:
    """This process's decoded-tile cache (a forked DataLoader worker gets its own, empty)."""
    pid = os.getpid()
    cache = _CACHES.get(pid)
    if cache is None:
        _CACHES.clear()
        cache = _CACHES[pid] = TileCache(TILE_CACHE_MB * 1024 * 1024)
    return cache


_SCRATCH = threading.local()


def _scratch(height: int, width: int) -> np.ndarray:
    """C-contiguous uint8 (height, width, 4) view of this thread's reused buffer (no page faults per tile)."""
    need = height * width * 4
    buf = getattr(_SCRATCH, "buf", None)
    if buf is None or buf.size < need:
        buf = _SCRATCH.buf = np.empty(max(need, 1 << 20), dtype=np.uint8)
    return buf[:need].reshape(height, width, 4)


def _thread_pool(threads: int) -> ThreadPoolExecutor:
    key = (os.getpid(), threads)
    pool = _POOLS.get(key)
    if pool is None:
        pool = _POOLS[key] = ThreadPoolExecutor(threads, thread_name_prefix="pathfm-decode")
    return pool


class TiffJpegReader(OpenSlideReader):
    """:class:`OpenSlideReader` whose pixels come from the stored JPEG tiles (levels OpenSlide would read from
    a tiled JPEG TIFF page); other levels still go through OpenSlide.

    Args:
        path: slide file.
        mpp: explicit level-0 µm/px override.
        mpp_tolerance: relative mpp tolerance.
        threads: decoder threads per region (1: decode in the calling thread).
        require: raise :class:`SlideError` naming the reason when a level cannot be read fast (``--reader
            tiff``); otherwise such levels fall back to OpenSlide silently (``--reader auto``).
        options: ``mpp_source``, ``default_mpp``, ``icc_profile`` of :class:`OpenSlideReader`.

    Attributes:
        fast_levels: per-level :class:`TiffLevel` or None (OpenSlide reads that level).
        fallback_reasons: per-level reason for None ("" for fast levels).
        file_key: (real path, size, mtime ns): the prefix of this file's keys in :func:`tile_cache`.

    Raises:
        SlideError: as :class:`OpenSlideReader`; with ``require``, when any level is not fast-readable.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        mpp: float | None = None,
        mpp_tolerance: float = DEFAULT_MPP_TOLERANCE,
        threads: int = 1,
        require: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(path, mpp=mpp, mpp_tolerance=mpp_tolerance, **options)
        vendor = self.properties.get("openslide.vendor", "")
        if vendor in FAST_VENDORS:
            self.fast_levels, self.fallback_reasons = read_levels(self.path, self.level_dimensions)
        else:
            self.fast_levels = [None] * self.level_count
            self.fallback_reasons = [f"OpenSlide vendor '{vendor}' (its own tile layout)"] * self.level_count
        bad = [f"level {i}: {r}" for i, r in enumerate(self.fallback_reasons) if r]
        if require and bad:
            self.close()
            raise SlideError(
                f"{self.path}: the fast TIFF reader cannot read it ({'; '.join(bad)}); use --reader auto "
                "(OpenSlide for those levels) or --reader openslide"
            )
        self.threads = max(1, int(threads))
        st = os.stat(self.path)
        self.file_key = (os.path.realpath(self.path), st.st_size, st.st_mtime_ns)
        self._cache = tile_cache()

    # ------------------------------------------------------------------ stored tiles
    def _tile(self, lv: TiffLevel, index: int, fd: int) -> np.ndarray | None:
        """Decoded stored tile ``index`` of a level (None when the file has no data for it); ``fd`` is the
        slide file opened for this region."""
        import imagecodecs

        key = (*self.file_key, lv.page, index)
        tile = self._cache.get(key)
        if tile is not None:
            return tile
        count = int(lv.counts[index])
        if count == 0:
            return None
        data = os.pread(fd, count, int(lv.offsets[index]))
        rgbx = imagecodecs.JPEG8.CS.EXT_RGBX
        out = self._cache.take_spare((lv.tile_height, lv.tile_width, 4))
        try:
            try:
                tile = imagecodecs.jpeg8_decode(
                    data, tables=lv.tables, colorspace=lv.colorspace, outcolorspace=rgbx, out=out
                )
            except ValueError:  # a stream of another size than the TIFF's tile (the spare does not fit)
                if out is None:
                    raise
                tile = imagecodecs.jpeg8_decode(
                    data, tables=lv.tables, colorspace=lv.colorspace, outcolorspace=rgbx
                )
        except Exception as err:
            raise SlideError(
                f"{self.path}: JPEG tile {index} of TIFF page {lv.page} failed to decode ({err})"
            ) from err
        if tile.ndim != 3 or tile.shape[2] != 4:
            raise SlideError(
                f"{self.path}: JPEG tile {index} of page {lv.page} decoded to shape {tile.shape}"
            )
        self._cache.put(key, tile)
        return tile

    def _fill_window(self, level: int, x0: int, y0: int, out: np.ndarray) -> np.ndarray:
        """Fill ``out``, uint8 (height, width, 4) RGBX, with the level-px window at (x0, y0); background
        outside the level. Whole rows of RGBX tiles are copied (a 3-of-4-channel copy would be ~30x slower).

        Raises:
            SlideError: a stored tile failed to decode, or the slide file could not be opened.
        """
        lv = self.fast_levels[level]
        height, width = out.shape[:2]
        tw, th = lv.tile_width, lv.tile_height
        cx0, cy0 = max(x0, 0), max(y0, 0)
        cx1, cy1 = min(x0 + width, lv.width), min(y0 + height, lv.height)
        background = (*self.background_color, 255)
        if cx0 >= cx1 or cy0 >= cy1:
            out[:] = background
            return out
        if (cx0, cy0, cx1, cy1) != (x0, y0, x0 + width, y0 + height):
            out[:] = background
        spans = [
            (ty, tx)
            for ty in range(cy0 // th, (cy1 - 1) // th + 1)
            for tx in range(cx0 // tw, (cx1 - 1) // tw + 1)
        ]
        indices = [ty * lv.tiles_across + tx for ty, tx in spans]
        # The file is open for this region only: no descriptor is held between reads, so open fds do not grow
        # with the slides a worker keeps open (``max_open_slides``); an open costs a few µs against ~3 ms of
        # decoding per tile.
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as err:
            raise SlideError(f"{self.path}: cannot open the slide file to read a region ({err})") from err
        try:
            if self.threads > 1 and len(indices) > 1:
                tiles = list(_thread_pool(self.threads).map(lambda i: self._tile(lv, i, fd), indices))
            else:
                tiles = [self._tile(lv, i, fd) for i in indices]
        finally:
            os.close(fd)
        for (ty, tx), tile in zip(spans, tiles):
            # intersection of this stored tile, the level and the window, in level px
            ax0, ay0 = max(tx * tw, cx0), max(ty * th, cy0)
            ax1, ay1 = min((tx + 1) * tw, cx1), min((ty + 1) * th, cy1)
            dst = out[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0]
            if tile is None:
                dst[:] = background
            else:
                dst[:] = tile[ay0 - ty * th : ay1 - ty * th, ax0 - tx * tw : ax1 - tx * tw]
        return out

    def window_image(self, level: int, x0: int, y0: int, width: int, height: int) -> Image.Image:
        """RGB PIL image of a level-px window (background outside the level).

        Args:
            level: a fast level (``fast_levels[level]`` not None).
            x0, y0: top-left in px of that level (may be negative).
            width, height: window size in px.

        Raises:
            SlideError: a stored tile failed to decode.
        """
        window = self._fill_window(level, x0, y0, _scratch(height, width))
        # mapped without a copy, then one C copy into an RGB image (PIL keeps RGB as 4 bytes per px too) that
        # no longer shares the reused buffer
        return Image.frombuffer("RGBX", (width, height), window, "raw", "RGBX", 0, 1).convert("RGB")

    def level_window(self, level: int, x0: int, y0: int, width: int, height: int) -> np.ndarray:
        """:meth:`window_image` as uint8 (height, width, 3)."""
        window = self._fill_window(level, x0, y0, _scratch(height, width))
        return rgb_array(Image.frombuffer("RGBX", (width, height), window, "raw", "RGBX", 0, 1))

    # ------------------------------------------------------------------ reading
    def _read_rgb(self, x: int, y: int, level: int, width: int, height: int) -> Image.Image:
        """Region at integer level-0 (x, y): stored tiles when ``x / ds`` lands on a level pixel, else
        OpenSlide (its sub-pixel interpolation is the reference there); thumbnails and masks come here."""
        lv = self.fast_levels[level]
        ds = float(self.level_downsamples[level])
        lx, ly = x / ds, y / ds
        if lv is None or abs(lx - round(lx)) > 1e-6 or abs(ly - round(ly)) > 1e-6:
            return super()._read_rgb(x, y, level, width, height)
        return self.window_image(level, round(lx), round(ly), width, height)

    def read_tile(self, x: int, y: int, tile_size: int, mpp: float) -> np.ndarray:
        """:meth:`SlideReader.read_tile` (same arguments, uint8 (tile_size, tile_size, 3)) from stored tiles.

        The window starts at the level pixel ``floor(x / ds)`` and the fractional remainder becomes the resize
        box's offset, so one resampling does both the sub-pixel shift and the reduction. A tile that needs no
        resampling is copied from the stored tiles straight into the output; otherwise the window is filled
        into a reused RGBX buffer that PIL maps without a copy (decoded tiles are kept as RGBX for that).
        """
        self.check_mpp(mpp)
        level = self.best_level(mpp)
        if self.fast_levels[level] is None:
            return super().read_tile(x, y, tile_size, mpp)
        ds = float(self.level_downsamples[level])
        extent = tile_size * mpp / (self.mpp * ds)
        lx, ly = x / ds, y / ds
        ix, iy = math.floor(lx + 1e-9), math.floor(ly + 1e-9)
        fx, fy = lx - ix, ly - iy
        box = (fx, fy, fx + extent, fy + extent)
        n = max(math.ceil(fx + extent - 1e-9), tile_size)
        m = max(math.ceil(fy + extent - 1e-9), tile_size)
        mode, cx, cy = resize_mode(box, tile_size, n, m)
        if self.colour is not None and self.colour.active:  # the ICC step, before resizing as for OpenSlide
            window = self.window_image(level, ix, iy, n, m)
            return resize_region(self.colour(window), box, tile_size)
        if mode == "crop":
            return self.level_window(level, ix + cx, iy + cy, tile_size, tile_size)
        window = self._fill_window(level, ix, iy, _scratch(m, n))
        return resize_region(window, box, tile_size)
