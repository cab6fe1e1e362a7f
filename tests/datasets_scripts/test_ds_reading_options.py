"""Robust-reading options on slides written with tifffile: grid partial tiles (pad / drop / keep) and the
minimum tissue-piece size (needle biopsies, TMA cores)."""

from __future__ import annotations

import numpy as np
import pytest
from pathfm.datasets_scripts.builder import SlideTilesConfig, tile_stream
from pathfm.datasets_scripts.catalogue import build_catalogue
from pathfm.datasets_scripts.slide import open_slide

from tests.datasets_scripts.synthetic import PINK, blank, tissue_rect_slide, write_slide


@pytest.fixture(scope="module")
def edge_slide(tmp_path_factory):
    # 1000 x 700 px at 0.5 µm/px, tissue everywhere: 256 px grid tiles cross the right and bottom edges.
    path = tmp_path_factory.mktemp("edge") / "edge.tiff"
    return tissue_rect_slide(path, 1000, 700, (0, 0, 1000, 700), level_sizes=[(250, 175)])


@pytest.mark.parametrize(
    ("partial", "xs", "ys"),
    [
        ("pad", [0, 256, 512, 768], [0, 256, 512]),
        ("drop", [0, 256, 512], [0, 256]),
        ("keep", [0, 256, 512, 744], [0, 256, 444]),  # last tile moved inward to end at 1000 / 700
    ],
)
def test_grid_partial_tiles(edge_slide, partial, xs, ys):
    cfg = SlideTilesConfig(
        slides=[str(edge_slide)], sampler="grid", grid_mpp=0.5, tile_size=256, min_tissue=0.0,
        grid_partial=partial,
    )  # fmt: skip
    tiles = list(tile_stream(cfg))
    assert sorted({t["x"] for t in tiles}) == xs and sorted({t["y"] for t in tiles}) == ys
    assert len(tiles) == len(xs) * len(ys)
    with open_slide(edge_slide) as reader:
        for t in tiles:
            # level-0 read of the same region (outside the slide: background), independent of the stream
            np.testing.assert_array_equal(t["image"], reader.read_region(t["x"], t["y"], 0, 256, 256))
    corner = next(t for t in tiles if t["x"] == xs[-1] and t["y"] == ys[-1])
    white = np.all(corner["image"] == 255, axis=-1).mean()
    # pad: the corner tile holds 232 x 188 slide px, the rest is background; keep/drop: all slide pixels
    expected_white = 1 - 232 * 188 / 256**2 if partial == "pad" else 0.0
    assert white == pytest.approx(expected_white, abs=0.02)


def test_grid_partial_rejects_unknown_value(edge_slide):
    with pytest.raises(ValueError, match="partial must be one of"):
        list(tile_stream(SlideTilesConfig(slides=[str(edge_slide)], sampler="grid", grid_partial="crop")))


def test_min_object_size_keeps_small_biopsy_pieces(tmp_path):
    img = blank(1024, 1024)
    img[400:560, 400:560] = PINK  # 160 px at 0.5 µm/px = 80 µm square = 6,400 µm² of tissue
    path = write_slide(tmp_path / "needle.tiff", img, level_sizes=[(256, 256)])
    base = dict(slides=[str(path)], sampler="grid", grid_mpp=0.5, tile_size=64, min_tissue=0.5)
    assert list(tile_stream(SlideTilesConfig(**base))) == []  # default 10,000 µm²: the piece is dropped
    kept = list(tile_stream(SlideTilesConfig(min_object_um2=1_000.0, **base)))
    assert kept and all(400 - 64 < t["x"] < 560 and 400 - 64 < t["y"] < 560 for t in kept)
    assert build_catalogue([str(path)], tmp_path / "c.parquet")["no-tissue"] == 1
    assert build_catalogue([str(path)], tmp_path / "c2.parquet", min_object_um2=1_000.0)["ok"] == 1


