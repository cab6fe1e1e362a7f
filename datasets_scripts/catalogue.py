"""Slide catalogue: open every slide once, in parallel processes, and write one parquet row per slide.

CLI::

    python -m pathfm.datasets_scripts.catalogue SLIDES... --output catalogue.parquet --num_proc 8

``SLIDES`` are anything :func:`pathfm.datasets_scripts.resolve.resolve_sources` accepts (folders, manifests,
GDC manifests, slide files, another catalogue). Row columns: ``path`` (absolute), ``slide_id``, ``bytes``,
``mtime_ns``, ``vendor``, ``level_dimensions`` ([[w, h], ...] px), ``level_downsamples``, ``mpp_x``, ``mpp_y``
(level-0 µm/px) and ``mpp_source`` (``mpp_override`` / ``manifest`` / ``openslide`` / ``vendor`` /
``tiff-resolution`` / ``default_mpp``: the chain of :mod:`pathfm.datasets_scripts.mpp`),
``objective_power``, ``bounds`` ([x, y, w, h] level-0 px), ``background`` ([r, g, b]), ``mask`` (tissue mask,
``numpy.packbits`` rows then zlib), ``mask_shape`` ([h, w]), ``mask_mpp`` (µm/px), ``mask_threshold``,
``mask_method``, ``tissue_mm2``, ``icc_profile`` (description of the embedded ICC profile, or null),
``icc_option`` (``ignore`` / ``apply``, see :mod:`pathfm.datasets_scripts.colour`), ``reader`` (the pixel
reader the slide was opened and test-decoded with, ``--reader``), ``decode_checked`` / ``decode_failed`` (test
reads of stored tiles inside the tissue at the levels training reads, and how many failed:
:mod:`pathfm.datasets_scripts.decode_check`), ``group`` (manifest group or TCGA patient barcode), ``status``
(``ok`` / ``no-mpp`` / ``unreadable`` / ``no-tissue``), ``reason`` (words) and ``mask_settings`` (what the
mask was computed with, :func:`pathfm.datasets_scripts.catalogue_masks.mask_settings`) and ``mpp_options``
(the ``--mpp_override`` / ``--default_mpp`` the row was made with, :func:`mpp_options`). Rows are written in
parquet row groups of 256, so that a training worker reads a slide's mask back cheaply instead of computing
it (:mod:`pathfm.datasets_scripts.catalogue_masks`). A slide some of whose test tiles fail is ``ok`` with the
failures counted (and said in ``reason``); one with a level none of whose test tiles decodes is
``unreadable``. The statuses and words of a slide that cannot be opened are those of the tile stream and
training's start-up check (:mod:`pathfm.datasets_scripts.skips`).

Re-running skips files whose size and mtime are unchanged (and whose mask settings, reader and mpp options
are the same: changing ``--mpp_override`` reopens every slide, adding, changing or removing ``--default_mpp``
the slides without an mpp of their own); a killed run resumes: finished rows are appended to
``<output>.partial.jsonl`` as they come and merged into the parquet file (written atomically) at the end.
The result is a plain parquet file: ``datasets.load_dataset("parquet", data_files=...)`` reads it.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import zlib
from collections import Counter
from collections.abc import Iterator
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from pathfm.datasets_scripts.catalogue_masks import CATALOGUE_ROW_GROUP_ROWS, mask_settings
from pathfm.datasets_scripts.colour import DEFAULT_ICC, check_icc_option
from pathfm.datasets_scripts.decode_check import check_decoding
from pathfm.datasets_scripts.flag_ranges import TISSUE_POSITIVE, TISSUE_RANGES, ranges_problems
from pathfm.datasets_scripts.mpp import check_square, given_mpp_problem, resolve_level0_mpp
from pathfm.datasets_scripts.resolve import resolve_sources
from pathfm.datasets_scripts.skips import open_or_skip, skip_of, warn_given_mpp_disagreement
from pathfm.datasets_scripts.slide import MissingMppError, SlideError, add_reading_arguments, open_slide
from pathfm.datasets_scripts.sources import SlideRecord, parse_tcga_barcode

__all__ = ["CATALOGUE_RANGES", "build_catalogue", "catalogue_row", "decode_mask", "main", "mpp_options"]

CATALOGUE_RANGES = (
    ("num_proc", 1, None, "processes opening slides"),
    ("decode_check", 0, None, "test reads per level; 0: no check"),
)
"""Bounds of the catalogue's own numeric flags; the tissue-mask flags' are training's too
(:data:`pathfm.datasets_scripts.flag_ranges.TISSUE_RANGES`)."""


def encode_mask(mask: np.ndarray) -> bytes:
    """bool (h, w) -> zlib(packbits(rows))."""
    return zlib.compress(np.packbits(mask.astype(bool), axis=1).tobytes(), 6)


def decode_mask(blob: bytes, shape: tuple[int, int] | list[int]) -> np.ndarray:
    """Inverse of :func:`encode_mask`: bool (h, w)."""
    h, w = int(shape[0]), int(shape[1])
    packed = np.frombuffer(zlib.decompress(blob), dtype=np.uint8).reshape(h, (w + 7) // 8)
    return np.unpackbits(packed, axis=1, count=w).astype(bool)


def mpp_options(mpp_override: float | None, default_mpp: float | None) -> str:
    """The mpp flags a row was made with, as the JSON string stored in its ``mpp_options`` column."""
    return json.dumps({"mpp_override": mpp_override, "default_mpp": default_mpp}, sort_keys=True)


def _group(rec: SlideRecord) -> str | None:
    if rec.group:
        return rec.group
    try:
        return parse_tcga_barcode(Path(rec.path).name).patient
    except ValueError:
        return None


def _given_mpp(rec: SlideRecord, mpp_override: float | None) -> tuple[float | None, str]:
    """The value given for this slide and its source: the flag wins over the manifest column."""
    if mpp_override is not None:
        return mpp_override, "mpp_override"
    return rec.mpp, rec.extra.get("mpp_source", "manifest")


def catalogue_row(
    rec: SlideRecord,
    mask_mpp: float = 8.0,
    saturation_floor: float = 20.0,
    mpp_override: float | None = None,
    default_mpp: float | None = None,
    min_object_um2: float = 10_000.0,
    icc_profile: str = DEFAULT_ICC,
    reader_kind: str = "auto",
    decode_positions: int = 4,
) -> dict[str, Any]:
    """Open one slide and describe it (never raises for a bad slide: the status and reason say what is wrong).

    A slide without a usable mpp is ``no-mpp`` (its levels, vendor and ICC profile are still recorded), never
    ``unreadable``; ``mpp_source`` says which link of the chain (:mod:`pathfm.datasets_scripts.mpp`) answered.
    A manifest mpp that the slide's metadata contradicts by more than 10 % is used and warned (once per slide,
    :func:`pathfm.datasets_scripts.skips.warn_given_mpp_disagreement`); ``--mpp_override`` is not compared.
    ``reader_kind`` (``--reader``) opens the slide as the stream will: a slide that ``tiff`` cannot read is
    ``unreadable`` with the reason. ``decode_positions`` test reads per level training uses check that the
    stored tiles inside the tissue decode (0: no check).

    Returns:
        a catalogue row (see the module docstring).
    """
    from pathfm.datasets_scripts.tissue import compute_tissue_mask

    path = os.path.abspath(rec.path)
    row: dict[str, Any] = {
        "path": path, "slide_id": rec.slide_id, "bytes": None, "mtime_ns": None, "vendor": None,
        "level_dimensions": None, "level_downsamples": None, "mpp_x": None, "mpp_y": None, "mpp_source": None,
        "objective_power": None, "bounds": None, "background": None, "mask": None, "mask_shape": None,
        "mask_mpp": None, "mask_threshold": None, "mask_method": None, "tissue_mm2": None,
        "icc_profile": None, "icc_option": icc_profile, "reader": reader_kind, "decode_checked": None,
        "decode_failed": None, "group": _group(rec), "status": "unreadable", "reason": "",
        "mask_settings": mask_settings(
            mask_mpp, saturation_floor, min_object_um2=min_object_um2, icc_profile=icc_profile
        ),
        "mpp_options": mpp_options(mpp_override, default_mpp),
    }  # fmt: skip
    try:
        st = os.stat(path)
    except OSError as err:
        row["reason"] = rec.extra.get("not_downloaded") or f"cannot stat the file: {err.strerror or err}"
        return row
    row["bytes"], row["mtime_ns"] = int(st.st_size), int(st.st_mtime_ns)
    # a placeholder mpp: the chain is followed below, per axis, so that a slide without one is "no-mpp"
    reader, skip = open_or_skip(
        lambda: open_slide(
            path, mpp=1.0, mpp_source="placeholder", icc_profile=icc_profile, reader=reader_kind
        ),
        rec.slide_id,
        path,
    )
    if skip is not None:
        row["status"], row["reason"] = skip.status, skip.reason
        return row
    try:
        props = reader.properties
        row["vendor"] = props.get("openslide.vendor")
        row["level_dimensions"] = [list(map(int, d)) for d in reader.level_dimensions]
        row["level_downsamples"] = [float(d) for d in reader.level_downsamples]
        power = props.get("openslide.objective-power")
        row["objective_power"] = float(power) if power not in (None, "") else None
        row["bounds"] = list(map(int, reader.bounds))
        row["background"] = list(map(int, reader.background_color))
        row["icc_profile"] = reader.colour.description if reader.colour is not None else None
        given, given_source = _given_mpp(rec, mpp_override)
        try:
            found = resolve_level0_mpp(
                props, path, rec.slide_id, given, given_source, default_mpp, require_square=False
            )
            row["mpp_x"], row["mpp_y"], row["mpp_source"] = found.x, found.y, found.source
            check_square(found, rec.slide_id, path)
            warn_given_mpp_disagreement(props, path, rec.slide_id, found.x, found.source)
        except SlideError as err:  # MissingMppError, or an implausible given value (MppError)
            skip = skip_of(err, rec.slide_id, path)  # "no-mpp", in the words of training and the stream
            row["status"], row["reason"] = skip.status, skip.reason
            return row
        mx = found.x
        reader.mpp = float(mx)
        try:
            mask = compute_tissue_mask(
                reader, mask_mpp=mask_mpp, saturation_floor=saturation_floor, min_object_um2=min_object_um2
            )
        except (SlideError, MissingMppError, ValueError) as err:
            row["reason"] = f"tissue mask failed: {err}"
            return row
        check, reader = check_decoding(
            reader,
            lambda: open_slide(
                path, mpp=mx, mpp_source=found.source, icc_profile=icc_profile, reader=reader_kind
            ),
            mask,
            positions=decode_positions,
        )
    except SlideError as err:  # the slide could not be reopened after a failed test read
        row["reason"] = f"reopening after a failed test read: {err}"
        return row
    finally:
        reader.close()
    row["decode_checked"], row["decode_failed"] = check.checked, check.failed
    row["mask"] = encode_mask(mask.mask)
    row["mask_shape"] = list(mask.mask.shape)
    row["mask_mpp"] = float(mask.mpp)
    row["mask_threshold"] = float(mask.threshold)
    row["mask_method"] = mask.method
    mpp_y = mask.mpp if mask.mpp_y is None else mask.mpp_y  # the mask's px are not quite square (rounding)
    row["tissue_mm2"] = float(mask.tissue_pixels * (mask.mpp / 1000.0) * (mpp_y / 1000.0))
    if mask.tissue_pixels == 0:
        row["status"], row["reason"] = "no-tissue", f"no tissue above saturation {mask.threshold:.1f}"
    else:
        row["status"], row["reason"] = check.verdict()
    return row


def _row_job(args: tuple) -> dict[str, Any]:
    return catalogue_row(*args)


def _to_json(row: dict[str, Any]) -> str:
    out = dict(row)
    if out["mask"] is not None:
        out["mask"] = base64.b64encode(out["mask"]).decode()
    return json.dumps(out)


def _from_json(line: str) -> dict[str, Any]:
    row = json.loads(line)
    if row["mask"] is not None:
        row["mask"] = base64.b64decode(row["mask"])
    return row


def _previous_rows(output: Path, partial: Path) -> dict[str, dict[str, Any]]:
    """The rows of an earlier run (the catalogue at ``output``, then the partial log of a killed run).

    Raises:
        ValueError: ``output`` exists but is not a slide catalogue (named; the file is left as it is).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows: dict[str, dict[str, Any]] = {}
    if output.is_file():
        try:
            table = pq.read_table(output)
        except (pa.ArrowException, OSError) as err:
            table, why = None, f"not a parquet file ({err})"
        else:
            why = "no 'path' column"
        if table is None or "path" not in table.column_names:
            raise ValueError(
                f"--output {output} exists and is not a slide catalogue ({why}); it was left untouched: "
                f"give another --output path, or move that file away"
            )
        for row in table.to_pylist():
            rows[row["path"]] = row
    if partial.is_file():
        for line in partial.read_text().splitlines():
            if line.strip():
                try:
                    row = _from_json(line)
                except (ValueError, KeyError):
                    continue  # a line cut by a kill
                rows[row["path"]] = row
    return rows


