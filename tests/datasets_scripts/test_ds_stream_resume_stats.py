"""The training stream's skip counters (failed regions, dropped slides) survive a checkpoint and resume."""

from __future__ import annotations

import json
import shutil
import warnings

import torch
from pathfm.datasets_scripts.sources import SlideRecord
from pathfm.training.tile_batches import TileBatchStream



def _corrupt_level0(src, dst):
    """Copy a slide and overwrite every level-0 tile's compressed bytes: each level-0 read fails, the level-1
    tissue mask still works, so the stream counts failed regions and then drops the slide."""
    import tifffile

    data = bytearray(open(src, "rb").read())
    with tifffile.TiffFile(src) as tif:
        page = tif.pages.first
        spans = list(zip(page.dataoffsets, page.databytecounts))
    for offset, count in spans:
        data[offset : offset + count] = b"\xab" * count  # not a zlib header: every decode fails
    open(dst, "wb").write(bytes(data))
    return dst


def _stream(records):
    return TileBatchStream(records, batch_size=4, seed=3, mpps=[0.5], tile_size=64, min_tissue=0.4,
                           tiles_per_slide=6)  # fmt: skip


def test_skip_counters_survive_resume(tmp_path, eight_slides):
    bad = _corrupt_level0(eight_slides[0], tmp_path / "badtiles.tiff")
    good = shutil.copy(eight_slides[1], tmp_path / "fine.tiff")
    records = [SlideRecord(str(bad)), SlideRecord(str(good))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        first = _stream(records)
        for _ in range(5):  # > 1 pass: counters of a finished pass and of the current one
            next(first)
        assert first.pass_index >= 1
        state = json.loads(json.dumps(first.state_dict()))  # as a checkpoint holds it
        saved = first.stats()
        assert saved["failed_regions"] > 0 and saved["corrupt_slides"] >= 1  # the test exercises skips
        rest_first = [next(first) for _ in range(4)]
        after_first = first.stats()
        first.close()

        resumed = _stream(records)
        resumed.load_state_dict(state)
        rest_resumed = [next(resumed) for _ in range(4)]
        after_resumed = resumed.stats()
        resumed.close()
    for a, b in zip(rest_first, rest_resumed, strict=True):
        assert torch.equal(a["pixel_values"], b["pixel_values"])
    assert after_resumed == after_first and state["skip_stats"] == saved
