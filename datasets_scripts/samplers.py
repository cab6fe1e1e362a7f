"""Tile samplers: where on a slide to read tiles, as level-0 coordinates plus a target mpp.

* :class:`RandomTileSampler` is online patching (the paper's training default): a magnification drawn
  uniformly from the configured set, then a position on the tissue mask; a tile is accepted when at least
  ``min_tissue`` of it is tissue. It draws from a ``numpy.random.Generator`` the caller seeds from
  (seed, epoch, slide index), so tiles are reproducible and change with the epoch.
* :class:`GridTileSampler` lists every tile at one mpp and stride that passes the tissue threshold, in a
  stable row-major order (evaluation, inference, fixed datasets).

Samplers only look at the mask: no pixels are read here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from pathfm.datasets_scripts.slide import SlideReader
from pathfm.datasets_scripts.tissue import TissueMask


@dataclass(frozen=True)
class TileCoord:
    """One tile to read.

    Attributes:
        slide_id: slide identifier.
        x, y: level-0 px of the top-left corner.
        mpp: target µm/px of the tile.
        level: pyramid level it is read from.
        tile_size: side in px at ``mpp``.
        tissue_fraction: fraction of the tile on the tissue mask, in [0, 1].
    """

    slide_id: str
    x: int
    y: int
    mpp: float
    level: int
    tile_size: int
    tissue_fraction: float


def tile_extent_level0(reader: SlideReader, tile_size: int, mpp: float) -> float:
    """Level-0 px covered by a ``tile_size`` px tile at ``mpp`` µm/px."""
    return tile_size * mpp / reader.mpp


class GridTileSampler:
    """All tiles on a regular grid at one mpp whose tissue fraction passes the threshold.

    Args:
        mpp: target µm/px.
        tile_size: tile side in px at ``mpp``.
        stride: grid step in px at ``mpp`` (default ``tile_size``: no overlap).
        min_tissue: minimum tissue fraction in [0, 1] (0 keeps every grid tile).
        partial: tiles crossing the right/bottom edge of the bounds: ``"pad"`` (listed; the part outside is
            filled with background), ``"drop"`` (not listed) or ``"keep"`` (moved inward to end at the edge: a
            full tile of slide pixels that overlaps its neighbour).

    The grid starts at the bounds' top-left corner; column i sits at ``bx + round(i * stride0)`` level-0 px with
    ``stride0 = stride * mpp / slide_mpp`` (no accumulated rounding); a tile is listed if its top-left corner
    is inside the bounds (then ``partial`` decides what happens to one crossing the edge).
    """

    PARTIAL = ("pad", "drop", "keep")

    def __init__(
        self,
        mpp: float,
        tile_size: int = 256,
        stride: int | None = None,
        min_tissue: float = 0.4,
        partial: str = "pad",
    ):
        if tile_size <= 0:
            raise ValueError(f"tile_size must be positive, got {tile_size}")
        if not 0.0 <= min_tissue <= 1.0:
            raise ValueError(f"min_tissue must be in [0, 1], got {min_tissue}")
        self.mpp = float(mpp)
        self.tile_size = int(tile_size)
        self.stride = int(stride) if stride else int(tile_size)
        if self.stride <= 0:
            raise ValueError(f"stride must be positive, got {stride}")
        self.min_tissue = float(min_tissue)
        if partial not in self.PARTIAL:
            raise ValueError(f"partial must be one of {self.PARTIAL}, got {partial!r}")
        self.partial = partial

    def _edge(self, starts: list[int], lo: int, size: int, extent: float) -> list[int]:
        """Apply ``partial`` to one axis's tile starts (level-0 px) within [lo, lo + size)."""
        end = lo + size
        if self.partial == "drop":
            return [v for v in starts if v + extent <= end + 1e-6]
        if self.partial == "keep" and extent <= size:
            last = math.floor(end - extent + 1e-6)
            return sorted({min(v, last) for v in starts})
        return starts

    def tiles(self, reader: SlideReader, mask: TissueMask) -> list[TileCoord]:
        """List the grid tiles of a slide.

        Args:
            reader: open slide.
            mask: its tissue mask.

        Returns:
            tiles in row-major order (y, then x); empty when the slide cannot serve ``mpp`` or has no tissue.
        """
        if not reader.supports_mpp(self.mpp):
            return []
        level = reader.best_level(self.mpp)
        extent = tile_extent_level0(reader, self.tile_size, self.mpp)
        stride0 = self.stride * self.mpp / reader.mpp
        bx, by, bw, bh = reader.bounds
        nx = max(1, math.ceil(bw / stride0 - 1e-9))
        ny = max(1, math.ceil(bh / stride0 - 1e-9))
        xs = [bx + round(i * stride0) for i in range(nx)]
        ys = [by + round(j * stride0) for j in range(ny)]
        xs = self._edge([x for x in xs if x < bx + bw], bx, bw, extent)
        ys = self._edge([y for y in ys if y < by + bh], by, bh, extent)
        out: list[TileCoord] = []
        if mask.tissue_pixels == 0 and self.min_tissue > 0:
            return out
        for y in ys:
            for x in xs:
                f = mask.fraction(x, y, extent)
                if f >= self.min_tissue:
                    out.append(TileCoord(reader.slide_id, x, y, self.mpp, level, self.tile_size, round(f, 6)))
        return out


