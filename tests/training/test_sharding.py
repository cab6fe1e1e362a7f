"""The FSDP2 switches of ``training/sharding.py`` that run without a process group: ``--fsdp`` words and the
``accelerate launch --use_fsdp`` environment, the plugin handed to Accelerate, the units sharded, and the
one-line refusals on CPU. The sharded training itself: ``test_train_fsdp.py`` (2 processes, slow)."""

from __future__ import annotations

import pytest

from pathfm.training import dino
from pathfm.training.config import DINOModelArguments
from pathfm.training.networks import build_student_teacher
from pathfm.training.sharding import fsdp_mode, fsdp_plugin, wrap_units


@pytest.fixture(autouse=True)
def no_launch_env(monkeypatch):
    for name in ("ACCELERATE_USE_FSDP", "FSDP_VERSION", "FSDP_RESHARD_AFTER_FORWARD"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("words", "mode"),
    [("", None), ("full_shard", "full_shard"), ("shard_grad_op auto_wrap", "shard_grad_op")],
)
def test_fsdp_words(words, mode):
    assert fsdp_mode(words) == mode


@pytest.mark.parametrize("words", ["offload", "full_shard shard_grad_op", "auto_wrap", "fsdp2"])
def test_unknown_fsdp_words_are_refused(words):
    with pytest.raises(ValueError, match="expected one of"):
        fsdp_mode(words)


def test_accelerate_launch_use_fsdp(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    assert fsdp_mode("") == "full_shard"
    monkeypatch.setenv("FSDP_RESHARD_AFTER_FORWARD", "false")
    assert fsdp_mode("") == "shard_grad_op"
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(ValueError, match="--fsdp_version 2"):
        fsdp_mode("")


def test_plugin_is_fsdp2_over_blocks_backbone_head():
    plugin = fsdp_plugin("shard_grad_op", "bf16")
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is False
    assert plugin.transformer_cls_names_to_wrap == ["PathFMViTLayer", "PathFMViTModel", "DINOHead"]
    assert plugin.state_dict_type.name == "SHARDED_STATE_DICT"
    assert str(plugin.mixed_precision_policy.reduce_dtype) == "torch.float32"


def test_wrap_units_children_first():
    student, _ = build_student_teacher(DINOModelArguments(backbone_preset="tiny", out_dim=32))
    units = wrap_units(student)
    names = [type(u).__name__ for u in units]
    assert names == ["DINOHead", "PathFMViTLayer", "PathFMViTLayer", "PathFMViTModel"]
    assert units[1] is student.backbone.layers[1] and units[-1] is student.backbone


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--fsdp", "full_shard"], "runs on GPUs only"),
        (["--fsdp", "full_shard", "--torch_compile", "true"], "--torch_compile false"),
        (["--fsdp", "zero3"], "--fsdp 'zero3': expected one of"),
    ],
)
def test_fsdp_on_cpu_is_one_line(flags, message, tmp_path, capsys, monkeypatch, fresh_accelerate_state):
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    assert dino.cli(["cpu_tiny", "--output_dir", str(tmp_path / "run"), "--report_to", "none", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "run").exists()
