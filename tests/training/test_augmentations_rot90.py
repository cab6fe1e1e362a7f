"""``random_rot90``: the optional quarter turns of the DINO multi-crop, on real H&E tiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pathfm.training.augmentations import DINOMultiCrop
from pathfm.training.config import DINODataArguments

N_TILES = 16
LOCAL_CROPS = 4


@pytest.fixture(scope="module")
def tcga_tiles(tcga_svs: Path) -> torch.Tensor:
    """16 real tissue tiles of the TCGA slide (level 0 at 1 µm/px), uint8 (16, 3, 128, 128)."""
    from pathfm.datasets_scripts.samplers import GridTileSampler
    from pathfm.datasets_scripts.slide import open_slide
    from pathfm.datasets_scripts.tissue import compute_tissue_mask

    with open_slide(tcga_svs, mpp=1.0) as reader:  # its mpp override in the embedded-slide list
        sampler = GridTileSampler(mpp=1.0, tile_size=128, min_tissue=0.6)
        coords = sampler.tiles(reader, compute_tissue_mask(reader))
        tiles = [reader.read_tile(c.x, c.y, 128, 1.0) for c in coords[:: max(1, len(coords) // N_TILES)]]
    assert len(tiles) >= N_TILES
    return torch.from_numpy(np.stack(tiles[:N_TILES])).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def views(tcga_tiles) -> dict[str, list[torch.Tensor]]:
    """The views of the same tiles under the same seed: built without the argument, off, on."""
    out = {}
    for name, kwargs in (("default", {}), ("off", {"random_rot90": False}), ("on", {"random_rot90": True})):
        aug = DINOMultiCrop(48, 24, LOCAL_CROPS, **kwargs)
        assert aug.random_rot90 is (name == "on")
        torch.manual_seed(1234)
        out[name] = aug(tcga_tiles)
    return out


def test_random_rot90_view_is_np_rot90_of_the_plain_view(views):
    """Under one seed every turned view equals ``np.rot90(plain view, k)`` for exactly one k, and the k are
    spread over all four quarter turns (96 draws: 16 tiles x 6 views)."""
    plain, turned = views["off"], views["on"]
    assert [v.shape for v in turned] == [v.shape for v in plain]
    counts = np.zeros(4, dtype=int)
    for p_view, t_view in zip(plain, turned, strict=True):
        for p, t in zip(p_view, t_view, strict=True):
            p_hwc, t_hwc = p.permute(1, 2, 0).numpy(), t.permute(1, 2, 0).numpy()
            matches = [k for k in range(4) if np.array_equal(t_hwc, np.rot90(p_hwc, k))]
            assert len(matches) == 1, matches  # real tissue has no exact rotational symmetry
            counts[matches[0]] += 1
    assert counts.sum() == N_TILES * (2 + LOCAL_CROPS)
    # 96 draws, 24 expected per k: each k between 10 and 40 (a fair draw misses this about once in 10^4)
    assert counts.min() >= 10 and counts.max() <= 40, counts


def test_random_rot90_off_is_the_dino_pipeline(views):
    """Off (the default of the class and of the training flag), the views are DINO's, bit for bit the same as
    the pipeline built without the argument; on, they differ."""
    assert DINODataArguments().random_rot90 is False
    for a, b in zip(views["default"], views["off"], strict=True):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(views["default"], views["on"], strict=True))


def test_quarter_turns_direction_matches_np_rot90():
    """Each sample turned by its k: counter-clockwise on screen, as ``np.rot90`` and the retrieval queries."""
    image = torch.arange(16 * 3 * 4 * 4, dtype=torch.float32).view(16, 3, 4, 4)
    torch.manual_seed(0)
    ks = torch.randint(0, 4, (1, 16))[0].tolist()
    assert set(ks) == {0, 1, 2, 3}  # this seed exercises every k
    torch.manual_seed(0)
    (out,) = DINOMultiCrop.quarter_turns([image])
    for b, k in enumerate(ks):
        expected = np.rot90(image[b].permute(1, 2, 0).numpy(), k)
        np.testing.assert_array_equal(out[b].permute(1, 2, 0).numpy(), expected)
