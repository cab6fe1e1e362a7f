"""Whole-slide view: thumbnail with the tissue mask, the sampled grid tiles, and the slide painted by the PCA
colours of its tile embeddings.

Pipeline (one file per step, pathfm.datasets_scripts underneath): ``open_slide`` -> ``thumbnail`` at a display
resolution -> ``compute_tissue_mask`` -> ``GridTileSampler(mpp, tile_size, min_tissue)`` -> ``read_tile`` ->
backbone ``pooler_output`` -> PCA (3 components) -> one colour per tile painted on the thumbnail.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw
from pathfm.datasets_scripts.samplers import GridTileSampler, TileCoord
from pathfm.datasets_scripts.slide import SlideError, open_slide
from pathfm.datasets_scripts.tissue import compute_tissue_mask
from pathfm.spaces.model_store import LoadedModel, embed_tiles
from pathfm.spaces.tile_views import pca_components, scores_to_rgb

THUMBNAIL_LONG_SIDE = 1024
"""Longest side of the displayed thumbnail in px."""

MASK_COLOUR = (0, 200, 80)
PAINT_ALPHA = 0.7

SLIDE_SUFFIXES = (
    ".svs",
    ".tif",
    ".tiff",
    ".ndpi",
    ".vms",
    ".vmu",
    ".scn",
    ".mrxs",
    ".svslide",
    ".bif",
    ".dcm",
)
"""File types OpenSlide reads (a .mrxs needs its data folder next to it, so it only works from disk)."""

ProgressFn = Callable[[float, str], None]


@dataclass
class SlideSettings:
    """What to sample from a slide.

    Attributes:
        mpp: Tile resolution in µm/px.
        tile_size: Tile side in px (the model input size).
        min_tissue: Minimum tissue fraction of a sampled tile (0-1).
        max_tiles: Cap on embedded tiles; a larger grid is thinned evenly (the painting then has gaps).
        mpp_override: Level-0 µm/px to use instead of the slide's metadata (None = metadata).
        batch_size: Tiles per forward pass.
    """

    mpp: float = 2.0
    tile_size: int = 224
    min_tissue: float = 0.4
    max_tiles: int = 256
    mpp_override: float | None = None
    batch_size: int = 32


@dataclass
class SlideAnalysis:
    """Everything the Slide tab shows.

    Attributes:
        slide_id: File stem.
        thumbnail: uint8 (h, w, 3) slide bounds at :attr:`thumbnail_mpp`.
        thumbnail_mpp: µm/px of the thumbnail.
        mask_overlay: uint8 (h, w, 3) thumbnail with the tissue mask tinted green and outlined.
        grid_overlay: uint8 (h, w, 3) thumbnail with the sampled tiles outlined.
        painted: uint8 (h, w, 3) thumbnail with each sampled tile filled with its PCA colour.
        coords: Sampled tiles (after thinning), row-major.
        tiles: uint8 (tile_size, tile_size, 3) pixels of up to ``keep_tiles`` sampled tiles (for display).
        tile_coords: The coordinates of :attr:`tiles`.
        embeddings: (len(coords), D) pooled embeddings.
        colours: uint8 (len(coords), 3) PCA colours.
        explained: (3,) explained-variance ratios of the PCA components.
        grid_total: Tiles the grid offered before thinning.
        tissue_fraction: Fraction of the thumbnail area that is tissue.
        notes: Messages for the page.
    """

    slide_id: str
    thumbnail: np.ndarray
    thumbnail_mpp: float
    mask_overlay: np.ndarray
    grid_overlay: np.ndarray
    painted: np.ndarray
    coords: list[TileCoord]
    tiles: list[np.ndarray]
    tile_coords: list[TileCoord]
    embeddings: np.ndarray
    colours: np.ndarray
    explained: np.ndarray
    grid_total: int
    tissue_fraction: float
    notes: list[str] = field(default_factory=list)


def thumbnail_mpp_for(
    bounds_wh: tuple[int, int], slide_mpp: float, long_side: int = THUMBNAIL_LONG_SIDE
) -> float:
    """µm/px at which the slide bounds fit ``long_side`` px (never finer than the slide itself).

    Args:
        bounds_wh: (width, height) of the slide bounds in level-0 px.
        slide_mpp: Level-0 µm/px.
        long_side: Target longest side in px.

    Returns:
        µm/px.
    """
    return max(slide_mpp, slide_mpp * max(bounds_wh) / long_side)


def mask_overlay(thumbnail: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Tint tissue green and draw its outline.

    Args:
        thumbnail: uint8 (h, w, 3).
        mask: bool (mh, mw), covering the same area; resized to (h, w) by nearest neighbour.

    Returns:
        uint8 (h, w, 3).
    """
    height, width = thumbnail.shape[:2]
    resized = np.asarray(
        PIL.Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), PIL.Image.NEAREST)
    )
    tissue = resized > 127
    out = thumbnail.astype(np.float32)
    out[tissue] = 0.65 * out[tissue] + 0.35 * np.array(MASK_COLOUR, dtype=np.float32)
    edge = tissue ^ _erode(tissue)
    out[edge] = MASK_COLOUR
    return out.round().astype(np.uint8)


