"""DINO pretraining of a pathfm ViT on tiles streamed from whole-slide images, with Accelerate.

Usage::

    accelerate launch training/dino.py                          # preset cpu_tiny: embedded slides, tiny ViT
    accelerate launch training/dino.py vits16_kaiko --slides /data/tcga --output_dir runs/vits16
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 training/dino.py \\
        --expected_world_size 2
    accelerate launch --num_machines 2 --machine_rank 0 --main_process_ip HOST --main_process_port 29500 \\
        --num_processes 16 training/dino.py vitb8_kaiko ...      # several machines: standard accelerate flags
    accelerate launch training/dino.py --resume_from_checkpoint latest

The training function follows facebookresearch/dino ``main_dino.py`` (``train_dino`` / ``train_one_epoch``,
Caron et al. 2021) section by section: data, networks, loss, optimizer, schedules, resume, loop. Differences,
each on purpose: (1) tiles are streamed from slides (online patching, kaiko arXiv 2404.15217) and an *epoch*
is ``steps_per_epoch`` optimizer steps; (2) multi-crop augmentation runs batched on the training device
(``augmentations.py``); (3) the center is updated once per optimizer step from all micro-batches and ranks
(``loss.py``); (4) schedules are per optimizer step, the teacher temperature too (upstream: per epoch); (5) lr
is scaled by the *effective* global batch (per device x processes x accumulation) / 256.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from tqdm.auto import tqdm

from pathfm.modeling import PathFMViTConfig, PathFMViTModel
from pathfm.training.augmentations import DINOMultiCrop
from pathfm.training.config import (
    DINODataArguments,
    DINOModelArguments,
    DINOTrainingArguments,
    config_dict,
    parse_config,
    save_config,
)
from pathfm.training.heads import DINOHead, MultiCropWrapper
from pathfm.training.launch_check import expected_world_size
from pathfm.training.loss import DINOLoss
from pathfm.training.monitoring import check_collapse, rankme, teacher_entropy
from pathfm.training.optim import cancel_gradients_last_layer, clip_gradients, get_params_groups
from pathfm.training.schedules import cosine_scheduler, teacher_temp_schedule
from pathfm.training.teacher import make_teacher, update_teacher
from pathfm.training.tile_batches import TileBatchStream, partition_slides, preflight_slides, resolve_slides

logger = logging.getLogger("pathfm.dino")

CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_PREFIX = "checkpoint-"


class WorldSizeMismatchError(RuntimeError):
    """Raised when the number of processes differs from what the launch asked for."""


class NonFiniteLossError(FloatingPointError):
    """Raised when the loss is NaN/Inf; the message names the step and the last good checkpoint."""


class TrainState:
    """Position of the run saved with ``Accelerator.save_state`` (``register_for_checkpointing``).

    Attributes:
        step: Number of optimizer steps done (the schedules' index of the next step).
        tiles_seen: Tiles consumed by all ranks.
    """

    def __init__(self) -> None:
        self.step = 0
        self.tiles_seen = 0

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step, "tiles_seen": self.tiles_seen}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step = int(state["step"])
        self.tiles_seen = int(state["tiles_seen"])


# ---------------------------------------------------------------------------------------------- helpers
def build_backbone(model_args: DINOModelArguments, drop_path_rate: float) -> PathFMViTModel:
    """The backbone: random init, or ImageNet (timm / pathfm) weights from a local file via the converter.

    Args:
        model_args: Model config (``backbone_preset``, ``pretrained_weights``).
        drop_path_rate: Stochastic depth (student: config value; teacher: 0, as upstream).

    Returns:
        A ``PathFMViTModel`` (fp32).

    Raises:
        FileNotFoundError: If ``pretrained_weights`` does not exist.
    """
    if model_args.pretrained_weights:
        from pathfm.modeling.convert_timm_to_pathfm import load_pretrained_backbone

        if not Path(model_args.pretrained_weights).exists():
            raise FileNotFoundError(
                f"--pretrained_weights {model_args.pretrained_weights}: no such file or folder"
            )
        return load_pretrained_backbone(
            model_args.pretrained_weights, model_args.backbone_preset, drop_path_rate=drop_path_rate
        )
    config = PathFMViTConfig.from_preset(model_args.backbone_preset, drop_path_rate=drop_path_rate)
    return PathFMViTModel(config)


def build_student_teacher(model_args: DINOModelArguments) -> tuple[MultiCropWrapper, MultiCropWrapper]:
    """Student (backbone with drop path + head) and teacher (same weights, no drop path, no gradients)."""

    def head(in_dim: int) -> DINOHead:
        return DINOHead(
            in_dim,
            model_args.out_dim,
            use_bn=model_args.use_bn_in_head,
            norm_last_layer=model_args.norm_last_layer,
            nlayers=model_args.head_nlayers,
            hidden_dim=model_args.head_hidden_dim,
            bottleneck_dim=model_args.head_bottleneck_dim,
        )

    student_backbone = build_backbone(model_args, model_args.drop_path_rate)
    embed_dim = student_backbone.config.hidden_size * (
        2 if student_backbone.config.pooling == "cls_mean" else 1
    )
    student = MultiCropWrapper(student_backbone, head(embed_dim))
    # upstream builds the teacher without drop path, then loads the student's weights into it
    teacher_backbone = PathFMViTModel(_config_without_drop_path(student_backbone.config))
    teacher = make_teacher(student, MultiCropWrapper(teacher_backbone, head(embed_dim)))
    if model_args.gradient_checkpointing:
        student_backbone.gradient_checkpointing_enable()
    return student, teacher


def _config_without_drop_path(config: PathFMViTConfig) -> PathFMViTConfig:
    new = PathFMViTConfig.from_dict(config.to_dict())
    new.drop_path_rate = 0.0
    return new


def checkpoint_dirs(output_dir: str | Path) -> list[Path]:
    """Checkpoint folders of a run, oldest first (by step number)."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir()
        and p.name.startswith(CHECKPOINT_PREFIX)
        and p.name[len(CHECKPOINT_PREFIX) :].isdigit()
        and (p / "train_complete.json").exists()
    ]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


