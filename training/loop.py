"""The training loop: per optimizer step set the schedules, run :func:`step.train_step`, log, checkpoint.

Mirrors ``train_one_epoch`` of facebookresearch/dino ``main_dino.py`` over a stream: an *epoch* is
``steps_per_epoch`` optimizer steps, and the loop runs from the resumed step to ``total_steps``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import Tensor, nn
from tqdm.auto import tqdm

from pathfm.training.checkpointing import CONFIG_FILE, TrainState, checkpoint_dirs, save_checkpoint
from pathfm.training.config import DINOModelArguments, DINOTrainingArguments
from pathfm.training.fast_paths import StepMeter
from pathfm.training.interrupt import StopFlag, TrainingInterrupted, should_save
from pathfm.training.mfu import throughput_logs
from pathfm.training.resume_check import resume_command
from pathfm.training.monitoring import check_collapse, rankme
from pathfm.training.run_card import RunCard
from pathfm.training.schedules import RunSchedules
from pathfm.training.step import NonFiniteLossError, StepOutput

logger = logging.getLogger("pathfm.dino")


@dataclass
class Loop:
    """Everything the loop touches, built by ``dino.train`` (prepared student and optimizer).

    ``objective`` (``objectives.DINOObjective`` / ``DINOv2Objective``) runs the step and names the per-rank
    state saved with each checkpoint; ``loss`` is its loss module (holding the center(s)).
    """

    accelerator: Accelerator
    objective: Any
    student: nn.Module
    teacher: nn.Module
    loss: nn.Module
    optimizer: torch.optim.Optimizer
    stream: Any
    augment: nn.Module
    schedules: RunSchedules
    state: TrainState
    m_args: DINOModelArguments
    t_args: DINOTrainingArguments
    card: RunCard
    output_dir: Path
    unreadable_slides: int
    probe: Tensor | None = None
    sync_free_step: bool = False  # fast_paths: loss and monitors read at logging / checkpoint steps only
    flops_per_image: float | None = None  # mfu.dino_flops_per_image, for MFU
    peak_flops: float | None = None  # one device's peak FLOP/s, for MFU
    losses: list[float] = field(default_factory=list)
    last_metrics: dict[str, float] = field(default_factory=dict)
    last_good: Path | None = None


class _Timer:
    """Data-wait and compute seconds and images since the last log line."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.data = self.compute = 0.0
        self.start, self.images = time.perf_counter(), 0


def run_loop(loop: Loop) -> None:
    """Train from ``loop.state.step`` to ``total_steps``; fills ``losses``, ``last_metrics``, ``last_good``.

    Raises:
        NonFiniteLossError: The loss or the teacher's probe embeddings became NaN/Inf.
        TrainingInterrupted: SIGINT / SIGTERM received; every rank stopped after the same step. The signal
            handlers stay installed until the caller calls its ``restore_signals``.
    """
    acc, t_args, state = loop.accelerator, loop.t_args, loop.state
    total = t_args.total_steps
    metrics_path = loop.output_dir / "metrics.jsonl"
    if acc.is_main_process and metrics_path.exists():
        cut_metrics(metrics_path, state.step)
    found = checkpoint_dirs(loop.output_dir)
    loop.last_good = found[-1] if found else None
    progress = tqdm(total=total, initial=state.step, disable=not acc.is_main_process, desc="dino")
    timer = _Timer()

    def next_crops() -> list[Tensor]:
        t0 = time.perf_counter()
        tiles = next(loop.stream)["pixel_values"].to(acc.device, non_blocking=True)
        timer.data += time.perf_counter() - t0
        return loop.augment(tiles)  # augmentation runs on the device: counted as compute

    loop.student.train()
    stop = StopFlag().install()
    interrupted = False
    try:
        _steps(loop, total, next_crops, timer, metrics_path, progress, stop)
    except TrainingInterrupted as stopped:
        # the stop's clean-up (closing the stream joins the workers) still runs under our handlers
        stopped.restore_signals, interrupted = stop.restore, True
        raise
    finally:
        if not interrupted:
            stop.restore()
        progress.close()


