"""Slide catalogue (parallel, resumable, skip-unchanged), the single resolver, and training from a catalogue
opening no slide before the first batch."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
from pathfm.datasets_scripts.catalogue import build_catalogue, decode_mask, main
from pathfm.datasets_scripts.resolve import catalogue_skips, resolve_sources
from pathfm.datasets_scripts.slide import open_slide
from pathfm.datasets_scripts.tissue import compute_tissue_mask

from tests.datasets_scripts.synthetic import blank, write_slide


@pytest.fixture
def mixed_slides(tmp_path, eight_slides) -> Path:
    root = tmp_path / "slides"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    shutil.copy(eight_slides[0], root / "a" / "same.tiff")
    shutil.copy(eight_slides[1], root / "b" / "same.tiff")  # same file name, different slide
    shutil.copy(eight_slides[2], root / "good.tiff")
    write_slide(root / "nompp.tiff", blank(256, 256), mpp=None)
    write_slide(root / "empty.tiff", blank(512, 512), level_sizes=[(128, 128)])
    (root / "garbage.svs").write_bytes(b"not a slide" * 100)
    return root


def _rows(path: Path) -> dict[str, dict]:
    ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
    return {Path(r["path"]).relative_to(path.parent / "slides").as_posix(): r for r in ds}


def test_catalogue_rows_statuses_masks_and_unique_ids(mixed_slides, tmp_path):
    out = tmp_path / "catalogue.parquet"
    counts = build_catalogue([str(mixed_slides)], out, num_proc=2)
    assert counts["rows"] == 6 and counts["opened"] == 6 and counts["ok"] == 3
    rows = _rows(out)
    assert {k: r["status"] for k, r in rows.items()} == {
        "a/same.tiff": "ok", "b/same.tiff": "ok", "good.tiff": "ok",
        "nompp.tiff": "no-mpp", "empty.tiff": "no-tissue", "garbage.svs": "unreadable",
    }  # fmt: skip
    assert "mpp_override" in rows["nompp.tiff"]["reason"] and rows["garbage.svs"]["reason"]
    ids = [r["slide_id"] for r in rows.values()]
    assert len(set(ids)) == len(ids) and rows["a/same.tiff"]["slide_id"].startswith("same-")
    good = rows["good.tiff"]
    assert (good["mpp_x"], good["mpp_y"], good["mpp_source"]) == (0.5, 0.5, "openslide")
    assert good["level_dimensions"] == [[1024, 768], [512, 384]] and good["bytes"] > 0
    with open_slide(mixed_slides / "good.tiff") as reader:
        mask = compute_tissue_mask(reader, mask_mpp=8.0)
    np.testing.assert_array_equal(decode_mask(good["mask"], good["mask_shape"]), mask.mask)
    assert good["tissue_mm2"] == pytest.approx(mask.mask.sum() * mask.mpp * mask.mpp_y / 1e6)
    assert good["mask_threshold"] == pytest.approx(mask.threshold)


def test_catalogue_skips_unchanged_and_resumes(mixed_slides, tmp_path):
    out = tmp_path / "catalogue.parquet"
    build_catalogue([str(mixed_slides)], out)
    assert build_catalogue([str(mixed_slides)], out)["opened"] == 0
    good = mixed_slides / "good.tiff"
    os.utime(good, ns=(good.stat().st_atime_ns, good.stat().st_mtime_ns + 10**9))
    assert build_catalogue([str(mixed_slides)], out)["opened"] == 1
    # A killed run: rows already appended to the partial log are reused, the rest are opened.
    out2 = tmp_path / "resumed.parquet"
    partial = tmp_path / "resumed.parquet.partial.jsonl"
    build_catalogue([str(good)], out2)
    import pyarrow.parquet as pq

    from pathfm.datasets_scripts import catalogue as cat

    partial.write_text(cat._to_json(pq.read_table(out2).to_pylist()[0]) + "\n" + '{"cut by a kil')
    out2.unlink()
    counts = build_catalogue([str(mixed_slides)], out2)
    assert counts["opened"] == 5 and counts["reused"] == 1 and not partial.exists()
    assert _rows(out2)["good.tiff"]["status"] == "ok"


def test_catalogue_cli_mpp_flags_and_bad_output(mixed_slides, tmp_path, capsys):
    out = tmp_path / "c.parquet"
    assert main([str(mixed_slides / "nompp.tiff"), "--output", str(out), "--default_mpp", "0.5"]) == 0
    row = next(iter(_rows(out).values()))
    assert (row["mpp_x"], row["mpp_source"]) == (0.5, "default_mpp")
    # an implausible override is refused up front (bounds named), not written as no-mpp rows
    assert main([str(mixed_slides / "good.tiff"), "--output", str(out), "--mpp_override", "30"]) == 2
    assert "--mpp_override is a level-0 µm/px between 0.05 and 10" in capsys.readouterr().err
    assert main([str(mixed_slides), "--output", str(tmp_path / "c.csv")]) == 2
    assert "must end with .parquet" in capsys.readouterr().err


def test_resolver_one_rule_for_every_source(mixed_slides, tmp_path):
    out = tmp_path / "catalogue.parquet"
    build_catalogue([str(mixed_slides)], out)
    from_catalogue = resolve_sources(str(out))
    assert sorted(Path(r.path).name for r in from_catalogue) == ["good.tiff", "same.tiff", "same.tiff"]
    assert all(r.extra["catalogue"] == str(out) and r.mpp == 0.5 for r in from_catalogue)
    from_folder = resolve_sources([str(mixed_slides), str(mixed_slides / "good.tiff")])  # duplicates dropped
    assert len(from_folder) == 6 and len({r.slide_id for r in from_folder}) == 6
    same_ids = sorted(r.slide_id for r in from_folder if Path(r.path).name == "same.tiff")
    assert same_ids == sorted(r.slide_id for r in from_catalogue if Path(r.path).name == "same.tiff")
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_sources(str(tmp_path / "missing.parquet"))
    skipped = catalogue_skips([str(out), str(mixed_slides)])  # the folder: nothing left out unopened
    assert skipped == {"no-mpp": 1, "no-tissue": 1, "unreadable": 1}
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_sources(str(tmp_path / "no_such_folder"))


def test_resolver_keeps_each_file_once_within_one_source(mixed_slides, tmp_path):
    """A catalogue edited by hand may list a file twice, once through a path that is not normal: each file
    is kept once, the first mention wins (the path-keyed dict is only skipped when no file repeats)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path / "catalogue.parquet"
    build_catalogue([str(mixed_slides / "good.tiff"), str(mixed_slides / "a")], out)
    rows = pq.read_table(out).to_pylist()
    good = next(r for r in rows if r["path"].endswith("good.tiff"))
    again = dict(good, path=f"{mixed_slides}/./good.tiff", slide_id="again")
    edited = tmp_path / "edited.parquet"
    pq.write_table(pa.Table.from_pylist([*rows, again, dict(good, slide_id="third")]), edited)
    records = resolve_sources(str(edited))
    assert sorted(r.path for r in records) == sorted(r["path"] for r in rows) and len(rows) == 2
    assert [r.slide_id for r in records if r.path.endswith("good.tiff")] == [good["slide_id"]]
    # the same catalogue twice: its slides once
    assert [r.path for r in resolve_sources([str(out), str(out)])] == [r.path for r in resolve_sources(str(out))]


