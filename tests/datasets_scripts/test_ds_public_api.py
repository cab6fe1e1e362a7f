"""The tile stream is an ordinary ``datasets.IterableDataset``: every op a datasets user chains works on it,
checked with datasets' own functions, and the package touches no ``_``-prefixed ``datasets`` name."""

from __future__ import annotations

import ast
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from datasets.distributed import split_dataset_by_node
from pathfm.datasets_scripts.builder import SlideTilesConfig, tile_stream
from pathfm.datasets_scripts.slide import SlideReader
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = ["pathfm", "modeling", "datasets_scripts", "training", "evaluation", "spaces", "benchmarks"]


def _key(e: dict) -> tuple:
    return (e["slide_id"], int(e["x"]), int(e["y"]), round(float(e["mpp"]), 4))


def _grid(paths, **kw) -> SlideTilesConfig:
    return SlideTilesConfig(slides=[str(p) for p in paths], sampler="grid", grid_mpp=1.0, tile_size=64, **kw)


def _random(paths, **kw) -> SlideTilesConfig:
    base = dict(sampler="random", mpps=(0.5, 1.0), tile_size=64, tiles_per_slide=5, max_open_slides=2, seed=7)
    base.update(kw)
    return SlideTilesConfig(slides=[str(p) for p in paths], **base)


# ------------------------------------------------------------------------------------- no private datasets names
def _datasets_private_names() -> set[str]:
    """``_``-prefixed (non-dunder) attributes of datasets' public classes and of live instances."""
    names: set[str] = set()
    ids = datasets.IterableDataset.from_generator(lambda: iter([{"a": 1}]))
    dset = datasets.Dataset.from_dict({"a": [1]})
    classes = [
        datasets.IterableDataset, datasets.Dataset, datasets.DatasetDict, datasets.IterableDatasetDict,
        datasets.Features, datasets.DatasetInfo, datasets.BuilderConfig,
    ]
    for obj in [*classes, ids, dset, ids.features or datasets.Features(), dset.info]:
        names.update(n for n in dir(obj) if n.startswith("_") and not n.endswith("__"))
    return names


def _uses_of_datasets_privates(path: Path, private: set[str]) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    # Methods our own classes define (e.g. a GeneratorBasedBuilder's documented ``_info`` hook) are ours.
    own = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    own |= {
        t.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"
    }
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "datasets":
            parts = node.module.split(".")
            bad = [p for p in parts if p.startswith("_")]
            bad += [a.name for a in node.names if a.name.startswith("_")]
            if bad:
                hits.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {bad} from {node.module}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "datasets" and any(p.startswith("_") for p in a.name.split(".")):
                    hits.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {a.name}")
        elif isinstance(node, ast.Attribute) and node.attr in private and node.attr not in own:
            hits.append(f"{path.relative_to(ROOT)}:{node.lineno} touches .{node.attr}")
    return hits


def test_package_touches_no_private_datasets_name():
    private = _datasets_private_names()
    assert "_ex_iterable" in private and "_to_yaml_list" in private  # the scan sees real private names
    files = [f for d in PACKAGE_DIRS for f in sorted((ROOT / d).rglob("*.py"))]
    assert len(files) > 30
    hits = [h for f in files for h in _uses_of_datasets_privates(f, private)]
    assert hits == []


def test_scan_catches_a_private_use(tmp_path):
    bad = ROOT / "tests" / "datasets_scripts" / "_tmp_private_probe.py"
    bad.write_text("from datasets.iterable_dataset import _BaseExamplesIterable\nx = ds._ex_iterable\n")
    try:
        hits = _uses_of_datasets_privates(bad, _datasets_private_names())
    finally:
        bad.unlink()
    assert len(hits) == 2


# ------------------------------------------------------------------------------------- datasets ops on the stream
def test_stream_is_a_plain_iterable_dataset_with_uint8_arrays(eight_slides):
    ds = tile_stream(_grid(eight_slides[:2]))
    assert type(ds) is datasets.IterableDataset
    e = next(iter(ds))
    assert isinstance(e["image"], np.ndarray) and e["image"].dtype == np.uint8
    assert e["image"].shape == (64, 64, 3)
    assert set(e) == {"image", "slide_id", "x", "y", "mpp", "level", "tissue_fraction"}


