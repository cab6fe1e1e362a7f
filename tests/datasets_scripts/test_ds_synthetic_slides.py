"""Synthetic tifffile slides: odd level sizes, edges, transparency, non-square, missing mpp, corrupt, no tissue."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from pathfm.datasets_scripts.builder import SlideTilesConfig, stream_stats, tile_stream
from pathfm.datasets_scripts.samplers import GridTileSampler, RandomTileSampler
from pathfm.datasets_scripts.slide import MissingMppError, SlideError, composite_on_background, open_slide
from pathfm.datasets_scripts.tissue import compute_tissue_mask

from tests.datasets_scripts.synthetic import (
    blank,
    corrupt_tile_copy,
    gradient_image,
    tissue_rect_slide,
    write_slide,
)


def expected_gradient_tile(x: float, y: float, extent: float, size: int) -> np.ndarray:
    """Independent truth: the gradient's value at each output pixel centre (R = X / 8, G = Y / 8)."""
    centres = (np.arange(size) + 0.5) * extent / size - 0.5
    r = (x + centres) / 8.0
    g = (y + centres) / 8.0
    out = np.empty((size, size, 3))
    out[..., 0] = r[None, :]
    out[..., 1] = g[:, None]
    out[..., 2] = 128
    return out


@pytest.fixture(scope="module")
def odd_slide(tmp_path_factory):
    # 1001 x 777 px, levels 333 x 259 (downsample 3.006 / 3.0) and 101 x 78 (9.91 / 9.96): no integer ratios.
    path = tmp_path_factory.mktemp("odd") / "odd.tiff"
    return write_slide(path, gradient_image(1001, 777), [(333, 259), (101, 78)], mpp=0.5)


def test_odd_levels_non_integer_downsamples(odd_slide):
    with open_slide(odd_slide) as r:
        assert r.dimensions == (1001, 777)
        assert r.level_dimensions == ((1001, 777), (333, 259), (101, 78))
        ds1, ds2 = r.level_downsamples[1], r.level_downsamples[2]
        assert 2.99 < ds1 < 3.01 and 9.9 < ds2 < 10.0
        assert r.mpp == pytest.approx(0.5)
        assert r.best_level(1.5) == 1 and r.best_level(1.0) == 0 and r.best_level(5.0) == 2
        for mpp, x, y, level in [
            (0.5, 100, 200, 0),
            (1.0, 101, 203, 0),
            (1.5, 300, 100, 1),
            (5.0, 64, 32, 2),
        ]:
            size = 32
            extent = size * mpp / r.mpp
            tile = r.read_tile(x, y, size, mpp).astype(np.float64)
            ref = expected_gradient_tile(x, y, extent, size)
            assert r.best_level(mpp) == level
            err = np.abs(tile - ref)[2:-2, 2:-2]  # the outermost px mix in neighbours outside the tile
            assert err.mean() < 0.8 and err.max() <= 3.0, (mpp, err.mean(), err.max())


def test_tile_crossing_right_and_bottom_edge(odd_slide):
    with open_slide(odd_slide) as r:
        tile = r.read_tile(1001 - 40, 777 - 24, 64, 0.5)
        inside = tile[:24, :40].astype(np.float64)
        np.testing.assert_allclose(inside, expected_gradient_tile(961, 753, 64, 64)[:24, :40], atol=1.0)
        assert (tile[:, 40:] == 255).all() and (tile[24:, :] == 255).all()  # background (white), not black
        coarse = r.read_tile(900, 700, 32, 2.0)  # crosses both edges at a coarser level
        assert (coarse[-8:, -8:] == 255).all() and coarse.min() > 0


def test_transparent_regions_become_background(tmp_path):
    rgba = np.zeros((256, 384, 4), dtype=np.uint8)
    rgba[..., :3] = (200, 60, 140)
    rgba[..., 3] = 255
    rgba[:, 192:, :] = 0  # right half: transparent (RGB 0 underneath: would read black if alpha were ignored)
    path = write_slide(tmp_path / "alpha.tiff", rgba, [(192, 128)], mpp=0.5)
    with open_slide(path) as r:
        assert r.background_color == (255, 255, 255)
        tile = r.read_tile(128, 64, 128, 0.5)
        np.testing.assert_array_equal(tile[:, :64], np.broadcast_to((200, 60, 140), (128, 64, 3)))
        np.testing.assert_array_equal(tile[:, 64:], 255)
        tile2 = r.read_tile(0, 0, 96, 2.0)  # level 1, resampled across the alpha edge
        assert tile2.reshape(-1, 3).sum(axis=1).min() > 300  # nowhere near black
        thumb = r.thumbnail(4.0)
        assert (thumb[:, -10:] == 255).all()
    # The compositing formula itself with a non-white background (as openslide.background-color gives).
    px = np.array([[[100, 0, 0, 0], [100, 0, 0, 255], [100, 0, 0, 51]]], dtype=np.uint8)
    out = composite_on_background(px, (10, 20, 30)).astype(int)
    # alpha 51/255 = 0.2: 0.2 * (100, 0, 0) + 0.8 * (10, 20, 30) = (28, 16, 24), +-1 for integer rounding.
    assert out[0, :2].tolist() == [[10, 20, 30], [100, 0, 0]]
    assert np.abs(out[0, 2] - [28, 16, 24]).max() <= 1