def test_training_from_catalogue_opens_no_slide_before_first_batch(tmp_path, eight_slides, monkeypatch):
    from pathfm.datasets_scripts import slide as slide_mod
    from pathfm.training.tile_batches import TileBatchStream, partition_slides, preflight_slides, resolve_slides

    out = tmp_path / "catalogue.parquet"
    build_catalogue([str(p) for p in eight_slides[:4]], out)
    opened = []
    original = slide_mod.OpenSlideReader.__init__

    def counting(self, path, *args, **kwargs):
        opened.append(str(path))
        original(self, path, *args, **kwargs)

    monkeypatch.setattr(slide_mod.OpenSlideReader, "__init__", counting)
    records = resolve_slides([str(out)])
    readable, failed = preflight_slides(records)
    mine = partition_slides(readable, rank=0, world_size=2)
    stream = TileBatchStream(mine, batch_size=4, seed=0, mpps=[1.0], tile_size=32, min_tissue=0.4,
                             tiles_per_slide=4)  # fmt: skip
    assert opened == [] and len(readable) == 4 and failed == {}
    batch = next(stream)
    assert batch["pixel_values"].shape == (4, 3, 32, 32)
    assert sorted(set(opened)) == sorted(r.path for r in mine)  # only this rank's slides, lazily
    stream.close()


