"""The prepared GPU check behind ``benchmarks/gpu.sh``: DINO training speed on real slide streaming.

Rows, each a fresh process running the real loop (``training/dino.py``: tile stream with 16 data workers ->
batched multi-crop on the GPU -> student / teacher -> loss, EMA, center):

1. ViT-S/16 DINO (2 x 224 + 10 x 96 crops) with every fast path on; ViT-L/14-reg4 likewise (DINOv2 once its
   preset exists, else DINO); images/s, model TFLOP/s, MFU, peak memory, data-wait share;
2. ViT-S/16 with each fast path off in turn (bf16, SDPA, torch.compile, fused AdamW, sync-free step), all off;
3. a 3-minute ViT-S/16 run on the real embedded slides (run right after the first row), its exported teacher
   and the same architecture at random init scored on ``embedded_retrieval`` (top-1 retrieval of a perturbed
   tile among its slide-mates, ``evaluation/tasks/retrieval.py``: random init scores well below 1.0).

Data: a TCGA-like pyramid (JPEG tiles 256 px, levels at downsample 1 / ~4 / ~16, 0.25 µm/px tags) written
from the embedded CMU-1-Small-Region H&E tissue by ``benchmarks/pyramid.py`` (shared with ``tiles.py``),
linked 16 times so that every data worker has a shard.
FLOPs per image are counted with ``training/mfu.py`` (FlopCounterMode, meta device); the peak is a measured
bf16 8192^3 matmul, with the datasheet value printed beside it.

``--profile``: only the first row, trained under ``torch.profiler``; its op table (most expensive ops by
self device time, device kernel launches) goes to ``gpu_profile.txt`` in ``--out``. Run it first where MFU is
low, before tuning anything (2026-12-04 on an H200: 3.9 %, ``benchmarks/RESULTS.md``).

``--dry-run``: the same code path on CPU with the tiny model, crops 64 / 32 px, 2 steps per row, a 1029 px
pyramid, the all-on and all-off rows and 2 steps on the embedded slides with the retrieval score (the test
suite runs it; the default suite with ``--real_seconds 0``, which skips the embedded-slide row). Everything
printed also goes to ``$OUT`` (or ``--out``) when set: ``gpu_table.md``, ``gpu_rows.json``, ``gpu_log.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pyramid import make_pyramid  # benchmarks/pyramid.py: this script's folder is on sys.path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]

# name -> flags that switch one fast path off (every other one stays at its CUDA default: on)
FAST_PATHS_OFF = {
    "bf16 off (fp32)": ["--mixed_precision", "no"],
    "SDPA off (eager attention)": ["--attn_implementation", "eager"],
    "torch.compile off": ["--torch_compile", "false"],
    "fused AdamW off": ["--optim", "adamw_torch"],
    "sync-free step off": ["--sync_free_step", "false"],
}
ALL_OFF = [flag for flags in FAST_PATHS_OFF.values() for flag in flags]
ALL_ON = ["--mixed_precision", "bf16", "--torch_compile", "true", "--optim", "adamw_torch_fused"]
ALL_ON += ["--sync_free_step", "true", "--attn_implementation", "sdpa"]


class Log:
    """Print and keep every line (written to gpu_log.txt at the end)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)


def row_argv(preset: str, slides: str, batch: int, steps: int, workers: int, dry_run: bool) -> list[str]:
    """Arguments of one timed run: ``steps`` warm-up steps (compilation) then ``steps`` timed ones."""
    argv = [preset, "--slides", slides, "--per_device_batch_size", str(batch), "--num_workers", str(workers)]
    argv += ["--max_steps", str(2 * steps), "--logging_steps", str(steps), "--save_steps", "-1"]
    argv += ["--export", "false", "--report_to", "none", "--probe_size", "0", "--tiles_per_slide", "100000"]
    if dry_run:  # aot_eager: the same Dynamo graphs without inductor's minute of C++ compilation on CPU
        argv += ["--global_crop_size", "64", "--local_crop_size", "32", "--local_crops_number", "2"]
        argv += ["--torch_compile_backend", "aot_eager", "--mpps", "0.25", "0.5"]  # a 1029 px pyramid
    else:
        argv += ["--local_crops_number", "10"]  # the recipe: 2 x 224 + 10 x 96
    return argv


