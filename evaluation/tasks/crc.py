"""CRC (NCT-CRC-HE-100K + CRC-VAL-HE-7K, Kather et al. 2018): 9 tissue classes, 224 x 224 px at 0.5 µm/px.

Layout under ``--data_dir`` (the two official zips, https://zenodo.org/records/1214456, extracted as is)::

    NCT-CRC-HE-100K/{ADI,BACK,DEB,LYM,MUC,MUS,NORM,STR,TUM}/*.tif   (100,000 images: train)
    CRC-VAL-HE-7K/{ADI,BACK,DEB,LYM,MUC,MUS,NORM,STR,TUM}/*.tif     (7,180 images: validation)

As eva: train on NCT-CRC-HE-100K (the Macenko-normalised version), validate on CRC-VAL-HE-7K; no test split
(eva ``classification/crc.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
from pathfm.evaluation.tasks.base import EvalTask, Sample, list_class_folders, read_rgb


class CRC(EvalTask):
    """NCT-CRC-HE-100K (train) / CRC-VAL-HE-7K (validation)."""

    TASK_NAME = "crc"
    CLASS_NAMES = ("ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM")
    SPLIT_NAMES = ("train", "validation")
    EXPECTED_COUNTS: ClassVar[dict[str, int]] = {"train": 100_000, "validation": 7_180}
    DESCRIPTION = "CRC: NCT-CRC-HE-100K (train) and CRC-VAL-HE-7K (validation), 9 colorectal tissue classes."
    FOLDERS: ClassVar[dict[str, str]] = {"train": "NCT-CRC-HE-100K", "validation": "CRC-VAL-HE-7K"}

    @classmethod
    def is_present(cls, data_dir: str | Path | None) -> bool:
        return data_dir is not None and any((Path(data_dir) / f).is_dir() for f in cls.FOLDERS.values())

    def _list(self, split: str) -> list[Sample]:
        return list_class_folders(self.root / self.FOLDERS[split], self.CLASS_NAMES, (".tif", ".tiff"))

    def load_image(self, source: str) -> np.ndarray:
        return read_rgb(source)
