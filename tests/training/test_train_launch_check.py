"""The run refuses a launch whose process count differs from the one asked for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pathfm.training.launch_check import parse_num_processes


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        (["/v/bin/python", "/v/bin/accelerate", "launch", "--cpu", "--num_processes", "2", "dino.py"], 2),
        (["/v/bin/accelerate", "launch", "--num_processes=8", "--multi_gpu", "dino.py"], 8),
        (["accelerate-launch", "--num_processes", "4", "dino.py"], 4),
        (["/v/bin/accelerate", "launch", "dino.py"], None),  # the config file decides
        (["/v/bin/python", "dino.py", "--num_processes", "2"], None),  # not an accelerate launch
        (["/v/bin/accelerate", "env"], None),
    ],
)
def test_parse_num_processes(cmdline: list[str], expected: int | None) -> None:
    assert parse_num_processes(cmdline) == expected


def test_wrong_cpu_launch_is_refused(repo_root: Path, tmp_path: Path) -> None:
    """`accelerate launch --cpu --num_processes 2` starts one process: the script must stop, not train alone."""
    accelerate = Path(sys.executable).parent / "accelerate"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(
        [str(accelerate), "launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", str(repo_root / "training" / "dino.py"),
         "--max_steps", "1", "--output_dir", str(tmp_path / "run"), "--report_to", "none"],
        cwd=repo_root, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert "world size mismatch: accelerate runs 1 process(es) but 2 were expected" in proc.stderr + proc.stdout
    assert not (tmp_path / "run" / "model").exists()
