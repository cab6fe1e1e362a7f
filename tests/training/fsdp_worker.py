"""Worker of ``test_train_fsdp.py``: DINO steps of a tiny ViT sharded with FSDP2 over 2 CPU processes (gloo).

Launched by ``ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2`` (modes ``train`` and
``resume``); :func:`run_reference` is the unsharded one-process run on the concatenated batch.

TEST-ONLY SHIM: Accelerate keeps CPU launches on DDP even with an FSDP plugin (``sharding.fsdp_plugin`` only
takes effect on GPU backends), so :func:`shard` applies ``torch.distributed.fsdp.fully_shard`` itself, to the
units the plugin names (``sharding.wrap_units``: each block, the backbone, the head) and then the root, the
order Accelerate's ``fsdp2_prepare_model`` uses. Everything else is pathfm's code path of a sharded run:
``step.train_step`` (sharded clipping, shard-local teacher EMA), ``checkpointing.register`` /
``save_checkpoint`` / ``load_checkpoint`` (DCP folders), ``sharding.gather_backbone`` and ``export_teacher``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import fully_shard

from pathfm.training.checkpointing import TrainState, load_checkpoint, register, save_checkpoint
from pathfm.training.config import DINOModelArguments
from pathfm.training.export import export_teacher
from pathfm.training.losses.dino import DINOLoss
from pathfm.training.networks import build_student_teacher
from pathfm.training.optim import build_optimizer, set_lr_wd
from pathfm.training.sharding import check_same_sharding, gather_backbone, wrap_units
from pathfm.training.step import train_step

GLOBAL_BATCH, GLOBAL, LOCAL, N_LOCAL = 4, 32, 16, 2
LR, WD, MOMENTUM, TEACHER_TEMP, CLIP = 1e-3, 0.04, 0.9, 0.07, 3.0
FROZEN_STEPS = 3  # the head's last layer is frozen (no AdamW state) up to the checkpoint at step 3
SAVE_AT, TOTAL = 3, 5


def model_args() -> DINOModelArguments:
    """Tiny backbone (hidden 64, 2 blocks), small head, no drop path (the ranks' RNG streams differ)."""
    return DINOModelArguments(
        backbone_preset="tiny", drop_path_rate=0.0, out_dim=64, head_hidden_dim=32, head_bottleneck_dim=16
    )


class FixedCrops:
    """Crops of step ``position`` (seeded, identical on every process); this rank's rows of each crop.

    Rank ``r`` of ``w`` gets images ``[r * b, (r + 1) * b)`` with ``b = GLOBAL_BATCH / w``, so the ranks'
    batches concatenated are the one-process batch. ``state_dict`` / ``load_state_dict`` are the position,
    as a tile stream's, so that checkpoints restore it.
    """

    def __init__(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size, self.position = rank, world_size, 0

    def __call__(self) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(1000 + self.position)
        sizes = [GLOBAL, GLOBAL] + [LOCAL] * N_LOCAL
        crops = [torch.randn(GLOBAL_BATCH, 3, s, s, generator=gen) for s in sizes]
        b = GLOBAL_BATCH // self.world_size
        self.position += 1
        return [c[self.rank * b : (self.rank + 1) * b] for c in crops]

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position = int(state["position"])


def probe_batch() -> torch.Tensor:
    """A fixed batch of two global-size images."""
    return torch.randn(2, 3, GLOBAL, GLOBAL, generator=torch.Generator().manual_seed(7))


def shard(module: torch.nn.Module) -> torch.nn.Module:
    """TEST-ONLY SHIM (see the module docstring): ``fully_shard`` per unit, then the root."""
    for unit in wrap_units(module):
        fully_shard(unit)
    return fully_shard(module)


def run_steps(acc, student, teacher, loss, optimizer, crops, state, steps: int) -> list[float]:
    """``steps`` optimizer steps from ``state.step`` with constant schedules; the all-rank mean losses."""
    losses = []
    for _ in range(steps):
        it = state.step
        set_lr_wd(optimizer, LR, WD)
        out = train_step(
            acc, student, teacher, loss, optimizer, crops, teacher_temp=TEACHER_TEMP, momentum=MOMENTUM,
            freeze_last_layer=it < FROZEN_STEPS, clip_grad=CLIP, step_index=it,
        )
        losses.append(float(out.loss))
        state.step += 1
    return losses


def full_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Gathered parameters on rank 0 (empty elsewhere)."""
    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def sharded_run(mode: str, out: Path) -> None:
    acc = Accelerator(cpu=True)
    torch.manual_seed(0 if mode == "train" else 1)  # resume starts from other weights: the load must work
    student, teacher = build_student_teacher(model_args())
    student, teacher = shard(student), shard(teacher)
    check_same_sharding(student, teacher)
    optimizer = build_optimizer(student)
    loss = DINOLoss(model_args().out_dim, 2 + N_LOCAL, 0.1, 0.9, "centering")
    state, crops = TrainState(), FixedCrops(acc.process_index, acc.num_processes)
    register(acc, teacher=teacher, loss=loss, state=state)
    networks = (student, teacher, optimizer)
    local_numel = sum(p.to_local().numel() for p in teacher.parameters())
    result = {"world_size": acc.num_processes, "local_numel": local_numel}
    if mode == "train":
        result["losses"] = run_steps(acc, student, teacher, loss, optimizer, crops, state, SAVE_AT)
        config = teacher.backbone.config.to_dict()
        save_checkpoint(acc, out, state, crops, 0, config, None, networks=networks)
        student_sd, teacher_sd = full_state(student), full_state(teacher)
        result["losses"] += run_steps(acc, student, teacher, loss, optimizer, crops, state, TOTAL - SAVE_AT)
        backbone = gather_backbone(teacher, teacher.backbone.config)
        with torch.no_grad():  # the sharded backbone called alone, as the loop's RankMe probe does
            probe = teacher.backbone(pixel_values=probe_batch()).pooler_output
        if acc.is_main_process:
            torch.save(probe, out / "probe.pt")
            torch.save({"student": student_sd, "teacher": teacher_sd}, out / f"after_{SAVE_AT}.pt")
            export_teacher(backbone, out / "model")
    else:
        load_checkpoint(acc, "latest", out, crops, networks=networks)
        result["resumed_step"], result["resumed_position"] = state.step, crops.position
        result["losses"] = run_steps(acc, student, teacher, loss, optimizer, crops, state, TOTAL - SAVE_AT)
    (out / f"{mode}_rank{acc.process_index}.json").write_text(json.dumps(result))
    acc.wait_for_everyone()


def run_reference() -> tuple[list[float], dict[int, tuple[dict, dict]]]:
    """One process, unsharded, on the concatenated batch: the losses of the ``TOTAL`` steps and the
    (student, teacher) state dicts after ``SAVE_AT`` and ``TOTAL`` steps."""
    acc = Accelerator(cpu=True)
    torch.manual_seed(0)
    student, teacher = build_student_teacher(model_args())
    optimizer = build_optimizer(student)
    student, optimizer = acc.prepare(student, optimizer)
    loss = DINOLoss(model_args().out_dim, 2 + N_LOCAL, 0.1, 0.9, "centering")
    state, crops, losses, snapshots = TrainState(), FixedCrops(0, 1), [], {}
    for steps in (SAVE_AT, TOTAL - SAVE_AT):
        losses += run_steps(acc, student, teacher, loss, optimizer, crops, state, steps)
        states = (acc.unwrap_model(student).state_dict(), teacher.state_dict())
        snapshots[state.step] = tuple({k: v.detach().clone() for k, v in s.items()} for s in states)
    return losses, snapshots


if __name__ == "__main__":
    sharded_run(sys.argv[1], Path(sys.argv[2]))
