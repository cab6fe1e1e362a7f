"""Evaluation throughput: embedding pipeline vs a bare forward loop, and the linear probe's wall time.

    python benchmarks/eval.py [--preset vits16] [--n_images 128] [--rounds 3] [--batch_size 64] [--num_workers N]

1. Images/s of ``evaluation.embed.embed_samples`` (tiles read from the embedded real slides, preprocessed
   by the model's processor in DataLoader workers, forward in the main process) against a bare
   ``torch.no_grad()`` loop over the same images already preprocessed in memory, same model (random
   init, ``--preset``), same batch size. Target: ratio >= 0.9.
2. Wall time of ``train_linear_head`` for 12,500 steps on 10,000 x 384 embeddings with 9 classes (patience
   set so that it cannot stop early). Target: < 30 s on the 2-core CPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse
import os
import statistics
import time

import torch
from pathfm.evaluation.backbone import preset_backbone
from pathfm.evaluation.embed import TaskImages, embed_samples
from pathfm.evaluation.linear_head import train_linear_head
from pathfm.evaluation.protocol import PROTOCOL_NAME, LinearProbeConfig
from pathfm.evaluation.tasks import build_task


def _runs(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def bench_embedding(
    preset: str, n_images: int, batch_size: int, num_workers: int | None, rounds: int = 3
) -> None:
    """Print images/s of the pipeline and of the bare loop, and their ratio."""
    backbone = preset_backbone(preset, revision="bench")
    model, processor = backbone.model, backbone.processor
    task = build_task("embedded_slides")
    samples = [s for split in task.SPLIT_NAMES for s in task.list_samples(split)][:n_images]
    # bare loop inputs: the same images, preprocessed once up front (not timed)
    images = TaskImages(task, samples, processor)
    pixel_values = torch.stack([images[i] for i in range(len(samples))])
    with torch.no_grad():
        model(pixel_values=pixel_values[:batch_size])  # warm-up
    bare, ours = [], []
    for _ in range(rounds):  # alternate the two so that load from other processes hits both alike
        start = time.perf_counter()
        with torch.no_grad():
            for i in range(0, len(pixel_values), batch_size):
                _ = model(pixel_values=pixel_values[i : i + batch_size]).pooler_output
        bare.append(len(samples) / (time.perf_counter() - start))
        _, timing = embed_samples(backbone, task, samples, batch_size=batch_size, num_workers=num_workers)
        ours.append(timing["images_per_second"])
    b, o = statistics.median(bare), statistics.median(ours)
    workers = num_workers if num_workers is not None else min(4, os.cpu_count() or 1)
    print(
        f"embedding ({preset}, {len(samples)} real slide tiles 224 px, batch {batch_size}, "
        f"{torch.get_num_threads()} threads, {workers} workers, median of {rounds} alternating rounds):"
    )
    print(f"  bare torch.no_grad() loop, preprocessed tensors: {b:7.1f} images/s  (runs: {_runs(bare)})")
    print(f"  evaluation.embed (read + preprocess + forward):  {o:7.1f} images/s  (runs: {_runs(ours)})")
    print(f"  ratio: {o / b:.3f}  (target >= 0.9)")


def bench_probe() -> None:
    """Print the wall time of 12,500 linear-head steps on 10,000 x 384 embeddings, 9 classes."""
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(9, 384, generator=g)
    y = torch.randint(0, 9, (10_000,), generator=g)
    x = centers[y] + 3 * torch.randn(10_000, 384, generator=g)
    vy = torch.randint(0, 9, (2_000,), generator=g)
    vx = centers[vy] + 3 * torch.randn(2_000, 384, generator=g)
    config = LinearProbeConfig(patience_fraction=1.0)  # patience = all epochs: runs the full 12,500 steps
    start = time.perf_counter()
    fit = train_linear_head(x, y, vx, vy, 9, config, seed=0)
    seconds = time.perf_counter() - start
    print(
        f"linear probe ({PROTOCOL_NAME} head: AdamW lr 3e-4, batch 256), 10,000 x 384, 9 classes, "
        f"validation 2,000 checked every epoch:"
    )
    print(
        f"  {fit.steps} steps, {fit.epochs} epochs in {seconds:.1f} s ({fit.steps / seconds:.0f} steps/s; target < 30 s)"
    )


def main() -> None:
    """Run both benchmarks."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="vits16")
    p.add_argument("--n_images", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--num_workers", type=int, default=None)
    p.add_argument("--skip_embedding", action="store_true")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"cpu count {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    bench_probe()
    if not args.skip_embedding:
        bench_embedding(args.preset, args.n_images, args.batch_size, args.num_workers, args.rounds)


if __name__ == "__main__":
    main()
