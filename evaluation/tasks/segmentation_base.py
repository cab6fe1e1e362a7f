"""Common shape of a semantic segmentation task: list (image, label) pairs per split, validate, load.

Unlike the classification tasks (``base.EvalTask``, one class id per image), a sample's target is a mask of
class ids, int64 (H, W), with class 0 the background and ``IGNORE_INDEX`` (if any) for pixels that are not
scored. The runner (``evaluation/segmentation/runner.py``) cuts images into tiles and caches patch-token
grids per tile.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from pathfm.evaluation.tasks.common import TaskDataError, read_rgb


@dataclass(frozen=True)
class SegSample:
    """One image and its annotation file (``image`` unique per task)."""

    image: str
    label: str


class SegmentationTask:
    """Base class: subclasses set the class attributes and implement ``_list`` and ``load_mask``.

    Args:
        data_dir: the task's folder (official layout).
        check_counts: enforce the official number of images per split (False for miniature layouts).

    Class attributes:
        TASK_NAME, CLASS_NAMES (background first), IGNORE_INDEX (class id not scored, or None),
        SPLIT_NAMES (train, validation), EXPECTED_COUNTS, MPP (µm/px of the images), DESCRIPTION.
    """

    TASK_NAME: ClassVar[str] = ""
    CLASS_NAMES: ClassVar[tuple[str, ...]] = ()
    IGNORE_INDEX: ClassVar[int | None] = None
    SPLIT_NAMES: ClassVar[tuple[str, ...]] = ("train", "validation")
    EXPECTED_COUNTS: ClassVar[dict[str, int]] = {}
    MPP: ClassVar[float] = 0.25
    DESCRIPTION: ClassVar[str] = ""

    def __init__(self, data_dir: str | Path | None, check_counts: bool = True) -> None:
        if data_dir is None:
            raise TaskDataError(f"task {self.TASK_NAME!r} needs --data_dir")
        self.root = Path(data_dir)
        self.check_counts = check_counts
        self._samples: dict[str, list[SegSample]] = {}

    @property
    def num_classes(self) -> int:
        """K, background and any ignored class included."""
        return len(self.CLASS_NAMES)

    def _list(self, split: str) -> list[SegSample]:
        raise NotImplementedError

    def load_mask(self, sample: SegSample) -> np.ndarray:
        """Class ids int64 (H, W) of one sample."""
        raise NotImplementedError

    def load_image(self, sample: SegSample) -> np.ndarray:
        """uint8 (H, W, 3) RGB."""
        return read_rgb(sample.image)

    def list_samples(self, split: str) -> list[SegSample]:
        """Validated samples of ``split``, sorted by image path.

        Raises:
            ValueError: unknown split.
            TaskDataError: missing folder or annotation file (named), empty split, counts off.
        """
        if split not in self.SPLIT_NAMES:
            raise ValueError(f"task {self.TASK_NAME!r} has splits {self.SPLIT_NAMES}, not {split!r}")
        if split not in self._samples:
            samples = sorted(self._list(split), key=lambda s: s.image)
            if not samples:
                raise TaskDataError(f"{self.TASK_NAME}: split {split!r} under {self.root} has no image")
            missing = [s.label for s in samples if not Path(s.label).is_file()]
            if missing:
                raise TaskDataError(
                    f"{self.TASK_NAME}: annotation file {missing[0]} is missing ({len(missing)} in all); "
                    "every image needs its annotation file next to it in the official layout"
                )
            expected = self.EXPECTED_COUNTS.get(split)
            if self.check_counts and expected is not None and len(samples) != expected:
                raise TaskDataError(
                    f"{self.TASK_NAME}: split {split!r} under {self.root} has {len(samples)} images, "
                    f"expected "
                    f"{expected} (incomplete download? check_counts=False skips this for miniature layouts)"
                )
            self._samples[split] = samples
        return self._samples[split]

    def load(self, sample: SegSample) -> tuple[np.ndarray, np.ndarray]:
        """(image uint8 (H, W, 3), mask int64 (H, W)).

        Raises:
            TaskDataError: unreadable file, or image and mask of different sizes (both named).
        """
        image, mask = self.load_image(sample), self.load_mask(sample)
        if image.shape[:2] != mask.shape:
            raise TaskDataError(
                f"{self.TASK_NAME}: {sample.label} is {mask.shape[1]}x{mask.shape[0]} px but its image "
                f"{sample.image} is {image.shape[1]}x{image.shape[0]} px"
            )
        return image, mask


def require_folder(folder: Path, what: str) -> Path:
    """``folder`` if it is a directory, else TaskDataError naming it and ``what`` it should hold."""
    if not folder.is_dir():
        raise TaskDataError(f"missing folder {folder} ({what})")
    return folder
