"""Training throughput of the DINO loop on real slide streaming: images/s and the data-wait share.

Runs ``training/dino.py``'s ``train`` (the real loop: tile stream from the embedded slides, batched multi-
crop, student/teacher forward-backward, EMA, center) for a few optimizer steps per model and prints, per
model, the images/s and the fraction of the loop's time spent waiting for data, measured after one warm-up
step. On a GPU it also prints an estimate of model-FLOPs utilisation (analytic ViT FLOPs x 3 for the student's
forward+backward, x 1 for the teacher's forward; head FLOPs included; peak bf16 dense TFLOPs from a small
table).

    python benchmarks/train.py                      # tiny and ViT-S/16 (batch 8) on this machine
    python benchmarks/train.py --models vits16 --batch_size 64 --steps 20   # e.g. on a GPU
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from accelerate.state import AcceleratorState, GradientState, PartialState

from pathfm.modeling import PathFMViTConfig
from pathfm.training import dino
from pathfm.training.config import parse_config

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


def vit_flops(config: PathFMViTConfig, side: int) -> float:
    """Forward FLOPs of one image (2 x multiply-adds): patch embedding, attention, MLP."""
    n = (side // config.patch_size) ** 2 + 1 + config.num_register_tokens
    d, f, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    patch = 2 * (side // config.patch_size) ** 2 * 3 * config.patch_size**2 * d
    per_layer = 2 * n * (4 * d * d + 2 * d * f) + 2 * 2 * n * n * d
    return patch + layers * per_layer


def step_flops(
    backbone: str, batch: int, g: int, l_side: int, n_local: int, head: tuple[int, int, int, int]
) -> float:
    cfg = PathFMViTConfig.from_preset(backbone)
    d_in, hidden, bottleneck, out_dim = head
    head_f = 2 * (d_in * hidden + hidden * hidden + hidden * bottleneck + bottleneck * out_dim)
    student = batch * (2 * (vit_flops(cfg, g) + head_f) + n_local * (vit_flops(cfg, l_side) + head_f))
    teacher = batch * 2 * (vit_flops(cfg, g) + head_f)
    return 3 * student + teacher


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
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()
    last = rows[-1]  # window = steps 2 .. steps + 1 (step 1 is warm-up)
    result = {
        "model": name,
        "batch": t.per_device_batch_size,
        "images_per_s": last["images_per_s"],
        "data_wait_share": last["data_wait_share"],
    }
    if torch.cuda.is_available():
        flops = step_flops(
            m.backbone_preset,
            t.per_device_batch_size,
            d.global_crop_size,
            d.local_crop_size,
            d.local_crops_number,
            (
                PathFMViTConfig.from_preset(m.backbone_preset).hidden_size,
                m.head_hidden_dim,
                m.head_bottleneck_dim,
                m.out_dim,
            ),
        )
        gpu = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in gpu), None)
        achieved = flops * last["images_per_s"] / t.per_device_batch_size / 1e12
        result.update({"gpu": gpu, "model_tflops": achieved, "mfu": achieved / peak if peak else None})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "vits16"], choices=["tiny", "vits16"])
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps after one warm-up step")
    parser.add_argument("--num_workers", type=int, default=1)
    args = parser.parse_args()
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
    device = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    print(f"\nDINO training throughput on {device}, real slide streaming (embedded slides)")
    print(
        f"{'model':8s} {'batch':>5s} {'crops':>18s} {'images/s':>9s} {'data wait':>9s}"
        + (f" {'TFLOP/s':>8s} {'MFU':>6s}" if torch.cuda.is_available() else "")
    )
    for r in results:
        crops = "2x128+4x64" if r["model"] == "tiny" else "2x224+8x96"
        line = f"{r['model']:8s} {r['batch']:5d} {crops:>18s} {r['images_per_s']:9.2f} "
        line += f"{r['data_wait_share']:9.1%}"
        if "mfu" in r:
            line += f" {r['model_tflops']:8.1f} {r['mfu'] or float('nan'):6.1%}"
        print(line)


if __name__ == "__main__":
    main()
