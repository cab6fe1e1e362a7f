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
- ``config.yaml``: the run's resolved config (a copy of ``<output_dir>/config.yaml``): a resume with other
  settings is refused by ``resume_check``, and ``training/dino.py <checkpoint>/config.yaml`` repeats them;
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
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
import yaml
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
CONFIG_FILE = "config.yaml"  # the run's resolved config, copied into each checkpoint

logger = logging.getLogger("pathfm.dino")


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


def resolve_checkpoint(spec: str, output_dir: str | Path, save_steps: int | None = None) -> Path:
    """``latest`` -> newest complete checkpoint of ``output_dir``; otherwise the given folder.

    Args:
        spec: ``--resume_from_checkpoint``: ``latest`` or a checkpoint folder.
        output_dir: ``--output_dir`` (searched by ``latest``, named in the messages).
        save_steps: ``--save_steps``, named when ``latest`` finds nothing (None: not named).

    Raises:
        FileNotFoundError: One line naming what was found instead of a checkpoint (nothing, a run folder that
            has not saved one yet, an incomplete or foreign folder) and what to pass instead.
    """
    output_dir = Path(output_dir)
    flag = f"--resume_from_checkpoint {spec}"
    if spec == "latest":
        found = checkpoint_dirs(output_dir)
        if found:
            return found[-1]
        if not output_dir.is_dir():
            raise FileNotFoundError(
                f"{flag}: --output_dir {output_dir} does not exist; pass the --output_dir of the run to "
                "continue, or leave out --resume_from_checkpoint to start a new run"
            )
        cadence = {None: "", 0: " (--save_steps 0: at the end only)", -1: " (--save_steps -1: never)"}.get(
            save_steps, f" (every --save_steps {save_steps} steps and at the end)"
        )
        raise FileNotFoundError(
            f"{flag}: {output_dir} holds no complete checkpoint{_incomplete_note(output_dir)}: the run there "
            f"stopped before its first save{cadence}; run the same command without --resume_from_checkpoint "
            "to start it again (the folder is reused)"
        )
    path = Path(spec)
    if (path / COMPLETE_MARKER).is_file():
        return path
    raise FileNotFoundError(f"{flag}: {_not_a_checkpoint(path, output_dir)}")


def _incomplete_note(output_dir: Path) -> str:
    """`` (checkpoint-40 is incomplete: stopped while writing)`` or empty."""
    names = sorted(p.name for p in _incomplete_checkpoints(output_dir))
    if not names:
        return ""
    return f" ({', '.join(names)} {'is' if len(names) == 1 else 'are'} incomplete: stopped while writing)"


def _not_a_checkpoint(path: Path, output_dir: Path) -> str:
    """Why ``path`` is not a checkpoint folder, and what to pass instead."""
    if path.is_dir() and checkpoint_dirs(path):
        return (
            f"a run folder, not a checkpoint; pass --output_dir {path} --resume_from_checkpoint latest, or "
            f"its newest checkpoint {checkpoint_dirs(path)[-1]}"
        )
    in_run = path.parent.name == CHECKPOINTS_DIR  # <run>/checkpoints/<name>: suggest that run's checkpoints
    newest = checkpoint_dirs(path.parent.parent if in_run else output_dir)
    example = newest[-1] if newest else f"<output_dir>/{CHECKPOINTS_DIR}/{CHECKPOINT_PREFIX}<step>"
    instead = f"pass latest (with the run's --output_dir) or a folder such as {example}"
    if not path.exists():
        return f"no such file or folder; {instead}"
    if not path.is_dir():
        return f"a file, not a checkpoint folder; {instead}"
    if path.name == CHECKPOINTS_DIR and checkpoint_dirs(path.parent):
        newest = checkpoint_dirs(path.parent)
        return f"the {CHECKPOINTS_DIR}/ folder of a run, not one checkpoint; pass {newest[-1]}"
    if in_run and path.name.startswith(CHECKPOINT_PREFIX):
        return f"an incomplete checkpoint (no {COMPLETE_MARKER}: the run stopped while writing it); {instead}"
    return f"not a checkpoint folder written by training/dino.py (no {COMPLETE_MARKER} in it); {instead}"


RUN_FILES = (
    CONFIG_FILE,
    "metrics.jsonl",
    "train_summary.json",
    "param_digest_rank*.json",
    "data_stats_rank*.json",
)
"""Files of ``<output_dir>`` that belong to the run written there (besides ``checkpoints/``, ``model/`` and
:data:`TRACKER_DIR`)."""
# accelerate's trackers write to <logging_dir>/<project>: launch.make_accelerator's logs/, dino.train's "dino"
TRACKER_DIR = Path("logs") / "dino"


def prepare_output_dir(output_dir: Path, resume: str | None, overwrite: bool, is_main: bool) -> None:
    """Refuse to silently mix two runs in one folder, and start afresh over an attempt that saved nothing.

    A folder that holds a complete checkpoint or ``model/`` is a previous run: continue it with
    ``--resume_from_checkpoint``, replace it with ``--overwrite_output_dir`` (its files are deleted first, on
    the main process), or pick another ``--output_dir``. A folder whose run stopped before its first complete
    checkpoint (a one-line error or Ctrl-C during the first steps, a kill while saving) is started afresh: the
    earlier attempt's files are deleted (:data:`RUN_FILES`, :data:`TRACKER_DIR`, incomplete checkpoints), so
    that its tracker logs do not mix with the new run's. Only incomplete ``checkpoint-<step>`` folders are
    deleted where ``config.yaml`` is not one this script wrote.

    Raises:
        FileExistsError: The folder holds a run and neither flag was given.
    """
    if resume:
        return
    previous = [p for p in (output_dir / CHECKPOINTS_DIR, output_dir / "model") if p.exists()]
    holds_run = bool(checkpoint_dirs(output_dir)) or (output_dir / "model").exists()
    if holds_run and not overwrite:
        raise FileExistsError(
            f"{output_dir} already holds a run ({', '.join(p.name + '/' for p in previous)}): pass "
            f"--resume_from_checkpoint latest to continue it, --overwrite_output_dir to replace it, or "
            f"choose another --output_dir"
        )
    if not is_main:
        return
    leftovers = previous if holds_run else _incomplete_checkpoints(output_dir)
    if _written_by_us(output_dir / CONFIG_FILE):
        leftovers += [p for pattern in RUN_FILES for p in output_dir.glob(pattern)]
        leftovers += [output_dir / TRACKER_DIR] if (output_dir / TRACKER_DIR).is_dir() else []
    for path in leftovers:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    if leftovers and not holds_run:
        names = sorted(str(p.relative_to(output_dir)) for p in leftovers)
        logger.info("%s: starting afresh, removed an attempt that saved no checkpoint: %s", output_dir, names)


def _incomplete_checkpoints(output_dir: Path) -> list[Path]:
    """``checkpoint-<step>`` folders without :data:`COMPLETE_MARKER` (the run was killed while saving)."""
    root = output_dir / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    complete = set(checkpoint_dirs(output_dir))
    return [p for p in root.glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir() and p not in complete]


def _written_by_us(config: Path) -> bool:
    """Whether ``config`` is a run config of ``training/dino.py`` (``config.save_config``'s groups)."""
    try:
        data = yaml.safe_load(config.read_text()) if config.is_file() else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    training = data.get("training") if isinstance(data, dict) else None
    return isinstance(training, dict) and "output_dir" in training


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
        if (output_dir / CONFIG_FILE).is_file():  # what the run was started with: compared on resume
            shutil.copyfile(output_dir / CONFIG_FILE, ckpt / CONFIG_FILE)
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

