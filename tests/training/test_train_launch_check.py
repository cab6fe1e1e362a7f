"""The run refuses a launch whose process count differs from the one asked for, and a folder that holds
another run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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


def _our_config(run: Path) -> None:
    config = {"model": {}, "data": {}, "training": {"output_dir": str(run)}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))


def test_a_folder_whose_run_saved_no_checkpoint_is_started_afresh(tmp_path: Path) -> None:
    """Killed while writing the first checkpoint (or stopped before it): a rerun of the same command starts
    afresh instead of being refused as 'already holds a run', and the stopped run's logs go."""
    from pathfm.training.checkpointing import prepare_output_dir

    run = tmp_path / "run"
    (run / "checkpoints" / "checkpoint-120").mkdir(parents=True)  # no train_complete.json
    (run / "checkpoints" / "checkpoint-120" / "model.safetensors").write_bytes(b"partial")
    (run / "logs" / "dino").mkdir(parents=True)
    (run / "logs" / "dino" / "events.out.tfevents.1").write_bytes(b"")
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    (run / "notes.txt").write_text("the user's")
    _our_config(run)
    prepare_output_dir(run, resume=None, overwrite=False, is_main=True)
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == ["checkpoints", "logs", "notes.txt"]

    # a folder this script did not write: only the incomplete checkpoint goes
    other = tmp_path / "other"
    (other / "checkpoints" / "checkpoint-3").mkdir(parents=True)
    (other / "logs" / "dino").mkdir(parents=True)
    (other / "config.yaml").write_text("lr: 1\n")
    (other / "metrics.jsonl").write_text("x\n")
    prepare_output_dir(other, resume=None, overwrite=False, is_main=True)
    assert sorted(str(p.relative_to(other)) for p in other.rglob("*")) == [
        "checkpoints", "config.yaml", "logs", "logs/dino", "metrics.jsonl"
    ]


def test_overwrite_also_removes_the_replaced_runs_logs(tmp_path: Path) -> None:
    from pathfm.training.checkpointing import COMPLETE_MARKER, prepare_output_dir

    run = tmp_path / "run"
    (run / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (run / "checkpoints" / "checkpoint-2" / COMPLETE_MARKER).write_text("{}")
    (run / "logs" / "dino").mkdir(parents=True)
    (run / "train_summary.json").write_text("{}")
    _our_config(run)
    with pytest.raises(FileExistsError, match=r"already holds a run \(checkpoints/\)"):
        prepare_output_dir(run, resume=None, overwrite=False, is_main=True)
    prepare_output_dir(run, resume=None, overwrite=True, is_main=True)
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == ["logs"]
