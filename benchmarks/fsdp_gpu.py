"""GPU check of FSDP2 sharding (``training/sharding.py``) through the real launcher, on every visible GPU.

Runs ``accelerate launch --use_fsdp --fsdp_version 2 --num_processes <GPUs> training/dino.py`` (Accelerate's
FSDP plugin, FSDP2 ``fully_shard`` per block, sharded AdamW, DCP checkpoints) and prints:

1. tiny preset (``cpu_tiny``, embedded slides), 6 steps, checkpoints at 3 and 6, export: the losses, the
   checkpoint-3 layout (``sharded_student/``, ``sharded_teacher/``), ``AutoModel.from_pretrained`` of the
   export and of ``export.py --checkpoint`` on the sharded checkpoint (max |difference| of their outputs
   on one batch: 0 when checkpoint 6 is the exported teacher);
2. resume: a fresh folder holding only checkpoint-3 resumed with ``--resume_from_checkpoint latest`` to step
   6; the max |difference| of its losses at steps 4-6 against run 1 (0 up to non-deterministic CUDA kernels);
3. DINOv2 ViT-L/14-reg4 (preset ``vitl14_reg4_dinov2`` on the embedded slides: 2 x 224 + 8 x 98 px crops,
   batch ``--vitl_batch`` per GPU, 8 steps), FSDP2 (with a sharded checkpoint at step 8 and the gathered
   export) vs DDP side by side: images/s over steps 3-8 and rank 0's peak GPU memory (``peak_memory_gib`` of
   ``metrics.jsonl``, ``torch.cuda.max_memory_allocated``). On one GPU both hold the whole model (FSDP2
   over one rank shards nothing): the rows show that ViT-L DINOv2 trains, saves and exports sharded; the
   memory saving needs several GPUs (``benchmarks/fsdp_memory.py`` measures it with 2 CPU processes).

About 6 minutes on one H200 (tiny runs ~1 minute each, ViT-L rows ~2 minutes each); ``--skip_vitl`` stops
after 1 and 2.

    python benchmarks/fsdp_gpu.py                  # on a machine with NVIDIA GPUs; --out DIR keeps the log
    PATHFM_GPU_SCRIPT=benchmarks/fsdp_gpu.py bash benchmarks/gpu.sh   # bare machine: gpu.sh installs first

Exit status 1 when a check fails (a launch fails, resume losses differ by more than 1e-3, an export does not
load), so the line that failed is the last one printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
TINY = ["cpu_tiny", "--max_steps", "6", "--save_steps", "3", "--save_total_limit", "0"]
TINY += ["--logging_steps", "1"]
TINY += ["--report_to", "none", "--probe_size", "8", "--num_workers", "2"]
VITL = ["vitl14_reg4_dinov2", "--slides", "embedded", "--report_to", "none", "--probe_size", "0"]
VITL += ["--num_workers", "8", "--torch_compile", "false", "--logging_steps", "1", "--max_steps", "8"]
VITL_FSDP = ["--save_steps", "8", "--export", "true"]  # a sharded ViT-L checkpoint and the gathered export
VITL_DDP = ["--save_steps", "-1", "--export", "false"]


def launch(args: list[str], gpus: int, fsdp: bool, log: list[str]) -> subprocess.CompletedProcess:
    """One ``accelerate launch`` of training/dino.py; FSDP2 through the launcher's own flags."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(gpus)]
    cmd += ["--use_fsdp", "--fsdp_version", "2"] if fsdp else (["--multi_gpu"] if gpus > 1 else [])
    cmd += ["--mixed_precision", "bf16", "training/dino.py", *args]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1200)
    log.append(f"$ {' '.join(cmd[1:])}  -> exit {res.returncode} in {time.perf_counter() - t0:.0f} s")
    if res.returncode != 0:
        log.append(res.stderr[-3000:])
    return res


