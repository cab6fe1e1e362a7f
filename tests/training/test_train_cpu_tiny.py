"""The default job: `accelerate launch training/dino.py` with no arguments (preset cpu_tiny, embedded slides).

Slow (a few minutes on 2 cores): run with ``-m slow``. Asserts the < 10 minute budget, the export folder and
that the loss moved.
"""

import json
import os
import subprocess
import sys
import time

import pytest


@pytest.mark.slow
def test_default_cpu_tiny_run(repo_root, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    # the only flag is the output folder (the default is outputs/dino); everything else is the preset
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--num_processes",
            "1",
            "training/dino.py",
            "--output_dir",
            str(tmp_path),
        ],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    wall = time.perf_counter() - start
    assert res.returncode == 0, res.stderr[-4000:]
    assert wall < 600, f"cpu_tiny took {wall:.0f} s"
    model = tmp_path / "model"
    for name in (
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "README.md",
        "modeling_pathfm_vit.py",
        "configuration_pathfm_vit.py",
    ):
        assert (model / name).is_file(), name
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    losses = summary["losses"]
    assert summary["steps"] == len(losses) == 120
    first = sum(losses[:10]) / 10
    last = sum(losses[-10:]) / 10
    print(f"cpu_tiny wall {wall:.0f} s; loss first10 {first:.4f} last10 {last:.4f}")
    assert first - last > 0.3, (first, last)  # the loss visibly moves down

    from transformers import AutoModel

    loaded = AutoModel.from_pretrained(model, trust_remote_code=True)
    assert loaded.config.hidden_size == 64
