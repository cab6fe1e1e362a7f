"""The mpp chain (OpenSlide -> vendor properties -> TIFF resolution tags with their unit -> manifest column /
--mpp_override / --default_mpp) and the embedded-ICC-profile option, on slides written with tifffile, through
the reader, the catalogue, the stream and the grid-tiling and training command lines."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import tifffile
from PIL import Image, ImageCms
from pathfm.datasets_scripts.builder import SlideTilesConfig, stream_stats, tile_stream
from pathfm.datasets_scripts.catalogue import build_catalogue, catalogue_row
from pathfm.datasets_scripts.catalogue import main as catalogue_main
from pathfm.datasets_scripts.slide import MissingMppError, open_slide
from pathfm.datasets_scripts.sources import SlideRecord

from tests.datasets_scripts.synthetic import PINK, blank, linear_rgb_icc, write_slide


def _tissue(width: int = 512, height: int = 384) -> np.ndarray:
    img = blank(width, height)
    img[64:320, 64:448] = PINK
    return img


# (unit written, description, expected mpp, expected source); OpenSlide turns inch / cm tags into its own mpp,
# reports mm / µm units as "unknown" and a resolution without a unit as nothing.
CHAIN = {
    "cm": ("CENTIMETER", None, 0.5, "openslide"),
    "mm": ("MILLIMETER", None, 0.5, "tiff-resolution"),
    "um": ("MICROMETER", None, 0.5, "tiff-resolution"),
    "desc": ("NONE", "Converted 512x384 |AppMag = 40|MPP = 0.2520|Filtered = 5", 0.252, "vendor"),
    "none": ("NONE", None, None, None),
}


@pytest.fixture(scope="module")
def chain_slides(tmp_path_factory):
    root = tmp_path_factory.mktemp("chain")
    return {
        name: write_slide(root / f"{name}.tiff", _tissue(), [(256, 192)], unit=unit, description=desc)
        for name, (unit, desc, _, _) in CHAIN.items()
    }


@pytest.mark.parametrize("name", list(CHAIN))
def test_mpp_chain_source_by_source(chain_slides, name, tmp_path):
    _, _, mpp, source = CHAIN[name]
    path = chain_slides[name]
    row = catalogue_row(SlideRecord(path=str(path)), min_object_um2=1000.0)
    if mpp is None:
        with pytest.raises(MissingMppError, match="no resolution metadata") as err:
            open_slide(path)
        assert "--default_mpp" in str(err.value) and "none.tiff" in str(err.value)
        # "no mpp", never "unreadable": the slide's levels are still described
        assert row["status"] == "no-mpp" and row["level_dimensions"] == [[512, 384], [256, 192]]
        return
    with open_slide(path) as reader:
        assert (reader.mpp_x, reader.mpp_y, reader.mpp) == pytest.approx((mpp, mpp, mpp))
        assert reader.mpp_source == source
    assert row["status"] == "ok" and row["mpp_source"] == source and row["mpp_x"] == pytest.approx(mpp)


def test_tiff_unit_read_from_the_tag_not_assumed(tmp_path):
    # 2000 px per millimetre is 0.5 µm/px; read as px per centimetre it would be 5 µm/px (a 10x error).
    path = write_slide(tmp_path / "mm.tiff", _tissue(), mpp=0.5, unit="MILLIMETER")
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages.first.tags
        assert tags["ResolutionUnit"].value == 4 and tags["XResolution"].value == (2000, 1)
    assert open_slide(path).mpp == pytest.approx(0.5)


def test_default_mpp_and_override_flags_in_stream_and_preflight(chain_slides):
    from pathfm.training.tile_batches import TileBatchStream, preflight_slides

    none, cm = str(chain_slides["none"]), str(chain_slides["cm"])
    cfg = dict(slides=[none, cm], sampler="grid", grid_mpp=1.0, tile_size=64, min_tissue=0.5)
    ds = tile_stream(SlideTilesConfig(**cfg))
    with pytest.warns(RuntimeWarning, match="none"):
        ids = {e["slide_id"] for e in ds}
    stats = stream_stats(ds)
    assert ids == {"cm"} and stats["no_mpp_slides"] == 1 and stats["corrupt_slides"] == 0
    # --default_mpp fills the slide without one; the other keeps its own 0.5 µm/px.
    ds = tile_stream(SlideTilesConfig(**cfg, default_mpp=0.5))
    tiles = list(ds)
    assert {e["slide_id"] for e in tiles} == {"none", "cm"} and stream_stats(ds)["no_mpp_slides"] == 0
    # Tissue is level-0 px [64, 448) x [64, 320). At 0.5 µm/px a 64 px tile at 1 µm/px spans 128 level-0 px:
    # tissue fractions per column 0.5 1 1 0.5, per row 0.5 1 0.5 -> 8 tiles >= 0.5. With --mpp_override 1.0 a
    # tile spans 64 level-0 px, aligned with the tissue: 6 x 4 = 24 tiles, on both slides (the flag wins).
    assert sum(e["slide_id"] == "none" for e in tiles) == 8
    over = list(tile_stream(SlideTilesConfig(**cfg, mpp_override=1.0)))
    assert sum(e["slide_id"] == "none" for e in over) == sum(e["slide_id"] == "cm" for e in over) == 24
    readable, failed = preflight_slides([SlideRecord(none), SlideRecord(cm)])
    assert [r.slide_id for r in readable] == ["cm"] and failed[none].startswith("no mpp")
    readable, failed = preflight_slides([SlideRecord(none), SlideRecord(cm)], default_mpp=0.5)
    assert len(readable) == 2 and failed == {}
    stream = TileBatchStream(readable, batch_size=4, seed=0, mpps=[1.0], tile_size=32, min_tissue=0.4,
                             tiles_per_slide=4, default_mpp=0.5)  # fmt: skip
    assert next(stream)["pixel_values"].shape == (4, 3, 32, 32)
    stream.close()


def test_manifest_column_and_flags_on_the_catalogue_cli(chain_slides, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,mpp\n{chain_slides['none']},0.4\n{chain_slides['cm']},\n")
    out = tmp_path / "c.parquet"
    assert catalogue_main([str(manifest), "--output", str(out)]) == 0
    rows = {r["slide_id"]: r for r in pq.read_table(out).to_pylist()}
    assert (rows["none"]["mpp_x"], rows["none"]["mpp_source"]) == (0.4, "manifest")
    assert (rows["cm"]["mpp_x"], rows["cm"]["mpp_source"]) == (0.5, "openslide")
    out2 = tmp_path / "c2.parquet"
    assert catalogue_main([str(manifest), "--output", str(out2), "--mpp_override", "0.3"]) == 0
    assert {r["mpp_source"] for r in pq.read_table(out2).to_pylist()} == {"mpp_override"}


def test_grid_tiling_cli_default_mpp(chain_slides, tmp_path):
    from pathfm.datasets_scripts.publish import cli

    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path\n{chain_slides['none']}\n")
    assert cli(["--slides", str(manifest), "--output_dir", str(tmp_path / "none"), "--grid_mpp", "2"]) == 2
    out = tmp_path / "tiles"
    args = ["--slides", str(manifest), "--output_dir", str(out), "--grid_mpp", "2", "--default_mpp", "0.5"]
    assert cli([*args, "--tile_size", "64"]) == 0
    summary = json.loads((out / "tiles_summary.json").read_text())
    assert "default_mpp 0.5" in (out / "README.md").read_text() and summary


def test_training_flags_parse_and_refuse_bad_values():
    from pathfm.training.config import config_dict, parse_config

    m, d, t, _ = parse_config(["--mpp_override", "0.25", "--default_mpp", "0.5", "--icc_profile", "apply"])
    assert (d.mpp_override, d.default_mpp, d.icc_profile) == (0.25, 0.5, "apply")
    assert config_dict(m, d, t)["data"]["icc_profile"] == "apply"  # recorded in the run config
    assert parse_config([])[1].icc_profile == "ignore"
    with pytest.raises(ValueError, match="--default_mpp is a level-0 µm/px between 0.05 and 10"):
        parse_config(["--default_mpp", "96"])
    with pytest.raises(ValueError, match="--icc_profile must be ignore or apply"):
        parse_config(["--icc_profile", "srgb"])


# ----------------------------------------------------------------------------------------------- ICC profile
@pytest.fixture(scope="module")
def icc_slide(tmp_path_factory):
    img = _tissue()
    img[100:140, 100:140] = 128  # a grey patch: linear 128 / 255 -> sRGB 187.5 (see linear_rgb_icc)
    return write_slide(tmp_path_factory.mktemp("icc") / "icc.tiff", img, mpp=0.5, icc=linear_rgb_icc())


def test_icc_profile_apply_or_ignore(icc_slide, tmp_path):
    stored = tifffile.imread(icc_slide)[:256, :256]
    with open_slide(icc_slide) as reader:  # default: ignore
        assert reader.colour.description == "pathfm test linear RGB" and not reader.colour.active
        np.testing.assert_array_equal(reader.read_tile(0, 0, 256, 0.5), stored)
    with open_slide(icc_slide, icc_profile="apply") as reader:
        tile = reader.read_tile(0, 0, 256, 0.5)
        thumb = reader.thumbnail(8.0)
    assert tuple(tile[120, 120]) in {(187, 187, 187), (188, 188, 188)}  # worked by hand
    profile = ImageCms.ImageCmsProfile(io.BytesIO(linear_rgb_icc()))
    expected = ImageCms.profileToProfile(Image.fromarray(stored), profile, ImageCms.createProfile("sRGB"))
    assert np.abs(tile.astype(int) - np.asarray(expected, dtype=int)).max() <= 1
    assert thumb[0, 0].tolist() == [255, 255, 255] and np.abs(tile.astype(int) - stored).max() > 40
    ds = tile_stream(SlideTilesConfig(slides=[str(icc_slide)], sampler="grid", grid_mpp=0.5, tile_size=256,
                                      min_tissue=0.0, icc_profile="apply"))  # fmt: skip
    first = next(iter(ds))
    np.testing.assert_array_equal(first["image"], tile)
    with pytest.raises(ValueError, match="icc_profile must be one of ignore, apply"):
        SlideTilesConfig(slides=[str(icc_slide)], icc_profile="srgb")


def test_icc_recorded_in_catalogue(icc_slide, tmp_path):
    out = tmp_path / "c.parquet"
    build_catalogue([str(icc_slide)], out, icc_profile="apply")
    row = pq.read_table(out).to_pylist()[0]
    assert (row["icc_profile"], row["icc_option"], row["status"]) == ("pathfm test linear RGB", "apply", "ok")
    assert catalogue_main([str(icc_slide), "--output", str(tmp_path / "d.parquet")]) == 0
    assert pq.read_table(tmp_path / "d.parquet").to_pylist()[0]["icc_option"] == "ignore"


def test_icc_sRGB_profile_of_the_real_tcga_slide_is_near_identity(tcga_svs):
    with open_slide(tcga_svs, mpp=1.0) as raw, open_slide(tcga_svs, mpp=1.0, icc_profile="apply") as srgb:
        assert srgb.colour.description == "sRGB IEC61966-2.1" and srgb.colour.active  # Aperio's sRGB profile
        a, b = raw.read_tile(2000, 1500, 128, 1.0), srgb.read_tile(2000, 1500, 128, 1.0)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2


def test_icc_applied_by_the_fast_tiff_reader_too(tmp_path):
    path = write_slide(tmp_path / "jpeg_icc.tiff", _tissue(), mpp=0.5, compression="jpeg", icc=linear_rgb_icc())
    with open_slide(path, reader="openslide", icc_profile="apply") as ref, open_slide(
        path, reader="tiff", icc_profile="apply"
    ) as fast:
        assert type(fast).__name__ == "TiffJpegReader" and fast.colour.active
        a, b = ref.read_tile(64, 64, 128, 0.5), fast.read_tile(64, 64, 128, 0.5)
        raw = open_slide(path, reader="tiff").read_tile(64, 64, 128, 0.5)
    np.testing.assert_array_equal(a, b)
    assert np.abs(b.astype(int) - raw).max() > 40  # converted, not the stored values
