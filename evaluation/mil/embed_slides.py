"""Embed the tissue tiles of each slide and write one file per slide as soon as it is done.

Per slide: pathfm's reader (``datasets_scripts.slide.open_slide``) and tissue mask, a grid of
``tile_size`` px tiles at ``mpp`` µm/px with tissue fraction >= ``min_tissue`` (eva: 0.35), at most
``max_tiles`` of them drawn with a seed derived from the slide id, embedded in batches with the frozen
backbone's ``pooler_output``. Only the slides being read at the moment (one per DataLoader worker) have
tiles and embeddings in memory, so peak RAM does not grow with the number of slides (eva #537). A slide
whose file exists is skipped (a killed run resumes); an unreadable slide is skipped and counted.

Files: ``<folder>/<slide_id>.safetensors`` with ``embeddings`` (n, D) float32 and ``coords`` (n, 2) int64
level-0 (x, y) of each tile's top-left corner, plus ``<folder>/failed.json`` listing skipped slides.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pathfm.datasets_scripts.samplers import GridTileSampler
from pathfm.datasets_scripts.slide import SlideError, open_slide
from pathfm.datasets_scripts.tissue import compute_tissue_mask
from pathfm.evaluation.backbone import Backbone
from pathfm.evaluation.embed import pool
from pathfm.evaluation.segmentation.features import normalise
from pathfm.evaluation.tasks.slide_mil import SlideSample
from safetensors.torch import save_file
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info


def slide_seed(slide_id: str, seed: int) -> int:
    """A seed per slide, stable across runs and processes (not Python's salted ``hash``)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{slide_id}".encode()).digest()[:8], "little")


def tile_coords(
    path: str,
    mpp: float,
    tile_size: int,
    max_tiles: int,
    min_tissue: float,
    seed: int,
    stride: int | None = None,
    reader: str = "auto",
) -> list:
    """Up to ``max_tiles`` tissue grid tiles of one slide (seeded draw, kept in row-major order); ``reader``:
    one of :data:`pathfm.datasets_scripts.slide.READERS`."""
    with open_slide(path, reader=reader) as slide:
        coords = GridTileSampler(mpp=mpp, tile_size=tile_size, stride=stride, min_tissue=min_tissue).tiles(
            slide, compute_tissue_mask(slide)
        )
    if len(coords) > max_tiles:
        keep = np.random.default_rng(seed).choice(len(coords), max_tiles, replace=False)
        coords = [coords[i] for i in sorted(keep)]
    return coords


@dataclass
class _SlideJob:
    """One slide to embed: its position in the list, its sample and the seed of its tile draw."""

    index: int
    slide: SlideSample
    seed: int


class SlideBatches(IterableDataset):
    """Batches of the slides' tiles, each slide read whole by one DataLoader worker.

    Worker ``w`` of ``W`` takes slides ``w, w + W, ...``: it draws the slide's tiles (tissue mask, grid,
    seeded draw: :func:`tile_coords`) and yields ``(index, coords, tiles uint8 (b, tile, tile, 3), done)``
    batches, ``done`` on the slide's last one, or ``(index, [], None, message)`` for a slide it cannot read.
    The workers live for the whole list, so one slide's tile draw and reading overlap the forward pass of
    the others, and no worker pool restarts at each slide.
    """

    def __init__(
        self, jobs: list[_SlideJob], mpp: float, tile_size: int, max_tiles: int, min_tissue: float,
        batch_size: int, stride: int | None, reader: str = "auto",
    ) -> None:  # fmt: skip
        self.jobs, self.mpp, self.tile_size, self.max_tiles = jobs, mpp, tile_size, max_tiles
        self.min_tissue, self.batch_size, self.stride, self.reader = min_tissue, batch_size, stride, reader

    def __iter__(self) -> Iterator[tuple]:
        info = get_worker_info()
        mine = self.jobs if info is None else self.jobs[info.id :: info.num_workers]
        for job in mine:
            yield from self._slide(job)

    def _slide(self, job: _SlideJob) -> Iterator[tuple]:
        path = job.slide.path
        try:
            coords = tile_coords(
                path, self.mpp, self.tile_size, self.max_tiles, self.min_tissue, job.seed, self.stride,
                self.reader,
            )
            if not coords:
                tissue, mpp = self.min_tissue, self.mpp
                raise SlideError(f"{path}: no tile with tissue fraction >= {tissue} at {mpp} µm/px")
            with open_slide(path, reader=self.reader) as slide:
                for start in range(0, len(coords), self.batch_size):
                    part = coords[start : start + self.batch_size]
                    tiles = np.stack([slide.read_tile(c.x, c.y, self.tile_size, self.mpp) for c in part])
                    done = start + self.batch_size >= len(coords)
                    yield job.index, [(c.x, c.y) for c in part], torch.from_numpy(tiles), done
        except SlideError as err:
            yield job.index, [], None, str(err)


@torch.inference_mode()
def embed_batches(backbone: Backbone, batches: Iterable[tuple], folder: Path, jobs: list[_SlideJob]) -> dict:
    """Forward each batch, and write a slide's file as soon as its last batch is done.

    Only the slides being read at the moment (at most one per worker) hold embeddings in memory.

    Returns:
        ``{"embedded": n, "failed": {slide_id: message}}``.
    """
    device = next(backbone.model.parameters()).device
    chunks: dict[int, list[Tensor]] = {}
    xy: dict[int, list] = {}
    embedded, failed = 0, {}
    for index, coords, tiles, done in batches:
        slide_id = jobs[index].slide.slide_id
        if tiles is None:  # unreadable: drop what was embedded of it
            failed[slide_id] = done
            chunks.pop(index, None), xy.pop(index, None)
            continue
        pixels = normalise(tiles, backbone.processor).to(device)
        embedding = pool(backbone.model(pixel_values=pixels), "pooler_output").float().cpu()
        chunks.setdefault(index, []).append(embedding)
        xy.setdefault(index, []).extend(coords)
        if done:
            out = folder / f"{slide_id}.safetensors"
            record = {"embeddings": torch.cat(chunks.pop(index)).contiguous()}
            record["coords"] = torch.tensor(xy.pop(index), dtype=torch.int64)
            save_file(record, str(out) + ".tmp")
            Path(str(out) + ".tmp").replace(out)  # a killed run never leaves a half-written slide file
            embedded += 1
    return {"embedded": embedded, "failed": failed}


def embed_slides(
    backbone: Backbone,
    slides: Sequence[SlideSample],
    folder: str | Path,
    mpp: float,
    tile_size: int = 224,
    max_tiles: int = 1000,
    min_tissue: float = 0.35,
    batch_size: int = 64,
    seed: int = 0,
    num_workers: int = 0,
    stride: int | None = None,
    reader: str = "auto",
) -> dict[str, int]:
    """Write ``<folder>/<slide_id>.safetensors`` for every slide not done yet.

    ``stride``: grid step in px at ``mpp`` (default: ``tile_size``, no overlap). ``num_workers`` DataLoader
    workers draw and read whole slides (:class:`SlideBatches`) while the main process runs the forward pass;
    0 reads in the main process. ``reader``: ``auto`` (the default, as in training: stored JPEG tiles of
    TIFF/SVS pyramids decoded directly, OpenSlide for other formats), ``tiff`` or ``openslide``.

    Returns:
        ``{"embedded": written now, "reused": found on disk, "failed": skipped (unreadable, no tissue)}``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    jobs, reused = [], 0
    for slide in slides:
        if (folder / f"{slide.slide_id}.safetensors").is_file():
            reused += 1
            continue
        jobs.append(_SlideJob(len(jobs), slide, slide_seed(slide.slide_id, seed)))
    data = SlideBatches(jobs, mpp, tile_size, max_tiles, min_tissue, batch_size, stride, reader)
    workers = min(num_workers, len(jobs))
    loader = DataLoader(
        data, batch_size=None, num_workers=workers, prefetch_factor=2 if workers else None
    )  # batch_size=None: the dataset yields whole batches, one slide's each
    result = embed_batches(backbone, loader, folder, jobs)
    if result["failed"]:
        (folder / "failed.json").write_text(json.dumps(result["failed"], indent=2))
    return {"embedded": result["embedded"], "reused": reused, "failed": len(result["failed"])}