def _same_mpp_answer(row: dict[str, Any], mpp_flags: str) -> bool:
    """Whether the mpp flags of this run would give the row's slide the mpp it has: the same flags, or only
    ``--default_mpp`` changed for a slide whose mpp came from elsewhere (so that adding ``--default_mpp`` to
    a 30,000-slide catalogue reopens only the slides that need it). A row made before ``mpp_options`` was
    stored is reopened."""
    made_with = row.get("mpp_options")
    if made_with == mpp_flags:
        return True
    if made_with is None:
        return False
    old, new = json.loads(made_with), json.loads(mpp_flags)
    if old["mpp_override"] != new["mpp_override"]:
        return False
    # the same override wins over any default; without one, a default only fills a slide the chain left empty
    return new["mpp_override"] is not None or row.get("mpp_source") not in (None, "default_mpp")


def _unchanged(
    row: dict[str, Any] | None, path: str, settings: str, reader_kind: str, mpp_flags: str
) -> bool:
    """The row still describes the file (size, mtime) and was made with the same mask settings, reader and mpp
    options (a row from before ``mpp_options`` was stored is reopened)."""
    if row is None or row.get("mask_settings") != settings or row.get("reader") != reader_kind:
        return False
    if not _same_mpp_answer(row, mpp_flags):
        return False
    try:
        st = os.stat(path)
    except OSError:
        return row["status"] == "unreadable"
    return row["bytes"] == st.st_size and row["mtime_ns"] == st.st_mtime_ns


