"""One way to name slides: folders, manifests, GDC manifests, catalogues and paths -> ``SlideRecord``s.

The tile stream, grid tiling and training all call :func:`resolve_sources`, so a source means the same thing
everywhere:

* ``"embedded"``: the three real slides shipped with pathfm;
* a :class:`SlideRecord` (or a dict of its fields);
* a folder: every slide file under it (recursive, sorted);
* ``*.parquet``: a slide catalogue (``python -m pathfm.datasets_scripts.catalogue``): its ``ok`` rows, with
  the catalogue's mpp, and its ``no-mpp`` rows too when the caller has an mpp for them (``mpp_given``:
  ``--mpp_override`` / ``--default_mpp``; such records carry no mpp and the stream resolves it); other rows
  are skipped with one line naming how many and why;
* ``*.csv`` / ``*.tsv`` / ``*.txt``: a GDC manifest when its header has ``id`` and ``filename`` (files under
  ``<manifest folder>/<id>/<filename>``; listed slides not downloaded are kept, see
  :func:`pathfm.datasets_scripts.sources.read_gdc_manifest`), else a pathfm manifest (``path``, optional
  ``mpp``, ``slide_id``...);
* any other path: one slide file. A missing slide file stays in the list and is skipped and counted when the
  stream opens it; a missing folder/manifest/catalogue raises.

Slide ids are unique: when two different files share an id (same file name in different folders), each gets
``<id>-<8 hex of its absolute path's sha1>``, so their tiles and counts never merge.
"""

from __future__ import annotations

import csv
import gc
import hashlib
import logging
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pathfm.datasets_scripts.sources import (
    SlideRecord,
    find_slides,
    read_gdc_manifest,
    read_manifest,
    read_text_utf8,
)

__all__ = ["MANIFEST_SUFFIXES", "CATALOGUE_SUFFIX", "read_catalogue", "resolve_sources", "unique_slide_ids"]

logger = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".csv", ".tsv", ".txt")
CATALOGUE_SUFFIX = ".parquet"
CATALOGUE_RECORD_COLUMNS = ["path", "slide_id", "mpp_x", "mpp_y", "group", "status", "reason"]
_RECORD_FIELDS = ["path", "slide_id", "mpp_x", "group", "status"]  # the columns a record is built from


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while building many long-lived objects (a record per slide).

    Allocating 30,000 records otherwise triggers full collections whose cost grows with the whole heap
    (torch, datasets: ~500,000 objects), not with the records; measured, that was most of what made the first
    batch from a 30,000-row catalogue slower than from a 100-row one. The records hold no reference cycles, so
    nothing is lost by not looking for them; the previous collector state is restored.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _is_gdc_manifest(path: Path) -> bool:
    header = next(csv.reader(read_text_utf8(path).splitlines()[:1], delimiter="\t"), [])
    return {"id", "filename"} <= {h.strip() for h in header}


def _usable_statuses(mpp_given: bool) -> tuple[str, ...]:
    return ("ok", "no-mpp") if mpp_given else ("ok",)


