"""Embed the tissue tiles of each slide and write one file per slide as soon as it is done.

Per slide: pathfm's reader (``datasets_scripts.slide.open_slide``) and tissue mask, a grid of
``tile_size`` px tiles at ``mpp`` µm/px with tissue fraction >= ``min_tissue`` (eva: 0.35), at most
``max_tiles`` of them drawn with a seed derived from the slide id, embedded in batches with the frozen
backbone's ``pooler_output``. Only one slide's tiles and embeddings are held in memory, so peak RAM does not
grow with the number of slides (eva #537). A slide whose file exists is skipped (a killed run resumes); an
unreadable slide is skipped and counted.

Files: ``<folder>/<slide_id>.safetensors`` with ``embeddings`` (n, D) float32 and ``coords`` (n, 2) int64
level-0 (x, y) of each tile's top-left corner, plus ``<folder>/failed.json`` listing skipped slides.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
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
from torch.utils.data import DataLoader, Dataset


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
) -> list:
    """Up to ``max_tiles`` tissue grid tiles of one slide (seeded draw, kept in row-major order)."""
    with open_slide(path) as reader:
        coords = GridTileSampler(mpp=mpp, tile_size=tile_size, stride=stride, min_tissue=min_tissue).tiles(
            reader, compute_tissue_mask(reader)
        )
    if len(coords) > max_tiles:
        keep = np.random.default_rng(seed).choice(len(coords), max_tiles, replace=False)
        coords = [coords[i] for i in sorted(keep)]
    return coords


class SlideTiles(Dataset):
    """Map-style dataset over one slide's tiles: i -> uint8 (tile, tile, 3); one reader per worker."""

    def __init__(self, path: str, coords: Sequence, mpp: float, tile_size: int) -> None:
        self.path, self.coords, self.mpp, self.tile_size = path, list(coords), mpp, tile_size
        self.reader = None

    def __len__(self) -> int:
        return len(self.coords)

    def __getitem__(self, index: int) -> Tensor:
        if self.reader is None:
            self.reader = open_slide(self.path)
        c = self.coords[index]
        return torch.from_numpy(
            np.ascontiguousarray(self.reader.read_tile(c.x, c.y, self.tile_size, self.mpp))
        )


@torch.inference_mode()
def embed_one_slide(
    backbone: Backbone,
    path: str,
    coords: Sequence,
    mpp: float,
    tile_size: int,
    batch_size: int,
    num_workers: int = 0,
) -> Tensor:
    """(n, D) float32 embeddings of the given tiles; tiles read in ``num_workers`` DataLoader workers."""
    device = next(backbone.model.parameters()).device
    tiles = SlideTiles(path, coords, mpp, tile_size)
    loader = DataLoader(
        tiles, batch_size=batch_size, num_workers=num_workers, prefetch_factor=2 if num_workers else None
    )
    chunks = []
    try:
        for batch in loader:
            pixels = normalise(batch, backbone.processor).to(device)
            chunks.append(pool(backbone.model(pixel_values=pixels), "pooler_output").float().cpu())
    finally:
        if tiles.reader is not None:
            tiles.reader.close()
    return torch.cat(chunks)


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
) -> dict[str, int]:
    """Write ``<folder>/<slide_id>.safetensors`` for every slide not done yet.

    ``stride``: grid step in px at ``mpp`` (default: ``tile_size``, no overlap). ``num_workers`` DataLoader
    workers read each slide's tiles while the main process runs the forward pass.

    Returns:
        ``{"embedded": written now, "reused": found on disk, "failed": skipped (unreadable, no tissue)}``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    counts = {"embedded": 0, "reused": 0, "failed": 0}
    failed: dict[str, str] = {}
    for slide in slides:
        out = folder / f"{slide.slide_id}.safetensors"
        if out.is_file():
            counts["reused"] += 1
            continue
        try:
            coords = tile_coords(
                slide.path, mpp, tile_size, max_tiles, min_tissue, slide_seed(slide.slide_id, seed), stride
            )
            if not coords:
                raise SlideError(f"{slide.path}: no tile with tissue fraction >= {min_tissue} at {mpp} µm/px")
            embeddings = embed_one_slide(
                backbone, slide.path, coords, mpp, tile_size, batch_size, num_workers
            )
        except SlideError as err:
            failed[slide.slide_id] = str(err)
            counts["failed"] += 1
            continue
        xy = torch.tensor([[c.x, c.y] for c in coords], dtype=torch.int64)
        save_file({"embeddings": embeddings.contiguous(), "coords": xy}, str(out) + ".tmp")
        Path(str(out) + ".tmp").replace(out)
        counts["embedded"] += 1
    if failed:
        (folder / "failed.json").write_text(json.dumps(failed, indent=2))
    return counts
