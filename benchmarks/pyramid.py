"""The TCGA-like pyramid the benchmarks stream (``gpu.py``, ``tiles.py``): one generator, seconds to write.

Level 0 is ``side`` px wide and ``side - side % 4`` px high, of real H&E: the tissue-dense strip of the
embedded CMU-1-Small-Region (x 512-1792 px, y 512-2816 px at level 0, ~60 % tissue, 1280 x 2304 px: 5 x 9
stored tiles) repeated. Levels 1 and 2 are a quarter and a sixteenth of that (floor): the same strip
box-reduced 4x / 16x (320 x 576, 80 x 144 px) and repeated, i.e. the box reduction of level 0 up to the last
partial period. OpenSlide's downsample of a level is the mean of its width and height ratios, so a side that
is not a multiple of 4 gives non-integer downsamples as in Aperio files (20,005 px: 4.0001 / 16.0036 against
Aperio's typical 4.0001 / 16.0016): tiles at 1 and 2 µm/px come from level 1 with a fractional offset, and
their level extent (255.99 / 511.99 px) is within 0.01 output px of 256 / 512, as on real slides. Because the
content is periodic, each level has only 5 x 9 distinct 256 px tiles: they are JPEG-encoded once (quality 85,
YCbCr 4:2:0 with a JFIF marker, tifffile's default for JPEG) and written as pre-compressed tiles, so a
20,005 px pyramid (~6,300 level-0 tiles, ~125 MB) takes seconds and little memory instead of ~50 s and ~4 GB
for encoding the full image. Resolution tags say 0.25 µm/px; the pixels are the embedded slide's 0.5 µm/px
tissue, so this measures reading and decoding, not histology at 40x.
"""

from __future__ import annotations

from pathlib import Path

TISSUE_SLIDE = Path(__file__).resolve().parents[1] / "data" / "slides" / "CMU-1-Small-Region.svs"
TILE = 256
PERIOD = (2304, 1280)  # (h, w) level-0 px of the repeated strip: whole stored tiles at every level


def _level_tiles(block, width: int, height: int):
    """Pre-compressed tiles (row-major) of a level: ``block`` repeated over ``width`` x ``height`` px."""
    import imagecodecs
    import numpy as np

    bh, bw = block.shape[:2]
    rows, cols = -(-PERIOD[0] // TILE), -(-PERIOD[1] // TILE)  # distinct tile rows / columns (9 x 5)
    big = np.tile(block, (-(-rows * TILE // bh), -(-cols * TILE // bw), 1))[: rows * TILE, : cols * TILE]
    encoded = [
        [
            bytes(
                imagecodecs.jpeg8_encode(big[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE], level=85)
            )
            for c in range(cols)
        ]
        for r in range(rows)
    ]
    for ty in range(-(-height // TILE)):
        for tx in range(-(-width // TILE)):
            yield encoded[ty % rows][tx % cols]


def make_pyramid(folder: Path, side: int, links: int) -> Path:
    """Write ``folder/tcga_like_pyramid.tiff`` (see the module docstring) and ``links`` symlinks to it.

    Args:
        folder: output folder.
        side: level-0 width in px (the height is ``side - side % 4``).
        links: symlinks ``folder/shards/slide_NN.tiff`` (one shard per data worker).

    Returns:
        The folder holding the links.
    """
    import numpy as np
    import openslide
    import tifffile
    from PIL import Image

    with openslide.OpenSlide(str(TISSUE_SLIDE)) as slide:
        strip = np.asarray(slide.read_region((512, 512), 0, PERIOD[::-1]).convert("RGB"))
    path = folder / "tcga_like_pyramid.tiff"
    with tifffile.TiffWriter(path, bigtiff=side > 16_000) as tw:
        for i, factor in enumerate((1, 4, 16)):
            block = np.asarray(
                Image.fromarray(strip).resize(
                    (PERIOD[1] // factor, PERIOD[0] // factor), Image.Resampling.BOX
                )
            )
            width, height = side // factor, (side - side % 4) // factor
            res = 1e4 / (0.25 * side / width)  # px per cm
            tw.write(
                _level_tiles(block, width, height),
                shape=(height, width, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                photometric="ycbcr",
                subsampling=(2, 2),
                compression="jpeg",
                subfiletype=0 if i == 0 else 1,
                resolution=(res, res),
                resolutionunit="CENTIMETER",
                metadata=None,
            )
    shards = folder / "shards"
    shards.mkdir(exist_ok=True)
    for k in range(links):
        (shards / f"slide_{k:02d}.tiff").symlink_to(path)
    return shards