def resolve_checkpoint(spec: str, output_dir: str | Path) -> Path:
    """``latest`` -> newest complete checkpoint of ``output_dir``; otherwise the given folder.

    Raises:
        FileNotFoundError: No checkpoint (the folder searched is named).
    """
    if spec == "latest":
        found = checkpoint_dirs(output_dir)
        if not found:
            raise FileNotFoundError(
                f"--resume_from_checkpoint latest: no complete checkpoint in "
                f"{Path(output_dir) / CHECKPOINTS_DIR}"
            )
        return found[-1]
    path = Path(spec)
    if not (path / "train_complete.json").exists():
        raise FileNotFoundError(
            f"--resume_from_checkpoint {spec}: not a complete checkpoint folder of this script "
            f"(no train_complete.json)"
        )
    return path


def param_digest(module: torch.nn.Module) -> str:
    """sha256 of all parameters (fp32 bytes, name order) — equal across DDP ranks when they are in sync."""
    h = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _flat_for_tracker(cfg: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for group, values in cfg.items():
        for k, v in values.items():
            out[f"{group}/{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


def _probe_pixels(tiles: torch.Tensor, size: int) -> torch.Tensor:
    """Deterministic RankMe view: uint8 tiles (B, 3, H, W) -> (B, 3, size, size) resized, in [-1, 1]."""
    x = torch.nn.functional.interpolate(
        tiles.float() / 255.0, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return (x - 0.5) / 0.5


# ---------------------------------------------------------------------------------------------- training
def train(
    model_args: DINOModelArguments,
    data_args: DINODataArguments,
    training_args: DINOTrainingArguments,
    preset_path: str | Path | None = None,
) -> dict[str, Any]:
    """Run DINO pretraining and export the teacher backbone.

    Args:
        model_args: Backbone and head.
        data_args: Slides, tile sampling, multi-crop.
        training_args: Optimisation, schedules, checkpoints, logging.
        preset_path: Preset file used (recorded in the resolved config).

    Returns:
        Summary dict (also written to ``<output_dir>/train_summary.json``): steps, losses, tiles seen,
        export path.

    Raises:
        WorldSizeMismatchError: The number of processes differs from the expected world size.
        FileExistsError: ``output_dir`` holds a previous run and neither resume nor overwrite was asked.
        ValueError: No readable slides, fewer slides than processes, or a bad config.
        NonFiniteLossError: The loss became NaN/Inf (the last good checkpoint is kept).
    """
    run_start = time.perf_counter()
    t_args, m_args, d_args = training_args, model_args, data_args
    output_dir = Path(t_args.output_dir)
    use_cuda = torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_CPU", "").lower() not in {
        "1",
        "true",
    }
    mixed_precision = t_args.mixed_precision
    if mixed_precision == "auto":
        mixed_precision = "bf16" if use_cuda else "no"  # bf16 on GPU, fp32 on CPU
    log_with = None if t_args.report_to in {"none", ""} else [s.strip() for s in t_args.report_to.split(",")]
    accelerator = Accelerator(
        gradient_accumulation_steps=t_args.gradient_accumulation_steps,
        mixed_precision=mixed_precision,
        cpu=not use_cuda,
        log_with=log_with,
        project_config=ProjectConfiguration(
            project_dir=str(output_dir), logging_dir=str(output_dir / "logs")
        ),
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rank, world_size = accelerator.process_index, accelerator.num_processes
    expected = expected_world_size(t_args.expected_world_size)
    if world_size != expected:
        # a wrong launch (--cpu --num_processes 2 without --multi_gpu) silently runs one process: refuse it
        raise WorldSizeMismatchError(
            f"world size mismatch: accelerate runs {world_size} process(es) but {expected} were "
            f"expected (--expected_world_size, the launch's --num_processes, or WORLD_SIZE); check the "
            f"accelerate launch flags (on CPU: ACCELERATE_USE_CPU=true accelerate launch --multi_gpu "
            f"--num_processes N)"
        )
    prepare_output_dir(
        output_dir, t_args.resume_from_checkpoint, t_args.overwrite_output_dir, accelerator.is_main_process
    )
    accelerator.wait_for_everyone()  # the main process may have removed a previous run
    set_seed(t_args.seed)  # same seed on every rank: identical initial weights (DDP also broadcasts them)

    # ============ data: slides -> this rank's tile stream ============
    records = resolve_slides(d_args.slides)
    readable, failed = preflight_slides(records)  # no readable slide -> ValueError before training
    my_slides = partition_slides(readable, rank, world_size)
    stream = TileBatchStream(
        my_slides,
        batch_size=t_args.per_device_batch_size,
        seed=t_args.seed * 1000 + rank,
        mpps=d_args.mpps,
        tile_size=d_args.tile_size,
        min_tissue=d_args.min_tissue,
        tiles_per_slide=d_args.tiles_per_slide,
        num_workers=d_args.num_workers,
    )
    augment = DINOMultiCrop(
        d_args.global_crop_size,
        d_args.local_crop_size,
        d_args.local_crops_number,
        d_args.global_crops_scale,
        d_args.local_crops_scale,
    ).to(accelerator.device)
    logger.info(
        "rank %d/%d reads %d slide(s): %s (%d unreadable skipped overall)",
        rank,
        world_size,
        len(my_slides),
        [r.slide_id for r in my_slides],
        len(failed),
    )

    # ============ networks ============
    student, teacher = build_student_teacher(m_args)
    teacher.to(accelerator.device)

    # ============ loss ============
    dino_loss = DINOLoss(m_args.out_dim, augment.ncrops, t_args.student_temp, t_args.center_momentum)
    dino_loss.to(accelerator.device)

    # ============ optimizer ============
    params_groups = get_params_groups(student)
    optimizer = torch.optim.AdamW(params_groups)  # lr and wd are set per step from the schedules
    # prepare: wraps the student in DDP when several processes run (gradients all-reduced in backward) and
    # the optimizer so that its step is skipped on accumulation micro-batches. The teacher is not prepared: it
    # gets no gradients and stays identical on every rank because the EMA is deterministic.
    student, optimizer = accelerator.prepare(student, optimizer)

    # ============ schedules (one value per optimizer step) ============
    total = t_args.total_steps
    spe = t_args.steps_per_epoch
    global_batch = t_args.per_device_batch_size * world_size * t_args.gradient_accumulation_steps
    lr_schedule = cosine_scheduler(
        t_args.lr * global_batch / 256.0, t_args.min_lr, total, warmup_steps=round(t_args.warmup_epochs * spe)
    )
    wd_schedule = cosine_scheduler(t_args.weight_decay, t_args.weight_decay_end, total)
    momentum_schedule = cosine_scheduler(t_args.momentum_teacher, 1.0, total)
    temp_schedule = teacher_temp_schedule(
        t_args.warmup_teacher_temp, t_args.teacher_temp, round(t_args.warmup_teacher_temp_epochs * spe), total
    )
    freeze_steps = round(t_args.freeze_last_layer * spe)

    # ============ resume ============
    state = TrainState()
    # save_state/load_state hold: the prepared student and optimizer, RNG states of every process, and these:
    accelerator.register_for_checkpointing(teacher, dino_loss, state)  # teacher weights, center, step
    resumed_from = None
    if t_args.resume_from_checkpoint:
        ckpt = resolve_checkpoint(t_args.resume_from_checkpoint, output_dir)
        accelerator.load_state(str(ckpt))
        data_state_file = ckpt / f"data_state_rank{rank}.json"
        if not data_state_file.exists():
            raise FileNotFoundError(
                f"{data_state_file} missing: the checkpoint was written by a run with another "
                f"number of processes"
            )
        stream.load_state_dict(json.loads(data_state_file.read_text()))
        resumed_from = str(ckpt)
        logger.info("resumed from %s at step %d", ckpt, state.step)

    if accelerator.is_main_process:
        save_config(
            output_dir,
            m_args,
            d_args,
            t_args,
            extra={
                "preset": str(preset_path) if preset_path else None,
                "world_size": world_size,
                "mixed_precision": mixed_precision,
                "device": str(accelerator.device),
                "global_batch": global_batch,
                "total_steps": total,
                "slides": [r.path for r in readable],
                "unreadable_slides": failed,
                "resumed_from": resumed_from,
            },
        )
    if log_with:
        accelerator.init_trackers("dino", config=_flat_for_tracker(config_dict(m_args, d_args, t_args)))

    # fixed probe batch for RankMe (main process, own seeded stream so it never touches the training RNG)
    probe = None
    if accelerator.is_main_process and t_args.probe_size > 0:
        probe_stream = TileBatchStream(
            readable,
            t_args.probe_size,
            seed=t_args.seed + 777_777,
            mpps=d_args.mpps,
            tile_size=d_args.tile_size,
            min_tissue=d_args.min_tissue,
            tiles_per_slide=max(1, math.ceil(t_args.probe_size / len(readable))) + 1,
        )
        probe = _probe_pixels(next(probe_stream)["pixel_values"], d_args.global_crop_size).to(
            accelerator.device
        )
        probe_stream.close()

    # ============ training loop ============
    metrics_path = output_dir / "metrics.jsonl"
    if accelerator.is_main_process and state.step == 0 and metrics_path.exists():
        metrics_path.unlink()
    unwrapped = accelerator.unwrap_model(student)
    last_good = checkpoint_dirs(output_dir)[-1] if checkpoint_dirs(output_dir) else None
    progress = tqdm(total=total, initial=state.step, disable=not accelerator.is_main_process, desc="dino")
    losses: list[float] = []
    last_metrics: dict[str, float] = {}
    data_time = compute_time = 0.0
    window_start = time.perf_counter()
    window_images = 0

    def run_card_info(loss: float | None, metrics: dict[str, float], mpps: list[float] | None = None) -> dict:
        """Model-card facts of the run so far (written with each checkpoint and with the export)."""
        return card_info_for_run(
            m_args,
            d_args,
            t_args,
            state,
            readable,
            world_size,
            mixed_precision,
            str(accelerator.device),
            time.perf_counter() - run_start,
            loss,
            metrics,
            mpps,
        )

    student.train()
    while state.step < total:
        it = state.step
        for i, group in enumerate(optimizer.param_groups):
            group["lr"] = float(lr_schedule[it])
            group["weight_decay"] = float(wd_schedule[it]) if i == 0 else 0.0  # only the first group decays
        temp = float(temp_schedule[it])
        center_sum = torch.zeros(1, m_args.out_dim, device=accelerator.device)
        rows = 0
        step_loss = 0.0
        for _ in range(t_args.gradient_accumulation_steps):
            t0 = time.perf_counter()
            batch = next(stream)
            tiles = batch["pixel_values"].to(accelerator.device, non_blocking=True)
            t1 = time.perf_counter()
            data_time += t1 - t0
            crops = augment(tiles)
            # accumulate: no DDP all-reduce and no optimizer step until the last micro-batch of the step
            with accelerator.accumulate(student):
                with torch.no_grad(), accelerator.autocast():
                    teacher_output = teacher(crops[:2])  # only the 2 global views pass through the teacher
                student_output = student(crops)
                loss = dino_loss(student_output, teacher_output, temp)
                # every rank must agree to stop, so the finiteness test uses the all-rank mean
                loss_all = accelerator.reduce(loss.detach().clone(), reduction="mean")
                if not math.isfinite(loss_all.item()):
                    raise NonFiniteLossError(
                        f"loss is {loss_all.item()} at step {it} (0-based optimizer step); training stopped, "
                        f"last good checkpoint: {last_good or 'none saved yet'}"
                    )
                accelerator.backward(loss)  # divides by gradient_accumulation_steps
                center_sum += teacher_output.detach().float().sum(dim=0, keepdim=True)
                rows += teacher_output.shape[0]
                step_loss += loss_all.item() / t_args.gradient_accumulation_steps
                grad_norm = None
                if accelerator.sync_gradients:
                    if mixed_precision == "fp16":
                        accelerator.unscale_gradients()
                    grad_norm = clip_gradients(student, t_args.clip_grad)
                    cancel_gradients_last_layer(student, frozen=it < freeze_steps)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
            compute_time += time.perf_counter() - t1
        # once per optimizer step: center from all micro-batches of all ranks, then the teacher EMA
        center_sum = accelerator.reduce(center_sum, reduction="sum")
        total_rows = rows * world_size
        entropy_value = teacher_entropy(teacher_output.float(), dino_loss.center, temp)
        dino_loss.update_center(center_sum, total_rows)
        with torch.no_grad():
            update_teacher(unwrapped, teacher, float(momentum_schedule[it]))
        state.step += 1
        images = t_args.per_device_batch_size * world_size * t_args.gradient_accumulation_steps
        state.tiles_seen += images
        window_images += images
        losses.append(step_loss)
        progress.update(1)

        # ============ logging ============
        if state.step % t_args.logging_steps == 0 or state.step == total or state.step == 1:
            elapsed = time.perf_counter() - window_start
            logs = {
                "loss": step_loss,
                "lr": float(lr_schedule[it]),
                "weight_decay": float(wd_schedule[it]),
                "momentum": float(momentum_schedule[it]),
                "teacher_temp": temp,
                "grad_norm": grad_norm,
                "teacher_entropy": entropy_value,
                "images_per_s": window_images / max(elapsed, 1e-9),
                "data_wait_share": data_time / max(data_time + compute_time, 1e-9),
                "tiles_seen": state.tiles_seen,
                "epoch": it / spe,
            }
            collapse = check_collapse(entropy_value, m_args.out_dim)
            if collapse and accelerator.is_main_process:
                logger.warning("step %d: %s", state.step, collapse)
            if probe is not None:
                with torch.no_grad(), accelerator.autocast():
                    emb = teacher.backbone(pixel_values=probe).pooler_output.float()
                if not torch.isfinite(emb).all():
                    raise NonFiniteLossError(
                        f"teacher embeddings are not finite after step {state.step}; training stopped, "
                        f"last good checkpoint: {last_good or 'none saved yet'}"
                    )
                logs["rankme"] = rankme(emb)
                last_metrics["rankme"] = logs["rankme"]
            # slides skipped: unreadable at start + failed mid-run (builder counters, summed over ranks)
            skip = stream.stats()
            mid_run = torch.tensor(
                [skip.get("corrupt_slides", 0), skip.get("no_tissue_slides", 0)], device=accelerator.device
            )
            mid_run = accelerator.reduce(mid_run, reduction="sum").tolist()
            logs["unreadable_slides_start"] = len(failed)
            logs["corrupt_slides_midrun"] = mid_run[0]
            logs["no_tissue_slides"] = mid_run[1]
            accelerator.log(logs, step=state.step)
            if accelerator.is_main_process:
                with metrics_path.open("a") as f:
                    f.write(json.dumps({"step": state.step, **logs}) + "\n")
                progress.set_postfix(
                    loss=f"{step_loss:.4f}",
                    lr=f"{logs['lr']:.2e}",
                    img_s=f"{logs['images_per_s']:.1f}",
                    wait=f"{logs['data_wait_share']:.0%}",
                )
            data_time = compute_time = 0.0
            window_start, window_images = time.perf_counter(), 0

        # ============ checkpoint ============
        if (t_args.save_steps > 0 and state.step % t_args.save_steps == 0) or (
            state.step == total and t_args.save_steps >= 0
        ):
            card_info = run_card_info(step_loss, dict(last_metrics))
            last_good = save_checkpoint(
                accelerator,
                output_dir,
                state,
                stream,
                t_args.save_total_limit,
                teacher.backbone.config.to_dict(),
                card_info,
            )
    progress.close()
    stream.close()

    # ============ end: consistency, export, push ============
    digests = {"student": param_digest(unwrapped), "teacher": param_digest(teacher)}
    (output_dir / f"param_digest_rank{rank}.json").write_text(json.dumps(digests))
    (output_dir / f"data_stats_rank{rank}.json").write_text(json.dumps(stream.state_dict(), indent=1))
    all_digests = _gather_objects(accelerator, digests)
    all_streams = _gather_objects(accelerator, stream.state_dict())
    mpps_seen = sorted({float(k) for st in all_streams for k in st["mpp_counts"]})
    if any(d != all_digests[0] for d in all_digests):
        raise RuntimeError(f"parameters differ across ranks at the end of training: {all_digests}")
    accelerator.wait_for_everyone()
    summary: dict[str, Any] = {
        "steps": state.step,
        "losses": losses,
        "tiles_seen": state.tiles_seen,
        "world_size": world_size,
        "resumed_from": resumed_from,
        "last_checkpoint": str(last_good) if last_good else None,
    }
    if accelerator.is_main_process:
        if t_args.export:
            card_info = run_card_info(losses[-1] if losses else None, last_metrics, mpps_seen)
            summary["export"] = str(export_model(teacher, output_dir, card_info))
            if t_args.push_to_hub:
                from pathfm.training.hub import push_to_hub

                summary["hub_url"] = str(
                    push_to_hub(summary["export"], t_args.hub_model_id, token=t_args.hub_token)
                )
        (output_dir / "train_summary.json").write_text(json.dumps(summary, indent=1))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def _gather_objects(accelerator: Accelerator, obj: Any) -> list[Any]:
    if accelerator.num_processes == 1:
        return [obj]
    from accelerate.utils import gather_object

    return gather_object([obj])


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: Path,
    state: TrainState,
    stream: TileBatchStream,
    save_total_limit: int,
    teacher_config: dict[str, Any] | None = None,
    card_info: dict[str, Any] | None = None,
) -> Path:
    """``save_state`` to ``<output_dir>/checkpoints/checkpoint-<step>`` plus each rank's data-stream state.

    With ``teacher_config``, ``export.save_export_metadata`` also writes ``pathfm_checkpoint.json`` (config,
    card info, teacher weights = ``custom_checkpoint_0.pkl`` keys ``backbone.*``) so that
    ``python training/export.py --checkpoint DIR`` can export any checkpoint. A ``train_complete.json``
    marker is written last; folders without it are ignored by ``latest``.

    Returns:
        The checkpoint folder.
    """
    ckpt = output_dir / CHECKPOINTS_DIR / f"{CHECKPOINT_PREFIX}{state.step}"
    accelerator.save_state(str(ckpt))  # models, optimizer, RNG of every process, registered objects
    (ckpt / f"data_state_rank{accelerator.process_index}.json").write_text(json.dumps(stream.state_dict()))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if teacher_config is not None:
            from pathfm.training.export import save_export_metadata

            # the teacher is the first object registered for checkpointing -> custom_checkpoint_0.pkl
            save_export_metadata(
                ckpt,
                teacher_config,
                card_info,
                teacher_file="custom_checkpoint_0.pkl",
                teacher_prefix="backbone.",
            )
        (ckpt / "train_complete.json").write_text(json.dumps(state.state_dict()))
        if save_total_limit > 0:
            for old in checkpoint_dirs(output_dir)[:-save_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return ckpt


def card_info_for_run(
    m_args: DINOModelArguments,
    d_args: DINODataArguments,
    t_args: DINOTrainingArguments,
    state: TrainState,
    slides: list,
    world_size: int,
    mixed_precision: str,
    device: str,
    wall_time_s: float | None = None,
    final_loss: float | None = None,
    metrics: dict[str, float] | None = None,
    mpps_seen: list[float] | None = None,
) -> dict[str, Any]:
    """Model-card facts of this run, as ``pathfm.training.model_card.ModelCardInfo`` fields.

    ``mpps_seen`` (the magnifications of the tiles actually read, all ranks) replaces the configured ``mpps``
    when given: a slide never serves an mpp finer than its native one, so some configured values may be
    unused.
    """
    configured = [float(m) for m in d_args.mpps]
    notes = None
    if mpps_seen and sorted(mpps_seen) != sorted(configured):
        notes = (
            f"Configured magnifications {configured} µm/px; the slides could serve only {sorted(mpps_seen)} "
            f"µm/px (tiles are never upsampled)."
        )
    return {
        "notes": notes,
        "repo_id": t_args.hub_model_id,
        "architecture": m_args.backbone_preset,
        "init": f"imagenet ({m_args.pretrained_weights})" if m_args.pretrained_weights else "random",
        "datasets": list(d_args.slides),
        "num_slides": len(slides),
        "slide_ids": [getattr(r, "slide_id", str(r)) for r in slides],
        "tiles_seen": state.tiles_seen,
        "mpps": sorted(mpps_seen) if mpps_seen else configured,
        "tile_size": d_args.tile_size,
        "min_tissue": d_args.min_tissue,
        "steps": state.step,
        "epochs": state.step / t_args.steps_per_epoch,
        "hyperparameters": config_dict(m_args, d_args, t_args),
        "compute": {
            "world_size": world_size,
            "device": device,
            "mixed_precision": mixed_precision,
            "wall_time_s": wall_time_s,
        },
        "final_loss": final_loss,
        "metrics": metrics or {},
    }


def export_model(teacher: MultiCropWrapper, output_dir: Path, card_info: dict[str, Any]) -> Path:
    """Export the teacher backbone (no head, no student) to ``<output_dir>/model`` (``export_teacher``)."""
    from pathfm.training.export import export_teacher

    return Path(export_teacher(teacher.backbone, output_dir / "model", card_info))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI entry point: ``[preset] [--key value ...]``."""
    model_args, data_args, training_args, preset_path = parse_config(argv)
    return train(model_args, data_args, training_args, preset_path)


def prepare_output_dir(output_dir: Path, resume: str | None, overwrite: bool, is_main: bool) -> None:
    """Refuse to silently mix two runs in one folder.

    A folder that already holds ``checkpoints/`` or ``model/`` is a previous run: continue it with
    ``--resume_from_checkpoint``, replace it with ``--overwrite_output_dir`` (its checkpoints and model are
    deleted first, on the main process), or pick another ``--output_dir``.

    Raises:
        FileExistsError: The folder holds a run and neither flag was given.
    """
    previous = [output_dir / name for name in (CHECKPOINTS_DIR, "model") if (output_dir / name).exists()]
    if not previous or resume:
        return
    if not overwrite:
        raise FileExistsError(
            f"{output_dir} already holds a run ({', '.join(p.name + '/' for p in previous)}): pass "
            f"--resume_from_checkpoint latest to continue it, --overwrite_output_dir to replace it, or "
            f"choose another --output_dir"
        )
    if is_main:
        for path in previous:
            shutil.rmtree(path)


# errors that describe the user's input or launch, printed as one line by `cli`
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NonFiniteLossError, WorldSizeMismatchError)


def cli(argv: list[str]) -> int:
    """Run :func:`main`; configuration and input errors print one line (no traceback) and return 2."""
    try:
        main(argv)
    except USER_ERRORS as err:
        print(f"training/dino.py: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
