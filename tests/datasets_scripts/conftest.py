"""Fixtures for the datasets_scripts tests: synthetic slides written with tifffile."""

from __future__ import annotations

from pathlib import Path

import pytest
from pathfm.datasets_scripts.tissue import clear_mask_cache

from tests.datasets_scripts.synthetic import tissue_rect_slide


@pytest.fixture(autouse=True)
def _fresh_mask_cache():
    clear_mask_cache()
    yield
    clear_mask_cache()


@pytest.fixture(scope="session")
def eight_slides(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """8 small slides (1024 x 768 px at 0.5 µm/px) with tissue rectangles of different sizes/positions."""
    root = tmp_path_factory.mktemp("eight")
    paths = []
    for i in range(8):
        x, y = 64 * (i % 4), 32 * (i // 2)
        paths.append(
            tissue_rect_slide(
                root / f"slide{i}.tiff", 1024, 768, (x, y, 640 - 32 * (i % 3), 512), level_sizes=[(512, 384)]
            )
        )
    return paths