def losses(run: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return {r["step"]: r["loss"] for r in rows}


def fail(log: list[str], message: str) -> None:
    log.append(f"FAILED: {message}")
    print("\n".join(log), flush=True)
    sys.exit(1)


def check_tiny(root: Path, gpus: int, log: list[str]) -> None:
    """Runs 1 and 2 of the module docstring."""
    from transformers import AutoModel

    from pathfm.training.export import export_checkpoint

    run = root / "tiny"
    if launch([*TINY, "--output_dir", str(run)], gpus, True, log).returncode:
        fail(log, "tiny FSDP2 run")
    first = losses(run)
    ckpt3 = run / "checkpoints" / "checkpoint-3"
    log.append(f"losses {[round(first[s], 5) for s in sorted(first)]}")
    log.append(f"checkpoint-3: {sorted(os.listdir(ckpt3))}")
    model = AutoModel.from_pretrained(run / "model", trust_remote_code=True).eval()
    exported = export_checkpoint(run / "checkpoints" / "checkpoint-6", root / "from_ckpt6")
    again = AutoModel.from_pretrained(exported, trust_remote_code=True).eval()
    pixels = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        end, ckpt6 = (m(pixel_values=pixels).pooler_output for m in (model, again))
    diff = float((end - ckpt6).abs().max())
    log.append(f"export loads (hidden {model.config.hidden_size}); export.py --checkpoint checkpoint-6 vs "
               f"end-of-run export: max |diff| {diff:.2e}")
    resumed = root / "resumed"
    shutil.copytree(ckpt3, resumed / "checkpoints" / "checkpoint-3")
    args = [*TINY, "--output_dir", str(resumed), "--resume_from_checkpoint", "latest"]
    if launch(args, gpus, True, log).returncode:
        fail(log, "resume from the sharded checkpoint-3")
    second = losses(resumed)
    worst = max(abs(second[s] - first[s]) for s in (4, 5, 6))
    log.append(f"resumed losses 4-6 {[round(second[s], 5) for s in (4, 5, 6)]}")
    log.append(f"resumed vs run 1, steps 4-6: max |diff| {worst:.2e}")
    if worst > 1e-3:
        fail(log, f"resumed losses differ by {worst}")


def vitl_row(root: Path, gpus: int, fsdp: bool, batch: int, log: list[str]) -> dict[str, float]:
    """Images/s (mean over steps 3-8) and rank 0's peak GPU memory of one ViT-L/14 run."""
    run = root / ("vitl_fsdp" if fsdp else "vitl_ddp")
    args = [*VITL, *(VITL_FSDP if fsdp else VITL_DDP), "--per_device_batch_size", str(batch)]
    if launch([*args, "--output_dir", str(run)], gpus, fsdp, log).returncode:
        return {"failed": 1.0}
    if fsdp:
        log.append(f"ViT-L FSDP2 checkpoint-8: {sorted(os.listdir(run / 'checkpoints' / 'checkpoint-8'))}; "
                   f"export: {sorted(os.listdir(run / 'model'))}")
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    rates = [r["images_per_s"] for r in rows if r["step"] > 2]
    return {
        "images_per_s": round(sum(rates) / max(len(rates), 1), 1),
        "peak_gib": round(max(r.get("peak_memory_gib", float("nan")) for r in rows), 2),
        "loss_last": round(rows[-1]["loss"], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vitl_batch", type=int, default=32, help="ViT-L/14 images per GPU")
    parser.add_argument("--skip_vitl", action="store_true", help="only runs 1 and 2")
    parser.add_argument("--out", default=os.environ.get("OUT"), help="folder for fsdp_gpu_log.txt")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks/fsdp_gpu.py: needs CUDA (FSDP2 through Accelerate runs on GPUs only)")
    gpus, log = torch.cuda.device_count(), [f"{torch.cuda.get_device_name()} x {torch.cuda.device_count()}"]
    with tempfile.TemporaryDirectory() as tmp:
        check_tiny(Path(tmp), gpus, log)
        if not args.skip_vitl:
            fsdp = vitl_row(Path(tmp), gpus, True, args.vitl_batch, log)
            ddp = vitl_row(Path(tmp), gpus, False, args.vitl_batch, log)
            where = f"batch {args.vitl_batch}/GPU on {gpus} GPU(s)"
            log.append(f"DINOv2 ViT-L/14-reg4 {where}: FSDP2 {fsdp} | DDP {ddp}")
            if "failed" in fsdp:
                fail(log, "ViT-L/14 FSDP2 run")
    text = "\n".join(log)
    print(text, flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "fsdp_gpu_log.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
