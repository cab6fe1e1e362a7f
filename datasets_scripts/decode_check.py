"""Test-decode a few stored tiles of a slide inside its tissue, at the levels training reads.

A slide whose header and thumbnail level are fine can still hold level-0 JPEG tiles that do not decode
(a truncated copy, bit rot, a broken converter); opening it and computing its tissue mask (which reads a
coarse level) does not notice. The catalogue calls :func:`check_decoding` so such a slide is reported before
a run rather than discovered tile by tile in the stream. Cost: ``positions`` small reads per level used, each
decoding one stored tile (~1-5 ms), next to ~0.1-0.5 s of opening and masking a slide.

Rule (see :meth:`DecodeCheck.verdict`): a level none of whose test tiles decodes makes the slide
``unreadable`` (every tile training reads from it would fail, and the stream drops a slide after
``max_region_failures`` failed regions anyway); some failures without such a level keep it ``ok``, with the
failures counted in the catalogue row (the stream skips those regions one by one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from pathfm.datasets_scripts.mpp import SlideError
from pathfm.datasets_scripts.slide import SlideReader
from pathfm.datasets_scripts.tissue import TissueMask

__all__ = ["TRAINING_MPPS", "DecodeCheck", "check_decoding", "tissue_points"]

TRAINING_MPPS = (0.25, 0.5, 1.0, 2.0)
"""The training magnifications (µm/px; ``--mpps`` default, the paper's four): their levels are checked."""


@dataclass
class DecodeCheck:
    """Outcome of :func:`check_decoding`.

    Attributes:
        checked: test reads done.
        failed: test reads that raised :class:`SlideError`.
        per_level: ``{level: (checked, failed)}``.
        first_error: message of the first failure ("" if none).
    """

    checked: int = 0
    failed: int = 0
    per_level: dict[int, tuple[int, int]] = field(default_factory=dict)
    first_error: str = ""

    def dead_levels(self) -> list[int]:
        """Levels none of whose test tiles decoded."""
        return [lv for lv, (n, bad) in sorted(self.per_level.items()) if n and bad == n]

    def verdict(self) -> tuple[str, str]:
        """``(status, reason)`` for the catalogue: ``("unreadable", ...)`` when a level decoded no test tile,
        ``("ok", ...)`` otherwise (the reason counts partial failures; "" when every test tile decoded)."""
        if not self.failed:
            return "ok", ""
        levels = ", ".join(
            f"level {lv}: {bad} of {n}" for lv, (n, bad) in sorted(self.per_level.items()) if bad
        )
        detail = f"test tiles inside the tissue failed to decode ({levels}; first error: {self.first_error})"
        dead = self.dead_levels()
        if dead:
            return "unreadable", (
                f"stored tiles do not decode: {detail}; every tile read from level(s) "
                f"{', '.join(map(str, dead))} would fail: re-export or re-download the slide"
            )
        return "ok", (
            f"{self.failed} of {self.checked} {detail}; the stream skips such regions and counts them "
            "(failed_regions)"
        )


def tissue_points(mask: TissueMask, n: int) -> list[tuple[float, float]]:
    """``n`` level-0 (x, y) points at the centres of tissue mask pixels, at evenly spaced ranks of the tissue
    pixels in row-major order (ranks ``(i + 0.5) * count / n``): spread over the tissue, deterministic.

    Returns:
        up to ``n`` points (fewer when the mask has fewer tissue pixels; none without tissue).
    """
    rows = np.cumsum(mask.mask.sum(axis=1, dtype=np.int64))
    count = int(rows[-1]) if len(rows) else 0
    points: list[tuple[float, float]] = []
    for k in sorted({int((i + 0.5) * count / n) for i in range(n)} if count else set()):
        r = int(np.searchsorted(rows, k, side="right"))
        c = int(np.flatnonzero(mask.mask[r])[k - (int(rows[r - 1]) if r else 0)])
        points.append(((c + 0.5) / mask.scale + mask.origin[0], (r + 0.5) / mask.scale_y + mask.origin[1]))
    return points


def check_decoding(
    reader: SlideReader,
    reopen: Callable[[], SlideReader],
    mask: TissueMask,
    mpps: Sequence[float] = TRAINING_MPPS,
    positions: int = 4,
    size: int = 16,
) -> tuple[DecodeCheck, SlideReader]:
    """Read a ``size`` x ``size`` px region centred on each of ``positions`` tissue points at every level that
    :meth:`SlideReader.best_level` picks for a servable mpp of ``mpps`` (so each read decodes the stored
    tile(s) under it).

    Args:
        reader: the open slide (level-0 mpp resolved).
        reopen: opens the slide again; called after a failed read, because an OpenSlide handle stays in an
            error state after one.
        mask: the slide's tissue mask.
        mpps: magnifications training reads (µm/px); those finer than the slide are not servable, skipped.
        positions: test points per level (0: no check).
        size: side of each test read in px of its level.

    Returns:
        ``(check, reader)``: the outcome and the reader to use from now on (``reader`` or a reopened one).

    Raises:
        SlideError: ``reopen`` failed.
    """
    check = DecodeCheck()
    points = tissue_points(mask, positions) if positions > 0 else []
    levels = sorted({reader.best_level(m) for m in mpps if reader.supports_mpp(m)})
    for level in levels:
        ds = float(reader.level_downsamples[level])
        bad = 0
        for x, y in points:
            x0, y0 = int(round(x - size * ds / 2)), int(round(y - size * ds / 2))
            try:
                reader.read_region(x0, y0, level, size, size)
            except SlideError as err:
                bad += 1
                check.first_error = check.first_error or str(err)
                reader.close()
                reader = reopen()
        check.per_level[level] = (len(points), bad)
        check.checked += len(points)
        check.failed += bad
    return check, reader
