"""DINO pretraining of a pathfm ViT on tiles streamed from whole-slide images, with Accelerate.

Usage::

    accelerate launch training/dino.py                          # preset cpu_tiny: embedded slides, tiny ViT
    accelerate launch training/dino.py vits16_kaiko --slides /data/tcga --output_dir runs/vits16
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 training/dino.py \\
        --expected_world_size 2
    accelerate launch --num_machines 2 --machine_rank 0 --main_process_ip HOST --main_process_port 29500 \\
        --num_processes 16 training/dino.py vitb8_kaiko ...      # several machines: standard accelerate flags
    accelerate launch training/dino.py --resume_from_checkpoint latest
    accelerate launch training/dino.py vitl14_reg4_dinov2 --slides /data/tcga   # DINOv2 (--objective dinov2)
    accelerate launch --use_fsdp --fsdp_version 2 --num_processes 8 training/dino.py vitl14_reg4_dinov2 \\
        --slides /data/tcga                # FSDP2: student + teacher sharded (or: --fsdp full_shard)

``train`` follows facebookresearch/dino ``main_dino.py`` (``train_dino`` / ``train_one_epoch``, Caron et al.
2021) section by section: data, networks, loss, optimizer, schedules, resume, loop, export. Each section is
one module of ``training/``: ``launch`` (Accelerator), ``data`` + ``tile_batches`` (slides -> tile
batches), ``augmentations`` (multi-crop), ``objectives/`` (what ``--objective dino|dinov2`` changes: networks,
loss, optimizer, step), ``networks`` + ``heads`` (student/teacher), ``sharding`` (FSDP2, ``--fsdp``),
``losses/``, ``optim`` / ``param_groups``, ``schedules``, ``checkpointing`` (save/resume layout) +
``resume_check`` (a resume keeps the run's settings), ``step`` / ``step_dinov2`` (one optimizer step;
teacher EMA in ``teacher``), ``loop`` (steps, logging, checkpoints), ``run_card`` + ``export`` (the exported
teacher).

Differences, each on purpose: (1) tiles are streamed from slides (online patching, kaiko arXiv 2404.15217)
and an *epoch* is ``steps_per_epoch`` optimizer steps; (2) multi-crop augmentation runs batched on the
training device (``augmentations.py``); (3) the center is updated once per optimizer step from all
micro-batches and ranks (``losses/dino.py``); (4) schedules are per optimizer step, the teacher temperature
too (upstream: per epoch); (5) lr is scaled by the *effective* global batch (per device x processes x
accumulation) / 256.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pathfm

if __name__ == "__main__" and pathfm.help_only(sys.argv):  # the parser alone: no torch / accelerate import
    from pathfm.training.config import parse_config

    parse_config(sys.argv[1:])  # prints the help (with the chosen preset's values) and exits 0

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed

from pathfm.training.augmentations import DINOMultiCrop
from pathfm.training.checkpointing import (
    TrainState,
    checkpoint_dirs,
    load_checkpoint,
    prepare_output_dir,
    register,
    resolve_checkpoint,
)
from pathfm.training.config import (
    DINODataArguments,
    DINOModelArguments,
    DINOTrainingArguments,
    config_dict,
    parse_config,
    save_config,
)
from pathfm.training.data import build_data, build_probe
from pathfm.training.fast_paths import FastPaths, compile_dino_modules, resolve_fast_paths
from pathfm.training.interrupt import TrainingInterrupted
from pathfm.training.launch import WorldSizeMismatchError, make_accelerator, trackers, use_cuda
from pathfm.training.loop import Loop, run_loop
from pathfm.training.mfu import dino_flops_per_image, measure_matmul_peak
from pathfm.training.networks import param_digest
from pathfm.training.objectives import build_objective
from pathfm.training.resume_check import check_resume_config
from pathfm.training.run_card import RunCard
from pathfm.training.schedules import build_schedules
from pathfm.training.sharding import (
    fsdp_mode,
    full_state_digest,
    gather_backbone,
    is_sharded,
    shard_student_teacher,
)
from pathfm.training.step import NonFiniteLossError
from pathfm.training.tile_batches import EmptyTileStreamError
from pathfm.training.user_error import report_user_error

__all__ = ["NonFiniteLossError", "WorldSizeMismatchError", "checkpoint_dirs", "cli", "main", "train"]

logger = logging.getLogger("pathfm.dino")


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
        ValueError: No readable slides, fewer slides than processes, a bad config, or a resume with other
            settings than the checkpoint's (``resume_check``).
        FileNotFoundError: ``--resume_from_checkpoint`` names no complete checkpoint.
        NonFiniteLossError: The loss became NaN/Inf (the last good checkpoint is kept).
    """
    m_args, d_args, t_args = model_args, data_args, training_args
    output_dir = Path(t_args.output_dir)
    accelerator = make_accelerator(t_args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rank, world_size, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    prepare_output_dir(
        output_dir, t_args.resume_from_checkpoint, t_args.overwrite_output_dir, accelerator.is_main_process
    )
    accelerator.wait_for_everyone()  # the main process may have removed a previous run
    ckpt = checkpoint_to_resume(accelerator, m_args, d_args, t_args)  # before any slide is opened
    set_seed(t_args.seed)  # same seed on every rank: identical initial weights (DDP also broadcasts them)

    # ============ data: slides -> this rank's tile stream -> multi-crop on the device ============
    data = build_data(d_args, t_args, rank, world_size)
    augment = DINOMultiCrop(
        d_args.global_crop_size,
        d_args.local_crop_size,
        d_args.local_crops_number,
        d_args.global_crops_scale,
        d_args.local_crops_scale,
        random_rot90=d_args.random_rot90,
    ).to(device)
    logger.info("rank %d/%d reads %s", rank, world_size, slides_summary(data))

    # ============ networks, loss, optimizer (of --objective: objectives/) ============
    objective = build_objective(m_args, d_args, t_args, rank)
    student, teacher = objective.build_networks()
    teacher.to(device)
    loss = objective.build_loss(augment.ncrops)
    loss.to(device)
    sharded = fsdp_mode(t_args.fsdp) is not None
    compile_ = False if sharded else t_args.torch_compile  # compile + FSDP2 not wired yet (config refuses it)
    optim = "adamw_torch" if sharded and t_args.optim == "auto" else t_args.optim  # foreach AdamW on shards
    fast = resolve_fast_paths(
        use_cuda(), compile_, optim, t_args.sync_free_step, t_args.torch_compile_backend
    )
    flops_per_image, peak_flops = measure_mfu_terms(student, teacher, d_args, device)
    if accelerator.is_main_process:  # the same settings on every rank (the peak is rank 0's device)
        logger.info(
            "fast paths %s, mixed precision %s; %.3g GFLOP per image, peak %.3g TFLOP/s",
            fast.as_dict(),
            accelerator.mixed_precision,
            flops_per_image / 1e9,
            peak_flops / 1e12,
        )
    student, teacher, optimizer = prepare_networks(accelerator, objective, student, teacher, fast, sharded)

    # ============ schedules (one value per optimizer step) ============
    schedules = build_schedules(t_args, world_size)

    # ============ resume ============
    state = TrainState()
    # save_state/load_state hold the prepared student and optimizer, RNG of every process, and these:
    register(accelerator, teacher=teacher, loss=loss, state=state)
    resumed_from = None
    if ckpt is not None:
        networks = (student, teacher, optimizer)  # sharded runs: read from their DCP folders
        load_checkpoint(accelerator, str(ckpt), output_dir, data.stream, objective.rank_objects(), networks)
        resumed_from = str(ckpt)
        if accelerator.is_main_process:  # every rank loads the same checkpoint
            logger.info("resumed from %s at step %d", resumed_from, state.step)
    card = RunCard(
        m_args, d_args, t_args, data.readable, world_size, accelerator.mixed_precision, str(device)
    )
    if accelerator.is_main_process:
        save_config(
            output_dir,
            m_args,
            d_args,
            t_args,
            extra={
                "preset": str(preset_path) if preset_path else None,
                "world_size": world_size,
                "mixed_precision": accelerator.mixed_precision,
                "fast_paths": fast.as_dict(),
                "flops_per_image": flops_per_image,
                "peak_flops_per_s": peak_flops,
                "device": str(device),
                "global_batch": schedules.global_batch,
                "total_steps": t_args.total_steps,
                "slides": [r.path for r in data.readable],
                "unreadable_slides": data.failed,
                "resumed_from": resumed_from,
            },
        )
    if trackers(t_args):
        accelerator.init_trackers("dino", config=_flat_for_tracker(config_dict(m_args, d_args, t_args)))

    # ============ training loop ============
    is_main = accelerator.is_main_process
    loop = Loop(
        accelerator,
        objective,
        student,
        teacher,
        loss,
        optimizer,
        data.stream,
        augment,
        schedules,
        state,
        m_args,
        t_args,
        card,
        output_dir,
        unreadable_slides=len(data.failed),
        # fixed RankMe probe batch, main process only (sharded: every rank, the forward gathers weights)
        probe=build_probe(data.readable, d_args, t_args, device) if is_main or sharded else None,
        sync_free_step=fast.sync_free_step,
        flops_per_image=flops_per_image,
        peak_flops=peak_flops,
    )
    run_until_done_or_interrupted(loop, data.stream)

    # ============ end: consistency, export, push ============
    summary: dict[str, Any] = {
        "steps": state.step,
        "losses": loop.losses,
        "tiles_seen": state.tiles_seen,
        "world_size": world_size,
        "resumed_from": resumed_from,
        "last_checkpoint": str(loop.last_good) if loop.last_good else None,
    }
    return finish(loop, data.stream, summary)



def checkpoint_to_resume(
    accelerator: Accelerator,
    m_args: DINOModelArguments,
    d_args: DINODataArguments,
    t_args: DINOTrainingArguments,
) -> Path | None:
    """The checkpoint ``--resume_from_checkpoint`` names (None: a fresh run), checked before any slide is
    opened so that a wrong resume fails in seconds.

    Raises:
        FileNotFoundError: No such checkpoint (``checkpointing.resolve_checkpoint``).
        ValueError: It was written with other settings (``resume_check.check_resume_config``).
    """
    spec = t_args.resume_from_checkpoint
    if not spec:
        return None
    ckpt = resolve_checkpoint(spec, t_args.output_dir, t_args.save_steps)
    run_facts = {
        "world_size": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
        "device": str(accelerator.device),  # not compared: names the launch in the refusal's fix
    }
    check_resume_config(ckpt, spec, {**config_dict(m_args, d_args, t_args), "run": run_facts})
    return ckpt


def prepare_networks(
    accelerator: Accelerator, objective: Any, student: Any, teacher: Any, fast: FastPaths, sharded: bool
) -> tuple[Any, Any, torch.optim.Optimizer]:
    """Student, teacher and optimizer as the loop uses them: DDP (default) or FSDP2-sharded (``--fsdp``).

    DDP: ``prepare`` wraps the student in DDP when several processes run (gradients all-reduced in backward)
    and the optimizer so that its step is skipped on accumulation micro-batches. The teacher is not prepared:
    it gets no gradients and stays identical on every rank because the EMA is deterministic.

    The optimizer is the objective's (``objective.build_optimizer``). Sharded: both networks are sharded
    alike (``sharding.shard_student_teacher``) and AdamW is built on the student's shards, not prepared
    (the step runs it only when ``sync_gradients``; ``checkpointing.save_sharded`` saves the shards).
    """
    if sharded:
        student, teacher = shard_student_teacher(accelerator, student, teacher)
        return student, teacher, objective.build_optimizer(student, fused=fast.fused_adamw)
    optimizer = objective.build_optimizer(student, fused=fast.fused_adamw)
    if fast.torch_compile:
        compile_dino_modules([student, teacher], backend=fast.compile_backend)
    student, optimizer = accelerator.prepare(student, optimizer)
    return student, teacher, optimizer


def slides_summary(data: Any) -> str:
    """``"<n> slide(s): [ids] (skipped overall: <k> no mpp, <k> unreadable, <m> catalogued as <status>, ...)"``
    for this rank's part of the data: the slides that failed to open, by status, plus those a catalogue left
    out."""
    ids = [r.slide_id for r in data.my_slides]
    # each failure reads "<status>: <reason>" (no mpp / unreadable / ...): counted by status
    failed = data.failed.values() if isinstance(data.failed, dict) else data.failed
    statuses = Counter(str(message).split(":", 1)[0] for message in failed)
    skips = [f"{n} {status}" for status, n in sorted(statuses.items())]
    skips += [f"{n} catalogued as {status}" for status, n in sorted(data.catalogue_skipped.items())]
    return f"{len(ids)} slide(s): {ids} (skipped overall: {', '.join(skips) or 'none'})"


def measure_mfu_terms(
    student: Any, teacher: Any, d_args: DINODataArguments, device: Any
) -> tuple[float, float]:
    """The two constants of MFU, each computed once per run: model FLOPs of one image of the recipe
    (counted on the meta device) and the device's peak FLOP/s (measured with a matmul)."""
    flops_per_image = dino_flops_per_image(
        student, teacher, d_args.global_crop_size, d_args.local_crop_size, d_args.local_crops_number
    )["total"]
    return flops_per_image, measure_matmul_peak(device)


def run_until_done_or_interrupted(loop: Loop, stream: Any) -> None:
    """Run the loop; the tile stream is closed however it ends, and an interrupt also ends the trackers."""
    try:
        run_loop(loop)
    except TrainingInterrupted:
        loop.accelerator.end_training()
        raise
    finally:
        stream.close()


def finish(loop: Loop, stream: Any, summary: dict[str, Any]) -> dict[str, Any]:
    """Check that all ranks hold the same weights, export the teacher (+ push), write the summary.

    Raises:
        RuntimeError: Parameters differ across ranks.
    """
    accelerator, output_dir, t_args = loop.accelerator, loop.output_dir, loop.t_args
    rank = accelerator.process_index
    student = accelerator.unwrap_model(loop.student)
    if is_sharded(loop.teacher):  # one copy of each shard: digests of the gathered networks, on rank 0
        digests = {"student": full_state_digest(student), "teacher": full_state_digest(loop.teacher)}
        backbone = gather_backbone(loop.teacher, loop.teacher.backbone.config) if t_args.export else None
    else:
        digests = {"student": param_digest(student), "teacher": param_digest(loop.teacher)}
        backbone = loop.teacher.backbone
    (output_dir / f"param_digest_rank{rank}.json").write_text(json.dumps(digests))
    (output_dir / f"data_stats_rank{rank}.json").write_text(json.dumps(stream.state_dict(), indent=1))
    all_digests = [d for d in _gather_objects(accelerator, digests) if d["student"] is not None]
    all_streams = _gather_objects(accelerator, stream.state_dict())
    mpps_seen = sorted({float(k) for st in all_streams for k in st["mpp_counts"]})
    if any(d != all_digests[0] for d in all_digests):
        raise RuntimeError(f"parameters differ across ranks at the end of training: {all_digests}")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if t_args.export:
            from pathfm.training.export import export_teacher

            final_loss = loop.losses[-1] if loop.losses else None
            card_info = loop.card.info(loop.state, final_loss, loop.last_metrics, mpps_seen)
            summary["export"] = str(export_teacher(backbone, output_dir / "model", card_info))
            if t_args.push_to_hub:
                from pathfm.training.hub import push_to_hub

                summary["hub_url"] = str(
                    push_to_hub(summary["export"], t_args.hub_model_id, token=t_args.hub_token)
                )
        (output_dir / "train_summary.json").write_text(json.dumps(summary, indent=1))
        print(next_steps(output_dir, summary), flush=True)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def next_steps(output_dir: Path, summary: dict[str, Any]) -> str:
    """What the run wrote and what to run next (printed once by the main process at the end)."""
    lines = [f"done: {output_dir}"]
    if "export" in summary:
        model = Path(summary["export"])
        lines += [f"  model: {model} (model card: {model / 'README.md'})"]
    lines += [f"  logs:  {output_dir / 'logs'} (tensorboard --logdir {output_dir / 'logs'})"]
    lines += [f"  summary: {output_dir / 'train_summary.json'}"]
    if "hub_url" in summary:
        lines += [f"  Hub: {summary['hub_url']}"]
    if "export" in summary:
        model = summary["export"]
        lines += [
            "next:",
            f"  python evaluation/linear_probe.py --model {model} --task embedded_slides,embedded_tissue "
            f"--output_dir {output_dir / 'eval'}",
            f"  PATHFM_SPACE_MODEL={model} python spaces/app.py",
        ]
    return "\n".join(lines)


def _gather_objects(accelerator: Accelerator, obj: Any) -> list[Any]:
    return [obj] if accelerator.num_processes == 1 else gather_object([obj])


def _flat_for_tracker(cfg: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for group, values in cfg.items():
        for k, v in values.items():
            out[f"{group}/{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI entry point: ``[preset] [--key value ...]``."""
    model_args, data_args, training_args, preset_path = parse_config(argv)
    return train(model_args, data_args, training_args, preset_path)


# errors that describe the user's input or launch, printed as one line by `cli`
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NonFiniteLossError, WorldSizeMismatchError)
# of those, the ones a rank meets alone (its own slides gave no batch): that rank reports them
RANK_LOCAL_ERRORS = (EmptyTileStreamError,)


def cli(argv: list[str]) -> int:
    """Run :func:`main`; configuration and input errors print one line (no traceback) and return 2."""
    try:
        main(argv)
    except TrainingInterrupted as stopped:
        if os.environ.get("RANK", "0") == "0":
            print(stopped.message, file=sys.stderr)
        stopped.restore_signals()  # the stream is closed: nothing left that a second Ctrl-C must cut short
        return 128 + stopped.signum
    except KeyboardInterrupt:  # a second Ctrl-C while the first one's clean stop was unwinding
        if os.environ.get("RANK", "0") == "0":
            print("stopped at once by a second Ctrl-C; resume from the last checkpoint with the same flags and "
                  "--resume_from_checkpoint latest", file=sys.stderr)
        return 130
    except RANK_LOCAL_ERRORS as err:  # this rank's slides: the rank that has it reports it, named
        world = int(os.environ.get("WORLD_SIZE", "1"))
        where = f"rank {os.environ.get('RANK', '0')} of {world}: " if world > 1 else ""
        report_user_error(f"training/dino.py: error: {where}{err}", rank_local=True)
        return 2
    except USER_ERRORS as err:
        # every rank reaches the same error: rank 0 prints it, and the launcher's report names it
        report_user_error(f"training/dino.py: error: {err}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