def _stop_requested(acc: Accelerator, stop: StopFlag) -> int:
    """The signal any rank received (0: none); every rank gets the same answer, so all stop together."""
    if acc.num_processes == 1:
        return stop.signum
    flags = acc.gather(torch.tensor([stop.signum], device=acc.device))
    return int(flags.max().item())


def _steps(
    loop: Loop, total: int, next_crops: Any, timer: _Timer, metrics_path: Path, progress: Any, stop: StopFlag
) -> None:
    acc, t_args, state, sched = loop.accelerator, loop.t_args, loop.state, loop.schedules
    meter = StepMeter()
    while state.step < total:
        it = state.step
        log_now = (it + 1) % t_args.logging_steps == 0 or it + 1 == total or it == 0
        save_now = (t_args.save_steps > 0 and (it + 1) % t_args.save_steps == 0) or (
            it + 1 == total and t_args.save_steps >= 0
        )
        t_step, data_before = time.perf_counter(), timer.data
        out = loop.objective.step(
            acc,
            loop.student,
            loop.teacher,
            loop.loss,
            loop.optimizer,
            next_crops,
            sched,
            it,
            last_good=loop.last_good,
            sync_free=loop.sync_free_step,
            read_monitors=log_now or not loop.sync_free_step,
        )
        timer.compute += time.perf_counter() - t_step - (timer.data - data_before)
        state.step += 1
        state.tiles_seen += sched.global_batch
        timer.images += sched.global_batch
        if loop.sync_free_step:
            meter.add(out.loss, out.grad_norm)
            if log_now or save_now:  # a NaN never reaches a log line or a checkpoint
                out = read_window(loop, meter, out, it)
        else:
            loop.losses.append(out.loss)
        progress.update(1)
        if log_now:
            log_step(loop, it, out, timer, metrics_path, progress)
            timer.reset()
        if save_now:
            loop.last_good = _save(loop, out.loss)
        signum = _stop_requested(acc, stop)
        if signum:
            if loop.sync_free_step and not (log_now or save_now):  # never save an unchecked NaN
                out = read_window(loop, meter, out, it)
            _stop(loop, signum, out.loss)


def _save(loop: Loop, loss: float | Tensor) -> Path:
    """A checkpoint of the loop's state now (``checkpointing.save_checkpoint``)."""
    return save_checkpoint(
        loop.accelerator,
        loop.output_dir,
        loop.state,
        loop.stream,
        loop.t_args.save_total_limit,
        loop.teacher.backbone.config.to_dict(),
        loop.card.info(loop.state, loss, dict(loop.last_metrics)),
        rank_objects=loop.objective.rank_objects(),
        networks=(loop.student, loop.teacher, loop.optimizer),
    )


def _stop(loop: Loop, signum: int, loss: float) -> None:
    """Save (per ``--save_on_interrupt``) and raise :class:`TrainingInterrupted` on every rank."""
    state, t_args = loop.state, loop.t_args
    name = signal.Signals(signum).name
    saved_now = loop.last_good is not None and loop.last_good.name.endswith(f"-{state.step}")
    if should_save(signum, t_args.save_on_interrupt) and not saved_now:
        loop.last_good = _save(loop, loss)
    if loop.last_good is None:
        where = "none (nothing to resume; --save_on_interrupt saves one at the stop)"
        resume = "run the same command again to start afresh"
    else:
        where = str(loop.last_good)
        saved = loop.last_good / CONFIG_FILE  # the run's settings: a resume must repeat them (resume_check)
        flags = str(saved) if saved.is_file() else f"... --output_dir {loop.output_dir}"
        acc = loop.accelerator
        resume = "resume with: " + resume_command(flags, "latest", acc.num_processes, acc.device.type == "cpu")
    message = f"stopped by {name} at step {state.step}; last checkpoint {where}; {resume}"
    raise TrainingInterrupted(signum, message)


