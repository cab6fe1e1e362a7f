"""Training throughput of the DINO loop on real slide streaming: images/s and the data-wait share.

Runs ``training/dino.py``'s ``train`` (the real loop: tile stream from the embedded slides, batched multi-
crop, student/teacher forward-backward, EMA, center) for a few optimizer steps per model and prints, per
model, the images/s and the fraction of the loop's time spent waiting for data, measured after one warm-up
step. It also prints FLOPs per image (counted with ``FlopCounterMode`` by ``training/mfu.py``: student forward
+ backward on all crops, teacher forward on the globals), the achieved FLOP/s and the model-FLOPs utilisation
against the device's peak measured in the same run with a matmul (fp32 1024^3 on CPU, bf16 8192^3 on a GPU;
before and after the runs, the mean is used).

Then the same tiny recipe (``cpu_tiny``: backbone, heads, crops, batch) under ``--objective dino`` and
``--objective dinov2`` (iBOT masks and loss, KoLeo, parameter groups), run alternately ``--repeats`` times
each in the same process, and prints their step times side by side with the DINOv2 / DINO ratio (median
over repeats).

    python benchmarks/train.py                      # tiny and ViT-S/16 (batch 8), then DINO vs DINOv2 (tiny)
    python benchmarks/train.py --models vits16 --batch_size 64 --steps 20   # e.g. on a GPU
    python benchmarks/train.py --models --repeats 3  # only DINO vs DINOv2 on the tiny preset
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
from accelerate.test_utils.testing import AccelerateTestCase

from pathfm.training import dino
from pathfm.training.config import parse_config
from pathfm.training.mfu import dino_flops_per_image, lookup_peak, measure_matmul_peak, mfu
from pathfm.training.objectives import build_objective

def flops_per_image(m, d, t) -> float:
    """FLOPs of one training image of this recipe, counted by ``training/mfu.py`` (FlopCounterMode on meta):
    student forward + backward on all crops, teacher forward on the 2 globals."""
    with torch.device("meta"):
        student, teacher = build_objective(m, d, t, 0).build_networks()
    counted = dino_flops_per_image(
        student, teacher, d.global_crop_size, d.local_crop_size, d.local_crops_number
    )
    return counted["total"]


def device_peak() -> tuple[str, float, float | None]:
    """(device name, measured matmul peak FLOP/s, datasheet peak or None): bf16 8192^3 on a GPU, fp32
    1024^3 on the CPU with the threads torch uses."""
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        return name, measure_matmul_peak("cuda"), lookup_peak(name)
    return f"CPU ({torch.get_num_threads()} threads)", measure_matmul_peak("cpu"), None


def add_mfu(result: dict, flops: float, peak: float) -> dict:
    """Add FLOPs per image, achieved FLOP/s and MFU against ``peak`` to a run's result."""
    result["gflops_per_image"] = flops / 1e9
    result["achieved_gflops"] = flops * result["images_per_s"] / 1e9
    result["mfu"] = mfu(flops, result["images_per_s"], peak)
    return result


