"""Tile streaming benchmark: the stream's tiles/s/core vs OpenSlide and vs bare JPEG decode, side by side.

Slides: a TCGA-like pyramid written in seconds by ``benchmarks/pyramid.py`` (20,005 x 20,004 px of real H&E,
256 px JPEG tiles, levels at downsample 1 / 4.0001 / 16.0036, 0.25 µm/px; not committed) and the real
CMU-1-Small-Region SVS (Aperio RGB JPEG with JPEGTables, one level, 0.499 µm/px).

Prints:
1. per slide, on the coordinates the stream draws in the training mix (0.25/0.5/1/2 µm/px): the stream
   (``--reader auto``) vs ``OpenSlideReader.read_tile`` (OpenSlide ``read_region`` + PIL resize, how pathfm
   used it before) vs a bare decode of the same stored JPEG tiles (os.pread + imagecodecs, no cache, no cut,
   no resize: the decode-bound limit), in tiles per CPU second of one core ("tiles/s/core", robust to other
   processes on a shared machine) and wall tiles/s; targets: >= 250 tiles/s/core on the pyramid and >= 0.9 of
   the bare decode ("ratio"); then per-mpp rates of the three readers;
2. DataLoader with 2 workers vs 1, each worker streaming its own two slides (distinct files; target >= 1.85x),
   and decoder threads in one worker (1 vs 2 vs 4);
3. what 16 workers would deliver (tiles/s/core in one process, and per DataLoader worker, x 16 x the 2-worker
   efficiency) vs the ~2,550 images/s an H200 consumes training ViT-S/16;
4. peak RSS and open file descriptors of a fresh process streaming 1,000 slide entries vs 4 (target <= 1.2x;
   ``benchmarks/stream_resources.py``);
5. per-tile cost of the ``image`` feature encodings datasets would apply on a non-typed stream.

Usage: ``nice python benchmarks/tiles.py [--tiles 1200] [--side 20005] [--rss_entries 1000]``. The load average
is printed with the numbers: on a busy machine wall rates drop, CPU-second rates much less.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SVS = REPO / "data" / "slides" / "CMU-1-Small-Region.svs"


def _cfg(slides, **kw):
    from pathfm.datasets_scripts.builder import SlideTilesConfig

    return SlideTilesConfig(slides=slides, **kw)


MIX = (0.25, 0.5, 1.0, 2.0)
H200_IMAGES_PER_S = 2550  # ViT-S/16 DINO on one H200 (issue 10), i.e. ~160 tiles/s per core on its 16 cores


def _clear_tile_cache() -> None:
    from pathfm.datasets_scripts.tiff_reader import tile_cache

    tile_cache().clear()


def _timed_stream(cfg) -> tuple[list[dict], float, float]:
    """Iterate a stream from a cold tile cache; (examples, wall s, CPU s) from the first tile to the end (the
    tissue mask comes before tile 1)."""
    from pathfm.datasets_scripts.builder import tile_stream

    _clear_tile_cache()
    it = iter(tile_stream(cfg))
    first = next(it)
    t0, c0 = time.perf_counter(), time.process_time()
    rest = list(it)
    return [first, *rest], time.perf_counter() - t0, time.process_time() - c0


def _reader_loop(slide: str, coords: list[tuple], reader: str) -> tuple[float, float]:
    """``read_tile`` on each (x, y, mpp, size) with one reader, cold tile cache; (wall s, CPU s)."""
    from pathfm.datasets_scripts.slide import open_slide

    with open_slide(slide, reader=reader) as r:
        _clear_tile_cache()
        t0, c0 = time.perf_counter(), time.process_time()
        for x, y, mpp, size in coords:
            r.read_tile(x, y, size, mpp)
        return time.perf_counter() - t0, time.process_time() - c0


def _decode_plan(slide: str, coords: list[tuple]) -> list[tuple]:
    """Per coordinate, the stored JPEG tiles its window touches: (offset, count, tables, colorspace) each.

    The window is the fast reader's: from the level pixel under (x, y), ``max(ceil(fraction + extent), size)``
    level px, clipped to the level.
    """
    from pathfm.datasets_scripts.slide import open_slide

    plan = []
    with open_slide(slide, reader="tiff") as r:
        for x, y, mpp, size in coords:
            level = r.best_level(mpp)
            lv, ds = r.fast_levels[level], r.level_downsamples[level]
            extent = size * mpp / (r.mpp * ds)
            spans = []
            for pos, limit, tile in ((x, lv.width, lv.tile_width), (y, lv.height, lv.tile_height)):
                lo = math.floor(pos / ds + 1e-9)
                hi = min(lo + max(math.ceil(pos / ds - lo + extent - 1e-9), size), limit)
                spans.append(range(max(lo, 0) // tile, (hi - 1) // tile + 1) if hi > max(lo, 0) else range(0))
            for ty in spans[1]:
                for tx in spans[0]:
                    i = ty * lv.tiles_across + tx
                    plan.append((int(lv.offsets[i]), int(lv.counts[i]), lv.tables, lv.colorspace))
    return plan


def _bare_decode(slide: str, plan: list[tuple]) -> tuple[float, float]:
    """Read and decode the planned stored tiles, nothing else; (wall s, CPU s)."""
    import imagecodecs

    fd = os.open(slide, os.O_RDONLY)
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        for offset, count, tables, colorspace in plan:
            if count:
                imagecodecs.jpeg8_decode(
                    os.pread(fd, count, offset), tables=tables, colorspace=colorspace, outcolorspace="RGB"
                )
        return time.perf_counter() - t0, time.process_time() - c0
    finally:
        os.close(fd)


def _best(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return min(w for w, _ in runs), min(c for _, c in runs)


def bench_mix(slide: str, mpps: tuple[float, ...], n_tiles: int, repeats: int = 3) -> dict:
    """Stream vs OpenSlide vs bare decode on the stream's own coordinates, interleaved ``repeats`` times.

    Returns:
        {"stream_core": stream tiles per CPU s, "stream_wall": tiles/s, "n": tiles}.
    """
    cfg = _cfg([slide], mpps=mpps, tiles_per_slide=n_tiles + 1, seed=0, reader="auto")
    examples, _, _ = _timed_stream(cfg)  # warm-up: page cache, tissue mask
    coords = [(e["x"], e["y"], float(e["mpp"]), e["image"].shape[0]) for e in examples[1:]]
    plan = _decode_plan(slide, coords)
    runs: dict[str, list] = {"stream": [], "openslide": [], "fast reader": [], "bare decode": []}
    for _ in range(repeats):  # interleaved: load changes on the shared machine hit all four alike
        runs["stream"].append(_timed_stream(cfg)[1:])
        runs["openslide"].append(_reader_loop(slide, coords, "openslide"))
        runs["fast reader"].append(_reader_loop(slide, coords, "tiff"))
        runs["bare decode"].append(_bare_decode(slide, plan))
    n = len(coords)
    best = {k: _best(v) for k, v in runs.items()}
    sw, sc = best["stream"]
    print(f"  {len(plan) / n:.2f} stored tiles decoded per tile; {n} tiles, best of {repeats}, mpps {mpps}")
    for name, (w, c) in best.items():
        extra = ""
        if name == "openslide":
            extra = f"  stream / openslide {c / sc:.2f}x per core"
        if name == "bare decode":
            extra = f"  ratio stream / bare decode {c / sc:.2f} per core, {w / sw:.2f} wall (target >= 0.9)"
        print(f"  {name:12s} {n / c:7.1f} tiles/s/core {n / w:7.1f} tiles/s wall{extra}")
    _per_mpp(slide, coords, repeats)
    return {"stream_core": n / sc, "stream_wall": n / sw, "n": n}


def _per_mpp(slide: str, coords: list[tuple], repeats: int) -> None:
    """tiles/s/core of OpenSlide, the fast reader and bare decode for each magnification of the mix (best CPU
    time of ``repeats`` interleaved runs)."""
    from pathfm.datasets_scripts.slide import open_slide

    with open_slide(slide, reader="tiff") as r:
        levels = {m: (r.best_level(m), r.level_downsamples[r.best_level(m)]) for m in {c[2] for c in coords}}
    for mpp in sorted(levels):
        sub = [c for c in coords if c[2] == mpp]
        plan = _decode_plan(slide, sub)
        runs = [
            (
                _reader_loop(slide, sub, "openslide")[1],
                _reader_loop(slide, sub, "tiff")[1],
                _bare_decode(slide, plan)[1],
            )
            for _ in range(repeats)
        ]
        oc, fc, bc = (min(r[i] for r in runs) for i in range(3))
        level, ds = levels[mpp]
        print(
            f"    {mpp:5.2f} µm/px (level {level}, downsample {ds:.4f}): "
            f"openslide {len(sub) / oc:6.1f} | fast "
            f"{len(sub) / fc:6.1f} | bare decode {len(sub) / bc:6.1f} tiles/s/core  (ratio fast / bare "
            f"{bc / fc:.2f}; {len(sub)} tiles)"
        )


def _loader_run(cfg, workers: int) -> tuple[float, float, float]:
    """Stream ``cfg`` through a DataLoader; (tiles/s wall, worker CPU ms per tile, tiles/s after the first
    batch). The wall time starts before the DataLoader exists: worker start-up is part of the rate."""
    from pathfm.datasets_scripts.builder import collate_tiles, tile_stream
    from torch.utils.data import DataLoader

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    ds = tile_stream(cfg, num_workers=workers)  # one slide group per worker
    loader = DataLoader(ds, batch_size=32, num_workers=workers, collate_fn=collate_tiles)
    batches = iter(loader)
    first = next(batches)["pixel_values"].shape[0]
    t_first = time.perf_counter()
    count = first + sum(b["pixel_values"].shape[0] for b in batches)
    t_end = time.perf_counter()
    del loader, batches  # workers exit and are reaped: their CPU time lands in RUSAGE_CHILDREN
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return count / (t_end - t0), cpu / count * 1e3, (count - first) / (t_end - t_first)


def bench_workers(
    slide: str, mpps: tuple[float, ...], n_tiles: int, n_workers: int = 2
) -> tuple[float, float]:
    """``n_workers`` DataLoader workers vs 1, each worker with the same work: two slides of ``n_tiles // 2``
    tiles (weak scaling, as in training, where every worker streams its own slide group). The slides are hard
    links of ``slide``: distinct files to the decoded-tile cache (keyed by path), so no worker reuses another
    slide's tiles, and one worker's cache serves two slides in both runs. Then decoder threads in one process.
    Returns the worker CPU ms per tile with 1 worker and the n-worker per-core efficiency (CPU per tile with
    1 worker / with n)."""
    with tempfile.TemporaryDirectory(dir=Path(slide).parent) as tmp:
        slides = []
        for k in range(2 * n_workers):
            link = Path(tmp) / f"shard{k}{Path(slide).suffix}"
            os.link(slide, link)
            slides.append(str(link))
        base = {"mpps": mpps, "tiles_per_slide": n_tiles // 2, "seed": 1, "mask_cache_dir": tmp}
        _timed_stream(_cfg(slides, **{**base, "tiles_per_slide": 1}))  # masks cached: the runs time reading
        rows = {w: _loader_run(_cfg(slides[: 2 * w], **base), w) for w in (1, n_workers)}
        (r1, c1, s1), (r2, c2, s2) = rows[1], rows[n_workers]
        print(
            f"  1 worker {r1:7.1f} tiles/s | {n_workers} workers {r2:7.1f} tiles/s | speed-up {r2 / r1:.2f}x "
            f"(target >= {0.925 * n_workers:.2f}x; after the first batch {s2 / s1:.2f}x;"
            f" {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}) | CPU per tile {c1:.2f} vs {c2:.2f} ms: "
            f"{c1 / c2:.2f} per-core efficiency"
        )
        if n_workers >= 16:
            print(f"  measured: {n_workers} workers deliver {r2:,.0f} tiles/s vs {H200_IMAGES_PER_S:,} images/s an "
                  f"H200 consumes: {r2 / H200_IMAGES_PER_S:.2f}x")
        rates = {}
        for threads in (1, 2, 4):
            _, wall, cpu = _timed_stream(_cfg(slides[:1], reader_threads=threads, **base))
            rates[threads] = (n_tiles // 2 / wall, cpu / (n_tiles // 2) * 1e3)
        print(
            "  decoder threads in one worker: "
            + " | ".join(f"{t}: {r:6.1f} tiles/s, {c:.2f} CPU ms/tile" for t, (r, c) in rates.items())
            + f"  (x{rates[2][0] / rates[1][0]:.2f} with 2, x{rates[4][0] / rates[1][0]:.2f} with 4)"
        )
    return c1, c1 / c2


def project_h200(per_core: float, worker_ms: float, efficiency: float) -> None:
    """16 workers' tiles/s from (a) the in-process stream rate and (b) the DataLoader worker CPU per tile
    (batches collated and handed over too), each x the 2-worker per-core efficiency."""
    workers, eff = 16, min(1.0, efficiency)
    for label, rate in (("stream in one process", per_core), ("DataLoader worker", 1e3 / worker_ms)):
        deliver = rate * workers * eff
        print(
            f"  {label}: {rate:.0f} tiles/s/core x {workers} workers x {eff:.2f} = {deliver:,.0f} tiles/s vs "
            f"{H200_IMAGES_PER_S:,} images/s an H200 consumes: {deliver / H200_IMAGES_PER_S:.2f}x "
            "(>= 1: the GPU "
            "never waits for tiles)"
        )


def bench_resources(n_entries: int) -> None:
    """``benchmarks/stream_resources.py`` (a fresh process per run, fd sampler, RSS): 4 vs n entries."""
    from stream_resources import run

    small, big = run(4, 2), run(n_entries, 2)
    for r in (small, big):
        print(
            f"  {r['entries']:>5} entries: {r['tiles']} tiles in {r['seconds']:.0f} s | peak RSS "
            f"{r['peak_rss_mib']:.0f} MiB (+{r['peak_rss_mib'] - r['base_rss_mib']:.0f} after imports) | "
            "open fds "
            f"peak {r['peak_fds']} (before {r['base_fds']})"
        )
    print(
        f"  ratio {n_entries} vs 4 entries: peak RSS {big['peak_rss_mib'] / small['peak_rss_mib']:.2f}x, "
        "open fds "
        f"{big['peak_fds'] / small['peak_fds']:.2f}x (targets <= 1.2x)"
    )


def bench_encodings() -> None:
    import datasets
    from pathfm.datasets_scripts.slide import open_slide

    with open_slide(SVS) as r:
        tile = r.read_tile(800, 1600, 256, r.mpp)
    rows = []
    for name, feat, value in [
        ("datasets.Image (PNG)", datasets.Image(), tile),
        ("Array3D uint8", datasets.Array3D((256, 256, 3), "uint8"), tile),
        ("Value('binary') raw", datasets.Value("binary"), tile.tobytes()),
    ]:
        features = datasets.Features({"image": feat})
        n = 20
        t0 = time.perf_counter()
        for _ in range(n):
            out = features.decode_example(features.encode_example({"image": value}))
            np.asarray(out["image"]) if not isinstance(out["image"], bytes) else None  # force the decode
        rows.append((name, (time.perf_counter() - t0) / n * 1e3))
    print("  " + " | ".join(f"{name}: {ms:.3f} ms/tile" for name, ms in rows))
    print("  (pathfm's stream is typed: none of these runs; 'array' declares Array3D, 'png' declares Image)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiles", type=int, default=1200, help="tiles per timed run")
    ap.add_argument("--side", type=int, default=20_005, help="level-0 side of the generated pyramid (px)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers timed against 1 (GPU machine: 16)")
    ap.add_argument(
        "--rss_entries", type=int, default=1000, help="slide entries of the RSS / fd row (0: skip)"
    )
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from pyramid import make_pyramid

    print(f"pathfm tile benchmark; load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        make_pyramid(Path(tmp), args.side, 0)
        pyramid = str(Path(tmp) / "tcga_like_pyramid.tiff")
        print(
            f"TCGA-like pyramid {args.side} x {args.side - args.side % 4} px written in "
            f"{time.perf_counter() - t0:.1f} s "
            "(target < 60)"
        )
        print(f"[1a] pyramid, training mix {MIX} µm/px, single process (load {os.getloadavg()[0]:.1f})")
        mix = bench_mix(pyramid, MIX, args.tiles)
        print(f"  target >= 250 tiles/s/core: {mix['stream_core']:.0f}")
        print(f"[1b] real SVS {SVS.name}, mix 0.5/1/2 µm/px (native 0.499), single process")
        bench_mix(str(SVS), (0.5, 1.0, 2.0), args.tiles)
        print(f"[2] DataLoader workers and decoder threads, pyramid mix (load {os.getloadavg()[0]:.1f})")
        worker_ms, efficiency = bench_workers(pyramid, MIX, args.tiles, args.workers)
    print("[3] 16 workers vs an H200")
    project_h200(mix["stream_core"], worker_ms, efficiency)
    if args.rss_entries:
        print("[4] peak RSS and open fds, fresh process per run, 2 tiles per entry, 8 slides open at most")
        bench_resources(args.rss_entries)
    print("[5] image feature encode+decode per 256 px tile (what a non-typed stream would pay)")
    bench_encodings()
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