def test_shuffle_map_filter_take_skip_batch(eight_slides):
    cfg = _grid(eight_slides[:3])
    full = [_key(e) for e in tile_stream(cfg)]
    assert len(full) == len(set(full)) > 40

    shuffled = [_key(e) for e in tile_stream(cfg).shuffle(seed=1, buffer_size=32)]
    assert shuffled != full and sorted(shuffled) == sorted(full)
    assert shuffled == [_key(e) for e in tile_stream(cfg).shuffle(seed=1, buffer_size=32)]

    mapped = list(tile_stream(cfg).map(lambda e: {"mean": float(e["image"].mean())}))
    assert [_key(e) for e in mapped] == full
    assert all(m["mean"] == pytest.approx(float(m["image"].mean())) for m in mapped[:5])

    kept = [_key(e) for e in tile_stream(cfg).filter(lambda e: e["slide_id"] == "slide1")]
    assert kept == [k for k in full if k[0] == "slide1"] and kept

    assert [_key(e) for e in tile_stream(cfg).take(5)] == full[:5]
    assert [_key(e) for e in tile_stream(cfg).skip(5)] == full[5:]

    batches = list(tile_stream(cfg).batch(batch_size=8))
    assert [len(b["x"]) for b in batches[:-1]] == [8] * (len(batches) - 1)
    assert sum(len(b["x"]) for b in batches) == len(full)
    assert [int(x) for x in batches[1]["x"]] == [k[1] for k in full[8:16]]


def test_with_format_torch(eight_slides):
    cfg = _grid(eight_slides[:1])
    plain = next(iter(tile_stream(cfg)))
    t = next(iter(tile_stream(cfg).with_format("torch")))
    assert isinstance(t["image"], torch.Tensor) and tuple(t["image"].shape) == (64, 64, 3)
    assert torch.equal(t["image"].to(torch.uint8), torch.from_numpy(plain["image"]))
    assert int(t["x"]) == plain["x"]


def test_set_epoch_reshuffles_reproducibly(eight_slides):
    cfg = _random(eight_slides[:4])

    def run(epoch: int) -> list[tuple]:
        ds = tile_stream(cfg).shuffle(seed=3, buffer_size=8)
        ds.set_epoch(epoch)
        return [_key(e) for e in ds]

    assert run(1) == run(1) and run(1) != run(2) and sorted(run(1)) == sorted(run(2))


def test_split_dataset_by_node_on_the_stream(eight_slides):
    """datasets' own split on the returned stream (one shard -> example strategy): disjoint, complete."""
    cfg = _grid(eight_slides[:2])
    full = [_key(e) for e in tile_stream(cfg)]
    parts = [[_key(e) for e in split_dataset_by_node(tile_stream(cfg), rank=r, world_size=2)] for r in range(2)]
    assert not set(parts[0]) & set(parts[1]) and sorted(parts[0] + parts[1]) == sorted(full)


@pytest.mark.parametrize("n_slides", [5, 3])
def test_uneven_slides_ranks_x_workers_no_duplicates_no_missing(eight_slides, n_slides):
    """Slide groups sized for 2 ranks x 2 workers: every tile exactly once, no rank reads every slide."""
    cfg = _random(eight_slides[:n_slides], tiles_per_slide=4)
    single = [_key(e) for e in tile_stream(cfg)]
    got, slides_per_rank = [], []
    for rank in range(2):
        ds = tile_stream(cfg, rank=rank, world_size=2, num_workers=2)
        keys = [_key(e) for e in DataLoader(ds, batch_size=None, num_workers=2)]
        slides_per_rank.append({k[0] for k in keys})
        got += keys
    assert sorted(got) == sorted(single) and len(got) == n_slides * 4
    assert not slides_per_rank[0] & slides_per_rank[1]
    assert all(0 < len(s) < n_slides for s in slides_per_rank)