def _erode(mask: np.ndarray) -> np.ndarray:
    """One-pixel binary erosion with a 3 x 3 cross (pure numpy)."""
    padded = np.pad(mask, 1, constant_values=False)
    return padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]


def tile_boxes(
    coords: list[TileCoord], origin: tuple[int, int], slide_mpp: float, thumbnail_mpp: float
) -> list[tuple[float, float, float, float]]:
    """Thumbnail-pixel boxes (x0, y0, x1, y1) of level-0 tiles.

    Args:
        coords: Tiles (x, y level-0 px; ``tile_size`` px at ``mpp``).
        origin: Level-0 (x, y) of the thumbnail's top-left (the slide bounds' origin).
        slide_mpp: Level-0 µm/px.
        thumbnail_mpp: µm/px of the thumbnail.

    Returns:
        One box per tile.
    """
    scale = slide_mpp / thumbnail_mpp
    boxes = []
    for c in coords:
        side = c.tile_size * c.mpp / thumbnail_mpp
        x0, y0 = (c.x - origin[0]) * scale, (c.y - origin[1]) * scale
        boxes.append((x0, y0, x0 + side, y0 + side))
    return boxes


def draw_boxes(thumbnail: np.ndarray, boxes: list[tuple[float, float, float, float]]) -> np.ndarray:
    """Outline boxes in blue on a copy of the thumbnail. Returns uint8 (h, w, 3)."""
    image = PIL.Image.fromarray(thumbnail.copy())
    draw = PIL.ImageDraw.Draw(image)
    for x0, y0, x1, y1 in boxes:
        draw.rectangle(
            (round(x0), round(y0), max(round(x0), round(x1) - 1), max(round(y0), round(y1) - 1)),
            outline=(30, 60, 220),
            width=1,
        )
    return np.asarray(image)


def paint_boxes(
    thumbnail: np.ndarray, boxes: list[tuple[float, float, float, float]], colours: np.ndarray
) -> np.ndarray:
    """Fill boxes with colours (opacity :data:`PAINT_ALPHA`) over a faded thumbnail.

    Args:
        thumbnail: uint8 (h, w, 3).
        boxes: Thumbnail-pixel boxes.
        colours: uint8 (len(boxes), 3).

    Returns:
        uint8 (h, w, 3); pixels outside every box are the thumbnail faded halfway to white.
    """
    base = thumbnail.astype(np.float32) * 0.5 + 127.5
    out = base.copy()
    height, width = thumbnail.shape[:2]
    for (x0, y0, x1, y1), colour in zip(boxes, colours):
        c0, r0 = max(0, math.floor(x0)), max(0, math.floor(y0))
        c1, r1 = min(width, max(c0 + 1, math.ceil(x1))), min(height, max(r0 + 1, math.ceil(y1)))
        out[r0:r1, c0:c1] = (1 - PAINT_ALPHA) * base[r0:r1, c0:c1] + PAINT_ALPHA * colour.astype(np.float32)
    return out.round().clip(0, 255).astype(np.uint8)