def read_catalogue(path: str | os.PathLike, mpp_given: bool = False) -> list[SlideRecord]:
    """The usable slides of a catalogue parquet file (rows with status ``ok``), without opening any slide.

    Args:
        path: catalogue written by ``pathfm.datasets_scripts.catalogue``.
        mpp_given: the caller has an ``--mpp_override`` or ``--default_mpp``: ``no-mpp`` rows are usable too
            (their records carry mpp None, so the stream follows the mpp chain to the given value; a row
            refused for non-square pixels stays refused unless the override is given).

    Returns:
        records with the catalogue's slide id, group and level-0 mpp (x; the catalogue refuses slides whose x
        and y differ), ``extra["catalogue"]`` = the catalogue path (such records need no preflight) and
        ``extra["catalogue_row"]`` = the row's 0-based position in the file (its stored tissue mask).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a catalogue (not parquet, or columns missing; the file is named).
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    cpath = Path(path)
    if not cpath.is_file():
        raise FileNotFoundError(f"{cpath}: slide catalogue not found")
    try:
        parquet = pq.ParquetFile(cpath)
        names = set(parquet.schema_arrow.names)
    except (pa.ArrowException, OSError) as err:
        raise ValueError(
            f"{cpath}: not a slide catalogue (cannot read it as parquet: {err}); build one with "
            f"`python -m pathfm.datasets_scripts.catalogue SLIDES... --output {cpath.name}`"
        ) from None
    missing = [c for c in CATALOGUE_RECORD_COLUMNS if c not in names]
    if missing:
        raise ValueError(
            f"{cpath}: not a slide catalogue (missing columns {missing}); build one with "
            f"`python -m pathfm.datasets_scripts.catalogue SLIDES... --output {cpath.name}`"
        )
    # ParquetFile.read rather than pq.read_table: the latter goes through pyarrow.dataset, ~4x slower on a
    # 30,000-row catalogue's 118 row groups (20 vs 5 ms), all of it before the first batch
    table = parquet.read(columns=_RECORD_FIELDS)
    statuses = table.column("status")
    usable = _usable_statuses(mpp_given)
    skipped = Counter(s for s in statuses.to_pylist() if s not in usable)
    is_ok = pc.is_in(statuses, value_set=pa.array(usable))
    ok = table.filter(is_ok).to_pydict()
    # a no-mpp row's mpp_x (set when its pixels are not square) is not a given value: the stream resolves it
    mpps = [m if s == "ok" else None for m, s in zip(ok["mpp_x"], ok["status"])]
    rows = pc.indices_nonzero(is_ok).to_pylist()  # the ok rows' positions in the file (catalogue_masks)
    catalogue = str(cpath)
    with gc_paused():
        records = [
            SlideRecord(path, slide_id, mpp, None, group, {"catalogue": catalogue, "catalogue_row": row})
            for path, slide_id, mpp, group, row in zip(ok["path"], ok["slide_id"], mpps, ok["group"], rows)
        ]  # positional: a third cheaper than keywords, 30,000 times
    if skipped:
        logger.warning(
            "%s: skipping %d of %d catalogued slides (%s)",
            cpath,
            sum(skipped.values()),
            len(statuses),
            ", ".join(f"{n} {s}" for s, n in sorted(skipped.items())),
        )
    return records


def catalogue_skips(sources: Any, mpp_given: bool = False) -> Counter[str]:
    """How many catalogued slides :func:`read_catalogue` leaves out, by status (``unreadable``, ``no-mpp``,
    ``no-tissue``, ...), over the catalogue ``.parquet`` files among ``sources`` (other sources count 0).

    Args:
        sources: one source or a list of them, as for :func:`resolve_sources`.
        mpp_given: as for :func:`read_catalogue` (``no-mpp`` rows are then used, not left out).
    """
    import pyarrow.parquet as pq

    items = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources or [])
    skipped: Counter[str] = Counter()
    for item in items:
        if isinstance(item, (str, os.PathLike)) and Path(item).suffix.lower() == CATALOGUE_SUFFIX:
            if Path(item).is_file():
                statuses = pq.ParquetFile(item).read(columns=["status"]).column("status").to_pylist()
                usable = _usable_statuses(mpp_given)
                skipped.update(status for status in statuses if status not in usable)
    return skipped


def _records_of(item: Any, mpp_given: bool) -> list[SlideRecord]:
    if isinstance(item, SlideRecord):
        return [item]
    if isinstance(item, dict):
        return [SlideRecord(**item)]
    if item == "embedded":
        from pathfm.datasets_scripts.embedded import embedded_slides

        return embedded_slides()
    p = Path(item)
    suffix = p.suffix.lower()
    if p.is_dir():
        return find_slides(p)
    if suffix == CATALOGUE_SUFFIX:
        return read_catalogue(p, mpp_given)
    if suffix in MANIFEST_SUFFIXES:
        if not p.is_file():
            raise FileNotFoundError(f"{p}: manifest not found (expected a .csv/.tsv manifest or GDC manifest)")
        # A partial download is common: its missing slides are kept (the stream skips and counts them, the
        # catalogue writes them as unreadable rows saying so); none downloaded at all is an error.
        return read_gdc_manifest(p, missing="keep") if _is_gdc_manifest(p) else read_manifest(p)
    if not p.exists() and not suffix:
        raise FileNotFoundError(
            f"slide source {str(item)!r} does not exist (expected a slide file, a folder, a manifest "
            f".csv/.tsv, a catalogue .parquet, or 'embedded')"
        )
    # A slide path; a missing file is skipped and counted when the stream opens it.
    return [SlideRecord(path=str(p))]


_NOT_NORMAL = ("/./", "/../", "//")  # in an absolute path: os.path.abspath would change it


def _abspath(path: str) -> str:
    # os.path.abspath costs ~10 µs; a catalogue's paths are already absolute and normal (30,000 slides).
    if path.startswith(os.sep) and not any(part in path for part in _NOT_NORMAL):
        return path
    return os.path.abspath(path)


def _absolute_paths(paths: list[str]) -> list[str]:
    """``os.path.abspath`` of each path; one check over all of them when they already are (a catalogue's)."""
    joined = "\0".join(paths)  # no path holds a NUL byte
    if joined.startswith(os.sep) and joined.count("\0" + os.sep) == len(paths) - 1:
        if not any(part in joined for part in _NOT_NORMAL):  # _abspath's test, on all paths at once
            return paths
    return [_abspath(p) for p in paths]


def unique_slide_ids(records: list[SlideRecord]) -> list[SlideRecord]:
    """Give records that share an id but not a file ``<id>-<sha1(abs path)[:8]>`` (in place; returned)."""
    ids = [r.slide_id for r in records]
    if len(set(ids)) == len(ids):  # the common case (a catalogue's ids are already unique): nothing to do
        return records
    counts = Counter(ids)
    paths_of: dict[str, set[str]] = {}
    for r in records:
        if counts[r.slide_id] > 1:
            paths_of.setdefault(r.slide_id, set()).add(_abspath(r.path))
    for r in records:
        if len(paths_of.get(r.slide_id, ())) > 1:
            digest = hashlib.sha1(_abspath(r.path).encode()).hexdigest()[:8]
            r.slide_id = f"{r.slide_id}-{digest}"
    return records


def _nothing_usable(items: list[Any], mpp_given: bool) -> str:
    """Why ``items`` gave no slide: the statuses of the catalogue rows left out, and the fix."""
    skipped = catalogue_skips(items, mpp_given)
    if not skipped:
        return (
            f"no slides found in {items!r}: give slide files, folders that contain slides, a manifest, "
            f"a catalogue or 'embedded'"
        )
    fixes = []
    if skipped.get("no-mpp"):
        fixes.append(
            "no-mpp rows need a level-0 mpp: pass --default_mpp 0.25 (or --mpp_override) here, or rebuild "
            "the catalogue with --default_mpp"
        )
    if set(skipped) - {"no-mpp"}:
        fixes.append("the catalogue's reason column says why each other row was left out")
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(skipped.items()))
    left_out = f"every catalogued slide was left out ({statuses})"
    return f"no usable slides in {items!r}: {left_out}; " + "; ".join(fixes)


