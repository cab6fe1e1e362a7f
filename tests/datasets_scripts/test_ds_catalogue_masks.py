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
    with pytest.warns(RuntimeWarning, match=r"changed since .*\(another mtime\).*rebuild the catalogue"):
        _, _, stats = _tiles(str(catalogue))
    assert stats["masks_from_catalogue"] == 1 and stats["slides_done"] == 2 and stats["changed_slides"] == 1


def test_a_slide_replaced_after_cataloguing_is_read_with_its_own_mpp(catalogued, tmp_path):
    """CMU-1 (0.499 µm/px) overwritten by the TCGA sample, which has no mpp: the catalogued 0.499 must not be
    used; without --default_mpp the slide is skipped as no mpp, with it the slide streams at that mpp."""
    _, catalogue = catalogued
    shutil.copy(default_slides_dir() / SVS[1], tmp_path / "slides" / SVS[0])
    with pytest.warns(RuntimeWarning, match="bytes then"):
        keys, _, stats = _tiles(str(catalogue))
    assert stats["changed_slides"] == 1 and stats["no_mpp_slides"] == 1 and stats["slides_done"] == 1
    assert {k[0] for k in keys} == {"tcga-cr-7395-01a-01-ts1"}
    with pytest.warns(RuntimeWarning, match="bytes then"):
        keys, _, stats = _tiles(str(catalogue), default_mpp=0.25)
    assert stats["changed_slides"] == 1 and stats["slides_done"] == 2 and len(keys) == 12


def test_catalogue_rerun_with_other_mask_settings_recomputes_rows(catalogued):
    manifest, catalogue = catalogued
    assert build_catalogue(manifest, catalogue)["reused"] == 2
    counts = build_catalogue(manifest, catalogue, min_object_um2=5_000.0)
    assert counts["opened"] == 2 and counts["reused"] == 0
    _, _, stats = _tiles(str(catalogue), min_object_um2=5_000.0)
    assert stats["masks_from_catalogue"] == 2


@pytest.mark.parametrize("given, reused", [("5000", 2), ("10000", 0)])
def test_training_flags_reach_the_mask_settings(catalogued, tmp_path, given, reused):
    """A catalogue built for needle biopsies (--min_object_um2 5000) is read back by a training run with the
    same flag; with the default the stream computes its own masks (other settings, other masks)."""
    from pathfm.training.config import parse_config
    from pathfm.training.data import build_data

    manifest, catalogue = catalogued
    build_catalogue(manifest, catalogue, min_object_um2=5_000.0)
    _, d_args, t_args, _ = parse_config(
        ["--slides", str(catalogue), "--output_dir", str(tmp_path / "run"), "--num_workers", "0",
         "--per_device_batch_size", "4", "--tiles_per_slide", "2", "--min_object_um2", given]
    )  # fmt: skip
    clear_mask_cache()
    data = build_data(d_args, t_args, rank=0, world_size=1)
    assert next(data.stream)["pixel_values"].shape[0] == 4
    assert data.stream.stats()["masks_from_catalogue"] == reused
    data.stream.close()


def test_no_mpp_rows_stream_when_the_stream_has_an_mpp_for_them(tmp_path):
    """A catalogue of the two SVS without a manifest mpp: the TCGA sample is a no-mpp row; the stream (and so
    grid tiling and publish) uses it once --default_mpp gives it one, and leaves it out otherwise."""
    folder = tmp_path / "slides"
    folder.mkdir()
    for name in SVS:
        shutil.copy(default_slides_dir() / name, folder / name)
    catalogue = tmp_path / "catalogue.parquet"
    assert build_catalogue([str(folder)], catalogue)["no-mpp"] == 1
    keys, _, _ = _tiles(str(catalogue))
    assert {k[0] for k in keys} == {"CMU-1-Small-Region"}
    keys, _, stats = _tiles(str(catalogue), default_mpp=0.25)
    assert {k[0] for k in keys} == {"CMU-1-Small-Region", "tcga-cr-7395-01a-01-ts1"}
    assert stats["slides_done"] == 2