def test_catalogue_slide_broken_after_cataloguing_is_skipped_by_the_stream(tmp_path, eight_slides):
    from pathfm.datasets_scripts.builder import SlideTilesConfig, stream_stats, tile_stream

    slides = [shutil.copy(p, tmp_path / f"s{i}.tiff") for i, p in enumerate(eight_slides[:2])]
    out = tmp_path / "catalogue.parquet"
    build_catalogue([str(p) for p in slides], out)
    Path(slides[0]).write_bytes(b"broken since" * 50)
    cfg = SlideTilesConfig(slides=str(out), sampler="grid", grid_mpp=1.0, tile_size=64)
    ds = tile_stream(cfg)
    with pytest.warns(RuntimeWarning, match="s0"):
        ids = {e["slide_id"] for e in ds}
    assert ids == {"s1"} and stream_stats(ds)["corrupt_slides"] == 1



def test_training_log_counts_the_slides_a_catalogue_left_out(mixed_slides, tmp_path):
    from pathfm.training.data import RunData
    from pathfm.training.dino import slides_summary
    from pathfm.training.tile_batches import preflight_slides, resolve_slides

    out = tmp_path / "catalogue.parquet"
    build_catalogue([str(mixed_slides)], out)
    write_slide(tmp_path / "uncatalogued_nompp.tiff", blank(256, 256), mpp=None)
    sources = [str(out), str(tmp_path / "missing.svs"), str(tmp_path / "uncatalogued_nompp.tiff")]
    readable, failed = preflight_slides(resolve_slides(sources))
    data = RunData(readable, failed, readable[:1], stream=None, catalogue_skipped=dict(catalogue_skips(sources)))
    summary = slides_summary(data)
    assert summary.endswith(
        "(skipped overall: 1 no mpp, 1 unreadable, 1 catalogued as no-mpp, 1 catalogued as no-tissue, "
        "1 catalogued as unreadable)"
    ), summary


def test_catalogue_rerun_reopens_when_mpp_flags_change(mixed_slides, tmp_path, capsys):
    out = tmp_path / "c.parquet"
    slides = [str(mixed_slides / "nompp.tiff"), str(mixed_slides / "good.tiff")]
    assert build_catalogue(slides, out)["no-mpp"] == 1
    # the README's advice: add --default_mpp. Only the slide without an mpp of its own needs reopening.
    counts = build_catalogue(slides, out, default_mpp=0.5)
    assert (counts["opened"], counts["reused"], counts.get("no-mpp", 0)) == (1, 1, 0)
    row = _rows(out)["nompp.tiff"]
    assert (row["status"], row["mpp_x"], row["mpp_source"]) == ("no-tissue", 0.5, "default_mpp")  # blank
    assert build_catalogue(slides, out, default_mpp=0.5)["opened"] == 0
    assert build_catalogue(slides, out, default_mpp=0.25)["opened"] == 1  # a changed default
    counts = build_catalogue(slides, out)  # the flag removed: the row it made is stale
    assert (counts["opened"], counts["no-mpp"]) == (1, 1)
    counts = build_catalogue(slides, out, mpp_override=0.25)  # an override changes every slide
    assert counts["opened"] == 2 and _rows(out)["good.tiff"]["mpp_source"] == "mpp_override"
    assert build_catalogue(slides, out, mpp_override=0.25, default_mpp=0.5)["opened"] == 0  # override wins
    assert build_catalogue(slides, out)["opened"] == 2
    import pyarrow.parquet as pq

    pq.write_table(pq.read_table(out).drop(["mpp_options"]), out)  # a catalogue from before the column
    assert build_catalogue(slides, out)["opened"] == 2


