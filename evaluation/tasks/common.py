"""The light part of the task API: errors, samples, image reading and folder listing (numpy and PIL only).

Kept apart from :mod:`pathfm.evaluation.tasks.base` (whose builders subclass ``datasets`` classes) so that the
command lines can name tasks and errors in their ``--help`` and argument checks without importing
``datasets``; ``base`` re-exports every name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SPLITS = ("train", "validation", "test")


class TaskDataError(ValueError):
    """A task's data folder does not match the expected layout (the message names the path and the problem)."""


@dataclass(frozen=True)
class Sample:
    """One image of a task.

    Attributes:
        source: where the pixels come from (a file path, ``file.h5#index`` or ``slide@x,y``); unique per task.
        target: class id in [0, K).
    """

    source: str
    target: int


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 (H, W, 3) RGB.

    Raises:
        TaskDataError: unreadable file (message names it).
    """
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError) as err:
        raise TaskDataError(f"cannot read image {path}: {err}") from err


def list_class_folders(folder: Path, class_names: Sequence[str], extensions: tuple[str, ...]) -> list[Sample]:
    """Samples from ``folder/<class>/*<ext>``, classes in ``class_names`` order, files sorted by name.

    This is torchvision's ``make_dataset`` order, which eva's fixed index ranges (BACH) refer to.

    Raises:
        TaskDataError: ``folder`` or a class folder missing, an unexpected class folder, or a class folder with
            no image of the given extensions.
    """
    if not folder.is_dir():
        raise TaskDataError(f"missing folder {folder}")
    present = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    missing = [c for c in class_names if c not in present]
    unexpected = [c for c in present if c not in class_names]
    if missing or unexpected:
        raise TaskDataError(
            f"{folder}: expected class folders {list(class_names)}; missing {missing}, unexpected {unexpected}"
        )
    samples = []
    for target, name in enumerate(class_names):
        files = sorted(p for p in (folder / name).iterdir() if p.is_file() and p.suffix.lower() in extensions)
        if not files:
            raise TaskDataError(f"class folder {folder / name} holds no {'/'.join(extensions)} file")
        samples.extend(Sample(str(p), target) for p in files)
    return samples