def read_window(loop: Loop, meter: StepMeter, out: StepOutput, it: int) -> StepOutput:
    """Sync-free step: read the losses since the last read from the device, stop on a non-finite one.

    Returns:
        ``out`` with host floats for the loss and grad norm of step ``it``.

    Raises:
        NonFiniteLossError: Naming the first step whose loss was NaN/Inf and the last good checkpoint.
    """
    window = meter.read()
    if window["first_nonfinite"] is not None:
        bad_step = it - (len(window["losses"]) - 1 - window["first_nonfinite"])
        raise NonFiniteLossError(
            f"loss is {window['losses'][window['first_nonfinite']]} at step {bad_step} (0-based optimizer "
            f"step); training stopped, last good checkpoint: {loop.last_good or 'none saved yet'}"
        )
    loop.losses.extend(window["losses"])
    return dataclasses.replace(out, loss=window["losses"][-1], grad_norm=window["grad_norm"])


def cut_metrics(metrics_path: Path, step: int) -> None:
    """Keep the rows of ``metrics.jsonl`` up to ``step`` (the resumed checkpoint; 0: a fresh run).

    A run killed after its last checkpoint logged steps that the resumed run logs again; without the cut they
    would appear twice.
    """
    if step == 0:
        metrics_path.unlink()
        return
    rows = [line for line in metrics_path.read_text().splitlines() if line.strip()]
    kept = [line for line in rows if json.loads(line)["step"] <= step]
    metrics_path.write_text("".join(line + "\n" for line in kept))


def log_step(loop: Loop, it: int, out: StepOutput, timer: _Timer, metrics_path: Path, progress: Any) -> None:
    """Log one row to the trackers and ``metrics.jsonl``; warn on collapse; RankMe on the probe batch."""
    acc, sched, state = loop.accelerator, loop.schedules, loop.state
    elapsed = time.perf_counter() - timer.start
    logs: dict[str, Any] = {
        "loss": out.loss,
        "lr": float(sched.lr[it]),
        "weight_decay": float(sched.weight_decay[it]),
        "momentum": float(sched.momentum[it]),
        "teacher_temp": float(sched.teacher_temp[it]),
        "grad_norm": out.grad_norm,
        "teacher_entropy": out.teacher_entropy,
        **{name: float(value) for name, value in out.terms.items()},
        **throughput_logs(
            timer.images,
            elapsed,
            timer.data,
            timer.compute,
            loop.flops_per_image,
            loop.peak_flops,
            acc.num_processes,
        ),
        "tiles_seen": state.tiles_seen,
        "epoch": it / loop.t_args.steps_per_epoch,
    }
    if acc.device.type == "cuda":  # this rank's peak since the start (DDP vs FSDP2: benchmarks/fsdp_gpu.py)
        logs["peak_memory_gib"] = torch.cuda.max_memory_allocated(acc.device) / 2**30
    collapse = check_collapse(out.teacher_entropy, loop.m_args.out_dim)
    if collapse and acc.is_main_process:
        logger.warning("step %d: %s", state.step, collapse)
    if loop.probe is not None:
        with torch.no_grad(), acc.autocast():
            emb = loop.teacher.backbone(pixel_values=loop.probe).pooler_output.float()
        if not torch.isfinite(emb).all():
            raise NonFiniteLossError(
                f"teacher embeddings are not finite after step {state.step}; training stopped, "
                f"last good checkpoint: {loop.last_good or 'none saved yet'}"
            )
        logs["rankme"] = rankme(emb)
        loop.last_metrics["rankme"] = logs["rankme"]
    # slides skipped: unreadable at start + failed mid-run (builder counters, summed over ranks)
    skip = loop.stream.stats()
    counts = [skip.get("corrupt_slides", 0), skip.get("no_tissue_slides", 0)]
    mid_run = torch.tensor(counts, device=acc.device)
    mid_run = acc.reduce(mid_run, reduction="sum").tolist()
    logs["unreadable_slides_start"] = loop.unreadable_slides
    logs["corrupt_slides_midrun"] = mid_run[0]
    logs["no_tissue_slides"] = mid_run[1]
    acc.log(logs, step=state.step)
    if acc.is_main_process:
        with metrics_path.open("a") as f:
            f.write(json.dumps({"step": state.step, **logs}) + "\n")
        progress.set_postfix(
            loss=f"{out.loss:.4f}",
            lr=f"{logs['lr']:.2e}",
            img_s=f"{logs['images_per_s']:.1f}",
            wait=f"{logs['data_wait_share']:.0%}",
            **({"mfu": f"{logs['mfu']:.1%}"} if "mfu" in logs else {}),
        )
