"""The fixed RankMe probe batch: filled from the slides that open, never the reason a run stops.

Slides: copies of the three embedded real slides, catalogued, then one of them deleted (a slide moved after
its catalogue was built): the probe must still be ``probe_size`` tiles from the two left.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch
from pathfm.datasets_scripts.catalogue import build_catalogue
from pathfm.datasets_scripts.embedded import embedded_slides
from pathfm.training.config import parse_config
from pathfm.training.data import build_probe
from pathfm.training.tile_batches import preflight_slides, resolve_slides

from tests.datasets_scripts.synthetic import tissue_rect_slide


def _args(tmp_path: Path, slides: str, *extra: str):
    return parse_config(
        ["--slides", slides, "--output_dir", str(tmp_path / "out"), "--probe_size", "32", *extra]
    )


@pytest.fixture
def catalogue_with_a_deleted_slide(tmp_path: Path) -> Path:
    folder = tmp_path / "slides"
    folder.mkdir()
    lines = ["path,mpp"]
    for rec in embedded_slides():
        copy = folder / Path(rec.path).name
        shutil.copy(rec.path, copy)
        lines.append(f"{copy},{'' if rec.mpp is None else rec.mpp}")
    manifest = tmp_path / "slides.csv"
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "catalogue.parquet"
    assert build_catalogue([str(manifest)], out)["ok"] == 3
    (folder / Path(embedded_slides()[0].path).name).unlink()
    return out


def test_probe_is_full_when_a_catalogued_slide_is_gone(tmp_path, catalogue_with_a_deleted_slide):
    _, d_args, t_args, _ = _args(tmp_path, str(catalogue_with_a_deleted_slide))
    readable, _ = preflight_slides(resolve_slides(d_args.slides))
    assert len(readable) == 3  # catalogued slides are not opened at start-up
    with pytest.warns(RuntimeWarning, match="not found"):
        probe = build_probe(readable, d_args, t_args, torch.device("cpu"))
    size = d_args.global_crop_size
    assert probe is not None and probe.shape == (32, 3, size, size)


def test_probe_turns_itself_off_when_the_slides_cannot_fill_it(tmp_path, caplog):
    # a 60 µm square of tissue: no 256 px tile at 0.5-2 µm/px has >= 40 % tissue, so the probe has nothing
    slide = tissue_rect_slide(tmp_path / "speck.tiff", 1024, 768, (400, 300, 120, 120))
    _, d_args, t_args, _ = _args(tmp_path, str(slide), "--min_object_um2", "100")
    readable, _ = preflight_slides(resolve_slides(d_args.slides))
    with caplog.at_level(logging.WARNING, logger="pathfm.dino"):
        assert build_probe(readable, d_args, t_args, torch.device("cpu")) is None
    assert "RankMe probe off" in caplog.text
