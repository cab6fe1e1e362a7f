"""timm <-> pathfm conversion: converted weights give timm's outputs for every preset, both directions, the
loader and the CLI, and mismatching checkpoints fail with the offending keys.

timm models use each preset's real architecture (width, heads, patch, registers, LayerScale, position layout)
with depth shrunk to 2 to keep the suite fast; every parameter is randomised so no term is trivially zero/one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from pathfm.modeling import TIMM_ARCHITECTURES, PathFMViTConfig, PathFMViTModel
from pathfm.modeling.convert_timm_to_pathfm import (
    CheckpointMismatchError,
    load_pretrained_backbone,
    main,
    pathfm_to_timm_state_dict,
    timm_to_pathfm_state_dict,
)
from safetensors.torch import save_file
from transformers import AutoModel

DEPTH = 2
RELEASED = ["vits16", "vits8", "vitb16", "vitb8", "vitl14_reg4"]
_CACHE: dict[tuple, torch.nn.Module] = {}


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fill every parameter with random values (matrices ~N(0, 0.05), vectors ~U(-0.5, 1.5))."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
            else:
                p.copy_(torch.rand(p.shape, generator=gen) * 2 - 0.5)
    return model.eval()


def timm_model(arch: str, **kwargs) -> torch.nn.Module:
    """A random-weight timm model (cached per arguments)."""
    key = (arch, tuple(sorted(kwargs.items())))
    if key not in _CACHE:
        _CACHE[key] = randomise(timm.create_model(arch, pretrained=False, num_classes=0, **kwargs))
    return _CACHE[key]


def tiny_timm(**kwargs) -> torch.nn.Module:
    """timm ViT in the layout of the ``tiny`` preset (vit_small_patch16_224 with width 64, 2 blocks, 4 heads)."""
    return timm_model("vit_small_patch16_224", embed_dim=64, depth=2, num_heads=4, **kwargs)


def converted(preset: str, tm: torch.nn.Module, **overrides) -> PathFMViTModel:
    config = PathFMViTConfig.from_preset(preset, num_hidden_layers=DEPTH, **overrides)
    model = PathFMViTModel(config).eval()
    model.load_state_dict(timm_to_pathfm_state_dict(tm.state_dict(), config), strict=True)
    return model


def other_size(preset: str) -> tuple[int, int]:
    """A non-square size that is not the native one, so the position grid is interpolated."""
    patch = PathFMViTConfig.from_preset(preset).patch_size
    return (patch * 20, patch * 12) if patch > 8 else (patch * 20, patch * 14)


@pytest.mark.parametrize("preset", RELEASED)
def test_timm_parity_at_224_and_another_size(preset: str) -> None:
    tm = timm_model(TIMM_ARCHITECTURES[preset], depth=DEPTH, dynamic_img_size=True)
    model = converted(preset, tm)
    config = model.config
    assert tm.patch_embed.img_size == config.image_hw  # 518 for the DINOv2 layout, as in timm
    assert tm.num_prefix_tokens == config.num_prefix_tokens
    torch.manual_seed(1)
    for size in [(224, 224), other_size(preset)]:
        rows, cols = size[0] // config.patch_size, size[1] // config.patch_size
        if preset != "vitl14_reg4" and size == (224, 224):
            assert (rows, cols) == config.grid_size  # native
        else:
            assert (rows, cols) != config.grid_size  # interpolated
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            ours = model(x)
            tokens = tm.forward_features(x)
            pooled = tm(x)
        assert ours.last_hidden_state.shape == (2, config.num_prefix_tokens + rows * cols, config.hidden_size)
        assert (ours.last_hidden_state - tokens).abs().max() <= 1e-5, size
        assert (ours.pooler_output - pooled).abs().max() <= 1e-5, size
        assert pooled.abs().max() > 0.1  # not a degenerate comparison


def test_timm_parity_static_timm_at_native_size() -> None:
    """timm without dynamic_img_size (the way kaiko's hub models are built) at its native 224 px."""
    tm = timm_model("vit_small_patch16_224", depth=DEPTH)
    model = converted("vits16", tm)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert (model(x).pooler_output - tm(x)).abs().max() <= 1e-5


@pytest.mark.slow
def test_vitl14_reg4_parity_at_native_518_full_depth() -> None:
    tm = randomise(timm.create_model("vit_large_patch14_reg4_dinov2", pretrained=False, num_classes=0))
    config = PathFMViTConfig.from_preset("vitl14_reg4")
    model = PathFMViTModel(config).eval()
    model.load_state_dict(timm_to_pathfm_state_dict(tm.state_dict(), config), strict=True)
    x = torch.randn(1, 3, 518, 518)
    with torch.no_grad():
        assert (model(x).last_hidden_state - tm.forward_features(x)).abs().max() <= 1e-5


@pytest.mark.parametrize("preset", ["vits16", "vitl14_reg4"])
def test_pathfm_to_timm_round_trip_loads_strict_in_timm(preset: str) -> None:
    torch.manual_seed(0)
    config = PathFMViTConfig.from_preset(preset, num_hidden_layers=DEPTH)
    model = randomise(PathFMViTModel(config), seed=3)
    timm_sd = pathfm_to_timm_state_dict(model.state_dict(), config)
    tm = timm.create_model(
        TIMM_ARCHITECTURES[preset], pretrained=False, num_classes=0, depth=DEPTH, dynamic_img_size=True
    ).eval()
    tm.load_state_dict(timm_sd, strict=True)
    back = timm_to_pathfm_state_dict(timm_sd, config)
    assert all(torch.equal(back[k], v) for k, v in model.state_dict().items())
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert (model(x).pooler_output - tm(x)).abs().max() <= 1e-5


def test_mismatched_checkpoint_lists_missing_and_unexpected_keys() -> None:
    reg = timm_model("vit_large_patch14_reg4_dinov2", depth=1, embed_dim=64, num_heads=4, img_size=224)
    config = PathFMViTConfig.from_preset("tiny", patch_size=14, num_hidden_layers=2)
    with pytest.raises(CheckpointMismatchError) as err:
        timm_to_pathfm_state_dict(
            {**reg.state_dict(), "dino_extra.weight": torch.zeros(1)}, config, "reg.pth"
        )
    message = str(err.value)
    assert "reg.pth does not match architecture 'tiny'" in message
    # keys are named as in the checkpoint (timm names)
    assert "missing keys (12)" in message and "'blocks.1.attn.qkv.weight'" in message
    for key in ("reg_token", "blocks.0.ls1.gamma", "blocks.0.ls2.gamma", "dino_extra.weight"):
        assert f"'{key}'" in message
    assert "pos_embed: checkpoint (1, 256, 64) vs model (1, 257, 64)" in message

    with pytest.raises(
        CheckpointMismatchError, match=r"shape mismatches \(\d+\): \['blocks.0.attn.proj.bias"
    ):
        timm_to_pathfm_state_dict(
            tiny_timm().state_dict(), PathFMViTConfig.from_preset("vits16", num_hidden_layers=2)
        )


def test_load_pretrained_backbone_from_files_and_folders(tmp_path: Path) -> None:
    tm = tiny_timm()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = tm(x)
    sd = tm.state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "plain.safetensors")
    torch.save({"model": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, tmp_path / "ddp.bin")
    # DINO checkpoint.pth: teacher = backbone.* + projection head.*, next to optimizer state
    dino = {f"backbone.{k}": v for k, v in sd.items()} | {"head.mlp.0.weight": torch.zeros(8, 64)}
    torch.save({"teacher": dino, "student": dino, "epoch": 10}, tmp_path / "checkpoint.pth")
    for name in ("plain.safetensors", "ddp.bin", "checkpoint.pth"):
        model = load_pretrained_backbone(str(tmp_path / name), "tiny")
        with torch.no_grad():
            assert (model(x).pooler_output - expected).abs().max() <= 1e-5, name
    model.save_pretrained(tmp_path / "pathfm")
    again = load_pretrained_backbone(str(tmp_path / "pathfm"), "tiny")
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))
    with pytest.raises(CheckpointMismatchError, match="not 'vits16'"):
        load_pretrained_backbone(str(tmp_path / "pathfm"), "vits16")
    with pytest.raises(CheckpointMismatchError, match="missing keys"):
        load_pretrained_backbone(str(tmp_path / "plain.safetensors"), "vits16")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained_backbone(str(tmp_path / "nope.pth"), "tiny")