def test_non_square_slide_exact_grid_coordinates(tmp_path):
    # 768 x 320 slide (wide), tissue x in [256, 640), y in [64, 320): tiles of 128 px at 0.5 µm/px.
    path = tissue_rect_slide(tmp_path / "wide.tiff", 768, 320, (256, 64, 384, 256), mpp=0.5)
    with open_slide(path) as r:
        assert r.dimensions == (768, 320)
        mask = compute_tissue_mask(r, mask_mpp=4.0)
        assert mask.mask.shape == (40, 96)  # (h, w) = (320, 768) / 8
        tiles = GridTileSampler(mpp=0.5, tile_size=128, min_tissue=0.4).tiles(r, mask)
        got = [(t.x, t.y) for t in tiles]
        # Rows y = 0, 128, 256; columns x = 0, 128, ..., 640. Fractions worked out by hand from the rectangle:
        # row 0 covers y 64-128 of tissue (half), row 1 fully, row 2 y 256-320 (half); columns 256 and 384
        # and 512 are fully inside x [256, 640); x = 640 would be 0 tissue. (The opening rounds the rectangle's
        # corners by ~2 mask px, so corner tiles measure 0.47 instead of 0.5.)
        assert got == [
            (256, 0),
            (384, 0),
            (512, 0),
            (256, 128),
            (384, 128),
            (512, 128),
            (256, 256),
            (384, 256),
            (512, 256),
        ]
        assert [t.tissue_fraction for t in tiles] == pytest.approx(
            [0.5, 0.5, 0.5, 1, 1, 1, 0.5, 0.5, 0.5], abs=0.035
        )
        tile = r.read_tile(512, 128, 128, 0.5)  # inside the tissue: pink everywhere (x/y not swapped)
        assert (tile[..., 1] < 120).all()
        edge = r.read_tile(640, 0, 128, 0.5)  # right of the tissue: white
        assert (edge > 240).all()


def test_random_sampler_seeded_exact_coordinates(tmp_path):
    path = tissue_rect_slide(
        tmp_path / "wide.tiff", 768, 320, (256, 64, 384, 256), mpp=0.5, level_sizes=[(384, 160)]
    )
    with open_slide(path) as r:
        mask = compute_tissue_mask(r, mask_mpp=4.0)
        sampler = RandomTileSampler(mpps=(0.25, 0.5, 1.0, 2.0), tile_size=64, min_tissue=0.4)
        assert sampler.allowed_mpps(r) == (0.5, 1.0, 2.0)  # 0.25 would be upsampling
        stream = sampler.iter_tiles(r, mask, np.random.default_rng(7))
        tiles = [next(stream) for _ in range(6)]
        got = [(t.x, t.y, t.mpp, t.level) for t in tiles]
        assert got == LISTED_RANDOM
        for t in tiles:
            extent = 64 * t.mpp / 0.5
            assert 0 <= t.x <= 768 - extent and 0 <= t.y <= 320 - extent
            assert t.tissue_fraction >= 0.4


# Recorded from this implementation (numpy PCG64, seed 7; tissue mask version 2, whose mask is the exact
# 48 x 32 px rectangle) as a regression guard; the bounds/tissue checks above are the independent part.
LISTED_RANDOM = [
    (183, 64, 2.0, 1),
    (306, 0, 2.0, 1),
    (231, 0, 2.0, 1),
    (282, 154, 0.5, 0),
    (284, 4, 2.0, 1),
    (528, 142, 1.0, 1),
]


def test_missing_mpp_refused_and_override(tmp_path):
    path = write_slide(tmp_path / "nompp.tiff", blank(320, 256, (200, 60, 140)), mpp=None)
    with pytest.raises(MissingMppError, match="nompp") as err:
        open_slide(path)
    assert "mpp" in str(err.value) and "manifest" in str(err.value)
    with open_slide(path, mpp=0.5) as r:
        assert r.mpp == 0.5 and r.read_tile(0, 0, 64, 1.0).shape == (64, 64, 3)
    with pytest.raises(SlideError, match="not a plausible"):
        open_slide(path, mpp=50.0)


