"""Slide-level labels: a manifest of slides -> tissue-grid tiles -> one mean-pooled embedding per slide.

Manifest: a CSV / parquet table ``slide,label[,group][,split][,mpp]`` (slide paths relative to the
manifest; ``mpp`` overrides a slide's level-0 µm/px when its metadata has none). Each slide is tiled on the
tissue grid (``GridTileSampler``: ``TILE_SIZE`` px at ``--slide_mpp`` µm/px, tissue fraction >= 0.5), at
most ``max_tiles`` tiles evenly spaced in grid order; the slide's embedding is the mean of its tiles'
embeddings (no MIL head here). Tile embeddings are cached like any task's (split ``all``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from pathfm.evaluation.cohort_data import Cohort, _check_unique, _labels, _optional, _read_table
from pathfm.evaluation.tasks.base import EvalTask, Sample, TaskDataError

TILE_SIZE = 224
MIN_TISSUE = 0.5


class SlideTiles(EvalTask):
    """Tissue tiles of the manifest's slides as one ``all`` split; ``Sample.source`` is ``<row>@<x>,<y>``."""

    SPLIT_NAMES = ("all",)

    def __init__(self, manifest: SlideManifest) -> None:
        super().__init__(data_dir=manifest.file, check_counts=False)
        self.manifest = manifest
        self.TASK_NAME = f"slides-{Path(manifest.file).stem}-{manifest.fingerprint()}"
        self.CLASS_NAMES = manifest.class_names
        self._readers: dict[tuple[int, int], object] = {}

    def _list(self, split: str) -> list[Sample]:
        return [Sample(f"{row}@{x},{y}", int(self.manifest.labels[row])) for row, x, y in self.manifest.tiles]

    def load_image(self, source: str) -> np.ndarray:
        from pathfm.datasets_scripts.slide import open_slide

        row, xy = source.split("@")
        x, y = (int(v) for v in xy.split(","))
        key = (os.getpid(), int(row))  # one reader per process: open slides must not cross a fork
        if key not in self._readers:
            self._readers[key] = open_slide(self.manifest.paths[int(row)], mpp=self.manifest.mpps[int(row)])
        return self._readers[key].read_tile(x, y, TILE_SIZE, self.manifest.tile_mpp)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_readers"] = {}
        return state


class SlideManifest:
    """The slides of a manifest and their tissue tiles.

    Raises:
        TaskDataError: missing column or slide file, unknown label, a slide without tissue tiles (row named).
    """

    def __init__(self, file: str | Path, tile_mpp: float = 1.0, max_tiles: int = 64, class_names=None):
        from pathfm.datasets_scripts.samplers import GridTileSampler
        from pathfm.datasets_scripts.slide import open_slide
        from pathfm.datasets_scripts.tissue import compute_tissue_mask

        self.file, self.tile_mpp = str(file), tile_mpp
        df = _read_table(Path(file))
        missing = [c for c in ("slide", "label") if c not in df.columns]
        if missing:
            raise TaskDataError(
                f"{file}: missing column(s) {missing}; expected slide,label[,group][,split][,mpp]"
            )
        self.paths, self.mpps = [], []
        for row, value in enumerate(df["slide"], start=1):
            path = Path(str(value))
            path = path if path.is_absolute() else Path(file).parent / path
            if not path.is_file():
                raise TaskDataError(f"{file}: row {row}: slide {path} not found")
            self.paths.append(str(path))
            mpp = str(df["mpp"].iloc[row - 1]).strip() if "mpp" in df.columns else ""
            self.mpps.append(float(mpp) if mpp and mpp.lower() != "nan" else None)
        _check_unique(self.paths, Path(file))
        self.labels, self.class_names = _labels([str(v) for v in df["label"]], Path(file), class_names)
        self.groups, self.splits = _optional(df, "group"), _optional(df, "split")
        sampler = GridTileSampler(mpp=tile_mpp, tile_size=TILE_SIZE, min_tissue=MIN_TISSUE)
        self.tiles: list[tuple[int, int, int]] = []
        for row, (path, mpp) in enumerate(zip(self.paths, self.mpps)):
            try:
                with open_slide(path, mpp=mpp) as reader:
                    coords = sampler.tiles(reader, compute_tissue_mask(reader))
            except ValueError as err:
                raise TaskDataError(f"{file}: row {row + 1}: {path}: {err}") from err
            if not coords:
                raise TaskDataError(
                    f"{file}: row {row + 1}: {path} has no {TILE_SIZE} px tile at {tile_mpp} µm/px with tissue "
                    f">= {MIN_TISSUE}; check the slide or lower --slide_mpp"
                )
            step = max(1, len(coords)) / min(max_tiles, len(coords))
            self.tiles += [
                (row, coords[math.floor(i * step)].x, coords[math.floor(i * step)].y)
                for i in range(min(max_tiles, len(coords)))
            ]

    def fingerprint(self) -> str:
        """sha256 (12 hex) of slides, labels, tile mpp and tiles (embedding cache key)."""
        import hashlib
        import json

        payload = json.dumps([self.paths, self.labels.tolist(), self.tile_mpp, self.tiles])
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    def cohort(self, tile_embeddings: torch.Tensor) -> Cohort:
        """Mean-pool (T, D) tile embeddings (in ``tiles`` order) to a :class:`Cohort` of (S, D) slides."""
        rows = torch.as_tensor([t[0] for t in self.tiles])
        pooled = torch.zeros(len(self.paths), tile_embeddings.shape[1])
        pooled.index_add_(0, rows, tile_embeddings.float())
        pooled /= torch.bincount(rows, minlength=len(self.paths)).clamp(min=1)[:, None]
        return Cohort(
            Path(self.file).stem,
            self.file,
            self.paths,
            self.labels,
            self.class_names,
            self.groups,
            self.splits,
            pooled,
        )


def is_slide_manifest(path: str | Path) -> bool:
    """A .csv / .parquet table with a ``slide`` column."""
    path = Path(path)
    if path.suffix.lower() not in (".csv", ".parquet") or not path.is_file():
        return False
    return "slide" in _read_table(path).columns
