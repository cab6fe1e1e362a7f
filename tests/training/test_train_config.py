"""Config parsing: presets, command-line overrides, validation, resolved config file."""

import json

import pytest
import yaml

from pathfm.training.config import load_preset, parse_config, save_config


def test_default_preset_is_cpu_tiny_and_cli_overrides_it():
    m, d, t, path = parse_config([])
    assert path.name == "cpu_tiny.yaml"
    assert m.backbone_preset == "tiny" and d.slides == ["embedded"]
    m, d, t, _ = parse_config(["--max_steps", "7", "--local_crops_number", "2", "--norm_last_layer", "false"])
    assert t.max_steps == 7 and t.total_steps == 7 and d.local_crops_number == 2 and not m.norm_last_layer


@pytest.mark.parametrize(
    "name,backbone,batch", [("vits16_kaiko", "vits16", 256), ("vitb8_kaiko", "vitb8", 64)]
)
def test_kaiko_presets_keep_dino_defaults(name, backbone, batch):
    m, d, t, _ = parse_config([name])
    assert m.backbone_preset == backbone and m.out_dim == 65536 and m.head_hidden_dim == 2048
    assert m.head_bottleneck_dim == 256 and m.drop_path_rate == 0.1
    assert t.per_device_batch_size == batch and t.lr == 5e-4 and t.min_lr == 1e-6 and t.warmup_epochs == 10
    assert (t.weight_decay, t.weight_decay_end, t.clip_grad, t.freeze_last_layer) == (0.04, 0.4, 3.0, 1)
    assert (t.momentum_teacher, t.student_temp, t.center_momentum) == (0.996, 0.1, 0.9)
    assert (t.warmup_teacher_temp, t.teacher_temp, t.warmup_teacher_temp_epochs) == (0.04, 0.07, 30)
    assert d.mpps == [0.25, 0.5, 1.0, 2.0] and d.tile_size == 256 and d.min_tissue == 0.4
    assert d.local_crops_number == 8 and d.global_crop_size == 224 and d.local_crop_size == 96
    assert t.total_steps == 100 * t.steps_per_epoch


def test_json_preset_and_unknown_key(tmp_path):
    good = tmp_path / "p.json"
    good.write_text(json.dumps({"backbone_preset": "tiny", "max_steps": 3}))
    m, _, t, path = parse_config([str(good), "--seed", "5"])
    assert path == good and t.max_steps == 3 and t.seed == 5
    bad = tmp_path / "bad.yaml"
    bad.write_text("backbone_preset: tiny\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"bad.yaml.*learning_rate"):
        load_preset(bad)
    with pytest.raises(FileNotFoundError, match="no_such_preset"):
        parse_config(["no_such_preset"])
    with pytest.raises(ValueError, match="hub_model_id"):
        parse_config(["--push_to_hub", "true"])


def test_save_config_round_trip(tmp_path):
    m, d, t, _ = parse_config(["--max_steps", "3"])
    path = save_config(tmp_path, m, d, t, extra={"world_size": 1})
    data = yaml.safe_load(path.read_text())
    assert data["training"]["max_steps"] == 3 and data["model"]["backbone_preset"] == "tiny"
    assert data["run"]["world_size"] == 1


def test_hub_token_is_never_written(tmp_path):
    m, d, t, _ = parse_config(["--max_steps", "3", "--hub_token", "hf_SECRETtoken123"])
    assert t.hub_token == "hf_SECRETtoken123"  # still usable by the run itself
    path = save_config(tmp_path, m, d, t)
    text = path.read_text()
    assert "hf_SECRETtoken123" not in text
    assert yaml.safe_load(text)["training"]["hub_token"] == "<redacted>"
