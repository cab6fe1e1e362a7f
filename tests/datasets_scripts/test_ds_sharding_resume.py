"""Sharding over ranks x DataLoader workers, sampler reproducibility, and exact resume from state_dict()."""

from __future__ import annotations

import torch
from pathfm.datasets_scripts.builder import SlideTilesConfig, collate_tiles, tile_stream
from torch.utils.data import DataLoader, get_worker_info


def _key(e: dict) -> tuple:
    return (e["slide_id"], e["x"], e["y"], e["mpp"])


def _tag_worker(batch: list[dict]) -> tuple[int, list[tuple]]:
    """collate_fn runs inside the worker: record which worker produced which tiles."""
    info = get_worker_info()
    return (info.id if info is not None else -1, [_key(e) for e in batch])


def _grid_cfg(paths) -> SlideTilesConfig:
    return SlideTilesConfig(slides=[str(p) for p in paths], sampler="grid", grid_mpp=1.0, tile_size=64)


def test_grid_sharding_2_ranks_x_2_workers(eight_slides):
    cfg = _grid_cfg(eight_slides)
    single = [_key(e) for e in tile_stream(cfg)]
    assert len(single) == len(set(single)) > 100
    per_consumer: dict[tuple[int, int], list[tuple]] = {}
    for rank in range(2):
        ds = tile_stream(cfg, rank=rank, world_size=2, num_workers=2)
        assert ds.num_shards == 2  # one slide group per rank x worker
        loader = DataLoader(ds, batch_size=7, num_workers=2, collate_fn=_tag_worker)
        for worker, keys in loader:
            per_consumer.setdefault((rank, worker), []).extend(keys)
    assert sorted(per_consumer) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    sets = {c: set(k) for c, k in per_consumer.items()}
    slides = {c: {k[0] for k in keys} for c, keys in sets.items()}
    consumers = list(sets)
    for i, a in enumerate(consumers):
        assert len(slides[a]) == 2  # 8 slides / 4 consumers, whole slides each
        for b in consumers[i + 1 :]:
            assert not (sets[a] & sets[b]) and not (slides[a] & slides[b])
    union = set().union(*sets.values())
    assert union == set(single) and sum(len(k) for k in per_consumer.values()) == len(single)


def test_random_sampler_reproducible_epoch_dependent_layout_independent(eight_slides):
    paths = [str(p) for p in eight_slides[:4]]
    base = {
        "slides": paths,
        "sampler": "random",
        "mpps": (0.5, 1.0, 2.0),
        "tile_size": 64,
        "tiles_per_slide": 6,
        "max_open_slides": 3,
    }
    a = [_key(e) for e in tile_stream(SlideTilesConfig(seed=3, epoch=0, **base))]
    b = [_key(e) for e in tile_stream(SlideTilesConfig(seed=3, epoch=0, **base))]
    c = [_key(e) for e in tile_stream(SlideTilesConfig(seed=3, epoch=1, **base))]
    d = [_key(e) for e in tile_stream(SlideTilesConfig(seed=4, epoch=0, **base))]
    assert len(a) == 24 and a == b
    assert set(a) != set(c) and set(a) != set(d)
    assert len(set(a) & set(c)) < 4
    # Interleaved: the first 3 tiles come from 3 different slides (pool of 3), never a run of one slide.
    assert len({k[0] for k in a[:3]}) == 3
    # The tiles of each slide depend on (seed, epoch, slide index) only, not on the worker layout.
    loader = DataLoader(
        tile_stream(SlideTilesConfig(seed=3, epoch=0, **base)),
        batch_size=4,
        num_workers=2,
        collate_fn=_tag_worker,
    )
    multi = [k for _, keys in loader for k in keys]
    assert sorted(multi) == sorted(a)
    # set_epoch reseeds datasets' shuffle buffer, deterministically; the tiles themselves follow config.epoch.
    def shuffled(epoch: int) -> list[tuple]:
        ds = tile_stream(SlideTilesConfig(seed=3, epoch=0, **base)).shuffle(seed=9, buffer_size=16)
        ds.set_epoch(epoch)
        return [_key(e) for e in ds]

    e5, e5_again, e6 = shuffled(5), shuffled(5), shuffled(6)
    assert e5 == e5_again and e5 != e6 and sorted(e5) == sorted(e6) == sorted(a)


