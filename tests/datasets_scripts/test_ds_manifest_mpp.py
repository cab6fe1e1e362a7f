"""A manifest's mpp column through every tool: an implausible value (negative, 0, 25) makes that slide
``no-mpp`` with the same reason in the catalogue, training's start-up check and the stream (mpp.py, skips.py),
and a value the slide's own metadata contradicts is used and warned once per slide per process.

The real slide CMU-1-Small-Region.svs says 0.499 µm/px (openslide.mpp-x/y); a manifest's 0.25 is the 20x/40x
mix-up of a manifest. Each phase reads its own copy of the slide: the once-per-process check is keyed by path.
"""

from __future__ import annotations

import shutil
import warnings

import pyarrow.parquet as pq
import pytest
from pathfm.datasets_scripts.builder import SlideTilesConfig, stream_stats, tile_stream
from pathfm.datasets_scripts.catalogue import build_catalogue
from pathfm.datasets_scripts.skips import MppDisagreementWarning
from pathfm.datasets_scripts.sources import read_manifest

from tests.datasets_scripts.synthetic import tissue_rect_slide

IMPLAUSIBLE = ("-1", "0", "25")


def _rows(path) -> dict[str, dict]:
    return {r["slide_id"]: r for r in pq.read_table(path).to_pylist()}


def _manifest(tmp_path, name: str, rows: list[tuple[str, str]]):
    path = tmp_path / f"{name}.csv"
    path.write_text("path,mpp\n" + "".join(f"{p},{m}\n" for p, m in rows))
    return path


def _copy(cmu_svs, tmp_path, name: str) -> str:
    return str(shutil.copy(cmu_svs, tmp_path / f"{name}.svs"))


def test_implausible_manifest_mpp_is_the_same_no_mpp_everywhere(cmu_svs, tmp_path, caplog):
    from pathfm.training.config import parse_config
    from pathfm.training.data import RunData, build_data
    from pathfm.training.dino import slides_summary
    from pathfm.training.tile_batches import preflight_slides, resolve_slides

    bad = {value: _copy(cmu_svs, tmp_path, f"bad{i}") for i, value in enumerate(IMPLAUSIBLE)}
    manifest = _manifest(tmp_path, "m", [(p, v) for v, p in bad.items()] + [(cmu_svs, "")])
    assert [r.mpp for r in read_manifest(manifest)] == [-1.0, 0.0, 25.0, None]  # kept: one slide's problem

    # the catalogue: status no-mpp, the reason naming the manifest value and the fix
    out = tmp_path / "c.parquet"
    counts = build_catalogue([str(manifest)], out)
    assert (counts["no-mpp"], counts["ok"]) == (3, 1), counts
    rows = _rows(out)
    reasons = {}
    for i, value in enumerate(IMPLAUSIBLE):
        row = rows[f"bad{i}"]
        assert row["status"] == "no-mpp", row
        assert row["reason"].startswith(f"manifest mpp {float(value)} µm/px is not a plausible level-0 "), row
        assert "mpp cell in the manifest" in row["reason"]
        reasons[bad[value]] = row["reason"]

    # training's start-up check: the same status and words, in "skipped overall"
    readable, failed = preflight_slides(resolve_slides([str(manifest)]))
    assert [r.slide_id for r in readable] == ["CMU-1-Small-Region"]
    assert failed == {path: f"no mpp: {reason}" for path, reason in reasons.items()}
    summary = slides_summary(RunData(readable, failed, readable, stream=None))
    assert summary.endswith("(skipped overall: 3 no mpp)"), summary
    # the training command's data step: one slide's bad value never stops the run
    _, d_args, t_args, _ = parse_config(["--slides", str(manifest), "--output_dir", str(tmp_path / "run")])
    data = build_data(d_args, t_args, rank=0, world_size=1)
    assert slides_summary(data).endswith("(skipped overall: 3 no mpp)"), slides_summary(data)
    data.stream.close()

    # the stream's workers: the same words, counted as no_mpp_slides, not corrupt_slides
    ds = tile_stream(SlideTilesConfig(slides=str(manifest), sampler="grid", grid_mpp=4.0, tile_size=64))
    with pytest.warns(RuntimeWarning) as caught:
        ids = {e["slide_id"] for e in ds}
    stats = stream_stats(ds)
    assert ids == {"CMU-1-Small-Region"}
    assert (stats["no_mpp_slides"], stats["corrupt_slides"]) == (3, 0), stats
    messages = [str(w.message) for w in caught if "skipping slide" in str(w.message)]
    for i, value in enumerate(IMPLAUSIBLE):
        assert f"skipping slide bad{i} ({bad[value]}): {reasons[bad[value]]}" in messages, messages