def build_catalogue(
    sources: Any,
    output: str | os.PathLike,
    num_proc: int = 1,
    mask_mpp: float = 8.0,
    saturation_floor: float = 20.0,
    mpp_override: float | None = None,
    default_mpp: float | None = None,
    min_object_um2: float = 10_000.0,
    icc_profile: str = DEFAULT_ICC,
    reader_kind: str = "auto",
    decode_positions: int = 4,
) -> dict[str, int]:
    """Build or update a catalogue parquet file.

    Args:
        sources: slide sources (see :func:`resolve_sources`).
        output: ``.parquet`` path.
        num_proc: worker processes opening slides.
        mask_mpp: tissue-mask µm/px.
        saturation_floor: the most saturated glass can be, and the threshold when there is no glass (0-255;
            :func:`pathfm.datasets_scripts.tissue.tissue_mask_from_rgb`).
        mpp_override: level-0 µm/px for every slide (wins over metadata).
        default_mpp: level-0 µm/px for slides without one.
        min_object_um2: smallest tissue piece kept in the mask, µm² (needle biopsies, TMA cores: lower it).
        icc_profile: ``"ignore"`` or ``"apply"`` embedded ICC profiles for the tissue mask (recorded per row).
        reader_kind: pixel reader (``--reader``: ``auto``, ``tiff`` or ``openslide``; recorded per row).
        decode_positions: test reads of stored tiles inside the tissue per level training reads (0: none).

    Returns:
        counts: ``{"rows", "opened", "reused", <status>: n}``.

    Raises:
        ValueError: an implausible ``mpp_override`` / ``default_mpp``, a numeric option outside its bounds
            (:data:`CATALOGUE_RANGES`, :data:`~pathfm.datasets_scripts.flag_ranges.TISSUE_RANGES`: named as
            its ``--flag``, with training's words), or an ``output`` that exists and is not a catalogue
            (checked before any slide is opened).
        FileNotFoundError: a missing source (see :func:`resolve_sources`).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    problems = [given_mpp_problem(name, value) for name, value in
                (("mpp_override", mpp_override), ("default_mpp", default_mpp))]  # fmt: skip
    numbers = {
        "num_proc": num_proc, "mask_mpp": mask_mpp, "saturation_floor": saturation_floor,
        "min_object_um2": min_object_um2, "decode_check": decode_positions,
    }  # fmt: skip
    problems += ranges_problems(numbers, (*CATALOGUE_RANGES, *TISSUE_RANGES), TISSUE_POSITIVE)
    if any(problems):
        raise ValueError("; ".join(p for p in problems if p))
    out = Path(output)
    partial = out.with_name(out.name + ".partial.jsonl")
    records = resolve_sources(sources)
    previous = _previous_rows(out, partial)
    paths = [os.path.abspath(r.path) for r in records]
    settings = mask_settings(
        mask_mpp, saturation_floor, min_object_um2=min_object_um2, icc_profile=icc_profile
    )
    flags = mpp_options(mpp_override, default_mpp)
    todo = [
        r for r, p in zip(records, paths) if not _unchanged(previous.get(p), p, settings, reader_kind, flags)
    ]
    todo_paths = {os.path.abspath(r.path) for r in todo}
    rows = {p: previous[p] for p in paths if p not in todo_paths}
    check_icc_option(icc_profile)
    options = (
        mask_mpp, saturation_floor, mpp_override, default_mpp, min_object_um2, icc_profile, reader_kind,
        decode_positions,
    )  # fmt: skip
    jobs = [(r, *options) for r in todo]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(partial, "a") as log:
        for row in _run(jobs, num_proc):
            log.write(_to_json(row) + "\n")
            log.flush()
            rows[row["path"]] = row
    ordered = [rows[p] for p in paths]
    for row, rec in zip(ordered, records):
        row["slide_id"] = rec.slide_id  # ids are made unique over the whole catalogue
    tmp = out.with_name(out.name + ".tmp")
    # Small row groups: a training worker reads one to get a slide's mask (catalogue_masks). No column
    # statistics: min/max of the mask blobs would make the footer megabytes, and nothing filters on them.
    pq.write_table(
        pa.Table.from_pylist(ordered), tmp, row_group_size=CATALOGUE_ROW_GROUP_ROWS, write_statistics=False
    )
    os.replace(tmp, out)
    partial.unlink(missing_ok=True)
    counts = Counter(r["status"] for r in ordered)
    counts.update(rows=len(ordered), opened=len(todo), reused=len(records) - len(todo))
    return dict(counts)


def _run(jobs: list[tuple], num_proc: int) -> Iterator[dict[str, Any]]:
    if num_proc <= 1 or len(jobs) <= 1:
        yield from map(_row_job, jobs)
        return
    with get_context().Pool(num_proc) as pool:
        yield from pool.imap_unordered(_row_job, jobs, chunksize=max(1, min(16, len(jobs) // (4 * num_proc))))


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; bad input -> one line and exit code 2."""
    ap = argparse.ArgumentParser(description="Build a slide catalogue (one parquet row per slide).")
    ap.add_argument("slides", nargs="+", help="slide files, folders, manifests, GDC manifests, or 'embedded'")
    ap.add_argument("--output", required=True, help="catalogue .parquet path")
    ap.add_argument("--num_proc", type=int, default=1, help="processes opening slides (1 or more)")
    ap.add_argument("--mask_mpp", type=float, default=8.0)
    ap.add_argument("--saturation_floor", type=float, default=20.0)
    add_reading_arguments(ap)
    ap.add_argument("--min_object_um2", type=float, default=10_000.0, help="smallest tissue piece kept, µm²")
    ap.add_argument(
        "--decode_check", type=int, default=4, metavar="N",
        help="test-decode N stored tiles inside the tissue per level training reads (0.25-2 µm/px); a slide "
        "with a level where none decodes is 'unreadable', partial failures are counted (0: no check)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    if not args.output.endswith(".parquet"):
        print(f"error: --output {args.output!r} must end with .parquet", file=sys.stderr)
        return 2
    try:
        counts = build_catalogue(
            args.slides, args.output, args.num_proc, args.mask_mpp, args.saturation_floor,
            args.mpp_override, args.default_mpp, args.min_object_um2, args.icc_profile, args.reader,
            args.decode_check,
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
