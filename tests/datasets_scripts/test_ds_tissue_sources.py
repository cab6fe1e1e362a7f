"""Tissue masks (hand-worked fractions, cache) and slide inputs (folder, manifests, GDC layout, barcodes)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from pathfm.datasets_scripts.builder import resolve_slides
from pathfm.datasets_scripts.slide import open_slide
from pathfm.datasets_scripts.sources import find_slides, parse_tcga_barcode, read_gdc_manifest, read_manifest
from pathfm.datasets_scripts.tissue import TissueMask, compute_tissue_mask, saturation, tissue_mask_from_rgb

from tests.datasets_scripts.synthetic import tissue_rect_slide


def test_fraction_hand_worked():
    mask = np.zeros((4, 4), dtype=bool)
    mask[1:3, 1:3] = True  # a 2 x 2 block of tissue
    # slide 1 µm/px, mask 2 µm/px: a mask px covers 2 x 2 level-0 px.
    tm = TissueMask(mask=mask, mpp=2.0, slide_mpp=1.0)
    assert tm.fraction(2, 2, 4) == 1.0  # exactly the block
    assert tm.fraction(0, 0, 8) == 0.25  # whole mask: 4 of 16
    assert tm.fraction(0, 0, 4) == 0.25  # mask px (0..1, 0..1): only (1, 1) is tissue
    assert tm.fraction(3, 3, 2) == pytest.approx(1.0)  # sub-pixel offsets inside the block
    assert tm.fraction(1, 1, 2) == pytest.approx(0.25)  # half a mask px each way -> 1/4 of the tile
    assert tm.fraction(6, 6, 4) == 0.0 and tm.fraction(100, 100, 4) == 0.0
    assert tm.fraction(-4, -4, 8) == pytest.approx(1 / 16)  # outside counts as background
    shifted = TissueMask(mask=mask, mpp=2.0, slide_mpp=1.0, origin=(100, 50))
    assert shifted.fraction(102, 52, 4) == 1.0
    rng = np.random.default_rng(0)
    picks = {tm.sample_pixel(rng) for _ in range(200)}
    assert picks == {(1, 1), (1, 2), (2, 1), (2, 2)}


def test_saturation_and_floor():
    rgb = np.array([[[255, 255, 255], [200, 60, 140], [128, 128, 128], [0, 0, 0]]], dtype=np.uint8)
    np.testing.assert_allclose(saturation(rgb)[0], [0.0, 255 * 140 / 200, 0.0, 0.0], atol=1e-3)
    grey = np.full((64, 64, 3), 230, dtype=np.uint8)
    grey[::2, :, 0] = 236  # faint variation: saturation ~6/236*255 = 6.5, under the floor of 20
    mask, thr = tissue_mask_from_rgb(grey, 8.0)
    assert not mask.any() and thr == 20.0


def test_mask_matches_drawn_tissue_and_is_cached(tmp_path):
    path = tissue_rect_slide(tmp_path / "t.tiff", 1024, 512, (256, 128, 512, 256), mpp=1.0)
    with open_slide(path) as r:
        tm = compute_tissue_mask(r, mask_mpp=8.0)
        assert tm.mask.shape == (64, 128)
        truth = np.zeros((64, 128), dtype=bool)
        truth[16:48, 32:96] = True
        assert (tm.mask != truth).sum() <= 16  # only the rounded corners may differ
        assert tm.fraction(384, 128, 256) == pytest.approx(1.0, abs=0.01)
        assert tm.fraction(256, 128, 512) == pytest.approx(0.5, abs=0.01)  # half of it is below the tissue
        assert compute_tissue_mask(r, mask_mpp=8.0) is tm  # in-memory cache
        cached = compute_tissue_mask(r, mask_mpp=8.0, cache_dir=tmp_path / "masks", closing_um=15.0)
        assert len(list((tmp_path / "masks").glob("*.npz"))) == 1
    from pathfm.datasets_scripts.tissue import clear_mask_cache

    clear_mask_cache()
    with open_slide(path) as r:
        again = compute_tissue_mask(r, mask_mpp=8.0, cache_dir=tmp_path / "masks", closing_um=15.0)
        np.testing.assert_array_equal(again.mask, cached.mask)
    # a cache file cut short (a full disk) is warned about, computed and written again: never the slide's end
    (npz,) = (tmp_path / "masks").glob("*.npz")
    whole = npz.read_bytes()
    npz.write_bytes(whole[: len(whole) // 2])
    clear_mask_cache()
    with open_slide(path) as r, pytest.warns(RuntimeWarning, match=f"mask cache file {npz} cannot be read"):
        rebuilt = compute_tissue_mask(r, mask_mpp=8.0, cache_dir=tmp_path / "masks", closing_um=15.0)
    np.testing.assert_array_equal(rebuilt.mask, cached.mask)
    with np.load(npz) as rewritten:  # whole again
        np.testing.assert_array_equal(rewritten["mask"].astype(bool), cached.mask)


def test_folder_and_manifests(tmp_path, eight_slides):
    (tmp_path / "a" / "b").mkdir(parents=True)
    shutil.copy(eight_slides[0], tmp_path / "a" / "s0.tiff")
    shutil.copy(eight_slides[1], tmp_path / "a" / "b" / "s1.SVS")
    (tmp_path / "a" / "notes.txt").write_text("x")
    recs = find_slides(tmp_path / "a")
    assert [r.slide_id for r in recs] == ["s1", "s0"]  # sorted by path: a/b/s1.SVS < a/s0.tiff
    with pytest.raises(ValueError, match="no slide files"):
        find_slides(tmp_path / "a" / "b" / "..", extensions=(".ndpi",))
    csv = tmp_path / "a" / "m.csv"
    csv.write_text("path,mpp,label,group,site\ns0.tiff,0.5,tumour,p1,x\nb/s1.SVS,,normal,p2,y\n")
    recs = read_manifest(csv)
    assert [(r.slide_id, r.mpp, r.label, r.group, r.extra) for r in recs] == [
        ("s0", 0.5, "tumour", "p1", {"site": "x"}),
        ("s1", None, "normal", "p2", {"site": "y"}),
    ]
    assert recs[0].path == str(tmp_path / "a" / "s0.tiff")
    tsv = tmp_path / "a" / "m.tsv"
    tsv.write_text("slide_path\tmpp\n/abs/x.svs\t0.25\n")
    assert read_manifest(tsv)[0].path == "/abs/x.svs" and read_manifest(tsv)[0].mpp == 0.25
    bad = tmp_path / "bad.csv"
    bad.write_text("path,mpp\nx.svs,fast\n")
    with pytest.raises(ValueError, match=r"bad.csv, row 2: mpp 'fast'"):
        read_manifest(bad)
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("name,mpp\nx.svs,1\n")
    with pytest.raises(ValueError, match="no path column"):
        read_manifest(nocol)
    assert [r.slide_id for r in resolve_slides(str(csv))] == ["s0", "s1"]
    assert [r.slide_id for r in resolve_slides([str(tmp_path / "a" / "b"), str(eight_slides[2])])] == [
        "s1",
        "slide2",
    ]


def test_tcga_barcode():
    b = parse_tcga_barcode("TCGA-CR-7395-01A-01-TS1.b8e9a1c2-0000-4000-8000-1234567890ab.svs")
    assert (
        b.barcode,
        b.tss,
        b.patient,
        b.sample_code,
        b.sample_type,
        b.vial,
        b.portion,
        b.slide_type,
        b.slide_number,
    ) == ("TCGA-CR-7395-01A-01-TS1", "CR", "TCGA-CR-7395", "01", "Primary Solid Tumor", "A", "01", "TS", "1")
    assert not b.is_ffpe and b.is_tumor
    dx = parse_tcga_barcode("tcga-a1-a0sk-11a-02-dx1")
    assert (
        dx.is_ffpe and not dx.is_tumor and dx.sample_type == "Solid Tissue Normal" and dx.slide_type == "DX"
    )
    with pytest.raises(ValueError, match="not a TCGA slide barcode"):
        parse_tcga_barcode("CMU-1-Small-Region.svs")


def test_gdc_manifest_layout_and_ffpe_filter(tmp_path, eight_slides):
    root = tmp_path / "gdc"
    files = [
        ("11111111-aaaa", "TCGA-CR-7395-01A-01-TS1.uuid1.svs"),
        ("22222222-bbbb", "TCGA-CR-7395-01A-01-DX1.uuid2.svs"),
        ("33333333-cccc", "TCGA-A1-A0SK-11A-02-DX1.uuid3.svs"),
    ]
    for fid, name in files:
        (root / fid).mkdir(parents=True)
        shutil.copy(eight_slides[0], root / fid / name)
    manifest = tmp_path / "gdc_manifest.txt"
    lines = ["id\tfilename\tmd5\tsize\tstate"] + [f"{fid}\t{name}\tx\t1\treleased" for fid, name in files]
    manifest.write_text("\n".join(lines) + "\n")
    recs = read_gdc_manifest(manifest, root)
    assert [(r.slide_id, r.group, r.extra["file_id"], r.extra["slide_type"]) for r in recs] == [
        ("TCGA-CR-7395-01A-01-TS1", "TCGA-CR-7395", "11111111-aaaa", "TS"),
        ("TCGA-CR-7395-01A-01-DX1", "TCGA-CR-7395", "22222222-bbbb", "DX"),
        ("TCGA-A1-A0SK-11A-02-DX1", "TCGA-A1-A0SK", "33333333-cccc", "DX"),
    ]
    assert recs[0].path == str(root / "11111111-aaaa" / files[0][1])
    ffpe = read_gdc_manifest(manifest, root, ffpe_only=True)
    assert [r.slide_id for r in ffpe] == ["TCGA-CR-7395-01A-01-DX1", "TCGA-A1-A0SK-11A-02-DX1"]
    shutil.rmtree(root / "33333333-cccc")
    with pytest.raises(FileNotFoundError, match=r"1 listed slide\(s\) missing.*<file_id>/<file_name>"):
        read_gdc_manifest(manifest, root)
    assert len(read_gdc_manifest(manifest, root, missing="skip")) == 2


@pytest.mark.parametrize("kind", ["manifest", "gdc"])
def test_non_utf8_manifest_names_file_offset_and_fix(tmp_path, kind):
    from pathfm.datasets_scripts.resolve import resolve_sources

    if kind == "manifest":
        path = tmp_path / "cohort.csv"
        path.write_bytes("path,label\nslides/Gewebe_Dünndarm.svs,0\n".encode("latin-1"))
        offset = len(b"path,label\nslides/Gewebe_D")
    else:
        path = tmp_path / "gdc_manifest.txt"
        path.write_bytes("id\tfilename\tmd5\tsize\tstate\nab\tTCGA-\xe9.svs\t0\t1\tok\n".encode("latin-1"))
        offset = len(b"id\tfilename\tmd5\tsize\tstate\nab\tTCGA-")
    with pytest.raises(ValueError) as err:
        read_manifest(path) if kind == "manifest" else read_gdc_manifest(path)
    msg = str(err.value)
    assert str(path) in msg and "not UTF-8" in msg and f"offset {offset}" in msg and "iconv" in msg
    assert "\n" not in msg
    with pytest.raises(ValueError, match="not UTF-8"):
        resolve_sources([str(path)])
