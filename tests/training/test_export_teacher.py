"""export_teacher / save_export_metadata / export_checkpoint and the export CLI on tiny real models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from accelerate import Accelerator
from huggingface_hub import ModelCard
from safetensors import safe_open
from transformers import AutoImageProcessor, AutoModel

from pathfm.modeling import PathFMViTConfig, PathFMViTModel
from pathfm.training.export import (
    CHECKPOINT_METADATA,
    TEACHER_WEIGHTS,
    export_checkpoint,
    export_teacher,
    find_checkpoint,
    main,
    save_export_metadata,
)
from pathfm.training.heads import DINOHead, MultiCropWrapper

REPO_ROOT = Path(__file__).resolve().parents[2]
EXPECTED_FILES = {
    "README.md",
    "config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "configuration_pathfm_vit.py",
    "modeling_pathfm_vit.py",
    "image_processing_pathfm_vit.py",
}


def _tiny(seed: int = 0) -> PathFMViTModel:
    torch.manual_seed(seed)
    return PathFMViTModel(PathFMViTConfig.from_preset("tiny", image_size=32)).eval()


def _pixels() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> None:
    with torch.no_grad():
        out_a, out_b = a(pixel_values=_pixels()), b(pixel_values=_pixels())
    torch.testing.assert_close(out_a.last_hidden_state, out_b.last_hidden_state, rtol=0, atol=0)
    torch.testing.assert_close(out_a.pooler_output, out_b.pooler_output, rtol=0, atol=0)


def test_export_teacher_folder_weights_processor_card(tmp_path: Path) -> None:
    model = _tiny()
    card_info = {"repo_id": "alice/tiny", "slide_ids": ["CMU-1-Small-Region"], "tiles_seen": 640,
                 "mpps": [0.5, 0.25, 1.0], "architecture": "tiny", "license": "cc-by-nc-4.0"}
    out = export_teacher(model, tmp_path / "model", card_info)
    assert out == tmp_path / "model"
    assert {p.name for p in out.iterdir()} == EXPECTED_FILES

    # Weights: exactly the backbone's keys, all fp32, equal to the module's.
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert keys == set(model.state_dict())
        for key in keys:
            tensor = f.get_tensor(key)
            assert tensor.dtype == torch.float32
            assert torch.equal(tensor, model.state_dict()[key])
    assert not any(k.startswith(("head", "student")) for k in keys)

    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "pathfm_vit" and config["hidden_size"] == 64
    assert config["auto_map"]["AutoModel"] == "modeling_pathfm_vit.PathFMViTModel"
    processor = json.loads((out / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == [0.5, 0.5, 0.5] and processor["image_std"] == [0.5, 0.5, 0.5]
    assert processor["size"] == {"shortest_edge": 224}
    assert processor["crop_size"] == {"height": 224, "width": 224}

    # Loads back with the Auto classes from the folder and gives identical outputs.
    loaded = AutoModel.from_pretrained(out, trust_remote_code=True).eval()
    _same_outputs(model, loaded)
    image_processor = AutoImageProcessor.from_pretrained(out, trust_remote_code=True)
    tile = torch.randint(0, 256, (256, 300, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    pixels = image_processor(images=tile.numpy(), return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 224, 224)
    assert -1.0 - 1e-6 <= float(pixels.min()) and float(pixels.max()) <= 1.0 + 1e-6

    # The model card parses back with the right metadata and says what it was trained on.
    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "image-feature-extraction"
    assert card.data.library_name == "transformers"
    assert card.data.license == "cc-by-nc-4.0"
    assert "pathology" in card.data.tags and "dino" in card.data.tags
    assert 'AutoModel.from_pretrained("alice/tiny", trust_remote_code=True)' in card.text
    assert "0.25 µm/px (~40x), 0.5 µm/px (~20x), 1 µm/px (~10x)" in card.text
    assert "| tiles seen | 640 |" in card.text
    assert "2404.15217" in card.text and "caron2021emerging" in card.text


def test_export_bf16_saves_fp32_copy_and_rejects_wrappers(tmp_path: Path) -> None:
    model = _tiny().to(torch.bfloat16)
    out = export_teacher(model, tmp_path / "bf16", None)
    assert next(model.parameters()).dtype == torch.bfloat16  # the caller's module is untouched
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}
        key = "embeddings.cls_token" if "embeddings.cls_token" in f.keys() else sorted(f.keys())[0]
        assert torch.equal(f.get_tensor(key), model.state_dict()[key].float())

    wrapper = MultiCropWrapper(_tiny(), DINOHead(64, 32, hidden_dim=16, bottleneck_dim=8))
    with pytest.raises(TypeError, match=r"pass its `\.backbone`"):
        export_teacher(wrapper, tmp_path / "wrapper", None)
    broken = _tiny()
    with torch.no_grad():
        next(broken.parameters())[0] = float("nan")
    with pytest.raises(ValueError, match="NaN/Inf"):
        export_teacher(broken, tmp_path / "nan", None)
    with pytest.raises(ValueError, match="unknown keys \\['bogus'\\]"):
        export_teacher(_tiny(), tmp_path / "bad-card", {"bogus": 1})
    assert not (tmp_path / "bad-card").exists()  # validated before anything is written


def test_save_export_metadata_then_export_checkpoint(tmp_path: Path) -> None:
    teacher = _tiny(seed=3)
    ckpt = tmp_path / "run" / "checkpoints" / "checkpoint-20"
    meta = save_export_metadata(ckpt, teacher.config.to_dict(), {"steps": 20, "slides": ["/x/slide-a.svs"]},
                                teacher_backbone=teacher)
    assert meta == ckpt / CHECKPOINT_METADATA and (ckpt / TEACHER_WEIGHTS).is_file()
    # An older checkpoint next to it must not be picked.
    save_export_metadata(tmp_path / "run" / "checkpoints" / "checkpoint-5", teacher.config.to_dict(), None,
                         teacher_backbone=_tiny(seed=4))
    assert find_checkpoint(tmp_path / "run") == ckpt
    out = export_checkpoint(tmp_path / "run", tmp_path / "model", {"repo_id": "alice/from-ckpt"})
    _same_outputs(teacher, AutoModel.from_pretrained(out).eval())
    card = ModelCard.load(out / "README.md")
    assert "`slide-a`" in card.text and "| optimizer steps | 20 |" in card.text
    assert "alice/from-ckpt" in card.text

    with pytest.raises(ValueError, match="exactly one"):
        save_export_metadata(ckpt, teacher.config.to_dict(), None)
    with pytest.raises(ValueError, match="model_type"):
        save_export_metadata(ckpt, {"hidden_size": 3}, None, teacher_backbone=teacher)


def test_teacher_file_with_prefix_and_mismatch_errors(tmp_path: Path) -> None:
    wrapper = MultiCropWrapper(_tiny(seed=5), DINOHead(64, 32, hidden_dim=16, bottleneck_dim=8))
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    torch.save(wrapper.state_dict(), ckpt / "teacher.pt")
    save_export_metadata(ckpt, wrapper.backbone.config.to_dict(), None, teacher_file="teacher.pt",
                         teacher_prefix="backbone.")
    out = export_checkpoint(ckpt, tmp_path / "model")
    _same_outputs(wrapper.backbone, AutoModel.from_pretrained(out).eval())

    # A config that does not match the weights: the error names the file and lists the keys.
    wrong = PathFMViTConfig.from_preset("tiny", image_size=32, num_hidden_layers=3).to_dict()
    save_export_metadata(ckpt, wrong, None, teacher_file="teacher.pt", teacher_prefix="backbone.")
    with pytest.raises(ValueError, match=r"teacher\.pt.*missing keys: \['layers\.2\."):
        export_checkpoint(ckpt, tmp_path / "model2")
    save_export_metadata(ckpt, wrong, None, teacher_file="teacher.pt", teacher_prefix="student.")
    with pytest.raises(ValueError, match="no key starts with 'student.'"):
        export_checkpoint(ckpt, tmp_path / "model3")
    (ckpt / CHECKPOINT_METADATA).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        export_checkpoint(ckpt, tmp_path / "model4")
    with pytest.raises(FileNotFoundError, match="no checkpoint found"):
        export_checkpoint(tmp_path / "model", tmp_path / "model5")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        export_checkpoint(tmp_path / "missing", tmp_path / "model6")


def test_accelerate_checkpoint_of_the_dino_layout(tmp_path: Path) -> None:
    """A checkpoint written the way training/dino.py writes it, with a real Accelerator.save_state."""
    torch.manual_seed(7)
    config = PathFMViTConfig.from_preset("tiny", drop_path_rate=0.0)
    student = MultiCropWrapper(PathFMViTModel(config), DINOHead(64, 32, hidden_dim=16, bottleneck_dim=8))
    teacher = MultiCropWrapper(PathFMViTModel(config), DINOHead(64, 32, hidden_dim=16, bottleneck_dim=8))
    teacher.eval()
    center = torch.nn.Module()
    center.register_buffer("center", torch.zeros(1, 32))
    accelerator = Accelerator(cpu=True)
    optimizer = torch.optim.AdamW(student.parameters())
    student, optimizer = accelerator.prepare(student, optimizer)
    accelerator.register_for_checkpointing(teacher, center)
    run = tmp_path / "run"
    ckpt = run / "checkpoints" / "checkpoint-12"
    accelerator.save_state(str(ckpt))
    (ckpt / "train_complete.json").write_text(json.dumps({"step": 12, "tiles_seen": 96}))
    (run / "config.yaml").write_text(yaml.safe_dump({
        "model": {"backbone_preset": "tiny", "out_dim": 32, "pretrained_weights": None},
        "data": {"mpps": [0.5, 1.0], "tile_size": 256},
        "training": {"lr": 0.0005},
        "run": {"slides": ["data/slides/CMU-1-Small-Region.svs"], "world_size": 1, "device": "cpu"},
    }))

    out = export_checkpoint(run, tmp_path / "model")  # the run folder: newest checkpoint is found
    loaded = AutoModel.from_pretrained(out).eval()
    _same_outputs(teacher.backbone, loaded)
    # The student (prepared model, different init) must not have been exported.
    with torch.no_grad():
        pixels = _pixels()
        assert not torch.equal(student.backbone(pixel_values=pixels).pooler_output,
                               loaded(pixel_values=pixels).pooler_output)
    card = ModelCard.load(out / "README.md")
    assert "| optimizer steps | 12 |" in card.text and "| tiles seen | 96 |" in card.text
    assert "`CMU-1-Small-Region`" in card.text and "| training.lr | 0.0005 |" in card.text


def test_cli_as_a_script(tmp_path: Path) -> None:
    teacher = _tiny(seed=8)
    ckpt = tmp_path / "ckpt"
    save_export_metadata(ckpt, teacher.config.to_dict(), {"steps": 3}, teacher_backbone=teacher)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "training" / "export.py"), "--checkpoint", str(ckpt),
         "--output_dir", str(tmp_path / "model"), "--repo_id", "alice/cli"],
        capture_output=True, text=True, env=env, timeout=240, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert {p.name for p in (tmp_path / "model").iterdir()} == EXPECTED_FILES
    _same_outputs(teacher, AutoModel.from_pretrained(tmp_path / "model").eval())

    # Bad input: a clear message and exit status 2, no traceback.
    with pytest.raises(SystemExit) as info:
        main(["--checkpoint", str(tmp_path / "nothing"), "--output_dir", str(tmp_path / "x")])
    assert info.value.code == 2


def test_card_info_aliases_used_by_the_dino_loop() -> None:
    from pathfm.training.model_card import ModelCardInfo

    info = ModelCardInfo.from_dict({
        "slides": ["data/slides/CMU-1-Small-Region.svs", "TCGA-CR-7395-01A-01-TS1.uuid.svs", "slide.v2"],
        "backbone_preset": "vits16",
        "pretrained_weights": "/weights/vit_small_patch16_224.dino.pth",
    })
    assert info.slide_ids == ["CMU-1-Small-Region", "TCGA-CR-7395-01A-01-TS1.uuid", "slide.v2"]
    assert info.architecture == "vits16"
    assert info.init == "ImageNet-pretrained weights from vit_small_patch16_224.dino.pth"
    assert ModelCardInfo.from_dict({"pretrained_weights": None}).init == "random"


def test_card_never_contains_credentials(tmp_path: Path) -> None:
    from pathfm.training.model_card import ModelCardInfo, build_model_card

    secret = "hf_SuperSecretValue123"
    hyper = {"training": {"lr": 0.001, "hub_token": secret, "push_to_hub": True}, "api_key": secret}
    info = ModelCardInfo.from_dict({"hyperparameters": hyper, "compute": {"HF_TOKEN": secret, "device": "cpu"},
                                    "datasets": [f"/slides/s{i}.svs" for i in range(25)]})
    assert info.hyperparameters == {"training": {"lr": 0.001, "push_to_hub": True}}
    text = str(build_model_card(info))
    assert secret not in text and "| training.lr | 0.001 |" in text and "| device | cpu |" in text
    assert "(+15 more)" in text
    teacher = _tiny()
    save_export_metadata(tmp_path, teacher.config.to_dict(), info, teacher_backbone=teacher)
    assert secret not in (tmp_path / CHECKPOINT_METADATA).read_text()
