"""CoNSeP nuclear segmentation (Graham et al. 2019, HoVer-Net), as eva's ``CoNSeP`` dataset reads it.

Layout under ``data_dir``: ``Train/Images/*.png``, ``Train/Labels/<stem>.mat`` (27 images) and the same under
``Test/`` (14 images, used as the validation split, as eva does); 1000 x 1000 px at 0.25 µm/px. Each ``.mat``
holds ``type_map`` (H, W) with raw types 0..7; types 3 and 4 merge to epithelial, 5, 6 and 7 to spindle
(eva 0.4.5 ``eva/vision/data/datasets/segmentation/consep.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
from pathfm.evaluation.tasks.common import TaskDataError
from pathfm.evaluation.tasks.segmentation_base import SegmentationTask, SegSample, require_folder

# raw type id -> class id: 0 background, 1 other, 2 inflammatory, 3/4 epithelial, 5/6/7 spindle-shaped
RAW_TO_CLASS = np.array([0, 1, 2, 3, 3, 4, 4, 4], dtype=np.int64)


class CoNSeP(SegmentationTask):
    """CoNSeP: 4 nucleus classes + background."""

    TASK_NAME = "consep"
    CLASS_NAMES = ("background", "other", "inflammatory", "epithelial", "spindle-shaped")
    EXPECTED_COUNTS: ClassVar[dict[str, int]] = {"train": 27, "validation": 14}
    MPP = 0.25
    DESCRIPTION = "CoNSeP colorectal nuclei, 4 classes + background (Train 27 / Test 14 images, 0.25 µm/px)."
    FOLDERS: ClassVar[dict[str, str]] = {"train": "Train", "validation": "Test"}

    def _list(self, split: str) -> list[SegSample]:
        base = require_folder(self.root / self.FOLDERS[split], "CoNSeP's {Train,Test}/{Images,Labels}")
        images = require_folder(base / "Images", "the .png images")
        labels = require_folder(base / "Labels", "the .mat labels with type_map")
        return [SegSample(str(p), str(labels / f"{p.stem}.mat")) for p in images.glob("*.png")]

    def load_mask(self, sample: SegSample) -> np.ndarray:
        try:
            import scipy.io  # here, not at import: the segmentation --help names this task

            content = scipy.io.loadmat(sample.label)
        except (OSError, ValueError) as err:
            raise TaskDataError(f"consep: cannot read {sample.label}: {err}") from err
        if "type_map" not in content:
            raise TaskDataError(f"consep: {sample.label} has no 'type_map' (keys {sorted(content)[:8]})")
        raw = np.asarray(content["type_map"]).astype(np.int64)
        if raw.ndim != 2 or raw.min() < 0 or raw.max() >= len(RAW_TO_CLASS):
            raise TaskDataError(
                f"consep: {sample.label} type_map must be 2-D with types 0..7, got shape {raw.shape}, "
                f"range {raw.min()}..{raw.max()}"
            )
        return RAW_TO_CLASS[raw]

    @classmethod
    def is_present(cls, data_dir: str | Path | None) -> bool:
        """Whether ``data_dir`` holds ``Train/Images``."""
        return data_dir is not None and (Path(data_dir) / "Train" / "Images").is_dir()