def resolve_sources(sources: Any, sort: bool = False, mpp_given: bool = False) -> list[SlideRecord]:
    """Turn slide sources into records (see the module docstring for what each kind of source means).

    Args:
        sources: one source or a list of them.
        sort: sort by absolute path (else: the sources' order, folders sorted inside).
        mpp_given: an ``--mpp_override`` / ``--default_mpp`` will be applied: a catalogue's ``no-mpp`` rows
            are usable (:func:`read_catalogue`).

    Returns:
        records, each file once (the first mention wins), ids unique.

    Raises:
        FileNotFoundError: a folder, manifest or catalogue that does not exist (named).
        ValueError: nothing given, an empty string among them, or no slides found (the sources are listed;
            for catalogues whose rows were all left out, their statuses and the fix).
    """
    if sources is None or (isinstance(sources, (list, tuple)) and not sources):
        raise ValueError("no slide sources given: give slide files, folders, manifests, a catalogue or 'embedded'")
    items = [sources] if isinstance(sources, (str, os.PathLike, SlideRecord, dict)) else list(sources)
    if any(isinstance(item, str) and not item.strip() for item in items):
        # Path("") is the current folder: an unset shell variable would train on whatever lies below it
        raise ValueError(
            f"empty slide source in {items!r} (an unset shell variable?): give slide files, folders, "
            "manifests, a catalogue or 'embedded'"
        )
    seen: dict[str, SlideRecord] = {}
    for item in items:
        records = _records_of(item, mpp_given)
        keys = _absolute_paths([r.path for r in records])
        if not seen:
            first = dict(zip(keys, records))
            if len(first) == len(records):  # no file twice (a catalogue): no per-record work
                seen = first
                continue
        for key, rec in zip(keys, records):
            seen.setdefault(key, rec)
    if not seen:
        raise ValueError(_nothing_usable(items, mpp_given))
    records = [seen[k] for k in sorted(seen)] if sort else list(seen.values())
    return unique_slide_ids(records)
