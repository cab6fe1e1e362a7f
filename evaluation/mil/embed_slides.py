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


def slide_seed(slide_id: str, seed: int) -> int:
    """A seed per slide, stable across runs and processes (not Python's salted ``hash``)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{slide_id}".encode()).digest()[:8], "little")


def tile_coords(path: str, mpp: float, tile_size: int, max_tiles: int, min_tissue: float, seed: int) -> list:
    """Up to ``max_tiles`` tissue grid tiles of one slide (seeded draw, kept in row-major order)."""
    with open_slide(path) as reader:
        coords = GridTileSampler(mpp=mpp, tile_size=tile_size, min_tissue=min_tissue).tiles(
            reader, compute_tissue_mask(reader)
        )
    if len(coords) > max_tiles:
        keep = np.random.default_rng(seed).choice(len(coords), max_tiles, replace=False)
        coords = [coords[i] for i in sorted(keep)]
    return coords


@torch.inference_mode()
def embed_one_slide(
    backbone: Backbone, path: str, coords: Sequence, mpp: float, tile_size: int, batch_size: int
) -> Tensor:
    """(n, D) float32 embeddings of the given tiles, read batch by batch."""
    device = next(backbone.model.parameters()).device
    chunks = []
    with open_slide(path) as reader:
        for start in range(0, len(coords), batch_size):
            batch = [reader.read_tile(c.x, c.y, tile_size, mpp) for c in coords[start : start + batch_size]]
            pixels = normalise(torch.from_numpy(np.stack(batch)), backbone.processor).to(device)
            chunks.append(pool(backbone.model(pixel_values=pixels), "pooler_output").float().cpu())
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
) -> dict[str, int]:
    """Write ``<folder>/<slide_id>.safetensors`` for every slide not done yet.

    Returns:
        ``{"embedded": n written now, "reused": n found on disk, "failed": n skipped (unreadable or no tissue)}``.
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
            coords = tile_coords(slide.path, mpp, tile_size, max_tiles, min_tissue, slide_seed(slide.slide_id, seed))
            if not coords:
                raise SlideError(f"{slide.path}: no tile with tissue fraction >= {min_tissue} at {mpp} µm/px")
            embeddings = embed_one_slide(backbone, slide.path, coords, mpp, tile_size, batch_size)
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