def _disagreements(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, MppDisagreementWarning)]


def test_manifest_mpp_the_metadata_contradicts_is_used_and_warned_once_per_slide(cmu_svs, tmp_path):
    from pathfm.training.config import parse_config
    from pathfm.training.data import build_data

    # a tifffile slide at 0.5 µm/px given as 0.52 in the manifest: 4 %, scanner rounding, no warning
    near = tissue_rect_slide(tmp_path / "near.tiff", 1024, 768, (64, 64, 640, 512), level_sizes=[(512, 384)])

    # the catalogue: the manifest value is used, with one line naming the slide, both values and sources
    cmu = _copy(cmu_svs, tmp_path, "cat")
    manifest = _manifest(tmp_path, "cat", [(cmu, "0.25"), (near, "0.52")])
    out = tmp_path / "c.parquet"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert build_catalogue([str(manifest)], out)["ok"] == 2
    row = _rows(out)["cat"]
    assert (row["mpp_x"], row["mpp_source"]) == (0.25, "manifest")
    assert _disagreements(caught) == [
        f"slide cat ({cmu}): the manifest mpp 0.25 µm/px differs from the slide's own 0.499 µm/px "
        "(openslide) by a factor 2.00; the manifest value is used: if the slide's value is right, correct "
        "the manifest mpp or leave it empty (the metadata is then read)"
    ]
    # --mpp_override is the user's choice for every slide: not compared
    override_copy = _copy(cmu_svs, tmp_path, "override")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_catalogue([override_copy], tmp_path / "o.parquet", mpp_override=0.25)
    assert _disagreements(caught) == []

    # the stream: one line per slide however often it is reopened (3 passes; max_open_slides=1 evicts it at
    # each visit of the other slide, so each pass opens it again)
    cmu = _copy(cmu_svs, tmp_path, "stream")
    manifest = _manifest(tmp_path, "stream", [(cmu, "0.25"), (near, "0.52")])
    config = SlideTilesConfig(slides=str(manifest), mpps=(1.0,), tile_size=64, tiles_per_slide=2,
                              max_open_slides=1)  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = tile_stream(config)
        tiles = [t["slide_id"] for _ in range(3) for t in ds]
    assert sorted(tiles) == ["near"] * 6 + ["stream"] * 6
    found = _disagreements(caught)
    assert len(found) == 1 and found[0].startswith(f"slide stream ({cmu}): the manifest mpp 0.25 "), found

    # training's start-up: rank 0 says it once; other ranks and --mpp_override runs say nothing
    for rank, extra, expected in ((0, [], 1), (1, [], 0), (0, ["--mpp_override", "0.25"], 0)):
        cmu = _copy(cmu_svs, tmp_path, f"train{rank}{len(extra)}")
        manifest = _manifest(tmp_path, f"train{rank}{len(extra)}", [(cmu, "0.25"), (near, "0.52")])
        argv = ["--slides", str(manifest), *extra, "--output_dir", str(tmp_path / f"run{rank}{len(extra)}")]
        _, d_args, t_args, _ = parse_config(argv)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            data = build_data(d_args, t_args, rank=rank, world_size=2)
        data.stream.close()
        assert len(_disagreements(caught)) == expected, (rank, extra, _disagreements(caught))
