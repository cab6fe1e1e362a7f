"""Saved pathfm folders load through the transformers Auto classes: as Hub remote code in a process where pathfm
is not importable, natively once pathfm is imported, and through ``pipeline("image-feature-extraction")`` on a
real H&E tile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import numpy as np
import openslide
import pytest
import torch
from pathfm.modeling import PathFMViTImageProcessor, PathFMViTModel
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, pipeline

# Runs with `python -I -S`: no PYTHONPATH, no cwd / script dir, no user site and no .pth files, so the
# editable-install finder of pathfm is never installed; site-packages is appended as a plain path.
REMOTE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    site_packages, folder, inputs_file, result_file = sys.argv[1:5]
    sys.path.append(site_packages)
    import importlib.util
    report = {"pathfm_spec": importlib.util.find_spec("pathfm") is not None,
              "modeling_spec": importlib.util.find_spec("modeling") is not None}
    try:
        import pathfm  # noqa: F401
        report["import_pathfm"] = "succeeded"
    except ModuleNotFoundError as err:
        report["import_pathfm"] = f"failed: {err}"
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification, pipeline

    inputs = torch.load(inputs_file)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    with torch.no_grad():
        out = model(inputs["pixel_values"], output_hidden_states=True, output_attentions=True)
        resized = model(inputs["pixel_values_resized"])
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    tile = Image.fromarray(inputs["tile"].numpy())
    extractor = pipeline("image-feature-extraction", model=folder, trust_remote_code=True)
    report["model_module"] = type(model).__module__
    clf = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True, num_labels=3)
    report["clf"] = [type(clf).__name__, list(clf(inputs["pixel_values"]).logits.shape)]
    report["processor_module"] = type(processor).__module__
    report["pathfm_loaded"] = sorted(m for m in sys.modules if m.split(".")[0] in ("pathfm", "modeling"))
    torch.save({
        "last_hidden_state": out.last_hidden_state, "pooler_output": out.pooler_output,
        "hidden_states": out.hidden_states, "attentions": out.attentions,
        "resized": resized.last_hidden_state,
        "processed": processor(tile, return_tensors="pt").pixel_values,
        "pipeline": torch.tensor(np.array(extractor(tile)), dtype=torch.float32),
    }, result_file)
    print(json.dumps(report))
    """
)


def read_cmu_tile(path: Path, x: int = 1000, y: int = 1200, size: int = 256) -> Image.Image:
    """A real H&E tile (RGB, ``size`` px at level 0, 0.499 µm/px) from CMU-1-Small-Region.svs via openslide."""
    with openslide.OpenSlide(str(path)) as slide:
        return slide.read_region((x, y), 0, (size, size)).convert("RGB")


def test_real_tile_is_tissue(cmu_svs: Path) -> None:
    tile = np.asarray(read_cmu_tile(cmu_svs))
    assert tile.shape == (256, 256, 3)
    # H&E tissue, not white background: darker than 220 on average and clearly coloured (pink / purple)
    assert tile.mean() < 220 and (tile[..., 1].astype(int) < tile[..., 0].astype(int)).mean() > 0.5


