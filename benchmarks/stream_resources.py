"""Bounded resources: peak RSS and open file descriptors streaming 1,000 slide entries vs 4.

Run: ``nice .venv/bin/python benchmarks/stream_resources.py [--entries 1000] [--tiles_per_slide 4]``

Each configuration runs in a fresh process that streams every entry of a manifest of symbolic links to the
three embedded real slides (each link is a distinct slide to pathfm: opened, masked and read for real) through
:func:`tile_stream` with its defaults (``max_open_slides=8``: the per-worker LRU of open slides). A thread
samples ``/proc/self/fd`` every 20 ms; peak RSS is the process's ``VmHWM``. Printed side by side
with the ratios (target: <= 1.2x for both), and the growth above the process's RSS after imports.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path


def _manifest(root: Path, entries: int) -> Path:
    from pathfm.datasets_scripts.embedded import embedded_slides

    real = embedded_slides()
    lines = ["path,mpp"]
    for i in range(entries):
        rec = real[i % len(real)]
        link = root / f"e{i:05d}{Path(rec.path).suffix}"
        os.symlink(os.path.abspath(rec.path), link)
        lines.append(f"{link},{'' if rec.mpp is None else rec.mpp}")
    path = root / "entries.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _rss_mib() -> float:
    """Peak RSS of this process image (``VmHWM``), MiB. Not ``getrusage``'s ``ru_maxrss``: it survives
    ``execve``, so a child started from a big parent would report the parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("/proc/self/status has no VmHWM")


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def child(entries: int, tiles_per_slide: int) -> dict:
    """Stream every entry once in this process; return the measurements."""
    from pathfm.datasets_scripts.builder import SlideTilesConfig, stream_stats, tile_stream

    with tempfile.TemporaryDirectory(prefix="pathfm_resources_") as tmp:
        manifest = _manifest(Path(tmp), entries)
        cfg = SlideTilesConfig(
            slides=str(manifest), mpps=(0.5, 1.0, 2.0), tile_size=224, tiles_per_slide=tiles_per_slide
        )
        ds = tile_stream(cfg)
        base_rss_mib = _rss_mib()
        base_fds = _open_fds()
        peak_fds, done = [base_fds], threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak_fds[0] = max(peak_fds[0], _open_fds())
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            tiles = sum(1 for _ in ds)
        elapsed = time.perf_counter() - t0
        done.set()
        sampler.join()
        stats = stream_stats(ds)
    return {
        "entries": entries,
        "tiles": tiles,
        "slides_done": stats["slides_done"],
        "seconds": elapsed,
        "base_rss_mib": base_rss_mib,
        "peak_rss_mib": _rss_mib(),
        "base_fds": base_fds,
        "peak_fds": peak_fds[0],
    }


def run(entries: int, tiles_per_slide: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(entries), "--tiles_per_slide", str(tiles_per_slide)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=1000)
    ap.add_argument("--tiles_per_slide", type=int, default=4)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.tiles_per_slide)))
        return
    small, big = run(4, args.tiles_per_slide), run(args.entries, args.tiles_per_slide)
    for r in (small, big):
        print(
            f"{r['entries']:>5} entries: {r['tiles']} tiles from {r['slides_done']} slides in {r['seconds']:.1f} s | "
            f"peak RSS {r['peak_rss_mib']:.0f} MiB (after imports {r['base_rss_mib']:.0f}, growth "
            f"{r['peak_rss_mib'] - r['base_rss_mib']:.0f}) | open fds peak {r['peak_fds']} (before {r['base_fds']})"
        )
    print(
        f"ratio {args.entries} vs 4 entries: peak RSS {big['peak_rss_mib'] / small['peak_rss_mib']:.2f}x, "
        f"open fds {big['peak_fds'] / small['peak_fds']:.2f}x (targets <= 1.2x)"
    )


if __name__ == "__main__":
    main()