def test_corrupt_and_truncated_slides_skipped_and_counted(tmp_path, eight_slides):
    good = [shutil.copy(p, tmp_path / f"good{i}.tiff") for i, p in enumerate(eight_slides[:2])]
    truncated = tmp_path / "truncated.tiff"
    truncated.write_bytes(Path(eight_slides[2]).read_bytes()[:4000])
    not_a_slide = tmp_path / "garbage.svs"
    not_a_slide.write_bytes(b"this is not a slide" * 100)
    with pytest.raises(SlideError, match="truncated.tiff"):
        open_slide(truncated, mpp=0.5)
    cfg = SlideTilesConfig(
        slides=[str(good[0]), str(truncated), str(not_a_slide), str(good[1])],
        sampler="grid",
        grid_mpp=0.5,
        tile_size=128,
    )
    ds = tile_stream(cfg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        examples = list(ds)
    msgs = [str(w.message) for w in caught]
    assert any("truncated" in m and "skipping" in m for m in msgs)
    assert any("garbage" in m and "skipping" in m for m in msgs)
    assert {e["slide_id"] for e in examples} == {"good0", "good1"}
    stats = stream_stats(ds)
    assert stats["corrupt_slides"] == 2 and stats["slides_done"] == 2


def test_corrupt_tile_data_mid_stream(tmp_path, eight_slides):
    bad = corrupt_tile_copy(eight_slides[0], tmp_path / "badtiles.tiff")
    good = shutil.copy(eight_slides[1], tmp_path / "fine.tiff")
    cfg = SlideTilesConfig(slides=[str(bad), str(good)], sampler="grid", grid_mpp=0.5, tile_size=128)
    ds = tile_stream(cfg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        examples = list(ds)
    assert any("badtiles" in str(w.message) for w in caught)
    # A region that fails to decode costs that tile only: the bad slide keeps streaming its readable tiles.
    stats = stream_stats(ds)
    assert 1 <= stats["failed_regions"] < 3 and stats["corrupt_slides"] == 0
    assert len([e for e in examples if e["slide_id"] == "badtiles"]) > 0
    n_fine = len([e for e in examples if e["slide_id"] == "fine"])
    assert n_fine == len(
        list(tile_stream(SlideTilesConfig(slides=[str(good)], sampler="grid", grid_mpp=0.5, tile_size=128)))
    )
    assert n_fine > 0


def test_no_tissue_slide_zero_tiles_said_so(tmp_path, eight_slides):
    empty = write_slide(tmp_path / "empty.tiff", blank(512, 512, (243, 243, 241)), mpp=0.5)
    with open_slide(empty) as r:
        assert compute_tissue_mask(r).tissue_pixels == 0
    for sampler in ("grid", "random"):
        cfg = SlideTilesConfig(
            slides=[str(empty), str(eight_slides[0])],
            sampler=sampler,
            grid_mpp=0.5,
            mpps=(0.5, 1.0),
            tiles_per_slide=5,
            tile_size=128,
        )
        ds = tile_stream(cfg)
        with pytest.warns(RuntimeWarning, match=r"empty.*(no tissue|no grid tile).*0 tiles"):
            examples = list(ds)
        assert {e["slide_id"] for e in examples} == {"slide0"}
        assert stream_stats(ds)["no_tissue_slides"] == 1


def test_bounds_properties_and_honouring(tmp_path):
    from pathfm.datasets_scripts.slide import bounds_from_properties

    props = {
        "openslide.bounds-x": "100",
        "openslide.bounds-y": "40",
        "openslide.bounds-width": "600",
        "openslide.bounds-height": "300",
    }
    assert bounds_from_properties(props, (1000, 800)) == (100, 40, 600, 300)
    assert bounds_from_properties({}, (1000, 800)) == (0, 0, 1000, 800)
    assert bounds_from_properties({"openslide.bounds-x": "junk"}, (1000, 800)) == (0, 0, 1000, 800)
    # Generic TIFFs cannot carry openslide.bounds-*: set the parsed rectangle the way MRXS/Hamamatsu
    # properties would, then check that mask and grid stay inside it while coordinates stay level-0.
    path = tissue_rect_slide(tmp_path / "b.tiff", 768, 320, (0, 0, 768, 320), mpp=0.5)  # tissue everywhere
    with open_slide(path) as r:
        r.bounds = (256, 64, 384, 256)
        mask = compute_tissue_mask(r, mask_mpp=4.0)
        assert mask.origin == (256, 64) and mask.mask.shape == (32, 48)
        tiles = GridTileSampler(mpp=0.5, tile_size=128, min_tissue=0.5).tiles(r, mask)
        assert [(t.x, t.y) for t in tiles] == [
            (256, 64),
            (384, 64),
            (512, 64),
            (256, 192),
            (384, 192),
            (512, 192),
        ]
        rnd = RandomTileSampler(mpps=(0.5,), tile_size=64).iter_tiles(r, mask, np.random.default_rng(0))
        for t in (next(rnd) for _ in range(20)):
            assert 256 <= t.x <= 640 - 64 and 64 <= t.y <= 320 - 64
