"""Evaluation tasks (``datasets`` builders) by CLI name."""

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


def task_root(name: str, data_dir: str | Path | None) -> Path | None:
    """Where task ``name`` reads from: ``data_dir/<name>`` when that holds its layout, else ``data_dir``."""
    if data_dir is None:
        return None
    nested = Path(data_dir) / name
    return nested if nested.is_dir() and TASKS[name].is_present(nested) else Path(data_dir)


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


__all__ = ["TASKS", "EvalTask", "Sample", "TaskDataError", "build_task", "present_tasks", "task_root"]
