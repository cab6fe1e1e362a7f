"""Evaluation tasks (``datasets`` builders) by CLI name; :mod:`pathfm.evaluation.tasks` exposes these names
lazily."""

from __future__ import annotations

from pathlib import Path

from pathfm.evaluation.tasks.bach import BACH
from pathfm.evaluation.tasks.base import EvalTask, Sample, TaskDataError
from pathfm.evaluation.tasks.crc import CRC
from pathfm.evaluation.tasks.embedded import EmbeddedSlides, EmbeddedTissue
from pathfm.evaluation.tasks.mhist import MHIST
from pathfm.evaluation.tasks.pcam import PatchCamelyon

TASKS: dict[str, type[EvalTask]] = {
    cls.TASK_NAME: cls for cls in (EmbeddedSlides, EmbeddedTissue, BACH, CRC, MHIST, PatchCamelyon)
}


FOLDER_NAMES: dict[str, tuple[str, ...]] = {"pcam": ("pcam", "patch_camelyon")}
"""Sub-folders of ``--data_dir`` searched per task (besides ``data_dir`` itself): the task name, plus eva's
folder name where it differs (eva keeps PCam under ``data/patch_camelyon``)."""


def task_folders(name: str) -> tuple[str, ...]:
    """Sub-folder names of ``--data_dir`` that may hold task ``name``."""
    return FOLDER_NAMES.get(name, (name,))


def task_root(name: str, data_dir: str | Path | None) -> Path | None:
    """Where task ``name`` reads from: ``data_dir/<folder>`` (see :func:`task_folders`) when that holds its
    layout, else ``data_dir``."""
    if data_dir is None:
        return None
    for folder in task_folders(name):
        nested = Path(data_dir) / folder
        if nested.is_dir() and TASKS[name].is_present(nested):
            return nested
    return Path(data_dir)


def absent_tasks(data_dir: str | Path | None) -> dict[str, str]:
    """Tasks ``--task all`` skips, each with the reason (where its layout was looked for)."""
    reasons = {}
    for name in TASKS:
        if TASKS[name].is_present(task_root(name, data_dir)):
            continue
        if data_dir is None:
            reasons[name] = "needs --data_dir"
        else:
            folders = ", ".join(f"{data_dir}/{folder}" for folder in task_folders(name))
            reasons[name] = f"its layout is not in {data_dir} nor {folders}"
    return reasons


def build_task(name: str, data_dir: str | Path | None = None, check_counts: bool = True) -> EvalTask:
    """Instantiate task ``name`` on ``data_dir`` (or ``data_dir/<name>``).

    Raises:
        ValueError: unknown task name.
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; available: {sorted(TASKS)} or 'all'")
    root = task_root(name, data_dir)
    return TASKS[name](data_dir=str(root) if root is not None else None, check_counts=check_counts)


def present_tasks(data_dir: str | Path | None) -> list[str]:
    """Tasks whose data is found (``--task all``): the embedded tasks plus every benchmark under data_dir."""
    return [name for name in TASKS if TASKS[name].is_present(task_root(name, data_dir))]


__all__ = [
    "TASKS",
    "EvalTask",
    "Sample",
    "TaskDataError",
    "absent_tasks",
    "build_task",
    "present_tasks",
    "task_folders",
    "task_root",
]
