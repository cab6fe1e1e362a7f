"""SIGTERM and SIGINT to a real 2-process CPU run (``accelerate launch --multi_gpu --num_processes 2``): every
rank stops after the same step, a checkpoint is saved there (SIGTERM by default, SIGINT with
``--save_on_interrupt``), one "stopped at step N; last checkpoint ...; resume with ..." line is printed, and
the resumed run reaches the same per-step losses as an uninterrupted run."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.training.test_train_ddp import SMALL

STEPS = 10
ARGS = [
    *SMALL,
    "--max_steps",
    str(STEPS),
    "--save_steps",
    "0",
    "--logging_steps",
    "1",
    "--expected_world_size",
    "2",
]


def launch(repo_root: Path, out: Path, port: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    cmd += ["--main_process_port", str(port), "training/dino.py", "cpu_tiny", *ARGS, "--output_dir", str(out)]
    return subprocess.Popen(
        [*cmd, *extra], cwd=repo_root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def losses(out: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {row["step"]: row["loss"] for row in rows}


@pytest.fixture(scope="module")
def reference(repo_root, tmp_path_factory) -> dict[int, float]:
    out = tmp_path_factory.mktemp("reference") / "run"
    done = launch(repo_root, out, 29551)
    _, err = done.communicate(timeout=900)
    assert done.returncode == 0, err[-3000:]
    return losses(out)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "extra"), [(signal.SIGTERM, []), (signal.SIGINT, ["--save_on_interrupt", "true"])]
)
def test_interrupt_then_resume_matches_an_uninterrupted_run(sig, extra, reference, repo_root, tmp_path):
    assert sorted(reference) == list(range(1, STEPS + 1))
    out = tmp_path / "run"
    run = launch(repo_root, out, 29553, *extra)
    deadline = time.monotonic() + 600
    while not (out / "metrics.jsonl").exists() or len(losses(out)) < 3:
        assert run.poll() is None, run.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the run did not reach step 3"
        time.sleep(0.2)
    run.send_signal(sig)  # to the launcher, as a scheduler or a terminal does; it forwards it to the ranks
    _, err = run.communicate(timeout=300)
    assert run.returncode != 0
    stopped = [line for line in err.splitlines() if line.startswith(f"stopped by {sig.name} at step ")]
    assert len(stopped) == 1, err[-3000:]  # printed once (rank 0)
    step = int(re.search(r"at step (\d+)", stopped[0]).group(1))
    assert (
        3 <= step < STEPS
        and f"checkpoint-{step}" in stopped[0]
        and "--resume_from_checkpoint latest" in stopped[0]
    )
    # the resume command names the checkpoint's saved config (the flags a resume must repeat) and the launch
    # of 2 CPU processes; it is run as printed (accelerate's module for its console script, a free port)
    saved = out / "checkpoints" / f"checkpoint-{step}" / "config.yaml"
    command = stopped[0].split("; resume with: ", 1)[1]
    launch_2 = "ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2"
    assert command == f"{launch_2} training/dino.py {saved} --resume_from_checkpoint latest", command
    assert (out / "checkpoints" / f"checkpoint-{step}").is_dir() and not (out / "model").exists()

    variable, accelerate, verb, *args = shlex.split(command)
    assert (accelerate, verb) == ("accelerate", "launch")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **dict([variable.split("=")])}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--main_process_port", "29555", *args]
    resumed = subprocess.Popen(
        cmd, cwd=repo_root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _, err = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, err[-3000:]
    got = losses(out)
    assert sorted(got) == list(range(1, STEPS + 1))
    assert got == pytest.approx(reference, abs=1e-6)


def test_stop_flag_and_save_policy():
    from pathfm.training.interrupt import StopFlag, should_save

    before = signal.getsignal(signal.SIGTERM)
    flag = StopFlag().install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)  # handled: sets the flag, the process goes on
        time.sleep(0.05)
        assert flag.signum == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGINT)  # a later signal does not replace the first
        time.sleep(0.05)
        assert flag.signum == signal.SIGTERM
    finally:
        flag.restore()
    assert signal.getsignal(signal.SIGTERM) is before
    assert should_save(signal.SIGTERM, None) and not should_save(signal.SIGINT, None)
    assert should_save(signal.SIGINT, True) and not should_save(signal.SIGTERM, False)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_the_process_group_with_loader_workers_stops_cleanly(sig, repo_root, tmp_path):
    """Ctrl-C in a terminal and SLURM's SIGTERM reach every process of the group, DataLoader workers too:
    the run must still stop at a step with a checkpoint, not die of a killed worker."""
    out = tmp_path / "run"
    small = list(SMALL)
    small[small.index("--num_workers") + 1] = "2"
    cmd = [sys.executable, "training/dino.py", "cpu_tiny", *small, "--max_steps", "200", "--save_steps", "0"]
    cmd += ["--logging_steps", "1", "--output_dir", str(out)]
    cmd += ["--save_on_interrupt", "true"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    run = subprocess.Popen(
        cmd, cwd=repo_root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    while not (out / "metrics.jsonl").exists() or len(losses(out)) < 2:
        assert run.poll() is None, run.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the run did not reach step 2"
        time.sleep(0.2)
    os.killpg(run.pid, sig)  # the whole group: main process and its DataLoader workers
    _, err = run.communicate(timeout=300)
    assert "killed by signal" not in err and "Traceback" not in err, err[-3000:]
    stopped = [line for line in err.splitlines() if line.startswith(f"stopped by {sig.name} at step ")]
    assert len(stopped) == 1, err[-3000:]
    step = int(re.search(r"at step (\d+)", stopped[0]).group(1))
    assert (out / "checkpoints" / f"checkpoint-{step}").is_dir()


@pytest.mark.slow
def test_second_ctrl_c_stops_at_once_without_traceback(repo_root, tmp_path):
    """Two SIGINTs to a one-process run with a data worker: one line, exit 130, no traceback, and neither the
    process nor its DataLoader worker is left running (a KeyboardInterrupt used to hang joining the worker)."""
    import psutil

    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    # the preset's own sizes: a step of ~0.5 s, so that both signals land inside one step
    cmd = [sys.executable, "training/dino.py", "cpu_tiny", "--max_steps", "200", "--save_steps", "0"]
    cmd += ["--logging_steps", "1", "--num_workers", "1", "--probe_size", "0", "--output_dir", str(out)]
    proc = subprocess.Popen(cmd, cwd=repo_root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and metrics.read_text().strip()) and time.time() < deadline:
        time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    family = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    assert len(family) >= 2, "expected a DataLoader worker process"
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    # 130 from our handler or cli; -SIGINT when the second signal lands after the clean stop restored the
    # default handler (the process ends at once, its stop line already printed)
    assert proc.returncode in (130, -signal.SIGINT), err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    # the second signal lands inside a step or during the clean stop the first one started (both: exit now);
    # on a fast machine the clean stop may also have finished first
    assert "stopped at once by a second Ctrl-C" in err or "stopped by SIGINT at step" in err, err[-2000:]
    time.sleep(5)  # the worker notices its parent is gone (DataLoader's watchdog polls every few seconds)
    alive = [p for p in family if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"left running: {alive}"


WORKERS_ALIVE_AT_EXIT = """
import sys
from pathfm.training.tile_batches import TileBatchStream, resolve_slides
stream = TileBatchStream(resolve_slides([sys.argv[1]]), batch_size=2, seed=0, mpps=[1.0], tile_size=32,
                         min_tissue=0.4, tiles_per_slide=4, num_workers=1)
assert next(stream)["pixel_values"].shape[0] == 2
print("first batch", flush=True)
# exits with the stream (and its worker, which ignores SIGTERM) still alive: a module global
"""


def test_process_exits_with_its_tile_workers_still_running(cmu_svs, repo_root):
    """A process that ends while its stream's DataLoader worker still runs (a global, or an exception whose
    traceback holds the iterator) exits: multiprocessing's exit hook alone would SIGTERM the worker, which
    ignores SIGTERM, and then wait for it forever."""
    import psutil

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "-c", WORKERS_ALIVE_AT_EXIT, str(cmu_svs)],
        cwd=repo_root, env=env, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert run.returncode == 0 and run.stdout == "first batch\n", run.stderr[-3000:]
    assert "Traceback" not in run.stderr and "killed by signal" not in run.stderr, run.stderr[-3000:]
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if WORKERS_ALIVE_AT_EXIT in (p.info["cmdline"] or [])]
    assert not leftovers
