"""Refuse to resume a checkpoint with settings that change what the run computes.

A resumed run continues exactly (same losses as a run never stopped) only with the settings the checkpoint
was written with: the schedules are arrays over ``total_steps`` scaled by the global batch, the tile stream's
position counts batches of a given size over slide groups of a given shape, and the RNG states restored by
``load_state`` only replay the same draws if the same draws are asked for. So every config field is compared
with the checkpoint's ``config.yaml`` (``checkpointing.CONFIG_FILE``), and so are the number of processes and
the resolved mixed precision, except the fields of :data:`FREE_FLAGS`, which cannot change any number the
run computes:

- ``output_dir``, ``resume_from_checkpoint``, ``overwrite_output_dir``: where the run writes and which state
  it starts from (resuming another run's checkpoint into a new folder forks it);
- ``logging_steps``, ``report_to``, ``probe_size``: what is logged (the RankMe probe has its own seeded tile
  stream and runs the teacher without gradients);
- ``save_steps``, ``save_total_limit``, ``save_on_interrupt``: when checkpoints are written (``save_state``
  reads the state, never changes it);
- ``export``, ``push_to_hub``, ``hub_model_id``, ``hub_token``: what happens after the last step;
- ``expected_world_size``: a launch check (the number of processes itself is compared);
- ``reader_threads``: decoder threads inside one region read (the same pixels);
- ``mask_cache_dir``: where computed tissue masks are kept (a file is read back only when its key, which holds
  the slide's path, size, mtime and every mask setting, matches: the same mask);
- ``gradient_checkpointing``: the backward recomputes the same activations, drop path included
  (``torch.utils.checkpoint`` replays the RNG state), so it is the memory lever left after an out-of-memory
  stop (bit-exact on CPU: ``tests/training/test_train_resume.py``).

Compared although they look operational: ``num_workers`` sizes the stream's slide groups (one per rank x
DataLoader worker, ``datasets_scripts.builder.slide_groups``), so it changes which tile comes when;
``torch_compile``, ``optim``, ``attn_implementation``, ``sync_free_step``, ``mixed_precision`` and ``fsdp``
change the kernels and so the rounding of every step; ``pretrained_weights`` is overwritten by the checkpoint
but recorded in the model card.

A checkpoint written before checkpoints held ``config.yaml`` is compared with its run folder's
``config.yaml``; without either nothing is compared.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from pathfm.training.checkpointing import CHECKPOINTS_DIR, CONFIG_FILE

__all__ = ["FREE_FLAGS", "check_resume_config", "resume_command", "resume_differences", "saved_config_path"]

FREE_FLAGS = frozenset(
    {
        "output_dir",
        "resume_from_checkpoint",
        "overwrite_output_dir",
        "logging_steps",
        "report_to",
        "probe_size",
        "save_steps",
        "save_total_limit",
        "save_on_interrupt",
        "export",
        "push_to_hub",
        "hub_model_id",
        "hub_token",
        "expected_world_size",
        "reader_threads",
        "mask_cache_dir",
        "gradient_checkpointing",
    }
)
"""Config fields that may differ between a run and its resume (see the module docstring for why)."""

RUN_FACTS = {"world_size": "processes", "mixed_precision": "mixed precision (resolved)"}
"""Facts of the ``run:`` group compared too, with the words the message uses for them."""


def resume_command(config: str | Path, spec: str, world_size: int, on_cpu: bool) -> str:
    """The command that resumes a run: its saved ``config.yaml`` as the preset, launched as it was.

    Args:
        config: the checkpoint's (or run's) ``config.yaml``, or ``"... --output_dir DIR"`` when there is none.
        spec: ``--resume_from_checkpoint`` value (``latest`` or a checkpoint folder).
        world_size: processes the run had (the resume is refused with any other number).
        on_cpu: the run trained on CPU (several CPU processes need ``ACCELERATE_USE_CPU=true`` and
            ``--multi_gpu``: ``--cpu --num_processes N`` starts one process).

    Returns:
        e.g. ``ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 training/dino.py
        run/checkpoints/checkpoint-8/config.yaml --resume_from_checkpoint latest``.
    """
    launch = "accelerate launch"
    if world_size > 1:
        cpu = "ACCELERATE_USE_CPU=true " if on_cpu else ""
        launch = f"{cpu}accelerate launch --multi_gpu --num_processes {world_size}"
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        if 0 < local < world_size:  # several machines: their rank and address flags are the user's to repeat
            machines = world_size // local
            launch += f" --num_machines {machines} (and this run's --machine_rank, --main_process_ip)"
    return f"{launch} training/dino.py {config} --resume_from_checkpoint {spec}"


def saved_config_path(ckpt: Path) -> Path | None:
    """The config a checkpoint was written with: its own ``config.yaml``, else its run folder's, else None."""
    own, run = ckpt / CONFIG_FILE, ckpt.parent.parent / CONFIG_FILE
    if own.is_file():
        return own
    return run if ckpt.parent.name == CHECKPOINTS_DIR and run.is_file() else None


