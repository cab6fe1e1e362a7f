"""Evaluation tasks (``datasets`` builders) by CLI name.

The registry (:mod:`.registry`) imports every task, hence ``datasets``; its names are loaded on first use
(PEP 562 ``__getattr__``) so that importing a light submodule (``tasks.common``, ``tasks.slide_mil``) or
printing a command line's ``--help`` does not pay for it. :data:`TASK_NAMES` lists the probe tasks without
importing them (a test checks it against the registry).
"""

from __future__ import annotations

import importlib
from typing import Any

TASK_NAMES = ("embedded_slides", "embedded_tissue", "bach", "crc", "mhist", "pcam")
"""``--task`` names of the probe tasks, in the registry's order."""

_REGISTRY_NAMES = (
    "TASKS", "EvalTask", "Sample", "TaskDataError", "absent_tasks", "build_task", "present_tasks",
    "task_folders", "task_root",
)  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _REGISTRY_NAMES:
        return getattr(importlib.import_module("pathfm.evaluation.tasks.registry"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["TASK_NAMES", *_REGISTRY_NAMES]
