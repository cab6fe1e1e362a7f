"""Peak host memory per rank of DINO training steps, FSDP2 vs DDP, 2 CPU processes side by side in one run.

Each mode is one ``ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2`` of this file
(gloo), running the same student / teacher (``networks.build_student_teacher``) through
``step.train_step`` for ``--steps`` steps on random crops (``--batch`` images per rank):

- ``ddp``: ``accelerator.prepare(student, optimizer)``, as ``training/dino.py`` without ``--fsdp``;
- ``fsdp``: both networks sharded with FSDP2, AdamW on the shards, as ``training/dino.py --fsdp full_shard``.
  BENCHMARK-ONLY SHIM: Accelerate keeps CPU launches on DDP even with an FSDP plugin, so on CPU this script
  applies ``torch.distributed.fsdp.fully_shard`` itself to the units the plugin names
  (``sharding.wrap_units``), then the root; on GPUs ``training/dino.py`` does it through the plugin.

Measured per rank: resident memory after the imports (the runtime), after setup, and the peak during the
training steps (``VmHWM`` of ``/proc/self/status``, reset with ``/proc/self/clear_refs`` after setup, so the
full networks built before sharding do not count). glibc's mmap threshold is pinned at 64 KiB
(``MALLOC_MMAP_THRESHOLD_``, both modes) so that freed tensors leave the resident set: with its dynamic
threshold, FSDP2's transient all-gather / reduce-scatter buffers stay in malloc arenas and the peak measures
the allocator, not the live tensors. Printed: the rows and the FSDP2 / DDP ratios of the peak, with and
without the runtime.

    python benchmarks/fsdp_memory.py                             # ViT-L/14-reg4, batch 2, 112 / 56 px crops
    python benchmarks/fsdp_memory.py --backbone_preset vitb16 --local_crop_size 48   # ~3 min, 2 x 3 GiB

Measured (2 shared CPU cores, 23 GiB machine, 2026-12-04; ViT-L/14's DDP pair needs ~17 GiB, more than was
free): ViT-B/16, batch 2/rank, 2 x 112 + 2 x 48 px: peak per rank FSDP2 2.02 GiB vs DDP 2.90 GiB = 0.69
(above the 0.74 GiB runtime: 1.28 vs 2.16 = 0.59); the same loss 7.8130 in both modes. Later, with ~19 GiB
free: ViT-L/14-reg4 (the default command), batch 2/rank: FSDP2 4.89 GiB vs DDP 7.81 GiB = 0.63 (above the
runtime 4.15 vs 7.07 = 0.59); loss 7.7681 in both modes.

The launch refuses to start when ``MemAvailable`` is below an estimate of the DDP run's need (2 ranks x
(student, gradients, DDP buckets, AdamW state, teacher) in fp32).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def read_status(field: str) -> float:
    """A ``/proc/self/status`` memory field in GiB (``VmRSS``, ``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20
    raise KeyError(field)


def worker(mode: str, args: argparse.Namespace, out: Path) -> None:
    """One rank: build, shard or DDP-prepare, ``args.steps`` DINO steps; writes ``<mode>_rank<r>.json``."""
    import torch
    from accelerate import Accelerator
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from pathfm.training.config import DINOModelArguments
    from pathfm.training.losses.dino import DINOLoss
    from pathfm.training.networks import build_student_teacher
    from pathfm.training.optim import build_optimizer, set_lr_wd
    from pathfm.training.sharding import check_same_sharding, wrap_units
    from pathfm.training.step import train_step

    runtime_rss = read_status("VmRSS")
    acc = Accelerator(cpu=True)
    assert acc.num_processes == 2, f"expected 2 processes, got {acc.num_processes}"
    torch.manual_seed(0)
    m_args = DINOModelArguments(
        backbone_preset=args.backbone_preset,
        out_dim=args.out_dim,
        head_hidden_dim=2048,
        head_bottleneck_dim=256,
        drop_path_rate=0.0,  # the same losses in both modes: a check that they train the same model
    )
    student, teacher = build_student_teacher(m_args)
    if mode == "fsdp":
        mesh = init_device_mesh("cpu", (acc.num_processes,))  # fully_shard's default is CUDA where present
        for net in (student, teacher):  # BENCHMARK-ONLY SHIM (module docstring): plugin's units, then root
            for unit in wrap_units(net):
                fully_shard(unit, mesh=mesh)
            fully_shard(net, mesh=mesh)
        check_same_sharding(student, teacher)
        optimizer = build_optimizer(student)
    else:
        student, optimizer = acc.prepare(student, build_optimizer(student))
    ncrops = 2 + args.local_crops
    loss = DINOLoss(args.out_dim, ncrops, 0.1, 0.9, "centering")
    sizes = [args.global_crop_size] * 2 + [args.local_crop_size] * args.local_crops
    gen = torch.Generator().manual_seed(acc.process_index)
    crops = [torch.randn(args.batch, 3, s, s, generator=gen) for s in sizes]
    setup_rss = read_status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS: the peak of the steps alone
    for it in range(args.steps):
        set_lr_wd(optimizer, 1e-4, 0.04)
        step = train_step(
            acc, student, teacher, loss, optimizer, lambda: crops, teacher_temp=0.04, momentum=0.996,
            freeze_last_layer=False, clip_grad=3.0, step_index=it,
        )  # fmt: skip
    result = {"runtime_gib": runtime_rss, "setup_gib": setup_rss, "peak_gib": read_status("VmHWM")}
    result["loss"] = float(step.loss)
    (out / f"{mode}_rank{acc.process_index}.json").write_text(json.dumps(result))


def ddp_estimate_gib(backbone_preset: str) -> float:
    """Host memory of the 2-rank DDP run: 6 fp32 copies of the backbone per rank (student, gradients, DDP
    buckets, 2 AdamW moments, teacher) + 1 GiB of runtime and head per rank."""
    import torch

    from pathfm.modeling import PathFMViTConfig, PathFMViTModel

    with torch.device("meta"):
        model = PathFMViTModel(PathFMViTConfig.from_preset(backbone_preset))
    params = sum(p.numel() for p in model.parameters())
    return 2 * (6 * 4 * params / 2**30 + 1.0)


def launch(mode: str, argv: list[str], out: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "HF_HUB_OFFLINE": "1"}
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"  # freed tensors leave the resident set (module docstring)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    cmd += ["--main_process_port", str(port), __file__, "--worker", mode, "--out", str(out), *argv]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"fsdp_memory.py: the {mode} launch failed:\n{res.stderr[-3000:]}")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone_preset", default="vitl14_reg4")
    parser.add_argument("--out_dim", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=2, help="images per rank")
    parser.add_argument("--global_crop_size", type=int, default=112)
    parser.add_argument("--local_crop_size", type=int, default=56)
    parser.add_argument("--local_crops", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--worker", choices=["ddp", "fsdp"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    args = parse()
    if args.worker:
        worker(args.worker, args, Path(args.out))
        return
    need = ddp_estimate_gib(args.backbone_preset)
    available = int(Path("/proc/meminfo").read_text().split("MemAvailable:")[1].split()[0]) / 2**20
    if available < need + 2:  # 2 GiB left to the rest of the machine
        sys.exit(f"fsdp_memory.py: the DDP run needs about {need:.1f} GiB, {available:.1f} GiB available; "
                 "free memory or pass a smaller --backbone_preset")
    argv = list(sys.argv[1:])
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("fsdp", "ddp"):  # one after the other: each pair has the machine alone
            launch(mode, argv, Path(tmp))
            rows[mode] = [json.loads((Path(tmp) / f"{mode}_rank{r}.json").read_text()) for r in range(2)]
    print(f"{args.backbone_preset}, 2 CPU processes (gloo), batch {args.batch}/rank, crops "
          f"2 x {args.global_crop_size} + {args.local_crops} x {args.local_crop_size} px, {args.steps} steps")
    print("| mode | rank | RSS runtime (GiB) | after setup (GiB) | peak during steps (GiB) | loss |")
    print("|---|---|---|---|---|---|")
    for mode, ranks in rows.items():
        for r, row in enumerate(ranks):
            gib = " | ".join(f"{row[k]:.2f}" for k in ("runtime_gib", "setup_gib", "peak_gib"))
            print(f"| {mode} | {r} | {gib} | {row['loss']:.4f} |")
    peak = {m: max(r["peak_gib"] for r in rows[m]) for m in rows}
    above = {m: max(r["peak_gib"] - r["runtime_gib"] for r in rows[m]) for m in rows}
    print(f"FSDP2 / DDP peak per rank (max over ranks): {peak['fsdp']:.2f} / {peak['ddp']:.2f} GiB = "
          f"{peak['fsdp'] / peak['ddp']:.2f}; above the runtime: {above['fsdp']:.2f} / {above['ddp']:.2f} "
          f"GiB = {above['fsdp'] / above['ddp']:.2f}")


if __name__ == "__main__":
    main()
