"""Bounds of numeric flags, and the one sentence that names a value outside them.

Training's config (``training.config.RANGES`` / ``POSITIVE``) and the catalogue CLI check their numeric flags
with :func:`ranges_problems`, and take the bounds of the flags they share (the tissue-mask settings) from
:data:`TISSUE_RANGES` / :data:`TISSUE_POSITIVE`, so that ``--mask_mpp 0`` is refused up front by either, in
the same words, instead of the catalogue opening every slide to call it ``no-tissue``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

__all__ = ["TISSUE_POSITIVE", "TISSUE_RANGES", "range_problem", "ranges_problems"]

Range = tuple[str, float, float | None, str]
"""``(flag without dashes, lowest, highest or None, what it is)``; both bounds allowed."""

TISSUE_RANGES: tuple[Range, ...] = (
    ("min_object_um2", 0, None, "µm²"),
    ("saturation_floor", 0, 255, "0-255"),
)
"""Bounds of the tissue-mask flags of the catalogue and training."""
TISSUE_POSITIVE: tuple[tuple[str, str], ...] = (("mask_mpp", "µm/px"),)
"""Tissue-mask flags that must be > 0 (0 itself is refused)."""


def range_problem(
    name: str, value: float, low: float, high: float | None = None, what: str = "", exclusive: bool = False
) -> str | None:
    """What is wrong with ``--name value`` (None: nothing).

    Args:
        name: flag name without dashes.
        value: the value given.
        low, high: allowed bounds, inclusive (``high`` None: no upper bound).
        what: the unit or meaning, said in brackets.
        exclusive: ``low`` itself is refused.

    Returns:
        ``"--name must be >= low (what), got value"`` (``> low`` when ``exclusive``, ``between low and high``
        with an upper bound), or None; NaN and infinities are always refused.
    """
    finite = isinstance(value, int) or math.isfinite(value)
    if finite and (value > low if exclusive else value >= low) and (high is None or value <= high):
        return None
    if exclusive:
        allowed = f"> {low}"
    else:
        allowed = f">= {low}" if high is None else f"between {low} and {high}"
    return f"--{name} must be {allowed} ({what}), got {value}"


def ranges_problems(
    values: Mapping[str, float], ranges: Iterable[Range] = (), positive: Iterable[tuple[str, str]] = ()
) -> list[str]:
    """:func:`range_problem` of each flag of ``ranges`` and then ``positive`` (``values[name]``), in order."""
    problems = [range_problem(name, values[name], low, high, what) for name, low, high, what in ranges]
    problems += [range_problem(name, values[name], 0, None, what, exclusive=True) for name, what in positive]
    return [p for p in problems if p]