def run(name: str, argv: list[str], steps: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        m, d, t, p = parse_config(
            [
                *argv,
                "--output_dir",
                out,
                "--max_steps",
                str(steps + 1),
                "--logging_steps",
                str(steps + 1),
                "--save_steps",
                "-1",
                "--export",
                "false",
                "--report_to",
                "none",
                "--probe_size",
                "0",
            ]
        )
        dino.train(m, d, t, p)
        rows = [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    AccelerateTestCase().tearDown()  # accelerate's public reset of its singletons: the next run starts afresh
    last = rows[-1]  # window = steps 2 .. steps + 1 (step 1 is warm-up)
    result = {
        "model": name,
        "batch": t.per_device_batch_size,
        "images_per_s": last["images_per_s"],
        "data_wait_share": last["data_wait_share"],
    }
    result["flops"] = flops_per_image(m, d, t)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["tiny", "vits16"], choices=["tiny", "vits16"])
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps after one warm-up step")
    parser.add_argument("--num_workers", type=int, default=1)
    parser.add_argument(
        "--repeats", type=int, default=3, help="alternating DINO / DINOv2 runs each (0: skip the comparison)"
    )
    args = parser.parse_args()
    name_peak, peak_before, sheet = device_peak()
    results = []
    for name in args.models:
        if name == "tiny":
            argv = ["cpu_tiny", "--per_device_batch_size", str(args.batch_size)]
        else:  # the paper's ViT-S/16 recipe at a small batch; full DINO crops (2 x 224 + 8 x 96)
            argv = [
                "vits16_kaiko",
                "--slides",
                "embedded",
                "--per_device_batch_size",
                str(args.batch_size),
                "--tiles_per_slide",
                "64",
            ]
        argv += ["--num_workers", str(args.num_workers)]
        results.append(run(name, argv, args.steps))
    peak_after = device_peak()[1]
    if results:
        print_table(results, name_peak, (peak_before + peak_after) / 2, (peak_before, peak_after), sheet)
    if args.repeats > 0:
        compare_objectives(args, name_peak)


def compare_objectives(args: argparse.Namespace, device: str) -> None:
    """Step time of ``cpu_tiny`` under DINO and DINOv2, runs alternating so that machine noise hits both.

    Prints the whole step (data wait included) and its compute part (``1 - data_wait_share`` of it), the
    median over ``--repeats`` runs each, and the DINOv2 / DINO ratios. FLOPs per image count the CLS path only
    (the iBOT head on the masked patches is not in ``training/mfu.py``'s count).
    """
    base = ["cpu_tiny", "--per_device_batch_size", str(args.batch_size)]
    base += ["--num_workers", str(args.num_workers)]
    step: dict[str, list[float]] = {"dino": [], "dinov2": []}
    compute: dict[str, list[float]] = {"dino": [], "dinov2": []}
    flops = {}
    for _ in range(args.repeats):
        for objective in step:
            result = run(objective, [*base, "--objective", objective], args.steps)
            seconds = result["batch"] / result["images_per_s"]  # one process: seconds per optimizer step
            step[objective].append(seconds)
            compute[objective].append(seconds * (1 - result["data_wait_share"]))
            flops[objective] = result["flops"]
    med = {o: (statistics.median(step[o]), statistics.median(compute[o])) for o in step}
    batch, runs = args.batch_size, args.repeats
    print(f"\nDINO vs DINOv2 step time on {device}, preset cpu_tiny (2x128+4x64 crops, batch {batch}),")
    print(f"{args.steps} timed steps per run, {runs} alternating runs each (median; all runs listed):")
    print(f"{'objective':9s} {'s/step':>8s} {'compute s/step':>15s} {'GFLOP/img':>10s}  runs (s/step)")
    for objective, (total, comp) in med.items():
        listed = " ".join(f"{t:.3f}" for t in step[objective])
        print(f"{objective:9s} {total:8.3f} {comp:15.3f} {flops[objective] / 1e9:10.3f}  {listed}")
    print(
        f"ratio DINOv2 / DINO: step {med['dinov2'][0] / med['dino'][0]:.2f}x, "
        f"compute {med['dinov2'][1] / med['dino'][1]:.2f}x"
    )


def print_table(
    results: list[dict], device: str, peak: float, peaks: tuple[float, float], sheet: float | None
) -> None:
    """One line per model: images/s, data wait, FLOPs per image, achieved GFLOP/s and MFU vs ``peak``."""
    print(f"\nDINO training throughput on {device}, real slide streaming (embedded slides)")
    print(
        f"matmul peak measured in this run: {peaks[0] / 1e9:.1f} GFLOP/s before, {peaks[1] / 1e9:.1f} after"
        + (f" (datasheet {sheet / 1e12:.0f} TFLOP/s)" if sheet else "")
    )
    print(
        f"{'model':8s} {'batch':>5s} {'crops':>12s} {'images/s':>9s} {'data wait':>9s} {'GFLOP/img':>10s}"
        f" {'GFLOP/s':>9s} {'MFU':>6s}"
    )
    for r in results:
        add_mfu(r, r["flops"], peak)
        crops = "2x128+4x64" if r["model"] == "tiny" else "2x224+8x96"
        print(
            f"{r['model']:8s} {r['batch']:5d} {crops:>12s} {r['images_per_s']:9.2f}"
            f" {r['data_wait_share']:9.1%}"
            f" {r['gflops_per_image']:10.2f} {r['achieved_gflops']:9.1f} {r['mfu']:6.1%}"
        )


if __name__ == "__main__":
    main()