def run_row(argv: list[str], workdir: Path, profile_to: Path | None = None) -> dict:
    """Run the loop in a fresh process (clean CUDA state and peak-memory counter); its last logged window.
    With ``profile_to``, the process trains under ``torch.profiler`` and writes its op table there."""
    out = workdir / f"run_{len(list(workdir.glob('run_*')))}"
    result = out / "row_result.json"
    cmd = [sys.executable, str(Path(__file__)), "_row", str(result), *argv, "--output_dir", str(out)]
    env = {**os.environ, **({"PATHFM_GPU_PROFILE": str(profile_to)} if profile_to else {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": " | ".join(tail)}
    return json.loads(result.read_text())


def _child(result_file: str, argv: list[str]) -> None:
    """Inside the row's process: train, then record the last window, the peak memory and FLOPs per image."""
    import torch

    from pathfm.training import dino
    from pathfm.training.config import parse_config
    from pathfm.training.mfu import dino_flops_per_image
    from pathfm.training.networks import build_student_teacher

    m, d, t, preset = parse_config(argv)
    profile_to = os.environ.get("PATHFM_GPU_PROFILE")
    if profile_to:
        _profiled_train(dino, (m, d, t, preset), Path(profile_to))
    else:
        dino.train(m, d, t, preset)
    rows = [json.loads(x) for x in (Path(t.output_dir) / "metrics.jsonl").read_text().splitlines()]
    with torch.device("meta"):
        student, teacher = build_student_teacher(m)
    flops = dino_flops_per_image(
        student, teacher, d.global_crop_size, d.local_crop_size, d.local_crops_number
    )["total"]
    if torch.cuda.is_available():
        peak_mem = torch.cuda.max_memory_allocated() / 2**30
    else:  # CPU: the process's peak resident memory
        peak_mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    last = rows[-1]
    augment_ms = _augment_ms(d, t.per_device_batch_size)
    Path(result_file).write_text(
        json.dumps(
            {
                "images_per_s": last["images_per_s"],
                "data_wait_share": last["data_wait_share"],
                "loss": last["loss"],
                "flops_per_image": flops,
                "peak_mem_gib": peak_mem,
                "batch": t.per_device_batch_size,
                "output_dir": t.output_dir,
                "augment_ms": augment_ms,
                "step_ms": 1e3 * t.per_device_batch_size / last["images_per_s"],
            }
        )
    )


def _profiled_train(dino, config: tuple, out: Path) -> None:
    """``dino.train`` under ``torch.profiler`` (CPU and CUDA activities); writes the 40 most expensive ops by
    self device time (CPU time on a CPU machine) to ``out``: where a step's time goes before anything is tuned.
    Compilation and warm-up steps are inside the window, so compare ops, not totals."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        dino.train(*config)
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    events = prof.key_averages()
    kernels = sum(e.count for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    header = f"profile of {config[2].max_steps} steps (sorted by {key}); device kernel launches: {kernels}\n"
    out.write_text(header + events.table(sort_by=key, row_limit=40, max_name_column_width=70) + "\n")


def _augment_ms(d, batch: int, repeats: int = 5) -> float:
    """Milliseconds of the batched multi-crop augmentation of one batch of uint8 256 px tiles on the training
    device (it runs there, inside the step; this isolates its share)."""
    import torch

    from pathfm.training.augmentations import DINOMultiCrop

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    augment = DINOMultiCrop(
        d.global_crop_size, d.local_crop_size, d.local_crops_number, d.global_crops_scale, d.local_crops_scale
    ).to(device)
    tiles = torch.randint(0, 256, (batch, 3, d.tile_size, d.tile_size), dtype=torch.uint8, device=device)
    augment(tiles)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        augment(tiles)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - start) / repeats


def environment() -> dict:
    import torch
    import transformers

    info = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": (
            torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
        ),
    }
    for name in ("accelerate", "datasets", "kornia", "openslide"):
        try:
            info[name] = __import__(name).__version__
        except (ImportError, AttributeError):
            info[name] = "missing"
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny model, 2 steps per row")
    parser.add_argument(
        "--budget_s", type=float, default=420.0, help="skip rows that would end after this many seconds"
    )
    parser.add_argument("--out", default=os.environ.get("OUT"), help="folder for the table files ($OUT)")
    parser.add_argument(
        "--real_seconds", type=float, default=180.0, help="training s on the real slides (0: skip that row)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="only the first row, under torch.profiler: its op table goes to gpu_profile.txt in --out",
    )
    args = parser.parse_args(argv)
    if args.profile:
        args.real_seconds = 0.0

    import torch

    from pathfm.training.mfu import lookup_peak, measure_matmul_peak, mfu

    start = time.perf_counter()
    log = Log()
    env = environment()
    log("pathfm GPU check " + ("(dry run: CPU, tiny model)" if args.dry_run else ""))
    log(" | ".join(f"{k} {v}" for k, v in env.items()))
    cuda = torch.cuda.is_available() and not args.dry_run
    if not cuda and not args.dry_run:
        log("gpu.py: error: no CUDA device; run with --dry-run on a CPU machine")
        return 2
    device = torch.device("cuda" if cuda else "cpu")
    peak = args.peak = measure_matmul_peak(device)
    sheet = lookup_peak(env["device"]) if cuda else None
    log(f"peak: measured {peak / 1e12:.1f} TFLOP/s ({'bf16 8192^3' if cuda else 'fp32 1024^3'} matmul)"
        + (f", datasheet {sheet / 1e12:.0f}" if sheet else ""))

    with tempfile.TemporaryDirectory(prefix="pathfm_gpu_") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        shards = make_pyramid(work, 1029 if args.dry_run else 20_005, 2 if args.dry_run else 16)
        log(f"TCGA-like pyramid written in {time.perf_counter() - t0:.1f} s")
        workers, steps = (1, 1) if args.dry_run else (16, 20)
        vits = "cpu_tiny" if args.dry_run else "vits16_kaiko"
        small = "tiny (dry run)" if args.dry_run else "ViT-S/16"
        plan: list[tuple[str, list[str]]] = [(f"{small} DINO, all fast paths on", ALL_ON)]
        if not args.dry_run:
            dinov2 = (REPO / "training" / "presets" / "vitl14_reg4_dinov2.yaml").exists()
            method = "DINOv2" if dinov2 else "DINO"
            plan.append((f"ViT-L/14-reg4 {method}, all fast paths on", ALL_ON))
            plan += [(f"{small} DINO, {name}", ALL_ON + flags) for name, flags in FAST_PATHS_OFF.items()]
        plan.append((f"{small} DINO, all fast paths off", ALL_OFF))
        profile_to = None
        if args.profile:
            plan = plan[:1]
            profile_to = Path(args.out or work) / "gpu_profile.txt"
            profile_to.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        for name, flags in plan:
            longest = max((r.get("wall_s", 0.0) for r in rows), default=0.0)
            if time.perf_counter() - start + longest > args.budget_s:
                rows.append({"name": name, "error": "skipped: time budget spent"})
                continue
            large = "ViT-L" in name
            batch = 4 if args.dry_run else (64 if large else 128)
            argv = row_argv(vits, str(shards), batch, steps, workers, args.dry_run) + flags
            if large:
                if "DINOv2" in name:
                    argv[0] = "vitl14_reg4_dinov2"  # kaiko's ViT-L/14 recipe is DINOv2 (issue 11)
                argv += ["--backbone_preset", "vitl14_reg4", "--global_crop_size", "224"]
                argv += ["--local_crop_size", "98"]  # a multiple of patch 14
                argv += ["--gradient_checkpointing", "false"]  # batch 64 fits an H200; MFU without recompute
            t_row = time.perf_counter()
            result = {"name": name, **run_row(argv, work, profile_to)}
            result["wall_s"] = time.perf_counter() - t_row
            if "error" not in result:
                result["model_tflops"] = result["flops_per_image"] * result["images_per_s"] / 1e12
                result["mfu"] = mfu(result["flops_per_image"], result["images_per_s"], peak)
            rows.append(result)
            log(f"  {name}: {json.dumps({k: v for k, v in result.items() if k != 'name'})}")
            if profile_to is not None:
                log(f"  op table: {profile_to}")
            if len(rows) == 1 and not args.profile:  # right after the first row: never cut by the budget
                rows.append(real_slide_row(work, rows[0], small, args, start))
                log(f"  {rows[-1]['name']}: {json.dumps({k: v for k, v in rows[-1].items() if k != 'name'})}")
    table = format_table(rows)
    log()
    for line in table:
        log(line)
    log(f"total {time.perf_counter() - start:.0f} s")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_table.md").write_text("\n".join(table) + "\n")
        report = {"environment": env, "peak_flops": peak, "rows": rows}
        (out / "gpu_rows.json").write_text(json.dumps(report, indent=1))
        (out / "gpu_log.txt").write_text("\n".join(log.lines) + "\n")
    failed = [r for r in rows if "error" in r and not r["error"].startswith(("pending", "skipped"))]
    return 1 if failed else 0


def embedded_manifest(folder: Path) -> Path:
    """A manifest of the three embedded real slides with their mpp overrides, by path (the ``embedded``
    keyword resolves against the installed package, which on the GPU machine is not this checkout)."""
    from pathfm.datasets_scripts.embedded import embedded_slides

    path = folder / "embedded.csv"
    lines = ["path,mpp,slide_id"]
    for record in embedded_slides(REPO / "data" / "slides"):
        lines.append(f"{record.path},{record.mpp if record.mpp is not None else ''},{record.slide_id}")
    path.write_text("\n".join(lines) + "\n")
    return path


def real_slide_row(work: Path, first: dict, small: str, args: argparse.Namespace, start: float) -> dict:
    """Train on the real embedded slides for ``--real_seconds`` (steps from the first row's images/s; 2 in
    the dry run), export the teacher, and score it and the same architecture at random init on
    ``embedded_retrieval`` (top-1 retrieval of a perturbed tile among its slide-mates; random init scores
    well below 1.0)."""
    length = "2 steps" if args.dry_run else f"{args.real_seconds:.0f} s"
    name = f"{small} DINO, {length} on the embedded slides"
    if "error" in first:
        return {"name": name, "error": f"skipped: the first row failed ({first['error'][:80]})"}
    if args.real_seconds <= 0:
        return {"name": name, "error": "skipped: --real_seconds 0"}
    if not args.dry_run and time.perf_counter() - start + args.real_seconds > args.budget_s:
        return {"name": name, "error": "skipped: time budget spent"}
    batch = first["batch"]
    steps = 2 if args.dry_run else max(2, int(args.real_seconds * first["images_per_s"] / batch))
    argv = row_argv(
        "cpu_tiny" if args.dry_run else "vits16_kaiko",
        str(embedded_manifest(work)),
        batch,
        max(1, steps // 2),
        1 if args.dry_run else 16,
        args.dry_run,
    )
    argv = [*argv, *ALL_ON, "--export", "true", "--tiles_per_slide", "1000"]
    t0 = time.perf_counter()
    result = {"name": name, **run_row(argv, work)}
    if "error" in result:
        return result
    result["train_s"] = time.perf_counter() - t0
    from pathfm.evaluation.backbone import load_backbone
    from pathfm.evaluation.probe_runner import RunOptions
    from pathfm.evaluation.tasks.retrieval import evaluate_retrieval

    model_dir = str(result.pop("output_dir")) + "/model"
    device = "cuda" if not args.dry_run else "cpu"
    options = RunOptions(work / "embeddings", batch_size=64, num_workers=1 if args.dry_run else 8)
    slides = REPO / "data" / "slides"
    trained = evaluate_retrieval(load_backbone(model_dir, device=device), slides, options)
    random = evaluate_retrieval(load_backbone(model_dir, random_init=True, device=device), slides, options)
    result["retrieval_top1"] = trained["top1"]
    result["retrieval_top1_random_init"] = random["top1"]
    result["retrieval_chance"] = trained["chance"]
    result["model_tflops"] = result["flops_per_image"] * result["images_per_s"] / 1e12
    result["mfu"] = result["model_tflops"] * 1e12 / args.peak
    return result


def format_table(rows: list[dict]) -> list[str]:
    """Markdown table: one line per row; failed or skipped rows carry their reason."""
    lines = [
        "| run | batch | images/s | TFLOP/s | MFU | peak mem GiB | data wait | GFLOP/image "
        "| augment ms (of step) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | {r['error']} | | | | | | | |")
            continue
        if "retrieval_top1" in r:
            notes.append(
                f"{r['name']}: embedded_retrieval top-1 {r['retrieval_top1']:.3f} vs "
                f"{r['retrieval_top1_random_init']:.3f} at random init (chance {r['retrieval_chance']:.3f}; "
                f"{r['train_s']:.0f} s of training)"
            )
        lines.append(
            f"| {r['name']} | {r['batch']} | {r['images_per_s']:.1f} | {r['model_tflops']:.2f} | "
            f"{r['mfu']:.1%} | {r['peak_mem_gib']:.2f} | {r['data_wait_share']:.1%} | "
            f"{r['flops_per_image'] / 1e9:.2f} | {r['augment_ms']:.1f} "
            f"({r['augment_ms'] / r['step_ms']:.0%}) |"
        )
    return lines + ([""] + notes if notes else [])


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "_row":
        _child(sys.argv[2], sys.argv[3:])
    else:
        sys.exit(main())
