"""Slide-level tasks for attention MIL: Camelyon16-small and PANDA-small (eva's ``*_small`` variants).

A task lists slides with one label each per split; tiles are drawn later by ``evaluation/mil/embed_slides``
at ``MPP`` (µm/px), ``TILE_SIZE`` px, at most ``TILES_PER_SLIDE`` per slide.

Layouts under ``data_dir``:
- Camelyon16: ``training/normal/*.tif``, ``training/tumor/*.tif``, ``testing/images/*.tif`` and
  ``testing/reference.csv`` (rows ``<slide>,<Normal|Tumor>,...``, no header). Validation: a seeded,
  stratified 20 % of the training slides (eva uses a fixed list of 54; ours is not that list).
- PANDA: ``train_images/<image_id>.tiff`` and ``train.csv`` (``image_id,data_provider,isup_grade,...``);
  seeded splits stratified by ISUP grade, 0.7 / 0.15 / 0.15.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from pathfm.evaluation.tasks.common import TaskDataError


@dataclass(frozen=True)
class SlideSample:
    """One slide: ``path`` (unique), ``slide_id`` (file stem) and class id ``target``."""

    path: str
    slide_id: str
    target: int


def stratified_split(targets: list[int], fractions: tuple[float, ...], seed: int) -> list[int]:
    """Split index (0..len(fractions)-1) per item: each class cut by ``fractions`` after a seeded shuffle."""
    rng = np.random.default_rng(seed)
    out = [0] * len(targets)
    for cls in sorted(set(targets)):
        idx = [i for i, t in enumerate(targets) if t == cls]
        rng.shuffle(idx)
        bounds = np.round(np.cumsum(fractions) * len(idx)).astype(int)
        for rank, i in enumerate(idx):
            out[i] = int(np.searchsorted(bounds, rank, side="right"))
    return out


class SlideTask:
    """Base class: subclasses implement ``_all`` -> {split: samples}.

    Args:
        data_dir: the task's folder; seed: seed of the derived splits.
    """

    TASK_NAME: ClassVar[str] = ""
    CLASS_NAMES: ClassVar[tuple[str, ...]] = ()
    SPLIT_NAMES: ClassVar[tuple[str, ...]] = ("train", "validation", "test")
    MPP: ClassVar[float] = 0.5
    TILE_SIZE: ClassVar[int] = 224
    TILES_PER_SLIDE: ClassVar[int] = 200
    METRICS: ClassVar[tuple[str, ...]] = ("balanced_accuracy", "auroc")

    def __init__(self, data_dir: str | Path | None, seed: int = 0) -> None:
        if data_dir is None:
            raise TaskDataError(f"task {self.TASK_NAME!r} needs --data_dir")
        self.root, self.seed = Path(data_dir), seed
        self._splits: dict[str, list[SlideSample]] | None = None

    @property
    def num_classes(self) -> int:
        """C."""
        return len(self.CLASS_NAMES)

    def _all(self) -> dict[str, list[SlideSample]]:
        raise NotImplementedError

    def list_samples(self, split: str) -> list[SlideSample]:
        """Slides of ``split`` sorted by id. Raises TaskDataError naming a missing file, or an empty split."""
        if split not in self.SPLIT_NAMES:
            raise ValueError(f"task {self.TASK_NAME!r} has splits {self.SPLIT_NAMES}, not {split!r}")
        if self._splits is None:
            self._splits = {k: sorted(v, key=lambda s: s.slide_id) for k, v in self._all().items()}
        if not self._splits.get(split):
            raise TaskDataError(f"{self.TASK_NAME}: split {split!r} under {self.root} has no slide")
        return self._splits[split]


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise TaskDataError(f"missing {path} ({what})")
    return path


class Camelyon16Small(SlideTask):
    """Camelyon16 metastasis detection, normal vs tumour, 1,000 tiles per slide at 0.25 µm/px."""

    TASK_NAME = "camelyon16_small"
    CLASS_NAMES = ("normal", "tumor")
    MPP = 0.25
    TILES_PER_SLIDE = 1000

    def _all(self) -> dict[str, list[SlideSample]]:
        train = []
        for target, name in enumerate(self.CLASS_NAMES):
            folder = _require(self.root / "training" / name, f"Camelyon16 {name} training slides")
            train += [SlideSample(str(p), p.stem, target) for p in sorted(folder.glob("*.tif"))]
        which = stratified_split([s.target for s in train], (0.8, 0.2), self.seed)
        images = _require(self.root / "testing" / "images", "Camelyon16 test slides")
        reference = _require(self.root / "testing" / "reference.csv", "test labels: <slide>,<Normal|Tumor>")
        labels = {}
        with reference.open() as fh:
            for row in csv.reader(fh):
                if len(row) < 2 or row[1].strip().lower() not in self.CLASS_NAMES:
                    raise TaskDataError(f"{reference}: row {row} is not '<slide>,<Normal|Tumor>,...'")
                labels[row[0].strip()] = self.CLASS_NAMES.index(row[1].strip().lower())
        test = []
        for p in sorted(images.glob("*.tif")):
            if p.stem not in labels:
                raise TaskDataError(f"{reference} has no label for test slide {p.name}")
            test.append(SlideSample(str(p), p.stem, labels[p.stem]))
        return {
            "train": [s for s, w in zip(train, which) if w == 0],
            "validation": [s for s, w in zip(train, which) if w == 1],
            "test": test,
        }


class PandaSmall(SlideTask):
    """PANDA prostate ISUP grade 0-5, 200 tiles per slide at 0.5 µm/px."""

    TASK_NAME = "panda_small"
    CLASS_NAMES = ("isup_0", "isup_1", "isup_2", "isup_3", "isup_4", "isup_5")
    MPP = 0.5
    TILES_PER_SLIDE = 200
    METRICS = ("balanced_accuracy", "auroc", "quadratic_kappa")

    def _all(self) -> dict[str, list[SlideSample]]:
        table = _require(self.root / "train.csv", "PANDA labels: image_id,data_provider,isup_grade,...")
        images = _require(self.root / "train_images", "PANDA slides <image_id>.tiff")
        slides = []
        with table.open() as fh:
            reader = csv.DictReader(fh)
            if not {"image_id", "isup_grade"} <= set(reader.fieldnames or []):
                raise TaskDataError(
                    f"{table}: needs columns image_id and isup_grade, has {reader.fieldnames}"
                )
            for row in reader:
                path = images / f"{row['image_id']}.tiff"
                if not path.is_file():
                    raise TaskDataError(f"{table} lists {row['image_id']} but {path} is missing")
                grade = int(row["isup_grade"])
                if not 0 <= grade <= 5:
                    raise TaskDataError(f"{table}: {row['image_id']} has isup_grade {grade}, not in 0..5")
                slides.append(SlideSample(str(path), row["image_id"], grade))
        which = stratified_split([s.target for s in slides], (0.7, 0.15, 0.15), self.seed)
        return {name: [s for s, w in zip(slides, which) if w == i] for i, name in enumerate(self.SPLIT_NAMES)}


SLIDE_TASKS = {cls.TASK_NAME: cls for cls in (Camelyon16Small, PandaSmall)}