def test_slide_groups_carry_every_record_field_once():
    """The groups that travel in ``gen_kwargs`` give back each slide's index, path, id, mpp and catalogue row,
    dealt round robin; an id with a NUL byte (possible in a manifest) survives the joined-string packing."""
    from pathfm.datasets_scripts.builder import decode_groups, slide_groups
    from pathfm.datasets_scripts.sources import SlideRecord

    records = [
        SlideRecord(f"/s/{i}.svs", f"id{i}", 0.25 * (i + 1), extra={"catalogue": "/c.parquet", "catalogue_row": i})
        for i in range(5)
    ]
    records[3] = SlideRecord("/s/3.svs", "odd\0id", None)
    groups = slide_groups(records, world_size=1, num_workers=2)
    assert len(groups) == 2
    index, paths, ids, mpps, catalogues, rows = decode_groups(groups)
    assert index == [0, 2, 4, 1, 3] and paths == [f"/s/{i}.svs" for i in index]
    assert ids == ["id0", "id2", "id4", "id1", "odd\0id"] and mpps == [0.25, 0.75, 1.25, 0.5, None]
    assert catalogues == ["/c.parquet"] * 4 + [""] and rows == [0, 2, 4, 1, -1]
    assert decode_groups(slide_groups(records[:1], 1, 0, mpp_override=0.5))[3] == [0.5]


def test_state_dict_resume_through_map_reads_no_skipped_pixels(eight_slides, monkeypatch):
    cfg = _random(eight_slides[:3])
    full = [_key(e) for e in tile_stream(cfg).map(lambda e: {"s": 1})]
    ds = tile_stream(cfg).map(lambda e: {"s": 1})
    it = iter(ds)
    head = [_key(next(it)) for _ in range(7)]
    state = ds.state_dict()
    assert head == full[:7]

    reads = []
    original = SlideReader.read_tile

    def counting(self, *args, **kwargs):
        reads.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SlideReader, "read_tile", counting)
    restored = tile_stream(cfg).map(lambda e: {"s": 1})
    restored.load_state_dict(state)
    rest = [_key(e) for e in restored]
    assert rest == full[7:]
    assert len(reads) == len(full) - 7  # the 7 skipped tiles were never read


def test_dataloader_workers_match_single_process(eight_slides):
    cfg = _random(eight_slides[:4])
    single = sorted(_key(e) for e in tile_stream(cfg))
    loader = DataLoader(tile_stream(cfg, num_workers=2), batch_size=None, num_workers=2)
    assert sorted(_key(e) for e in loader) == single


# ------------------------------------------------------------------------------------- a region that fails to decode
def _corrupt_level0_tiles(path: Path, tile_indices: list[int]) -> None:
    """Overwrite the stored bytes of some level-0 tiles with garbage (zlib then fails on exactly those)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        spans = [(page.dataoffsets[i], page.databytecounts[i]) for i in tile_indices]
    with open(path, "r+b") as f:
        for offset, count in spans:
            f.seek(offset)
            f.write(b"\xff" * count)


@pytest.mark.parametrize("n_bad", [1, 4])
def test_failed_region_costs_that_tile_only_or_drops_the_slide(tmp_path, n_bad):
    from pathfm.datasets_scripts.builder import stream_stats

    from tests.datasets_scripts.synthetic import tissue_rect_slide

    path = tissue_rect_slide(tmp_path / "s.tiff", 512, 512, (0, 0, 512, 512), level_sizes=[(128, 128)])
    cfg = SlideTilesConfig(slides=[str(path)], sampler="grid", grid_mpp=0.5, tile_size=64, min_tissue=0.0)
    good = [_key(e) for e in tile_stream(cfg)]
    assert len(good) == 64  # 8 x 8 tiles of 64 px on a 64 px TIFF tiling: one stored tile per grid tile
    _corrupt_level0_tiles(path, [9, 18, 27, 36][:n_bad])  # row-major stored tiles (1,1), (2,2), ...
    ds = tile_stream(cfg)
    with pytest.warns(RuntimeWarning, match="failed to read"):
        got = [_key(e) for e in ds]
    stats = stream_stats(ds)
    if n_bad == 1:
        assert stats["failed_regions"] == 1 and stats["corrupt_slides"] == 0
        assert got == [k for k in good if (k[1], k[2]) != (64, 64)]
    else:  # max_region_failures = 3: the slide is dropped after its third failed region, once
        assert stats["failed_regions"] == 3 and stats["corrupt_slides"] == 1
        assert got == [k for k in good if (k[1], k[2]) not in {(64, 64), (128, 128)}][: len(got)]
        assert len(got) == 27 - 2  # tiles before the third bad tile (index 27), minus the first two bad ones
