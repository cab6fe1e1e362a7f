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

A slide that is used but whose manifest mpp its own metadata contradicts is warned here too, once per slide
per process (:func:`warn_given_mpp_disagreement`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from pathfm.datasets_scripts.mpp import MissingMppError, MppError, SlideError, given_mpp_disagreement

__all__ = [
    "SKIP_STATUSES",
    "STREAM_COUNTERS",
    "MppDisagreementWarning",
    "SlideSkip",
    "open_or_skip",
    "skip_of",
    "warn_given_mpp_disagreement",
    "warn_skip",
]

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
    """The skip of a slide whose opening raised ``err``: ``no-mpp`` for :class:`MissingMppError` and for
    :class:`MppError` (an implausible mpp given for it, e.g. a manifest's 25 or -1: a readable slide without a
    usable magnification is never "unreadable"), else ``unreadable``."""
    status = "no-mpp" if isinstance(err, (MissingMppError, MppError)) else "unreadable"
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


class MppDisagreementWarning(RuntimeWarning):
    """A manifest mpp that the slide's own metadata contradicts (the manifest value is used)."""


GIVEN_SOURCES = ("manifest", "mpp_override", "catalogue")
"""Sources of an mpp given for a slide (:mod:`pathfm.datasets_scripts.mpp`): an opening with one of them
marks the slide and value as checked; of them, only ``manifest`` is compared with the metadata."""
_CHECKED: set[tuple[str, float]] = set()


def warn_given_mpp_disagreement(
    props: dict[str, str], path: str | os.PathLike, slide_id: str, mpp: float, source: str
) -> None:
    """Warn (:class:`MppDisagreementWarning`) when the slide's metadata contradicts the manifest mpp it is
    read with by more than ``mpp.MPP_DISAGREEMENT`` (the words of
    :func:`~pathfm.datasets_scripts.mpp.given_mpp_disagreement`).

    Once per slide and value per process (a forked DataLoader worker inherits what its parent checked),
    however often the slide is reopened (each visit of the stream, the tile reads of an evicted slide, the
    catalogue's second opening): the metadata is compared at the first opening only. Not compared:
    ``mpp_override`` (the user's choice for every slide, usually because the metadata is wrong), ``catalogue``
    (the catalogue warned when it was built from the manifest), and values the chain found itself.

    Args:
        props: OpenSlide properties; path, slide_id: the slide.
        mpp: the level-0 µm/px the slide is read with; source: where it came from (the chain's source name).
    """
    key = (str(path), float(mpp))
    if source not in GIVEN_SOURCES or key in _CHECKED:
        return
    _CHECKED.add(key)
    if source == "manifest" and (message := given_mpp_disagreement(props, str(path), slide_id, mpp, source)):
        warnings.warn(message, MppDisagreementWarning, stacklevel=3)