def resume_differences(saved: dict[str, Any], given: dict[str, Any]) -> list[str]:
    """The settings that differ, each as ``"--flag saved -> given"`` (``"processes 2 -> 1"`` for run facts).

    Args:
        saved: A run's ``config.yaml`` (``{"model": {...}, "data": {...}, "training": {...}, "run": {...}}``).
        given: The same layout for the run being started (``config.config_dict`` plus ``run`` facts).

    Fields missing on either side (a config written by another version) are not compared.
    """
    saved, given = _plain(saved), _plain(given)
    diffs = []
    for group in ("model", "data", "training"):
        old, new = saved.get(group) or {}, given.get(group) or {}
        for name in old.keys() & new.keys() - FREE_FLAGS:
            if old[name] != new[name]:
                diffs.append(f"--{name} {_show(old[name])} -> {_show(new[name])}")
    old_run, new_run = saved.get("run") or {}, given.get("run") or {}
    for name, words in RUN_FACTS.items():
        if name in old_run and name in new_run and old_run[name] != new_run[name]:
            diffs.append(f"{words} {_show(old_run[name])} -> {_show(new_run[name])}")
    return sorted(diffs)


def check_resume_config(ckpt: Path, spec: str, given: dict[str, Any]) -> None:
    """Refuse to resume ``ckpt`` with settings other than those it was written with.

    Args:
        ckpt: The resolved checkpoint folder.
        spec: ``--resume_from_checkpoint`` as given (``latest`` or the folder), repeated in the fix.
        given: The new run's config (:func:`resume_differences`).

    Raises:
        ValueError: One line naming each differing setting (saved -> given) and the command that resumes with
            the saved settings (the saved ``config.yaml`` is a preset ``training/dino.py`` reads).
    """
    path = saved_config_path(ckpt)
    if path is None:
        return
    saved = yaml.safe_load(path.read_text()) or {}
    diffs = resume_differences(saved, given)
    if not diffs:
        return
    saved_run, given_run = saved.get("run") or {}, given.get("run") or {}
    device = str(saved_run.get("device") or given_run.get("device") or "cpu")  # the saved run's, else ours
    command = resume_command(path, spec, int(saved_run.get("world_size") or 1), device.startswith("cpu"))
    new_out = (given.get("training") or {}).get("output_dir")
    if new_out is not None and new_out != (saved.get("training") or {}).get("output_dir"):
        command += f" --output_dir {new_out}"
    raise ValueError(
        f"--resume_from_checkpoint {spec}: {ckpt} was written with other settings ({', '.join(diffs)}); "
        f"they change what the run computes (schedules, tile stream or rounding), so it would not continue "
        f"exactly: resume with "
        f"the saved ones ({command}), or start a new run in another --output_dir"
    )


def _plain(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` as YAML reads it back (tuples -> lists), so that a saved and a live config compare."""
    return yaml.safe_load(yaml.safe_dump(config, sort_keys=False)) or {}


def _show(value: Any) -> str:
    """A value as it is typed on the command line (lists space-separated)."""
    if isinstance(value, list):
        return " ".join(str(v) for v in value) if value else "[]"
    return str(value)
