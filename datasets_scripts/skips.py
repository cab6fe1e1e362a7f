"""Warn-and-count a slide that cannot be used, in one place.

Training's start-up check (``training.tile_batches.preflight_slides``), the tile stream's workers
(training and grid tiling: ``builder.open_slide_for_tiles``) and the catalogue open a slide through
:func:`open_or_skip`, so one failure gets the same status everywhere (the catalogue's words,
:data:`SKIP_STATUSES`), the same counter of the stream (:data:`STREAM_COUNTERS`, see
``builder.stream_stats``) and the same one-line message naming the slide, why it cannot be used and the fix
(:meth:`SlideSkip.message`). For example a slide that ``--reader tiff`` cannot read (JPEG 2000 or deflate
tiles, a vendor layout of its own) is ``unreadable``, counted in ``corrupt_slides`` and
reported as ``skipping slide s1 (/data/s1.svs): the fast TIFF reader cannot read it (level 0: ...); use
--reader auto ...``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from pathfm.datasets_scripts.mpp import MissingMppError, SlideError

__all__ = ["SKIP_STATUSES", "STREAM_COUNTERS", "SlideSkip", "open_or_skip", "skip_of", "warn_skip"]

SKIP_STATUSES = ("unreadable", "no-mpp", "no-tissue", "unsupported-mpp")
"""Why a slide gives no tile: it cannot be opened or decoded / has no level-0 mpp anywhere in the chain / has
no tissue / none of the requested magnifications is servable without upsampling."""

STREAM_COUNTERS = {
    "unreadable": "corrupt_slides",
    "no-mpp": "no_mpp_slides",
    "no-tissue": "no_tissue_slides",
    "unsupported-mpp": "unsupported_mpp_slides",
}
"""The tile stream's counter (``builder.STAT_NAMES``) of each status."""

T = TypeVar("T")


@dataclass(frozen=True)
class SlideSkip:
    """A slide left out, and why.

    Attributes:
        slide_id: the slide's id.
        path: its file.
        status: one of :data:`SKIP_STATUSES`.
        reason: what is wrong and the fix, in words (without the path).
    """

    slide_id: str
    path: str
    status: str
    reason: str

    @property
    def counter(self) -> str:
        """The stream counter this skip increments."""
        return STREAM_COUNTERS[self.status]

    def message(self) -> str:
        """``skipping slide <id> (<path>): <reason>``."""
        return f"skipping slide {self.slide_id} ({self.path}): {self.reason}"


def skip_of(err: BaseException, slide_id: str, path: str | os.PathLike) -> SlideSkip:
    """The skip of a slide whose opening raised ``err``: ``no-mpp`` for :class:`MissingMppError` (a readable
    slide without magnification is never "unreadable"), else ``unreadable``."""
    status = "no-mpp" if isinstance(err, MissingMppError) else "unreadable"
    reason = str(err)
    prefix = f"{path}: "
    if reason.startswith(prefix):  # the message names the path already: say it once
        reason = reason[len(prefix) :]
    if isinstance(err, OSError) and not isinstance(err, SlideError):
        reason = f"{type(err).__name__}: {reason}"
    return SlideSkip(str(slide_id), str(path), status, reason)


def open_or_skip(
    opener: Callable[[], T], slide_id: str, path: str | os.PathLike
) -> tuple[T | None, SlideSkip | None]:
    """Call ``opener`` (which opens slide ``path``); a bad slide becomes a :class:`SlideSkip`, not an error.

    Args:
        opener: opens the slide, e.g. ``lambda: open_slide(path, reader="tiff")`` or a pool's ``get``.
        slide_id, path: the slide, for the message.

    Returns:
        ``(reader, None)``, or ``(None, skip)`` when ``opener`` raised :class:`SlideError` (missing, corrupt,
        not a slide, not readable by the chosen reader, no mpp) or :class:`OSError`.
    """
    try:
        return opener(), None
    except (SlideError, OSError) as err:
        return None, skip_of(err, slide_id, path)


def warn_skip(skip: SlideSkip, stats: object | None = None) -> None:
    """Count ``skip`` in ``stats`` (an object with ``add(counter_name)``, e.g. ``builder.SlideStats``) and
    warn its message (``RuntimeWarning``)."""
    if stats is not None:
        stats.add(skip.counter)
    warnings.warn(skip.message(), RuntimeWarning, stacklevel=3)
