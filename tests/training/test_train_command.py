"""``pathfm train``: which arguments go to ``accelerate launch``, the launch command, and the stderr relay that
holds training's one-line error back to print it last (the 2-process runs: test_train_bad_input.py)."""

from __future__ import annotations

import sys

import pytest

from pathfm.training.train_command import _HoldBackOurLine, launch_command, split_launch_args


def test_launch_flags_are_split_from_training_flags():
    launch, rest = split_launch_args(
        ["cpu_tiny", "--num_processes", "2", "--max_steps", "3", "--main_process_port=29600", "--seed", "1"]
    )
    assert launch == {"num_processes": 2, "main_process_port": 29600}
    assert rest == ["cpu_tiny", "--max_steps", "3", "--seed", "1"]
    with pytest.raises(ValueError, match="--num_processes needs a whole number, got 'two'"):
        split_launch_args(["--num_processes", "two"])
    with pytest.raises(ValueError, match="got ''"):
        split_launch_args(["--num_processes"])


def test_launch_command_runs_this_python_on_dino():
    command = launch_command({"num_processes": 2, "main_process_port": 29600}, ["cpu_tiny", "--max_steps", "3"])
    assert command[:4] == [sys.executable, "-m", "accelerate.commands.launch", "--quiet"]
    assert command[command.index("--num_processes") + 1] == "2" and "--multi_gpu" in command
    assert command[command.index("--main_process_port") + 1] == "29600"
    assert command[-4].endswith("training/dino.py") and command[-3:] == ["cpu_tiny", "--max_steps", "3"]


def test_relay_passes_everything_but_our_line(capfd):
    relay = _HoldBackOurLine()
    report = b"  traceback : training/dino.py: error: preset 'x' not found\n======\n"
    for chunk in (b"step 1\n 10%|#   \r 20%|##  ", b"\rdone\nW launcher noise\n", report[:20], report[20:]):
        relay.feed(chunk)
    relay.close()
    err = capfd.readouterr().err
    assert err == "step 1\n 10%|#   \r 20%|##  \rdone\nW launcher noise\n======\n"
    assert relay.lines == ["training/dino.py: error: preset 'x' not found"]