def test_grayscale_slide_tissue_found_by_darkness(tmp_path):
    """Saturation alone finds nothing on a grayscale slide; the mask falls back to darkness and says so."""
    rng = np.random.default_rng(0)
    img = blank(1024, 768)
    grey = rng.integers(90, 150, size=(384, 512), dtype=np.uint8)
    img[192:576, 256:768] = grey[..., None]  # grey tissue, R = G = B
    path = write_slide(tmp_path / "grey.tiff", img, level_sizes=[(256, 192)])
    cfg = SlideTilesConfig(slides=[str(path)], sampler="grid", grid_mpp=0.5, tile_size=128, min_tissue=0.9)
    tiles = list(tile_stream(cfg))
    # Tiles fully inside the grey block: x in {256, 384, 512, 640}, y in {256, 384} (192 and 448+ straddle).
    assert {(t["x"], t["y"]) for t in tiles} >= {(x, y) for x in (256, 384, 512, 640) for y in (256, 384)}
    assert all(256 - 128 < t["x"] < 768 and 192 - 128 < t["y"] < 576 for t in tiles)
    build_catalogue([str(path)], tmp_path / "c.parquet")
    import pyarrow.parquet as pq

    row = pq.read_table(tmp_path / "c.parquet").to_pylist()[0]
    assert (row["status"], row["mask_method"]) == ("ok", "darkness-otsu")
    he = tissue_rect_slide(tmp_path / "he.tiff", 512, 512, (128, 128, 256, 256), level_sizes=[(128, 128)])
    build_catalogue([str(he)], tmp_path / "he.parquet")
    he_row = pq.read_table(tmp_path / "he.parquet").to_pylist()[0]
    assert he_row["mask_method"] == "hsv-saturation-glass-relative"


@pytest.mark.parametrize("mpp", [0.01, 25.0])
def test_implausible_mpp_refused_with_value_and_source(tmp_path, mpp):
    from pathfm.datasets_scripts.slide import MissingMppError

    path = tissue_rect_slide(tmp_path / "odd.tiff", 512, 512, (64, 64, 256, 256), mpp=mpp)
    with pytest.raises(MissingMppError, match=rf"{mpp:.4g} µm/px from openslide.mpp-x/y \(expected 0.05-10"):
        open_slide(path)
    assert open_slide(path, mpp=0.5).mpp == 0.5  # an explicit override is the fix the message names
    import pyarrow.parquet as pq

    build_catalogue([str(path)], tmp_path / "c.parquet")
    row = pq.read_table(tmp_path / "c.parquet").to_pylist()[0]
    assert row["status"] == "no-mpp" and f"{mpp:.4g}" in row["reason"] and "openslide" in row["reason"]


def _write_anisotropic(path, mpp_x: float, mpp_y: float):
    import tifffile

    img = blank(512, 512)
    img[128:384, 128:384] = PINK
    with tifffile.TiffWriter(path) as tw:  # OpenSlide reads resolution tags per axis (px per cm)
        tw.write(img, tile=(64, 64), photometric="rgb", compression="zlib", metadata=None,
                 resolution=(1e4 / mpp_x, 1e4 / mpp_y), resolutionunit="CENTIMETER")  # fmt: skip
    return path


def test_per_axis_mpp_refused_by_name_never_averaged(tmp_path):
    from pathfm.datasets_scripts.slide import MissingMppError

    square = _write_anisotropic(tmp_path / "almost.tiff", 0.5, 0.502)  # scanner rounding (< 1 %)
    assert open_slide(square).mpp == 0.5  # x is the reference, not the mean 0.501
    odd = _write_anisotropic(tmp_path / "odd.tiff", 0.5, 1.0)
    with pytest.raises(MissingMppError, match=r"non-square pixels \(openslide.mpp-x 0.5.*mpp-y 1"):
        open_slide(odd)
    import pyarrow.parquet as pq

    build_catalogue([str(odd)], tmp_path / "c.parquet")
    row = pq.read_table(tmp_path / "c.parquet").to_pylist()[0]
    assert (row["mpp_x"], row["mpp_y"], row["status"]) == (0.5, 1.0, "no-mpp") and "non-square" in row["reason"]