def test_catalogue_output_that_is_not_a_catalogue_is_refused_untouched(mixed_slides, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    other = tmp_path / "features.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), other)
    text = tmp_path / "notes.parquet"
    text.write_text("not parquet")
    for target in (other, text):
        before = target.read_bytes()
        assert main([str(mixed_slides / "good.tiff"), "--output", str(target)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(target) in err and "not a slide catalogue" in err
        assert "--output" in err and target.read_bytes() == before
        assert not (tmp_path / (target.name + ".partial.jsonl")).exists()


@pytest.mark.parametrize(
    "flag,value",
    [("--mpp_override", "0"), ("--mpp_override", "-1"), ("--default_mpp", "nan"), ("--default_mpp", "inf"),
     ("--mpp_override", "1e6"), ("--default_mpp", "0.01"), ("--num_proc", "0"), ("--num_proc", "-1")],
)  # fmt: skip
def test_catalogue_cli_refuses_bad_mpp_and_num_proc_before_opening(
    mixed_slides, tmp_path, capsys, flag, value
):
    out = tmp_path / "c.parquet"
    assert main([str(mixed_slides), "--output", str(out), flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err and value in err.replace("1000000.0", "1e6")
    assert not out.exists() and not (tmp_path / "c.parquet.partial.jsonl").exists()


@pytest.mark.parametrize(
    "flag,value,allowed",
    [("--mask_mpp", "0", "> 0"), ("--mask_mpp", "-1", "> 0"), ("--mask_mpp", "nan", "> 0"),
     ("--saturation_floor", "-5", "between 0 and 255"), ("--saturation_floor", "300", "between 0 and 255"),
     ("--min_object_um2", "-1", ">= 0"), ("--decode_check", "-1", ">= 0")],
)  # fmt: skip
def test_catalogue_cli_refuses_bad_tissue_and_decode_flags_as_training_does(
    cmu_svs, tmp_path, capsys, flag, value, allowed
):
    from pathfm.training.config import parse_config

    out = tmp_path / "c.parquet"
    assert main([str(cmu_svs), "--output", str(out), flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {flag} must be {allowed} (")
    assert err.endswith(f"got {float(value) if flag != '--decode_check' else int(value)}"), err
    assert not out.exists() and not (tmp_path / "c.parquet.partial.jsonl").exists()  # no slide opened
    if flag != "--decode_check":  # a catalogue-only flag; the others are training's too, in the same words
        with pytest.raises(ValueError) as caught:
            parse_config([flag, value, "--output_dir", str(tmp_path / "run")])
        assert err.removeprefix("error: ") in str(caught.value), (err, caught.value)


def _gdc_download(tmp_path, slides) -> tuple[Path, list[Path]]:
    """A GDC manifest listing ``slides`` copied into ``<root>/<file_id>/<barcode>.svs`` (TCGA layout)."""
    root = tmp_path / "gdc"
    paths, lines = [], ["id\tfilename\tmd5\tsize\tstate"]
    for i, src in enumerate(slides):
        fid, name = f"{i:08d}-aaaa", f"TCGA-A1-A0S{i}-01A-01-DX1.uuid{i}.svs"
        (root / fid).mkdir(parents=True)
        shutil.copy(src, root / fid / name)
        paths.append(root / fid / name)
        lines.append(f"{fid}\t{name}\tx\t1\treleased")
    (root / "gdc_manifest.txt").write_text("\n".join(lines) + "\n")
    return root / "gdc_manifest.txt", paths


def test_partial_gdc_download_catalogued_as_not_downloaded_and_skipped_by_training(
    tmp_path, eight_slides, caplog, capsys
):
    from pathfm.training.tile_batches import preflight_slides, resolve_slides

    manifest, paths = _gdc_download(tmp_path, eight_slides[:3])
    paths[1].unlink()  # gdc-client failed on this one
    out = tmp_path / "cat.parquet"
    counts = build_catalogue([str(manifest)], out)
    assert (counts["rows"], counts["ok"], counts["unreadable"]) == (3, 2, 1)
    row = next(r for r in datasets.load_dataset("parquet", data_files=str(out), split="train")
               if r["path"] == str(paths[1]))  # fmt: skip
    assert row["status"] == "unreadable" and row["slide_id"] == "TCGA-A1-A0S1-01A-01-DX1"
    assert row["reason"].startswith(f"not downloaded: {paths[1]}; rerun `gdc-client download -m gdc_manifest")
    # training straight from the manifest: the missing slide is skipped and counted, one warning line
    caplog.clear()
    readable, failed = preflight_slides(resolve_slides([str(manifest)]))
    assert sorted(r.path for r in readable) == sorted(map(str, [paths[0], paths[2]]))
    assert list(failed) == [str(paths[1])] and failed[str(paths[1])].startswith("unreadable")
    warned = [r.getMessage() for r in caplog.records if str(paths[1]) in r.getMessage()]
    assert len(warned) == 1 and len(warned[0].splitlines()) == 1
    for p in (paths[0], paths[2]):
        p.unlink()
    with pytest.raises(FileNotFoundError, match=r"no listed slide downloaded under .*gdc-client download"):
        resolve_sources(str(manifest))
    capsys.readouterr()
    assert main([str(manifest), "--output", str(tmp_path / "none.parquet")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(paths[2]) in err and "no listed slide downloaded" in err


def test_corrupt_catalogue_named_in_one_line(tmp_path):
    bad = tmp_path / "x.parquet"
    bad.write_bytes(b"definitely not parquet" * 10)
    match = r"x\.parquet: not a slide catalogue \(cannot read it as parquet"
    with pytest.raises(ValueError, match=match) as info:
        resolve_sources(str(bad))
    assert len(str(info.value).splitlines()) == 1


@pytest.mark.parametrize("flag", ["--default_mpp", "--mpp_override"])
def test_training_uses_no_mpp_catalogue_rows_when_an_mpp_is_given(tmp_path, flag):
    from pathfm.training.config import parse_config
    from pathfm.training.data import build_data
    from pathfm.training.dino import slides_summary
    from pathfm.training.tile_batches import resolve_slides
    from tests.datasets_scripts.synthetic import tissue_rect_slide

    nompp = tissue_rect_slide(tmp_path / "nompp.tiff", 1024, 768, (64, 64, 640, 512), mpp=None)
    out = tmp_path / "nompp.parquet"
    assert build_catalogue([str(nompp)], out)["no-mpp"] == 1
    with pytest.raises(ValueError) as info:  # without a flag: why (the statuses) and the fix, in one line
        resolve_slides([str(out)])
    message = str(info.value)
    assert len(message.splitlines()) == 1 and "every catalogued slide was left out (1 no-mpp)" in message
    assert "--default_mpp" in message and "rebuild the catalogue" in message
    argv = ["--slides", str(out), flag, "0.5", "--mpps", "1.0", "--tile_size", "32",
            "--per_device_batch_size", "4", "--output_dir", str(tmp_path / "run")]  # fmt: skip
    _, d_args, t_args, _ = parse_config(argv)
    data = build_data(d_args, t_args, rank=0, world_size=1)
    assert [r.mpp for r in data.my_slides] == [None]  # the stream resolves it from the flag
    assert slides_summary(data).endswith("(skipped overall: none)"), slides_summary(data)
    assert next(data.stream)["pixel_values"].shape == (4, 3, 32, 32)
    data.stream.close()
