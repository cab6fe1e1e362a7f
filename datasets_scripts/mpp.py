"""Level-0 resolution (µm/px) of a slide: one chain of sources, each answer with where it came from.

The chain, first usable answer wins:

1. ``mpp_override``: a value the user gave for every slide (``--mpp_override``);
2. ``manifest``: a value given for this slide (manifest ``mpp`` column, ``SlideRecord.mpp``, a catalogue row);
3. ``openslide``: ``openslide.mpp-x`` / ``openslide.mpp-y`` (OpenSlide's own vendor parsing);
4. ``vendor``: vendor properties OpenSlide exposes but did not turn into an mpp (``aperio.MPP``, an
   Aperio-style ``MPP = ...`` in ``tiff.ImageDescription`` of a converted file, Philips
   ``DICOM_PIXEL_SPACING`` in mm);
5. ``tiff-resolution``: the TIFF ``XResolution`` / ``YResolution`` tags of the first page read with tifffile,
   *with their unit*: inch (25,400 µm), centimetre (10,000 µm), and the millimetre / micrometre units some
   converters write (OpenSlide reports those as "unknown"); a resolution without a unit is no mpp;
6. ``default_mpp``: a value the user gave for slides without one (``--default_mpp``).

Values 1, 2 and 6 are the user's: an implausible one (outside ``MIN_LEVEL0_MPP``-``MAX_LEVEL0_MPP``: negative,
0, 25) is an :class:`MppError` naming it and its source. Command lines refuse an implausible 1 or 6 up front
(:func:`given_mpp_problem`); an implausible 2 concerns one slide, which is then skipped as ``no-mpp``
(:mod:`pathfm.datasets_scripts.skips`) like a slide without any mpp, never stopping a run. A manifest value
that the slide's own metadata (3-5) contradicts by more than ``MPP_DISAGREEMENT`` still wins, with one
warning per slide (:func:`given_mpp_disagreement`); ``--mpp_override`` is not compared (the user's choice
for every slide, usually because the metadata is wrong), nor is a catalogue's (warned when it was built).
An implausible metadata value (3-5, e.g. a 72 dpi tag) is passed over; when nothing plausible follows,
:class:`MissingMppError` names the value and its source. Pixels whose x and y differ by more than
``NON_SQUARE_TOLERANCE`` are refused by name (tiles would cover different µm in x and y), never averaged.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = [
    "MAX_LEVEL0_MPP",
    "MIN_LEVEL0_MPP",
    "MPP_DISAGREEMENT",
    "NON_SQUARE_TOLERANCE",
    "Level0Mpp",
    "MppError",
    "MissingMppError",
    "check_square",
    "given_mpp_disagreement",
    "given_mpp_problem",
    "metadata_mpp",
    "resolve_level0_mpp",
]

MAX_LEVEL0_MPP = 10.0
"""Level 0 coarser than this (µm/px) is treated as a wrong resolution tag, not a real slide."""
MIN_LEVEL0_MPP = 0.05
"""Finer than any scanner (0.1 µm/px at 100x oil): a wrong unit or tag."""
NON_SQUARE_TOLERANCE = 0.01
"""Relative difference of mpp x and y still treated as square pixels (scanner rounding)."""
MPP_DISAGREEMENT = 0.10
"""Relative difference between a manifest mpp and the slide's metadata above which it is warned."""

OVERRIDE_HINT = (
    "pass an explicit mpp: `--mpp_override 0.25` (every slide) or `--default_mpp 0.25` (slides without one), "
    "an `mpp` column in the CSV/TSV manifest, or `open_slide(path, mpp=0.5)`"
)

# TIFF ResolutionUnit -> µm per unit; 4 and 5 are the millimetre / micrometre extension some writers use.
_TIFF_UNIT_UM = {2: 25_400.0, 3: 10_000.0, 4: 1_000.0, 5: 1.0}
_TIFF_UNIT_NAME = {1: "none", 2: "inch", 3: "centimetre", 4: "millimetre", 5: "micrometre"}
_DESCRIPTION_MPP = re.compile(r"(?:^|\|)\s*MPP\s*=\s*([0-9.eE+-]+)")


class SlideError(ValueError):
    """A slide cannot be opened or read (missing, corrupt, unsupported); the message names the path."""


class MppError(SlideError):
    """A user-given mpp is not a plausible level-0 resolution; the message names the value and its source."""


class MissingMppError(SlideError):
    """A slide has no usable level-0 resolution (µm/px); the message names the slide and how to override."""


@dataclass(frozen=True)
class Level0Mpp:
    """Level-0 µm/px per axis and where they came from (one of the chain's source names)."""

    x: float
    y: float
    source: str


def _pair(x: str | float | None, y: str | float | None) -> tuple[float, float] | None:
    try:
        fx = float(x)  # type: ignore[arg-type]
        fy = float(y) if y not in (None, "") else fx  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(fx) and math.isfinite(fy) and fx > 0 and fy > 0):
        return None
    return fx, fy