def test_remote_code_in_process_without_pathfm(tiny_saved_dir: Path, cmu_svs: Path, tmp_path: Path) -> None:
    model = PathFMViTModel.from_pretrained(tiny_saved_dir).eval()
    torch.manual_seed(0)
    pixel_values = torch.randn(2, 3, 224, 224)
    pixel_values_resized = torch.randn(1, 3, 96, 160)
    tile = read_cmu_tile(cmu_svs)
    torch.save(
        {
            "pixel_values": pixel_values,
            "pixel_values_resized": pixel_values_resized,
            "tile": torch.from_numpy(np.asarray(tile).copy()),
        },
        tmp_path / "inputs.pt",
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            REMOTE_SCRIPT,
            sysconfig.get_paths()["purelib"],
            str(tiny_saved_dir),
            str(tmp_path / "inputs.pt"),
            str(tmp_path / "result.pt"),
        ],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    # pathfm really was not importable there, and the classes came from the folder's copied code
    assert report["pathfm_spec"] is False and report["modeling_spec"] is False
    assert report["import_pathfm"].startswith("failed")
    assert report["pathfm_loaded"] == []
    assert report["model_module"].startswith("transformers_modules.")
    assert report["model_module"].endswith(".modeling_pathfm_vit")
    assert report["processor_module"].endswith(".image_processing_pathfm_vit")
    assert report["clf"] == ["PathFMViTForImageClassification", [2, 3]]

    remote = torch.load(tmp_path / "result.pt")
    with torch.no_grad():
        out = model(pixel_values, output_hidden_states=True, output_attentions=True)
        resized = model(pixel_values_resized).last_hidden_state
    assert out.last_hidden_state.shape == (2, 1 + 2 + 196, 64)
    assert torch.equal(remote["last_hidden_state"], out.last_hidden_state)
    assert torch.equal(remote["pooler_output"], out.pooler_output)
    assert all(torch.equal(a, b) for a, b in zip(remote["hidden_states"], out.hidden_states, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(remote["attentions"], out.attentions, strict=True))
    assert torch.equal(remote["resized"], resized)
    processed = PathFMViTImageProcessor()(tile, return_tensors="pt").pixel_values
    assert torch.equal(remote["processed"], processed)
    with torch.no_grad():
        features = model(processed).last_hidden_state
    torch.testing.assert_close(remote["pipeline"], features, rtol=0, atol=1e-6)


def test_auto_model_without_trust_flag_once_pathfm_is_imported(tiny_saved_dir: Path) -> None:
    model = AutoModel.from_pretrained(tiny_saved_dir)
    assert type(model) is PathFMViTModel  # the registered class, no remote code involved
    processor = AutoImageProcessor.from_pretrained(tiny_saved_dir)
    assert type(processor) is PathFMViTImageProcessor
    reference = PathFMViTModel.from_pretrained(tiny_saved_dir)
    for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_pipeline_features_on_real_he_tile(tiny_saved_dir: Path, cmu_svs: Path) -> None:
    tile = read_cmu_tile(cmu_svs, x=600, y=1800, size=300)
    extractor = pipeline("image-feature-extraction", model=str(tiny_saved_dir), trust_remote_code=True)
    features = torch.tensor(np.array(extractor(tile)), dtype=torch.float32)
    pooled = torch.tensor(np.array(extractor(tile, pool=True)), dtype=torch.float32)
    assert features.shape == (1, 1 + 2 + 196, 64) and pooled.shape == (1, 64)
    assert torch.isfinite(features).all()
    # the same numbers by hand: kaiko preprocessing with torchvision on the tile, then the backbone
    from torchvision.transforms.v2 import functional as tvF

    t = torch.from_numpy(np.asarray(tile).copy()).permute(2, 0, 1)
    t = tvF.center_crop(
        tvF.resize(t, [224], interpolation=tvF.InterpolationMode.BILINEAR, antialias=True), [224]
    )
    model = PathFMViTModel.from_pretrained(tiny_saved_dir).eval()
    with torch.no_grad():
        out = model(((t.float() / 255 - 0.5) / 0.5)[None])
    torch.testing.assert_close(features, out.last_hidden_state, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pooled, out.pooler_output, rtol=1e-5, atol=1e-5)
    # features of different tissue differ (the model is not a constant)
    other = torch.tensor(np.array(extractor(read_cmu_tile(cmu_svs, x=100, y=100, size=300), pool=True)))
    assert (other - pooled).abs().max() > 1e-3


@pytest.mark.parametrize("shape", [(1, 3, 230, 224), (1, 3, 224, 100)])
def test_loaded_model_rejects_bad_sizes(tiny_saved_dir: Path, shape: tuple[int, ...]) -> None:
    model = AutoModel.from_pretrained(tiny_saved_dir)
    with pytest.raises(ValueError, match="not a multiple of patch_size 16"):
        model(torch.randn(*shape))
