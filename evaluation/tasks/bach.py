"""BACH (ICIAR 2018 breast cancer histology photos): 4 classes, 400 images of 2048 x 1536 px.

Layout under ``--data_dir`` (the official zip, https://zenodo.org/records/3632035, extracted as is)::

    ICIAR2018_BACH_Challenge/Photos/{Benign,InSitu,Invasive,Normal}/*.tif   (100 images per class)

Split: eva's fixed, patient-safe index ranges over the 400 images in torchvision ``make_dataset`` order
(classes alphabetically, files sorted): 268 train / 132 validation; no test split
(kaiko-ai/eva ``src/eva/vision/data/datasets/classification/bach.py``, ``_train_index_ranges`` /
``_val_index_ranges``). In a miniature layout with n != 400 images, image i takes the split of index
floor(i * 400 / n), which keeps the per-class train/validation pattern.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
from pathfm.evaluation.tasks.base import EvalTask, Sample, TaskDataError, list_class_folders, read_rgb

TRAIN_INDEX_RANGES = ((0, 41), (59, 60), (90, 139), (169, 240), (258, 260), (273, 345), (368, 400))
VAL_INDEX_RANGES = ((41, 59), (60, 90), (139, 169), (240, 258), (260, 273), (345, 368))
FULL_SIZE = 400


def split_of_index(index: int, total: int = FULL_SIZE) -> str:
    """``"train"`` or ``"validation"`` for image ``index`` of ``total`` (eva's ranges, rescaled if total != 400)."""
    position = index if total == FULL_SIZE else (index * FULL_SIZE) // total
    if any(lo <= position < hi for lo, hi in TRAIN_INDEX_RANGES):
        return "train"
    if any(lo <= position < hi for lo, hi in VAL_INDEX_RANGES):
        return "validation"
    raise ValueError(f"index {index} of {total} is in no BACH split range")


class BACH(EvalTask):
    """BACH photos, eva's patient-safe split (see module docstring)."""

    TASK_NAME = "bach"
    CLASS_NAMES = ("Benign", "InSitu", "Invasive", "Normal")
    SPLIT_NAMES = ("train", "validation")
    EXPECTED_COUNTS: ClassVar[dict[str, int]] = {"train": 268, "validation": 132}
    DESCRIPTION = "BACH (ICIAR 2018) breast histology photos, 4 classes; eva's patient-safe 268/132 split."
    FOLDER = Path("ICIAR2018_BACH_Challenge") / "Photos"

    @classmethod
    def is_present(cls, data_dir: str | Path | None) -> bool:
        return data_dir is not None and (Path(data_dir) / cls.FOLDER).is_dir()

    def _list(self, split: str) -> list[Sample]:
        samples = list_class_folders(self.root / self.FOLDER, self.CLASS_NAMES, (".tif", ".tiff"))
        if self.config.check_counts and len(samples) != FULL_SIZE:
            raise TaskDataError(
                f"{self.root / self.FOLDER} holds {len(samples)} .tif images, expected {FULL_SIZE} (100 per class)"
            )
        return [s for i, s in enumerate(samples) if split_of_index(i, len(samples)) == split]

    def load_image(self, source: str) -> np.ndarray:
        return read_rgb(source)