def vendor_mpp(props: dict[str, str]) -> tuple[float, float, str] | None:
    """µm/px from vendor properties OpenSlide did not map: ``(x, y, property name)`` or None."""
    found = _pair(props.get("aperio.MPP"), None)
    if found:
        return (*found, "aperio.MPP")
    match = _DESCRIPTION_MPP.search(props.get("tiff.ImageDescription", ""))
    if match and (found := _pair(match.group(1), None)):
        return (*found, "tiff.ImageDescription MPP")
    spacing = props.get("philips.DICOM_PIXEL_SPACING", "").replace('"', "").split()
    if len(spacing) >= 2 and (found := _pair(spacing[1], spacing[0])):  # (row, column) spacing in mm
        return found[0] * 1000.0, found[1] * 1000.0, "philips.DICOM_PIXEL_SPACING"
    return None


def tiff_resolution_mpp(path: str) -> tuple[float, float, str] | None:
    """µm/px from the first TIFF page's resolution tags and unit: ``(x, y, description)`` or None.

    Returns None for a file tifffile cannot parse, missing tags, or a unit of "none" (a bare ratio).
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            tags = tif.pages.first.tags
            xres, yres, unit = (tags.get(n) for n in ("XResolution", "YResolution", "ResolutionUnit"))
            unit_code = int(unit.value) if unit is not None else 2  # TIFF's default unit is the inch
            ratios = [t.value for t in (xres, yres) if t is not None]
    except Exception:  # noqa: BLE001 - not a TIFF or unreadable tags: this source has no answer
        return None
    if len(ratios) != 2 or unit_code not in _TIFF_UNIT_UM:
        return None
    try:
        px_per_unit = [num / den for num, den in ratios]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    found = _pair(*(_TIFF_UNIT_UM[unit_code] / v if v > 0 else None for v in px_per_unit))
    if found is None:
        return None
    return (*found, f"TIFF resolution tags ({px_per_unit[0]:.6g} px per {_TIFF_UNIT_NAME[unit_code]})")


def _plausible(x: float, y: float) -> bool:
    return MIN_LEVEL0_MPP <= x <= MAX_LEVEL0_MPP and MIN_LEVEL0_MPP <= y <= MAX_LEVEL0_MPP


def metadata_mpp(props: dict[str, str], path: str) -> tuple[Level0Mpp | None, list[str]]:
    """Sources 3-5 of the chain (OpenSlide, vendor properties, TIFF tags).

    Args:
        props: OpenSlide properties.
        path: slide file (read with tifffile only when 3 and 4 give nothing plausible).

    Returns:
        ``(answer or None, passed_over)``: ``passed_over`` lists implausible values found, in words.
    """
    passed_over: list[str] = []
    openslide_mpp = _pair(props.get("openslide.mpp-x"), props.get("openslide.mpp-y"))
    candidates = [(openslide_mpp, "openslide", "openslide.mpp-x/y")] if openslide_mpp else []
    if (vendor := vendor_mpp(props)) is not None:
        candidates.append((vendor[:2], "vendor", vendor[2]))
    for (x, y), source, what in candidates:
        if _plausible(x, y):
            return Level0Mpp(x, y, source), passed_over
        passed_over.append(f"{x:.4g} µm/px from {what}")
    tiff = tiff_resolution_mpp(path)
    if tiff is not None:
        x, y, what = tiff
        if _plausible(x, y):
            return Level0Mpp(x, y, "tiff-resolution"), passed_over
        if not candidates or abs(x - candidates[-1][0][0]) > 1e-6 * x:  # the same tag OpenSlide read: once
            passed_over.append(f"{x:.4g} µm/px from {what}")
    return None, passed_over


def given_mpp_problem(name: str, value: float | None) -> str | None:
    """What is wrong with a user's ``--mpp_override`` / ``--default_mpp`` value (None: nothing, or not given).

    ``MIN_LEVEL0_MPP``-``MAX_LEVEL0_MPP`` level-0 µm/px, finite; the training config and the catalogue CLI both
    call it, so that a command line refuses the value up front instead of opening every slide to refuse it.
    """
    if value is None or (math.isfinite(value) and MIN_LEVEL0_MPP <= value <= MAX_LEVEL0_MPP):
        return None
    return (
        f"--{name} is a level-0 µm/px between {MIN_LEVEL0_MPP} and {MAX_LEVEL0_MPP:g} (0.25 at 40x), "
        f"got {value}"
    )


_GIVEN_FIX = {
    "manifest": "correct the slide's mpp cell in the manifest, or empty it to read the slide's own metadata",
    "mpp_override": "pass a plausible --mpp_override",
    "default_mpp": "pass a plausible --default_mpp",
    "catalogue": "rebuild the catalogue",
}


def given_mpp_disagreement(
    props: dict[str, str], path: str, slide_id: str, given: float, source: str
) -> str | None:
    """The warning for a given mpp that the slide's own metadata contradicts (None: they agree, or the
    metadata has no plausible mpp).

    The given value still wins (it is the user's word for this slide); a factor of 2 between them is the
    usual 20x/40x mix-up of a manifest, which would make every tile of the slide twice or half the intended
    µm wide. Which sources are compared is the caller's choice
    (:func:`pathfm.datasets_scripts.skips.warn_given_mpp_disagreement`).

    Args:
        props: OpenSlide properties; path: slide file (sources 3-5 of the chain, :func:`metadata_mpp`).
        slide_id: named in the message.
        given: the given level-0 µm/px; source: where it came from (``manifest``...).

    Returns:
        one line naming the slide, both values and their sources, and the fix, when they differ by more
        than ``MPP_DISAGREEMENT`` (relative to the smaller), else None.
    """
    found, _ = metadata_mpp(props, path)
    if found is None:
        return None
    ratio = max(given, found.x) / min(given, found.x)
    if ratio <= 1.0 + MPP_DISAGREEMENT:
        return None
    return (
        f"slide {slide_id} ({path}): the {source} mpp {given:g} µm/px differs from the slide's own "
        f"{found.x:.4g} µm/px ({found.source}) by a factor {ratio:.2f}; the {source} value is used: if the "
        f"slide's value is right, correct the {source} mpp or leave it empty (the metadata is then read)"
    )


def _given(value: float, source: str, path: str) -> Level0Mpp:
    value = float(value)
    if not (math.isfinite(value) and MIN_LEVEL0_MPP <= value <= MAX_LEVEL0_MPP):
        fix = _GIVEN_FIX.get(source, "give a plausible mpp or none (the slide's metadata is then read)")
        raise MppError(
            f"{path}: {source} mpp {value!r} µm/px is not a plausible level-0 resolution (expected "
            f"{MIN_LEVEL0_MPP}-{MAX_LEVEL0_MPP:g} µm/px, 0.25 at 40x): {fix}"
        )
    return Level0Mpp(value, value, source)


def resolve_level0_mpp(
    props: dict[str, str],
    path: str,
    slide_id: str,
    mpp: float | None = None,
    mpp_source: str = "manifest",
    default_mpp: float | None = None,
    require_square: bool = True,
) -> Level0Mpp:
    """The whole chain (see the module docstring).

    Args:
        props: OpenSlide properties of the slide.
        path: slide file.
        slide_id: named in messages.
        mpp: a value given for this slide (wins over metadata), or None.
        mpp_source: what ``mpp`` is (``"mpp_override"``, ``"manifest"``, ``"catalogue"``...).
        default_mpp: used when neither ``mpp`` nor the metadata give a plausible value.
        require_square: refuse non-square pixels here (:func:`check_square`); False returns them.

    Returns:
        level-0 µm/px per axis (x and y within ``NON_SQUARE_TOLERANCE``) and the source.

    Raises:
        MppError: ``mpp`` or ``default_mpp`` is implausible (value and source named).
        MissingMppError: no plausible mpp anywhere (implausible metadata values are named), or non-square
            pixels.
    """
    if mpp is not None:
        return _given(mpp, mpp_source, path)
    found, passed_over = metadata_mpp(props, path)
    if found is None and default_mpp is not None:
        return _given(default_mpp, "default_mpp", path)
    if found is None and passed_over:
        raise MissingMppError(
            f"slide '{slide_id}' ({path}) reports an implausible level-0 resolution of "
            f"{'; '.join(passed_over)} (expected {MIN_LEVEL0_MPP}-{MAX_LEVEL0_MPP} µm/px: likely a wrong "
            f"TIFF resolution tag or unit); {OVERRIDE_HINT}"
        )
    if found is None:
        raise MissingMppError(
            f"slide '{slide_id}' ({path}) has no resolution metadata (no openslide.mpp-x/y, vendor mpp or "
            f"TIFF resolution tags with a unit): no mpp; tiles at a given magnification need it: "
            f"{OVERRIDE_HINT}"
        )
    return check_square(found, slide_id, path) if require_square else found


def check_square(found: Level0Mpp, slide_id: str, path: str) -> Level0Mpp:
    """Return ``found`` if x and y agree within ``NON_SQUARE_TOLERANCE``.

    Raises:
        MissingMppError: non-square pixels (both values and their source named).
    """
    if abs(found.x - found.y) > NON_SQUARE_TOLERANCE * max(found.x, found.y):
        raise MissingMppError(
            f"slide '{slide_id}' ({path}) has non-square pixels ({found.source} mpp-x {found.x:.6g}, mpp-y "
            f"{found.y:.6g} µm/px); tiles would cover different µm in x and y: resample the slide, or "
            f"{OVERRIDE_HINT}"
        )
    return found