def analyze_slide(
    path: str | Path,
    loaded: LoadedModel,
    settings: SlideSettings,
    progress: ProgressFn | None = None,
    keep_tiles: int = 24,
) -> SlideAnalysis:
    """Run the whole-slide pipeline.

    Args:
        path: Slide file.
        loaded: Backbone.
        settings: Sampling settings.
        progress: Called with (fraction in [0, 1], description) as the work advances.
        keep_tiles: Tiles whose pixels are returned for display (evenly spread over the sampled ones).

    Returns:
        :class:`SlideAnalysis`.

    Raises:
        SlideError: unreadable / corrupt slide, or one without mpp and no override (message names the file).
        ValueError: a tile mpp finer than the slide supports.
    """
    report = progress or (lambda fraction, desc: None)
    report(0.0, "opening slide")
    with open_slide(path, mpp=settings.mpp_override) as reader:
        if not reader.supports_mpp(settings.mpp):
            raise ValueError(
                f"{Path(path).name}: {settings.mpp} µm/px is finer than the slide's native {reader.mpp:.3g} "
                "µm/px; pick a coarser tile mpp."
            )
        bx, by, bw, bh = reader.bounds
        thumb_mpp = thumbnail_mpp_for((bw, bh), reader.mpp)
        report(0.02, "thumbnail")
        thumbnail = reader.thumbnail(thumb_mpp)
        report(0.08, "tissue mask")
        mask = compute_tissue_mask(reader)
        overlay = mask_overlay(thumbnail, mask.mask)
        coords = GridTileSampler(settings.mpp, settings.tile_size, min_tissue=settings.min_tissue).tiles(
            reader, mask
        )
        notes = []
        grid_total = len(coords)
        if grid_total == 0:
            raise SlideError(
                f"{Path(path).name}: no tile at {settings.mpp} µm/px has ≥ {settings.min_tissue:.0%} tissue "
                "(the tissue mask found too little tissue); lower the minimum tissue or the mpp."
            )
        if grid_total > settings.max_tiles:
            idx = np.linspace(0, grid_total - 1, settings.max_tiles).round().astype(int)
            coords = [coords[i] for i in idx]
            notes.append(
                f"The grid has {grid_total} tissue tiles; {len(coords)} evenly spread ones are shown."
            )
        keep = set(np.linspace(0, len(coords) - 1, min(keep_tiles, len(coords))).round().astype(int).tolist())
        embeddings, kept_tiles, kept_coords = [], [], []
        for start in range(0, len(coords), settings.batch_size):
            batch_coords = coords[start : start + settings.batch_size]
            batch = [reader.read_tile(c.x, c.y, settings.tile_size, settings.mpp) for c in batch_coords]
            kept_tiles += [tile for i, tile in enumerate(batch, start) if i in keep]
            kept_coords += [c for i, c in enumerate(batch_coords, start) if i in keep]
            embeddings.append(embed_tiles(loaded, batch, batch_size=settings.batch_size).pooled)
            done = start + len(batch_coords)
            report(0.1 + 0.85 * done / len(coords), f"embedding tiles {done}/{len(coords)}")
        embeddings_array = np.concatenate(embeddings)
        scores, explained = pca_components(embeddings_array, 3)
        colours = scores_to_rgb(scores)
        boxes = tile_boxes(coords, (bx, by), reader.mpp, thumb_mpp)
        tissue_fraction = float(mask.mask.mean())
        slide_id = reader.slide_id
    report(1.0, "done")
    return SlideAnalysis(
        slide_id=slide_id,
        thumbnail=thumbnail,
        thumbnail_mpp=thumb_mpp,
        mask_overlay=overlay,
        grid_overlay=draw_boxes(overlay, boxes),
        painted=paint_boxes(thumbnail, boxes, colours),
        coords=coords,
        tiles=kept_tiles,
        tile_coords=kept_coords,
        embeddings=embeddings_array,
        colours=colours,
        explained=explained,
        grid_total=grid_total,
        tissue_fraction=tissue_fraction,
        notes=notes,
    )
