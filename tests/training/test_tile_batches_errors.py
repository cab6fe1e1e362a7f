"""A rank whose slides give no batch stops with one line that says why, from the stream's own counters."""

from __future__ import annotations

import warnings

import pytest
from pathfm.datasets_scripts.sources import SlideRecord
from pathfm.training.tile_batches import EmptyTileStreamError, TileBatchStream, why_no_batch

from tests.datasets_scripts.synthetic import blank, write_slide


def _first_batch_error(records: list[SlideRecord], **options) -> str:
    options = {"batch_size": 2, "seed": 0, "mpps": [1.0], "tile_size": 32, "min_tissue": 0.4, **options}
    stream = TileBatchStream(records, tiles_per_slide=4, **options)
    with warnings.catch_warnings(), pytest.raises(EmptyTileStreamError) as err:
        warnings.simplefilter("ignore", RuntimeWarning)  # each skip's own warning, once per pass
        next(stream)
    stream.close()
    return str(err.value)


def test_the_error_names_the_cause_and_its_fix(cmu_svs, tmp_path):
    gone = _first_batch_error([SlideRecord(str(tmp_path / "deleted.svs"))])
    assert "produced no full batch of 2 in 3 passes: 1 slide(s) unreadable or missing" in gone, gone
    too_fine = _first_batch_error([SlideRecord(str(cmu_svs))], mpps=[0.1])  # CMU-1 is 0.499 µm/px
    assert too_fine.endswith(
        "1 slide(s) cannot serve any of --mpps without upsampling: give coarser --mpps"
    ), too_fine
    write_slide(tmp_path / "glass.tiff", blank(512, 512), level_sizes=[(128, 128)])
    glass = _first_batch_error([SlideRecord(str(tmp_path / "glass.tiff"))])
    assert glass.endswith("1 slide(s) with no tile of enough tissue: lower --min_tissue (or --tile_size)")
    few = _first_batch_error([SlideRecord(str(cmu_svs))], batch_size=64)  # 4 tiles per pass < one batch
    assert few.endswith("one batch: raise --tiles_per_slide or lower --per_device_batch_size"), few
    both = why_no_batch({"corrupt_slides": 2, "failed_regions": 5, "slides_done": 1})
    assert both.startswith("2 slide(s) unreadable")
    assert both.endswith("; 5 region(s) failed to decode: try --reader openslide")
