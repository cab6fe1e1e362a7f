"""TrainingArguments names on the DINO command line give the same config as ours; warm-up conversions;
the usage line names the preset and --help shows the preset's values."""

from __future__ import annotations

import dataclasses

import pytest
from pathfm.training.config import parse_config


def test_aliases_give_the_same_config_as_our_names():
    ours = parse_config(
        [
            "--lr",
            "0.002",
            "--epochs",
            "3",
            "--per_device_batch_size",
            "4",
            "--clip_grad",
            "1.5",
            "--num_workers",
            "1",
            "--mixed_precision",
            "bf16",
        ]
    )
    theirs = parse_config(
        [
            "--learning_rate=0.002",
            "--num_train_epochs",
            "3",
            "--per_device_train_batch_size",
            "4",
            "--max_grad_norm",
            "1.5",
            "--dataloader_num_workers",
            "1",
            "--bf16",
        ]
    )
    assert [dataclasses.asdict(a) for a in ours[:3]] == [dataclasses.asdict(a) for a in theirs[:3]]


def test_warmup_steps_and_ratio_become_epochs():
    # cpu_tiny: steps_per_epoch from the preset; 20 steps in total
    _, _, t, _ = parse_config(["--max_steps", "20", "--steps_per_epoch", "8", "--warmup_steps", "4"])
    assert t.warmup_epochs == 4 / 8
    _, _, t, _ = parse_config(["--max_steps", "20", "--steps_per_epoch", "8", "--warmup_ratio", "0.1"])
    assert t.warmup_epochs == pytest.approx(0.1 * 20 / 8)
    with pytest.raises(ValueError, match="not both"):
        parse_config(["--warmup_steps", "4", "--warmup_ratio", "0.1"])
    with pytest.raises(ValueError, match=r"--warmup_ratio must be in \[0, 1\]"):
        parse_config(["--warmup_ratio", "2"])


def test_usage_names_the_preset_and_help_shows_its_values(capsys):
    with pytest.raises(SystemExit):
        parse_config(["vits16_kaiko", "--help"])
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith("usage: ") and "[PRESET]" in text.splitlines()[0]
    assert "preset 'vits16_kaiko'" in text
    assert "(default: vits16)" in " ".join(text.split())  # the preset's backbone, not the field default


def test_end_of_run_says_where_things_are_and_what_next(tmp_path):
    from pathfm.training.dino import next_steps

    text = next_steps(tmp_path, {"export": str(tmp_path / "model"), "hub_url": "https://hub/x"})
    assert f"model: {tmp_path / 'model'} (model card: {tmp_path / 'model' / 'README.md'})" in text
    assert f"tensorboard --logdir {tmp_path / 'logs'}" in text and "Hub: https://hub/x" in text
    assert f"python evaluation/linear_probe.py --model {tmp_path / 'model'}" in text
    assert f"PATHFM_SPACE_MODEL={tmp_path / 'model'} python spaces/app.py" in text
