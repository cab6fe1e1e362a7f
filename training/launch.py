"""The Accelerator of a run: device, precision, trackers, and a check that the launch gave the expected
number of processes."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration

from pathfm.training.config import DINOTrainingArguments
from pathfm.training.launch_check import expected_world_size
from pathfm.training.sharding import fsdp_mode, fsdp_plugin


class WorldSizeMismatchError(RuntimeError):
    """Raised when the number of processes differs from what the launch asked for."""


def use_cuda() -> bool:
    """CUDA is used when present unless ``ACCELERATE_USE_CPU`` is set."""
    return torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_CPU", "").lower() not in {"1", "true"}


def resolved_mixed_precision(t_args: DINOTrainingArguments) -> str:
    """``auto`` -> bf16 on GPU, fp32 (``no``) on CPU; any other value as given."""
    if t_args.mixed_precision != "auto":
        return t_args.mixed_precision
    return "bf16" if use_cuda() else "no"


def trackers(t_args: DINOTrainingArguments) -> list[str] | None:
    """``--report_to`` as accelerate's ``log_with`` list (None for ``none``)."""
    if t_args.report_to in {"none", ""}:
        return None
    return [s.strip() for s in t_args.report_to.split(",")]


def make_accelerator(t_args: DINOTrainingArguments) -> Accelerator:
    """The run's Accelerator, refusing a launch whose world size differs from the expected one.

    With ``--fsdp`` (or an ``accelerate launch --use_fsdp --fsdp_version 2`` launch) the Accelerator
    carries ``sharding.fsdp_plugin``.

    Raises:
        ValueError: ``--fsdp`` on a CPU launch.
        WorldSizeMismatchError: ``accelerate launch`` started another number of processes than expected
            (``--expected_world_size``, the launch's ``--num_processes`` or ``WORLD_SIZE``).
    """
    output_dir = Path(t_args.output_dir)
    mode = fsdp_mode(t_args.fsdp)
    if mode and not use_cuda():
        raise ValueError(
            f"--fsdp {mode}: FSDP2 sharding runs on GPUs only (Accelerate keeps CPU launches on DDP); "
            "drop --fsdp on CPU"
        )
    accelerator = Accelerator(
        fsdp_plugin=fsdp_plugin(mode, resolved_mixed_precision(t_args)) if mode else None,
        gradient_accumulation_steps=t_args.gradient_accumulation_steps,
        mixed_precision=resolved_mixed_precision(t_args),
        cpu=not use_cuda(),
        log_with=trackers(t_args),
        project_config=ProjectConfiguration(
            project_dir=str(output_dir), logging_dir=str(output_dir / "logs")
        ),
    )
    expected = expected_world_size(t_args.expected_world_size)
    if accelerator.num_processes != expected:
        # a wrong launch (--cpu --num_processes 2 without --multi_gpu) silently runs one process: refuse it
        raise WorldSizeMismatchError(
            f"world size mismatch: accelerate runs {accelerator.num_processes} process(es) but {expected} "
            f"were expected (--expected_world_size, the launch's --num_processes, or WORLD_SIZE); check the "
            f"accelerate launch flags (on CPU: ACCELERATE_USE_CPU=true accelerate launch --multi_gpu "
            f"--num_processes N)"
        )
    return accelerator
