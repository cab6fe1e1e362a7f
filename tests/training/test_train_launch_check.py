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
        (["python", "-m", "accelerate.commands.launch", "--num_processes", "1", "dino.py"], 1),
        (["/v/bin/accelerate", "launch", "dino.py"], None),  # the config file decides
        (["/v/bin/python", "dino.py", "--num_processes", "2"], None),  # not an accelerate launch
        (["/v/bin/accelerate", "env"], None),
    ],
)
def test_parse_num_processes(cmdline: list[str], expected: int | None) -> None:
    assert parse_num_processes(cmdline) == expected


def test_wrong_cpu_launch_is_refused(repo_root: Path, tmp_path: Path) -> None:
    """`accelerate launch --cpu --num_processes 2` starts ONE process: the script must stop, not train."""
    accelerate = Path(sys.executable).parent / "accelerate"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(
        [
            str(accelerate),
            "launch",
            "--cpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            str(repo_root / "training" / "dino.py"),
            "--max_steps",
            "1",
            "--output_dir",
            str(tmp_path / "run"),
            "--report_to",
            "none",
        ],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    expected = (
        "training/dino.py: error: world size mismatch: accelerate runs 1 process(es) but 2 were expected"
    )
    assert expected in proc.stderr
    assert not (tmp_path / "run" / "model").exists()


def test_existing_run_is_not_silently_replaced(tmp_path: Path) -> None:
    from pathfm.training.checkpointing import prepare_output_dir

    run = tmp_path / "run"
    (run / "checkpoints" / "checkpoint-60").mkdir(parents=True)
    (run / "model").mkdir()
    with pytest.raises(
        FileExistsError, match=r"already holds a run \(checkpoints/, model/\).*overwrite_output_dir"
    ):
        prepare_output_dir(run, resume=None, overwrite=False, is_main=True)
    prepare_output_dir(run, resume="latest", overwrite=False, is_main=True)  # continuing it is fine
    assert (run / "checkpoints" / "checkpoint-60").is_dir()
    prepare_output_dir(run, resume=None, overwrite=True, is_main=True)
    assert not (run / "checkpoints").exists() and not (run / "model").exists()
    prepare_output_dir(
        tmp_path / "fresh", resume=None, overwrite=False, is_main=True
    )  # new folder: nothing to do