def test_load_pretrained_backbone_infers_the_stored_grid(tmp_path: Path) -> None:
    """A DINOv2-layout checkpoint stored at 224 px (16 x 16 grid) loads as vitl14_reg4 with image_size 224 and
    matches timm built with img_size=224."""
    # the layout of vit_large_patch14_reg4_dinov2, narrowed to width 64 (this test is about the grid)
    tm = timm_model("vit_large_patch14_reg4_dinov2", depth=DEPTH, img_size=224, embed_dim=64, num_heads=4)
    torch.save(tm.state_dict(), tmp_path / "vitl14.pth")
    narrow = dict(num_hidden_layers=DEPTH, hidden_size=64, num_attention_heads=4, intermediate_size=256)
    model = load_pretrained_backbone(str(tmp_path / "vitl14.pth"), "vitl14_reg4", **narrow)
    assert model.config.image_size == 224 and model.embeddings.position_embeddings.shape == (1, 256, 64)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert (model(x).last_hidden_state - tm.forward_features(x)).abs().max() <= 1e-5


def test_cli_converts_both_ways(tmp_path: Path, repo_root: Path) -> None:
    tm = tiny_timm()
    torch.save(tm.state_dict(), tmp_path / "tiny_timm.pth")
    script = repo_root / "modeling" / "convert_timm_to_pathfm.py"
    out = tmp_path / "converted"
    cmd = [sys.executable, str(script), "--checkpoint", str(tmp_path / "tiny_timm.pth"), "--arch", "tiny"]
    proc = subprocess.run(
        [*cmd, "--output_dir", str(out)], check=False, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "modeling_pathfm_vit.py"} <= {
        p.name for p in out.iterdir()
    }
    x = torch.randn(1, 3, 224, 224)
    model = AutoModel.from_pretrained(out).eval()
    with torch.no_grad():
        assert (model(x).pooler_output - tm(x)).abs().max() <= 1e-5

    # the other directions through the same entry point, in-process (the script start-up is covered above)
    back = tmp_path / "timm_again"
    assert main(["--checkpoint", str(out), "--arch", "tiny", "--output_dir", str(back), "--to_timm"]) == 0
    fresh = timm.create_model("vit_small_patch16_224", embed_dim=64, depth=2, num_heads=4, num_classes=0)
    from safetensors.torch import load_file

    fresh.load_state_dict(load_file(back / "model.safetensors"), strict=True)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), tm.state_dict().values()))

    with pytest.raises(
        CheckpointMismatchError, match="does not match architecture 'vitb16'(.|\n)*missing keys"
    ):
        main([*cmd[2:-1], "vitb16", "--output_dir", str(tmp_path / "bad")])
