"""Grid tiles -> download_and_prepare (parquet) -> dataset card -> push to a local Hub -> load back."""

from __future__ import annotations

import io

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard, snapshot_download
from pathfm.datasets_scripts.builder import SlideTilesConfig, tile_stream
from pathfm.datasets_scripts.publish import build_tile_dataset, push_tile_dataset
from PIL import Image

from tests.hub_server import LocalHub, use_local_hub

TOKEN = "hf_local_ds_token"


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with (
        LocalHub(token=TOKEN) as server,
        use_local_hub(monkeypatch, server, tmp_path / "hf_home", token=TOKEN),
    ):
        yield server
    assert server.unhandled == [], server.unhandled


def test_grid_to_parquet_card_and_hub(eight_slides, tmp_path, hub):
    cfg = SlideTilesConfig(
        slides=[str(p) for p in eight_slides[:2]],
        sampler="grid",
        grid_mpp=1.0,
        tile_size=64,
        image_encoding="png",
    )
    streamed = list(tile_stream(cfg))
    out = build_tile_dataset(cfg, tmp_path / "tiles", title="synthetic tiles")
    files = sorted((out / "data").glob("*.parquet"))
    assert files and not list(out.glob("*.lock"))
    table = pq.read_table(files[0])
    assert table.num_rows == len(streamed) > 0
    assert table.column("slide_id").to_pylist() == [e["slide_id"] for e in streamed]
    assert table.column("x").to_pylist() == [e["x"] for e in streamed]
    first = table.column("image")[0].as_py()
    png = np.asarray(Image.open(io.BytesIO(first["bytes"])))
    np.testing.assert_array_equal(png, np.asarray(streamed[0]["image"]))  # lossless
    card = DatasetCard.load(out / "README.md")
    assert card.data.configs[0]["data_files"][0]["path"] == "data/*.parquet"
    assert card.data.dataset_info["splits"][0]["num_examples"] == len(streamed)
    assert "| slide0 |" in card.text and "grid sampler at 1.0 µm/px" in card.text

    push_tile_dataset(out, "alice/tiles", token=TOKEN)
    assert "README.md" in hub.files("alice/tiles", repo_type="dataset")
    local = snapshot_download("alice/tiles", repo_type="dataset", token=TOKEN)
    ds = datasets.load_dataset(
        "parquet", data_files=f"{local}/data/*.parquet", split="train", cache_dir=str(tmp_path / "ds_cache")
    )
    assert len(ds) == len(streamed)
    ds = ds.cast_column("image", datasets.Image())
    np.testing.assert_array_equal(np.asarray(ds[0]["image"]), np.asarray(streamed[0]["image"]))


def test_publish_with_no_readable_slide_is_one_line_and_leaves_no_folder(tmp_path, capsys):
    from pathfm.datasets_scripts.publish import cli

    (tmp_path / "slides").mkdir()
    (tmp_path / "slides" / "a.svs").write_text("not a slide")
    out = tmp_path / "published"
    assert cli(["--slides", str(tmp_path / "slides"), "--output_dir", str(out)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(err) == 1 and "no tile to publish" in err[0] and str(tmp_path / "slides") in err[0]
    assert not out.exists()
