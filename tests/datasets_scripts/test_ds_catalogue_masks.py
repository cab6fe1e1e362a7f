"""The tile stream reads tissue masks back from a catalogue instead of computing them, and only when the row
still describes what it would compute (file unchanged, same mpp, same mask settings).

Slides: copies of the embedded real SVS slides (each a distinct file, so a test may touch one).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from pathfm.datasets_scripts.builder import SlideTilesConfig, stream_stats, tile_stream
from pathfm.datasets_scripts.catalogue import build_catalogue
from pathfm.datasets_scripts.catalogue_masks import CATALOGUE_ROW_GROUP_ROWS
from pathfm.datasets_scripts.embedded import default_slides_dir
from pathfm.datasets_scripts.tissue import clear_mask_cache

SVS = ["CMU-1-Small-Region.svs", "tcga-cr-7395-01a-01-ts1.svs"]


@pytest.fixture
def catalogued(tmp_path: Path) -> tuple[list[str], Path]:
    folder = tmp_path / "slides"
    folder.mkdir()
    paths = []
    for name in SVS:
        shutil.copy(default_slides_dir() / name, folder / name)
        paths.append(str(folder / name))
    manifest = tmp_path / "slides.csv"  # the TCGA sample carries no mpp: 0.25 µm/px (40x), as in its README
    manifest.write_text("path,mpp\n" + "\n".join(f"{p},{0.25 if 'tcga' in p else ''}" for p in paths) + "\n")
    out = tmp_path / "catalogue.parquet"
    counts = build_catalogue([str(manifest)], out)
    assert counts["ok"] == 2
    return [str(manifest)], out


def _tiles(slides, **kw) -> tuple[list[tuple], list[np.ndarray], dict]:
    clear_mask_cache()  # the in-memory mask cache would hide whether a mask was computed
    cfg = SlideTilesConfig(slides=slides, mpps=(0.5, 1.0), tile_size=64, tiles_per_slide=6, seed=3, **kw)
    ds = tile_stream(cfg)
    examples = list(ds)
    keys = [(e["slide_id"], e["x"], e["y"], e["mpp"]) for e in examples]
    return keys, [e["image"] for e in examples], stream_stats(ds)


def test_stream_from_catalogue_reads_masks_back_and_draws_the_same_tiles(catalogued):
    manifest, catalogue = catalogued
    keys_computed, pixels_computed, stats_computed = _tiles(manifest)
    keys_stored, pixels_stored, stats_stored = _tiles(str(catalogue))
    assert stats_computed["masks_from_catalogue"] == 0
    assert stats_stored["masks_from_catalogue"] == 2 and stats_stored["slides_done"] == 2
    assert len(keys_stored) == 12 and keys_stored == keys_computed  # same masks -> same positions
    for a, b in zip(pixels_stored, pixels_computed):
        np.testing.assert_array_equal(a, b)
    assert pq.ParquetFile(catalogue).metadata.row_group(0).num_rows <= CATALOGUE_ROW_GROUP_ROWS


def test_stale_rows_are_computed_again(catalogued, tmp_path):
    _, catalogue = catalogued
    _, _, stats = _tiles(str(catalogue), min_object_um2=5_000.0)  # other mask settings
    assert stats["masks_from_catalogue"] == 0 and stats["slides_done"] == 2
    _, _, stats = _tiles(str(catalogue), mpp_override=0.5)  # another level-0 mpp
    assert stats["masks_from_catalogue"] == 0 and stats["slides_done"] == 2
    cmu = tmp_path / "slides" / SVS[0]
    st = os.stat(cmu)
    os.utime(cmu, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the file changed since cataloguing
    _, _, stats = _tiles(str(catalogue))
    assert stats["masks_from_catalogue"] == 1 and stats["slides_done"] == 2


def test_catalogue_rerun_with_other_mask_settings_recomputes_rows(catalogued):
    manifest, catalogue = catalogued
    assert build_catalogue(manifest, catalogue)["reused"] == 2
    counts = build_catalogue(manifest, catalogue, min_object_um2=5_000.0)
    assert counts["opened"] == 2 and counts["reused"] == 0
    _, _, stats = _tiles(str(catalogue), min_object_um2=5_000.0)
    assert stats["masks_from_catalogue"] == 2