def _resume_check(cfg: SlideTilesConfig, k: int) -> None:
    full = [_key(e) for e in tile_stream(cfg)]
    assert k < len(full)
    ds = tile_stream(cfg)
    it = iter(ds)
    head = [_key(next(it)) for _ in range(k)]
    state = ds.state_dict()
    assert head == full[:k]
    restored = tile_stream(cfg)
    restored.load_state_dict(state)
    rest = [_key(e) for e in restored]
    assert rest == full[k:]


def test_resume_grid_exact(eight_slides):
    cfg = _grid_cfg(eight_slides[:3])
    n = len(list(tile_stream(cfg)))
    for k in (1, n // 3, n // 2 + 1, n - 1):  # inside a slide and around slide boundaries
        _resume_check(cfg, k)


def test_resume_random_pool_exact(eight_slides):
    cfg = SlideTilesConfig(
        slides=[str(p) for p in eight_slides[:5]],
        sampler="random",
        mpps=(0.5, 1.0),
        tile_size=64,
        tiles_per_slide=5,
        max_open_slides=2,
        seed=11,
    )
    for k in (3, 12):
        _resume_check(cfg, k)


def test_collate_tiles_shapes(eight_slides):
    ds = tile_stream(_grid_cfg(eight_slides[:1]))
    loader = DataLoader(ds, batch_size=5, collate_fn=collate_tiles)
    batch = next(iter(loader))
    assert batch["pixel_values"].shape == (5, 3, 64, 64) and batch["pixel_values"].dtype == torch.uint8
    assert len(batch["slide_id"]) == 5 and all(isinstance(v, int) for v in batch["x"])
    first = next(iter(tile_stream(_grid_cfg(eight_slides[:1]))))
    assert torch.equal(batch["pixel_values"][0], torch.from_numpy(first["image"]).permute(2, 0, 1))


def _open_readers() -> int:
    """Live OpenSlide handles in this process (OpenSlideReader objects not yet closed), found by the gc."""
    import gc

    from pathfm.datasets_scripts.slide import OpenSlideReader

    return sum(1 for o in gc.get_objects() if isinstance(o, OpenSlideReader) and o._osr is not None)


def test_slides_opened_lazily_and_bounded(eight_slides):
    cfg = SlideTilesConfig(
        slides=[str(p) for p in eight_slides],
        sampler="random",
        mpps=(0.5, 1.0),
        tile_size=64,
        tiles_per_slide=4,
        max_open_slides=3,
    )
    ds = tile_stream(cfg)
    assert _open_readers() == 0  # building the stream opens nothing
    seen, peak = [], 0
    for e in ds:
        seen.append(e["slide_id"])
        peak = max(peak, _open_readers())
    assert len(set(seen)) == 8 and peak == 3
    assert _open_readers() == 0  # all closed at the end
    # Round robin over a pool of 3: the first 3 tiles come from 3 different slides.
    assert len(set(seen[:3])) == 3


def test_uneven_slides_over_ranks_stay_disjoint(eight_slides):
    cfg = _grid_cfg(eight_slides[:3])
    single = {_key(e) for e in tile_stream(cfg)}
    r0 = [_key(e) for e in tile_stream(cfg, rank=0, world_size=2)]
    r1 = [_key(e) for e in tile_stream(cfg, rank=1, world_size=2)]
    assert {k[0] for k in r0} == {"slide0", "slide2"} and {k[0] for k in r1} == {"slide1"}
    assert set(r0) | set(r1) == single and not set(r0) & set(r1)