class RandomTileSampler:
    """Online patching: magnification uniformly from ``mpps``, then a random position on tissue.

    Args:
        mpps: candidate µm/px (default the paper's 0.25, 0.5, 1, 2); those finer than a slide's native mpp
            (beyond its tolerance) are dropped for that slide.
        tile_size: tile side in px.
        min_tissue: accept a tile when its tissue fraction is at least this.
        max_attempts: positions tried per tile before drawing a new magnification.
        max_failures: consecutive tiles without an accepted position before the slide is given up.
    """

    def __init__(
        self,
        mpps: Sequence[float] = (0.25, 0.5, 1.0, 2.0),
        tile_size: int = 256,
        min_tissue: float = 0.4,
        max_attempts: int = 50,
        max_failures: int = 4,
    ):
        if not mpps:
            raise ValueError("mpps must not be empty")
        self.mpps = tuple(float(m) for m in mpps)
        self.tile_size = int(tile_size)
        self.min_tissue = float(min_tissue)
        self.max_attempts = int(max_attempts)
        self.max_failures = int(max_failures)

    def allowed_mpps(self, reader: SlideReader) -> tuple[float, ...]:
        """The configured mpps this slide can serve without upsampling."""
        return tuple(m for m in self.mpps if reader.supports_mpp(m))

    def iter_tiles(
        self, reader: SlideReader, mask: TissueMask, rng: np.random.Generator
    ) -> Iterator[TileCoord]:
        """Endless stream of accepted tiles (stops early only when the slide has no usable tissue).

        Per tile: ``mpp = rng.choice(allowed)``; then up to ``max_attempts`` times: a tissue mask pixel
        uniformly, a uniform point inside it as the tile centre, clamp the tile into the bounds, measure its
        tissue fraction on the mask, accept if ``>= min_tissue``.

        Args:
            reader: open slide.
            mask: its tissue mask.
            rng: generator seeded by the caller (e.g. from seed, epoch, slide index).

        Yields:
            :class:`TileCoord`.
        """
        allowed = self.allowed_mpps(reader)
        if not allowed or mask.tissue_pixels == 0:
            return
        bx, by, bw, bh = reader.bounds
        ox, oy = mask.origin
        inv_x, inv_y = 1.0 / mask.scale, 1.0 / mask.scale_y  # level-0 px per mask px
        levels = {m: reader.best_level(m) for m in allowed}
        failures = 0
        while failures < self.max_failures:
            mpp = allowed[int(rng.integers(len(allowed)))]
            extent = self.tile_size * mpp / reader.mpp
            accepted = None
            for _ in range(self.max_attempts):
                r, c = mask.sample_pixel(rng)
                u, v = rng.random(2)
                cx = ox + (c + u) * inv_x
                cy = oy + (r + v) * inv_y
                x = _clamp(cx - extent / 2.0, bx, bx + bw - extent)
                y = _clamp(cy - extent / 2.0, by, by + bh - extent)
                # Round to whole px without letting rounding push the tile past the bounds by a fraction.
                xi = min(round(x), max(bx, math.floor(bx + bw - extent)))
                yi = min(round(y), max(by, math.floor(by + bh - extent)))
                f = mask.fraction(xi, yi, extent)
                if f >= self.min_tissue:
                    accepted = TileCoord(
                        reader.slide_id, xi, yi, mpp, levels[mpp], self.tile_size, round(f, 6)
                    )
                    break
            if accepted is None:
                failures += 1
                continue
            failures = 0
            yield accepted


def _clamp(v: float, lo: float, hi: float) -> float:
    """Clamp to [lo, hi]; when the tile is larger than the range (hi < lo) keep it at lo."""
    if hi < lo:
        return lo
    return min(max(v, lo), hi)
