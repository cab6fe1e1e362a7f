"""Worker of ``test_train_fsdp.py``: DINO or DINOv2 steps of a tiny ViT sharded with FSDP2 over 2 CPU
processes.

Launched by ``ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2`` (gloo) as
``fsdp_worker.py <dino|dinov2|dinov2_shared_head> <train|resume> OUT``; :func:`run_reference` is the
unsharded one-process run on the concatenated batch.

TEST-ONLY SHIM: Accelerate keeps CPU launches on DDP even with an FSDP plugin (``sharding.fsdp_plugin`` only
takes effect on GPU backends), so :func:`shard` applies ``torch.distributed.fsdp.fully_shard`` itself, to the
units the plugin names (``sharding.wrap_units``: each block, the backbone, the heads) and then the root, the
order Accelerate's ``fsdp2_prepare_model`` uses. Everything else is pathfm's code path of a sharded run: the
objective's networks, loss and optimizer, ``step.train_step`` / ``step_dinov2.train_step_dinov2`` (sharded
clipping, shard-local teacher EMA), ``checkpointing.register`` / ``save_checkpoint`` / ``load_checkpoint``
(DCP folders), ``sharding.gather_backbone`` and ``export_teacher``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from pathfm.training.checkpointing import TrainState, load_checkpoint, register, save_checkpoint
from pathfm.training.config import DINODataArguments, DINOModelArguments, DINOTrainingArguments
from pathfm.training.export import export_teacher
from pathfm.training.losses.ibot import masked_patch_weights
from pathfm.training.masking import MaskBatch, MaskSampler
from pathfm.training.objectives import build_objective
from pathfm.training.optim import set_lr_wd
from pathfm.training.param_groups import apply_optim_schedule
from pathfm.training.sharding import check_same_sharding, gather_backbone, wrap_units
from pathfm.training.step import train_step
from pathfm.training.step_dinov2 import train_step_dinov2

GLOBAL_BATCH, GLOBAL, LOCAL, N_LOCAL = 4, 48, 16, 2
LR, WD, MOMENTUM, TEACHER_TEMP, CLIP = 1e-3, 0.04, 0.9, 0.07, 3.0
FROZEN_STEPS = 3  # the head's last layer is frozen (DINO: no AdamW state) up to the checkpoint at step 3
SAVE_AT, TOTAL = 3, 5


def config(recipe: str) -> tuple[DINOModelArguments, DINODataArguments, DINOTrainingArguments]:
    """Tiny backbone (hidden 64, 2 blocks, 3 x 3 patches per global crop), small heads, no drop path (the
    ranks' RNG streams differ). ``dinov2``: separate iBOT head; ``dinov2_shared_head``: dinov2's default, one
    head run twice per forward (CLS, then masked patches). DINOv2 uses Sinkhorn-Knopp (all-reduced) targets
    and no KoLeo: dinov2's KoLeo is computed within each rank's batch, so by design it changes with the split.
    """
    objective = "dino" if recipe == "dino" else "dinov2"
    m = DINOModelArguments(
        objective=objective, backbone_preset="tiny", drop_path_rate=0.0, out_dim=64, head_hidden_dim=32,
        head_bottleneck_dim=16, norm_last_layer=objective == "dino", ibot_separate_head=recipe == "dinov2",
        ibot_head_n_prototypes=32, ibot_head_hidden_dim=16, ibot_head_bottleneck_dim=8,
    )  # fmt: skip
    centering = "sinkhorn_knopp" if objective == "dinov2" else "centering"
    t = DINOTrainingArguments(centering=centering, koleo_loss_weight=0.0, clip_grad=CLIP)
    return m, DINODataArguments(global_crop_size=GLOBAL, local_crop_size=LOCAL), t


class FixedCrops:
    """Crops of step ``position`` (seeded, identical on every process); this rank's rows of each crop.

    Rank ``r`` of ``w`` gets images ``[r * b, (r + 1) * b)`` with ``b = GLOBAL_BATCH / w``, so the ranks'
    batches concatenated are the one-process batch. ``state_dict`` / ``load_state_dict`` are the position,
    as a tile stream's, so that checkpoints restore it.
    """

    def __init__(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size, self.position = rank, world_size, 0

    def rows(self, full: torch.Tensor) -> torch.Tensor:
        b = GLOBAL_BATCH // self.world_size
        return full[self.rank * b : (self.rank + 1) * b]

    def __call__(self) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(1000 + self.position)
        sizes = [GLOBAL, GLOBAL] + [LOCAL] * N_LOCAL
        self.position += 1
        return [self.rows(torch.randn(GLOBAL_BATCH, 3, s, s, generator=gen)) for s in sizes]

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position = int(state["position"])


class FixedMasks(FixedCrops):
    """iBOT masks of step ``position`` for the whole batch (``MaskSampler`` seeded by the position); this
    rank's rows of each global crop, so that the ranks' masks concatenated are the one-process masks."""

    def __call__(self, n_crops: int) -> MaskBatch:
        full = MaskSampler((GLOBAL // 16, GLOBAL // 16), 1000 + self.position, 0)(2 * GLOBAL_BATCH).masks
        self.position += 1
        mine = torch.cat([self.rows(crop) for crop in full.chunk(2)])
        assert mine.shape[0] == n_crops
        return MaskBatch(mine, mine.flatten().nonzero().flatten(), masked_patch_weights(mine), 0)


def probe_batch() -> torch.Tensor:
    """A fixed batch of two global-size images."""
    return torch.randn(2, 3, GLOBAL, GLOBAL, generator=torch.Generator().manual_seed(7))


def shard(module: torch.nn.Module, world_size: int) -> torch.nn.Module:
    """TEST-ONLY SHIM (see the module docstring): ``fully_shard`` per unit, then the root, on a CPU mesh
    (``fully_shard``'s default mesh is CUDA where a GPU is present)."""
    mesh = init_device_mesh("cpu", (world_size,))
    for unit in wrap_units(module):
        fully_shard(unit, mesh=mesh)
    return fully_shard(module, mesh=mesh)


class Run:
    """One process's objective, networks, optimizer, loss, position and data for ``recipe``."""

    def __init__(self, recipe: str, acc: Accelerator, seed: int, sharded: bool) -> None:
        self.objective, self.acc = "dino" if recipe == "dino" else "dinov2", acc
        torch.manual_seed(seed)
        self.recipe = build_objective(*config(recipe), acc.process_index)
        student, teacher = self.recipe.build_networks()
        if sharded:
            student, teacher = shard(student, acc.num_processes), shard(teacher, acc.num_processes)
            check_same_sharding(student, teacher)
            self.optimizer = self.recipe.build_optimizer(student)
        else:
            student, self.optimizer = acc.prepare(student, self.recipe.build_optimizer(student))
        self.student, self.teacher = student, teacher
        self.loss = self.recipe.build_loss(2 + N_LOCAL)
        self.state = TrainState()
        self.crops = FixedCrops(acc.process_index, acc.num_processes)
        self.masks = FixedMasks(acc.process_index, acc.num_processes)

    def steps(self, n: int) -> list[float]:
        """``n`` optimizer steps from ``state.step`` with constant schedules; the all-rank mean losses."""
        losses = []
        for _ in range(n):
            it, frozen = self.state.step, self.state.step < FROZEN_STEPS
            common = {"teacher_temp": TEACHER_TEMP, "momentum": MOMENTUM, "clip_grad": CLIP, "step_index": it}
            nets = (self.acc, self.student, self.teacher, self.loss, self.optimizer, self.crops)
            if self.objective == "dino":
                set_lr_wd(self.optimizer, LR, WD)
                out = train_step(*nets, freeze_last_layer=frozen, **common)
            else:
                apply_optim_schedule(self.optimizer, LR, WD, freeze_last_layer=frozen)
                out = train_step_dinov2(*nets, self.masks, **common)
            losses.append(float(out.loss))
            self.state.step += 1
        return losses

    def networks(self) -> tuple:
        return self.student, self.teacher, self.optimizer


def full_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Gathered parameters on rank 0 (empty elsewhere)."""
    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def sharded_run(recipe: str, mode: str, out: Path) -> None:
    acc = Accelerator(cpu=True)
    run = Run(recipe, acc, 0 if mode == "train" else 1, sharded=True)  # resume: other weights first
    register(acc, teacher=run.teacher, loss=run.loss, state=run.state)
    local_numel = sum(p.to_local().numel() for p in run.teacher.parameters())
    result = {"world_size": acc.num_processes, "local_numel": local_numel}
    if mode == "train":
        result["losses"] = run.steps(SAVE_AT)
        save_checkpoint(
            acc, out, run.state, run.crops, 0, run.teacher.backbone.config.to_dict(), None,
            rank_objects={"masks": run.masks}, networks=run.networks(),
        )  # fmt: skip
        student_sd, teacher_sd = full_state(run.student), full_state(run.teacher)
        result["losses"] += run.steps(TOTAL - SAVE_AT)
        backbone = gather_backbone(run.teacher, run.teacher.backbone.config)
        with torch.no_grad():  # the sharded backbone called alone, as the loop's RankMe probe does
            probe = run.teacher.backbone(pixel_values=probe_batch()).pooler_output
        if acc.is_main_process:
            gathered = {"student": student_sd, "teacher": teacher_sd, "probe": probe}
            torch.save(gathered, out / f"after_{SAVE_AT}.pt")
            export_teacher(backbone, out / "model")
    else:
        load_checkpoint(acc, "latest", out, run.crops, {"masks": run.masks}, run.networks())
        result["resumed"] = [run.state.step, run.crops.position, run.masks.position]
        result["losses"] = run.steps(TOTAL - SAVE_AT)
    (out / f"{mode}_rank{acc.process_index}.json").write_text(json.dumps(result))
    acc.wait_for_everyone()


def run_reference(recipe: str) -> tuple[list[float], dict[int, tuple[dict, dict]]]:
    """One process, unsharded, on the concatenated batch: the losses of the ``TOTAL`` steps and the
    (student, teacher) state dicts after ``SAVE_AT`` and ``TOTAL`` steps."""
    run = Run(recipe, Accelerator(cpu=True), 0, sharded=False)
    losses, snapshots = [], {}
    for steps in (SAVE_AT, TOTAL - SAVE_AT):
        losses += run.steps(steps)
        states = (run.acc.unwrap_model(run.student).state_dict(), run.teacher.state_dict())
        snapshots[run.state.step] = tuple({k: v.detach().clone() for k, v in s.items()} for s in states)
    return losses, snapshots


if __name__ == "__main__":
    sharded_run(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
