"""Tissue masks stored in a slide catalogue, reused by the tile stream instead of being computed again.

Computing a mask reads a thumbnail of the whole slide (about 1 s for a 40,000 px square pyramid on one
core, several seconds for a full TCGA slide), while the stream reads ~64 tiles of a slide per visit
(~0.15 s): without reuse, a worker spends most of its time on masks, in every epoch. A catalogue row already
holds the mask (:mod:`pathfm.datasets_scripts.catalogue`), so a worker reads it back (one parquet row group of
:data:`CATALOGUE_ROW_GROUP_ROWS` rows) when it opens a catalogued slide, and computes the mask only when the
row no longer describes what the stream would compute:

* the file changed since it was catalogued (size or mtime),
* the stream reads it at another level-0 mpp (``--mpp_override``) or with other bounds,
* the mask settings differ (:func:`mask_settings`: resolution, threshold floor, morphology, minimum object
  size, ICC option, and the algorithm's version :data:`TISSUE_ALGORITHM`).

The catalogue file's footer is parsed once per process and then kept (keyed by path, size and mtime).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from pathfm.datasets_scripts.tissue import MASK_VERSION, TissueMask

__all__ = [
    "CATALOGUE_ROW_GROUP_ROWS",
    "TISSUE_ALGORITHM",
    "catalogue_mask",
    "changed_since",
    "mask_settings",
    "read_row",
]

CATALOGUE_ROW_GROUP_ROWS = 256
"""Rows per parquet row group of a catalogue: what a worker reads to get one slide's mask (256 masks, ~9 MB
for TCGA-sized slides, ~10 ms). Smaller groups make reading the whole catalogue at start-up slower (30,000
rows: ~0.4 s with groups of 64 vs ~0.1 s with 256)."""

TISSUE_ALGORITHM = f"pathfm-tissue/{MASK_VERSION}"
"""Version of :func:`pathfm.datasets_scripts.tissue.tissue_mask_from_rgb`: a change of the algorithm bumps it,
so that catalogues written before are not reused for masks the new code would draw differently."""

MAX_ROW_GROUP_ROWS = 1024
"""Row groups larger than this (a catalogue rewritten by another tool) are not read for one mask."""

_MASK_COLUMNS = [
    "path", "bytes", "mtime_ns", "mpp_x", "bounds", "mask", "mask_shape", "mask_mpp", "mask_threshold",
    "mask_method", "mask_settings", "status",
]  # fmt: skip
_FOOTERS: dict[tuple, tuple[Any, np.ndarray]] = {}


def mask_settings(
    mask_mpp: float = 8.0,
    saturation_floor: float = 20.0,
    closing_um: float = 16.0,
    opening_um: float = 16.0,
    min_object_um2: float = 10_000.0,
    icc_profile: str = "ignore",
) -> str:
    """The parameters a tissue mask depends on (besides the slide), as canonical JSON: equal strings mean
    the same mask. Arguments as :func:`pathfm.datasets_scripts.tissue.compute_tissue_mask`, plus the ICC
    option."""
    return json.dumps(
        {
            "algorithm": TISSUE_ALGORITHM,
            "mask_mpp": float(mask_mpp),
            "saturation_floor": float(saturation_floor),
            "closing_um": float(closing_um),
            "opening_um": float(opening_um),
            "min_object_um2": float(min_object_um2),
            "icc_profile": icc_profile,
        },
        sort_keys=True,
    )


def _footer(catalogue: str) -> tuple[Any, np.ndarray]:
    """(parquet metadata, first row of each row group) of a catalogue, parsed once per process."""
    import pyarrow.parquet as pq

    st = os.stat(catalogue)
    key = (catalogue, st.st_size, st.st_mtime_ns)
    hit = _FOOTERS.get(key)
    if hit is None:
        if len(_FOOTERS) > 8:
            _FOOTERS.clear()
        meta = pq.read_metadata(catalogue)
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        hit = _FOOTERS[key] = (meta, np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))
    return hit


def read_row(catalogue: str, row: int) -> dict[str, Any] | None:
    """The columns of row ``row`` (0-based) of ``catalogue`` that describe its file and mask, or None when the
    file cannot give them cheaply (written before ``mask_settings`` existed, or in big row groups).

    Raises:
        OSError, ValueError, IndexError: the catalogue cannot be read (moved, rewritten, cut).
    """
    import pyarrow.parquet as pq

    meta, starts = _footer(catalogue)
    group = int(np.searchsorted(starts, row, side="right")) - 1
    if not 0 <= group < meta.num_row_groups:
        return None
    names = set(meta.schema.to_arrow_schema().names)  # top-level columns (the parquet schema lists leaves)
    columns = [c for c in _MASK_COLUMNS if c in names]
    if "mask_settings" not in columns:  # written before masks were reusable
        return None
    if meta.row_group(group).num_rows > MAX_ROW_GROUP_ROWS:
        return None  # rewritten by another tool in big row groups: one mask would cost reading thousands
    table = pq.ParquetFile(catalogue, metadata=meta).read_row_group(group, columns=columns)
    return table.slice(row - int(starts[group]), 1).to_pylist()[0]


def changed_since(stored: dict[str, Any] | None, path: str) -> str:
    """Why the file at ``path`` is no longer the one a catalogue row (:func:`read_row`) describes ("" when it
    is, or when the row or the file cannot tell)."""
    if stored is None or stored.get("bytes") is None:
        return ""
    try:
        st = os.stat(path)
    except OSError:
        return ""  # a missing file is the reader's error to report
    if (stored["bytes"], stored["mtime_ns"]) != (st.st_size, st.st_mtime_ns):
        if stored["bytes"] != st.st_size:
            return f"{stored['bytes']} bytes then, {st.st_size} now"
        return "another mtime"
    return ""


def catalogue_mask(stored: dict[str, Any] | None, reader: Any, settings: str) -> TissueMask | None:
    """The mask of a catalogue row (:func:`read_row`) if it is the mask the stream would compute for the open
    slide ``reader`` with ``settings`` (:func:`mask_settings`); else None (compute it).

    Args:
        stored: the row, or None.
        reader: the open :class:`pathfm.datasets_scripts.slide.SlideReader` of the row's slide.
        settings: the stream's :func:`mask_settings`.

    Returns:
        :class:`TissueMask` or None.
    """
    from pathfm.datasets_scripts.catalogue import decode_mask

    if (
        stored is None
        or changed_since(stored, reader.path)
        or stored["status"] != "ok"
        or stored["mask"] is None
        or stored["mask_settings"] != settings
        or stored["path"] != os.path.abspath(reader.path)
        or stored["mpp_x"] is None
        or abs(float(stored["mpp_x"]) - reader.mpp) > 1e-9 * reader.mpp
        or list(stored["bounds"]) != [int(b) for b in reader.bounds]
    ):
        return None
    mask = decode_mask(stored["mask"], stored["mask_shape"])
    return TissueMask(
        mask=mask,
        mpp=float(stored["mask_mpp"]),
        slide_mpp=reader.mpp,
        origin=(int(reader.bounds[0]), int(reader.bounds[1])),
        threshold=float(stored["mask_threshold"]),
        method=str(stored["mask_method"]),
        mpp_y=reader.bounds[3] * reader.mpp / mask.shape[0],  # as compute_tissue_mask: rows rounded apart
    )
