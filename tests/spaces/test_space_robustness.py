"""The Space with what a newcomer throws at it (no server): broken or incompatible model folders, models and
probe heads saved after start-up, a smoke-test card, tiles of extreme size and shape, file clean-up, and
``python spaces/app.py --help``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from pathfm.modeling import PathFMViTImageProcessor
from pathfm.spaces.model_store import (
    ModelCache,
    ModelLoadError,
    card_says_smoke_test,
    center_square,
    embed_tiles,
    load_model,
    resize_note,
)
from pathfm.spaces.space_config import SpaceConfig
from safetensors.torch import save_file

from tests.spaces.conftest import save_tiny_model

EXAMPLE = (
    Path(__file__).resolve().parents[2] / "spaces" / "examples" / "CMU-1-Small-Region__x898_y224_mpp0.5.png"
)


@pytest.fixture(scope="module")
def good_model(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("good") / "model")


def broken_copies(good: Path, root: Path) -> dict[str, tuple[Path, str]]:
    """Each broken folder and a text its message must contain (the file or the problem)."""
    cases = {}
    truncated = root / "truncated"
    shutil.copytree(good, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    cases["truncated"] = (truncated, "model.safetensors is truncated")
    not_json = root / "not_json"
    shutil.copytree(good, not_json)
    (not_json / "config.json").write_text("{not json")
    cases["not_json"] = (not_json, "config.json")
    no_weights = root / "no_weights"
    shutil.copytree(good, no_weights)
    (no_weights / "model.safetensors").unlink()
    cases["no_weights"] = (no_weights, "model.safetensors")
    other_size = root / "other_size"
    save_tiny_model(other_size, hidden_size=96, num_attention_heads=3)
    shutil.copy(good / "model.safetensors", other_size / "model.safetensors")
    cases["other_size"] = (
        other_size,
        "embeddings.cls_token: [1, 1, 64] in the weights, [1, 1, 96] from config.json",
    )
    other_arch = root / "other_arch"
    shutil.copytree(good, other_arch)
    save_file({"encoder.weight": torch.zeros(4, 4)}, str(other_arch / "model.safetensors"))
    cases["other_arch"] = (other_arch, "model.safetensors lacks")
    return cases


def test_broken_and_incompatible_model_folders_give_one_line(good_model, tmp_path):
    for case, (folder, needle) in broken_copies(good_model, tmp_path).items():
        with pytest.raises(ModelLoadError) as info:
            load_model(str(folder))
        message = str(info.value)
        assert message.startswith(str(folder)) and needle in message, (case, message)
        assert "\n" not in message.strip() and "above report" not in message, (case, message)


def test_cache_reloads_a_folder_when_a_probe_head_is_saved_later(good_model, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(good_model, folder)
    cache = ModelCache()
    assert cache.get(str(folder)).probe is None
    save_file({"weight": torch.ones(2, 64), "bias": torch.zeros(2)}, str(folder / "probe_head.safetensors"))
    (folder / "probe_head.json").write_text(json.dumps({"id2label": ["a", "b"], "pooling": "pooler_output"}))
    probe = cache.get(str(folder)).probe
    assert probe is not None and list(probe.id2label.values()) == ["a", "b"]


def test_smoke_test_card_is_recognised(good_model, tmp_path):
    assert card_says_smoke_test("---\ntags:\n- pathology\n- smoke-test\n---\n# m")
    assert card_says_smoke_test("This model is a smoke test of the pipeline.")
    assert not card_says_smoke_test("---\ntags:\n- pathology\n---\nTrained for 100 epochs.")
    folder = tmp_path / "smoke"
    shutil.copytree(good_model, folder)
    assert not load_model(str(folder)).smoke_test
    (folder / "README.md").write_text("---\ntags:\n- smoke-test\n---\n# tiny run\n")
    assert load_model(str(folder)).smoke_test


def test_extreme_tiles_are_embedded_as_their_center_square(good_model):
    loaded = load_model(str(good_model))
    rng = np.random.default_rng(0)
    strip = rng.integers(0, 256, (3, 500, 3), dtype=np.uint8)  # 3 rows: ambiguous as channels-first
    square = strip[:, 248:251]
    assert np.array_equal(center_square(strip), square)
    got = embed_tiles(loaded, [center_square(strip)]).pooled
    expected = embed_tiles(loaded, [np.ascontiguousarray(square)]).pooled
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # independent reference: the processor told the layout, the model run directly
    pixel_values = PathFMViTImageProcessor()(
        images=[square.copy()], return_tensors="pt", input_data_format="channels_last"
    )["pixel_values"]
    with torch.inference_mode():
        reference = loaded.model(pixel_values=pixel_values).pooler_output.numpy()
    np.testing.assert_allclose(got, reference, atol=1e-5)
    note = resize_note(3, 500, 224)
    assert (
        note
        and "500 x 3 px" in note
        and "3 x 3 px square (1% of the tile)" in note
        and "upsampled 74.7x" in note
    )
    assert resize_note(256, 300, 224) is None
    assert "downsampled 17.9x" in resize_note(4000, 4000, 224)


def test_models_saved_after_start_up_are_listed(tmp_path):
    config = SpaceConfig(model_choices=["a/b", "tiny (random weights)"], model_dirs=[tmp_path])
    assert config.current_model_choices() == ["a/b", "tiny (random weights)"]
    save_tiny_model(tmp_path / "run1" / "model")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")  # no weights yet: not listed
    assert config.current_model_choices() == [
        "a/b",
        str(tmp_path / "run1" / "model"),
        "tiny (random weights)",
    ]


def test_downloads_are_deleted_at_session_end_and_after_their_age(tmp_path):
    import gradio as gr
    from pathfm.spaces.space_handlers import SpaceHandlers

    config = SpaceConfig(cache_dir=tmp_path / "cache", max_file_age_s=600, gallery_tiles_per_slide=1)
    handlers = SpaceHandlers(config)
    alice, bob = gr.Request(session_hash="alice"), gr.Request(session_hash="bob")
    *_, alice_file, summary = handlers.analyze_tile(str(EXAMPLE), "tiny (random weights)", alice)
    *_, bob_file, _ = handlers.analyze_tile(str(EXAMPLE), "tiny (random weights)", bob)
    assert Path(alice_file).is_file() and Path(bob_file).is_file() and "ℹ️" not in summary
    handlers.end_session(alice)
    assert not Path(alice_file).exists() and Path(bob_file).is_file()
    old = time.time() - 601
    os.utime(Path(bob_file).parent, (old, old))
    *_, new_file, _ = handlers.analyze_tile(str(EXAMPLE), "tiny (random weights)", bob)  # sweeps first
    assert not Path(bob_file).exists() and Path(new_file).is_file()


def test_extreme_tile_through_the_handler_gets_a_note(tmp_path):
    from pathfm.spaces.space_handlers import SpaceHandlers

    strip = tmp_path / "strip.png"
    PIL.Image.fromarray(np.asarray(PIL.Image.open(EXAMPLE).convert("RGB"))[100:104]).save(strip)
    handlers = SpaceHandlers(SpaceConfig(cache_dir=tmp_path / "cache", gallery_tiles_per_slide=1))
    overlays, pca, _, _, summary = handlers.analyze_tile(str(strip), "tiny (random weights)")
    assert "strip.png" in summary and "ℹ️ Tile 224 x 4 px" in summary
    assert pca.shape[:2] == (224, 224) and overlays[0][0].shape[:2] == (224, 224)


def test_app_help_starts_nothing_and_imports_no_gradio(repo_root):
    code = (
        "import runpy, sys\n"
        "sys.argv = ['spaces/app.py', '--help']\n"
        "try:\n    runpy.run_path('spaces/app.py', run_name='__main__')\n"
        "except SystemExit as e:\n    code = e.code\n"
        "print('EXIT', code, 'gradio' in sys.modules, 'torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, timeout=60
    ).stdout
    assert "usage: app.py [-h]" in out and "PATHFM_SPACE_MODEL_DIRS" in out  # prog as invoked
    assert out.strip().endswith("EXIT 0 False False")
