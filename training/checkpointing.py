"""The checkpoint layout of a training run: one module decides what is saved, where, and how it is read back.

Layout of ``<output_dir>/checkpoints/checkpoint-<step>/`` (``Accelerator.save_state`` plus our files):

- ``model.safetensors`` / ``optimizer.bin`` / ``random_states_<rank>.pkl``: the prepared student, the
  optimizer and the RNG states of every process (accelerate);
- ``custom_checkpoint_<i>.pkl``: the objects of :data:`REGISTERED`, in that order (teacher, loss, state);
- ``data_state_rank<r>.json``: each rank's tile-stream position (``TileBatchStream.state_dict``);
- ``<name>_state_rank<r>.json``: each rank's other per-rank objects (the objective's ``rank_objects``, e.g.
  ``masks``: the iBOT mask generator's RNG), which ``save_state`` would keep from the main process only;
- ``pathfm_checkpoint.json``: backbone config, card facts and the teacher's file + key prefix, so that
  ``training/export.py --checkpoint`` never guesses which file holds the teacher;
- ``train_complete.json``: written last; folders without it are ignored by ``latest``.

Sharded runs (FSDP2, ``training/sharding.py``) keep no full copy of any network, so the networks go to
``torch.distributed.checkpoint`` (DCP) folders, each rank writing its own shards, and ``save_state`` holds
only the RNG states and :data:`REGISTERED_SHARDED` (``custom_checkpoint_0.pkl`` loss, ``_1`` state):

- ``sharded_student/``: ``{"model": student, "optimizer": AdamW state}`` (``get_state_dict``);
- ``sharded_teacher/``: the teacher's ``backbone.*`` / ``head.*`` keys (``pathfm_checkpoint.json`` names it;
  ``export.py --checkpoint`` reads it on one process).

A sharded checkpoint is resumed by a sharded run; DCP reshards on load, so the number of processes may change
only together with the data-stream files (one per rank), which it may not.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from accelerate import Accelerator
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)
from torch.optim import Optimizer

from pathfm.training.sharding import is_sharded

CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_PREFIX = "checkpoint-"
COMPLETE_MARKER = "train_complete.json"
# objects passed to ``register_for_checkpointing``, in this order; accelerate names their files by position
REGISTERED = ("teacher", "loss", "state")
REGISTERED_SHARDED = ("loss", "state")  # sharded runs: the teacher goes to SHARDED_TEACHER
TEACHER_PREFIX = "backbone."  # the teacher's file holds the MultiCropWrapper: backbone.* and head.* keys
SHARDED_STUDENT = "sharded_student"
SHARDED_TEACHER = "sharded_teacher"


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


def register(accelerator: Accelerator, **objects: Any) -> None:
    """``register_for_checkpointing`` the objects named in :data:`REGISTERED`, in that order.

    Raises:
        ValueError: The names differ from :data:`REGISTERED`.
    """
    if set(objects) != set(REGISTERED):
        raise ValueError(f"checkpointing.register: expected objects {REGISTERED}, got {sorted(objects)}")
    names = REGISTERED_SHARDED if is_sharded(objects["teacher"]) else REGISTERED
    accelerator.register_for_checkpointing(*(objects[name] for name in names))


def teacher_file(sharded: bool = False) -> str:
    """Name of the file (sharded: DCP folder) that holds the teacher in a checkpoint."""
    return SHARDED_TEACHER if sharded else f"custom_checkpoint_{REGISTERED.index('teacher')}.pkl"


def save_sharded(ckpt: Path, student: nn.Module, teacher: nn.Module, optimizer: Optimizer) -> None:
    """Write the student + optimizer and the teacher as DCP folders, each rank its shards. Collective."""
    model_state, optim_state = get_state_dict(student, optimizer)
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(ckpt / SHARDED_STUDENT))
    dcp.save(get_model_state_dict(teacher), checkpoint_id=str(ckpt / SHARDED_TEACHER))


def load_sharded(ckpt: Path, student: nn.Module, teacher: nn.Module, optimizer: Optimizer) -> None:
    """Read :func:`save_sharded` folders into the sharded networks and optimizer (in place). Collective.

    Raises:
        FileNotFoundError: The checkpoint was written by a run without ``--fsdp``.
    """
    if not (ckpt / SHARDED_STUDENT).is_dir():
        raise FileNotFoundError(
            f"{ckpt}: no {SHARDED_STUDENT}/ folder: the checkpoint was written without --fsdp; resume it "
            "without --fsdp"
        )
    model_state, optim_state = get_state_dict(student, optimizer)  # fills every parameter's AdamW state
    # parameters without AdamW state when saved (the head's last layer during its freeze: grad None, so
    # never stepped) must stay without it, as in the run that was not interrupted (AdamW's step count)
    saved = dcp.FileSystemReader(str(ckpt / SHARDED_STUDENT)).read_metadata().state_dict_metadata
    optim_state["state"] = {
        fqn: value for fqn, value in optim_state["state"].items() if f"optimizer.state.{fqn}.step" in saved
    }
    state = {"model": model_state, "optimizer": optim_state}
    dcp.load(state, checkpoint_id=str(ckpt / SHARDED_STUDENT))
    # strict=False lets those parameters stay without state; dcp.load above already failed on any missing
    # weight, so the model is complete
    set_state_dict(
        student,
        optimizer,
        model_state_dict=state["model"],
        optim_state_dict=state["optimizer"],
        options=StateDictOptions(strict=False),
    )
    teacher_state = get_model_state_dict(teacher)
    dcp.load(teacher_state, checkpoint_id=str(ckpt / SHARDED_TEACHER))
    set_model_state_dict(teacher, teacher_state)


def checkpoint_dirs(output_dir: str | Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first (by step number)."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir()
        and p.name.startswith(CHECKPOINT_PREFIX)
        and p.name[len(CHECKPOINT_PREFIX) :].isdigit()
        and (p / COMPLETE_MARKER).exists()
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
    if not (path / COMPLETE_MARKER).exists():
        raise FileNotFoundError(
            f"--resume_from_checkpoint {spec}: not a complete checkpoint folder of this script "
            f"(no {COMPLETE_MARKER})"
        )
    return path


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


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: Path,
    state: TrainState,
    stream: Any,
    save_total_limit: int,
    teacher_config: dict[str, Any] | None = None,
    card_info: dict[str, Any] | None = None,
    rank_objects: dict[str, Any] | None = None,
    networks: tuple[nn.Module, nn.Module, Optimizer] | None = None,
) -> Path:
    """``save_state`` to ``<output_dir>/checkpoints/checkpoint-<step>`` plus each rank's data-stream state.

    With ``teacher_config``, ``export.save_export_metadata`` also writes ``pathfm_checkpoint.json`` naming
    :func:`teacher_file` so that ``python training/export.py --checkpoint DIR`` can export any checkpoint.
    ``networks`` (student, teacher, optimizer): when sharded, they are written by :func:`save_sharded`.

    Returns:
        The checkpoint folder.
    """
    ckpt = output_dir / CHECKPOINTS_DIR / f"{CHECKPOINT_PREFIX}{state.step}"
    sharded = networks is not None and is_sharded(networks[1])
    accelerator.save_state(str(ckpt))  # models, optimizer, RNG of every process, registered objects
    if sharded:
        save_sharded(ckpt, *networks)
    (ckpt / f"data_state_rank{accelerator.process_index}.json").write_text(json.dumps(stream.state_dict()))
    for name, obj in (rank_objects or {}).items():
        (ckpt / f"{name}_state_rank{accelerator.process_index}.json").write_text(json.dumps(obj.state_dict()))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if teacher_config is not None:
            from pathfm.training.export import save_export_metadata

            save_export_metadata(
                ckpt,
                teacher_config,
                card_info,
                teacher_file=teacher_file(sharded),
                teacher_prefix=TEACHER_PREFIX,
            )
        (ckpt / COMPLETE_MARKER).write_text(json.dumps(state.state_dict()))
        if save_total_limit > 0:
            for old in checkpoint_dirs(output_dir)[:-save_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return ckpt


def load_checkpoint(
    accelerator: Accelerator,
    spec: str,
    output_dir: Path,
    stream: Any,
    rank_objects: dict[str, Any] | None = None,
    networks: tuple[nn.Module, nn.Module, Optimizer] | None = None,
) -> Path:
    """Restore a checkpoint (``latest`` or a folder): registered objects, RNG, this rank's stream,
    ``rank_objects`` (same names as given to :func:`save_checkpoint`) and sharded ``networks`` (student,
    teacher, optimizer) from :func:`save_sharded`'s folders.

    Raises:
        FileNotFoundError: No such checkpoint, it was written with another number of processes, or with
            another sharding.
    """
    ckpt = resolve_checkpoint(spec, output_dir)
    if networks is not None and is_sharded(networks[1]):
        load_sharded(ckpt, *networks)
    elif (ckpt / SHARDED_STUDENT).is_dir():
        raise FileNotFoundError(f"{ckpt}: a sharded checkpoint (written with --fsdp); resume it with --fsdp")
    accelerator.load_state(str(ckpt))
    data_state_file = ckpt / f"data_state_rank{accelerator.process_index}.json"
    if not data_state_file.exists():
        raise FileNotFoundError(
            f"{data_state_file} missing: the checkpoint was written by a run with another number of processes"
        )
    stream.load_state_dict(json.loads(data_state_file.read_text()))
    for name, obj in (rank_objects or {}).items():
        path = ckpt / f"{name}_state_rank{accelerator.process_index}.json"
        if not path.exists():
            raise FileNotFoundError(
                f"{path} missing: the checkpoint was written by another objective or number of processes"
            )
        obj.load_state_dict(json.loads(path.read_text()))
    return ckpt

