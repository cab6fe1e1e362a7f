"""MHIST (Wei et al. 2021): colorectal polyps, HP vs SSA, 3,152 images of 224 x 224 px.

Layout under ``--data_dir`` (images.zip extracted next to annotations.csv, as distributed)::

    images/*.png
    annotations.csv   columns: Image Name, Majority Vote Label (HP|SSA),
                      Number of Annotators who Selected SSA, Partition (train|test)

Split as eva: Partition == "train" -> train (2,175), Partition == "test" -> validation (977); no test split.
Label order: HP = 0, SSA = 1 (SSA, the precancerous class, is the positive class for AUROC; eva orders
SSA = 0, HP = 1, which does not change balanced accuracy).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import ClassVar

import numpy as np
from pathfm.evaluation.tasks.base import EvalTask, Sample, TaskDataError, read_rgb

COLUMNS = ("Image Name", "Majority Vote Label", "Partition")


class MHIST(EvalTask):
    """MHIST with the official train/test partition (test used as validation, as eva)."""

    TASK_NAME = "mhist"
    CLASS_NAMES = ("HP", "SSA")
    SPLIT_NAMES = ("train", "validation")
    EXPECTED_COUNTS: ClassVar[dict[str, int]] = {"train": 2_175, "validation": 977}
    DESCRIPTION = "MHIST colorectal polyps, HP vs SSA; official partition (test used as validation, as eva)."
    PARTITIONS: ClassVar[dict[str, str]] = {"train": "train", "validation": "test"}

    @classmethod
    def is_present(cls, data_dir: str | Path | None) -> bool:
        return data_dir is not None and (Path(data_dir) / "annotations.csv").is_file()

    def _list(self, split: str) -> list[Sample]:
        csv_path = self.root / "annotations.csv"
        images = self.root / "images"
        if not csv_path.is_file():
            raise TaskDataError(f"missing file {csv_path} (MHIST annotations)")
        if not images.is_dir():
            raise TaskDataError(f"missing folder {images} (MHIST images.zip extracted)")
        with open(csv_path, newline="") as fh:
            reader = csv.DictReader(fh)
            absent = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if absent:
                raise TaskDataError(f"{csv_path}: missing column(s) {absent}; found {reader.fieldnames}")
            rows = list(reader)
        samples, missing = [], []
        for line, row in enumerate(rows, start=2):
            if row["Partition"] not in self.PARTITIONS.values():
                raise TaskDataError(
                    f"{csv_path} line {line}: Partition {row['Partition']!r} is not train/test"
                )
            if row["Partition"] != self.PARTITIONS[split]:
                continue
            label = row["Majority Vote Label"]
            if label not in self.CLASS_NAMES:
                raise TaskDataError(
                    f"{csv_path} line {line}: label {label!r} is not one of {self.CLASS_NAMES}"
                )
            path = images / row["Image Name"]
            if not path.is_file():
                missing.append(path.name)
            samples.append(Sample(str(path), self.CLASS_NAMES.index(label)))
        if missing:
            raise TaskDataError(
                f"{images}: {len(missing)} image(s) listed in {csv_path.name} are missing, e.g. {missing[:5]}"
            )
        return samples

    def load_image(self, source: str) -> np.ndarray:
        return read_rgb(source)
