"""Bounded resources while streaming many slides: open file descriptors.

The slides are symbolic links to the embedded real CMU-1-Small-Region SVS (each link is a distinct slide to
pathfm: its own id, mask and reader). File descriptors are counted from ``/proc/self/fd`` after every example
the stream yields, keeping those that point at the SVS.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pathfm.datasets_scripts.builder import SlideTilesConfig, tile_stream
from pathfm.datasets_scripts.embedded import default_slides_dir

SVS = default_slides_dir() / "CMU-1-Small-Region.svs"

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd (Linux)")


def _fds_on(target: Path) -> int:
    real = os.path.realpath(target)
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.path.realpath(os.readlink(f"/proc/self/fd/{name}")) == real:
                count += 1
        except OSError:  # the listing's own descriptor is gone by now
            continue
    return count


def _stream_counting_fds(tmp_path: Path, reader: str, slides: int, max_open: int) -> tuple[int, int, set]:
    links = []
    for i in range(slides):
        link = tmp_path / f"case{i:02d}.svs"
        link.symlink_to(SVS)
        links.append(str(link))
    cfg = SlideTilesConfig(
        slides=links,
        mpps=(0.5, 1.0),
        tile_size=64,
        tiles_per_slide=3,
        max_open_slides=max_open,
        reader=reader,
        mask_cache_dir=str(tmp_path / "masks"),
    )
    peak, tiles, ids = 0, 0, set()
    for example in tile_stream(cfg):
        peak = max(peak, _fds_on(SVS))
        tiles += 1
        ids.add(example["slide_id"])
    return peak, tiles, ids


@pytest.mark.parametrize("reader", ["auto", "openslide"])
def test_no_descriptor_held_between_reads(tmp_path: Path, reader: str) -> None:
    """Neither reader holds the slide file open between tiles (``auto``: the fast reader opens it per region;
    OpenSlide 4 reopens it per read), so open fds do not grow with the slides a worker keeps open (8 here,
    of 12 streamed)."""
    peak, tiles, ids = _stream_counting_fds(tmp_path, reader, slides=12, max_open=8)
    assert tiles == 36 and len(ids) == 12
    assert peak == 0
