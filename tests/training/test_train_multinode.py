"""Two-"node" launch for real on this machine: two ``accelerate launch`` launchers on localhost as machine
rank 0 and 1 (``--num_machines 2 --main_process_ip 127.0.0.1``), one CPU process each, as the README's
multi-node and SLURM section starts them. Checks: world size 2 over two launchers, the slide stream split
across the nodes without duplicates, parameters equal on both nodes, and a checkpoint of the two-node run that
one node with two processes resumes to exactly the same weights and losses.

Slow (three two-process runs: ~20 s on an idle 2-core machine, minutes under load): run with ``-m slow``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training.test_train_ddp import SMALL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    return {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _train_cmd(out: Path, *extra: str) -> list[str]:
    cmd = ["training/dino.py", "cpu_tiny", *SMALL, "--output_dir", str(out)]
    return cmd + ["--expected_world_size", "2", *extra]


def _two_nodes(repo_root: Path, out: Path, *extra: str) -> list[subprocess.CompletedProcess]:
    """Start machine rank 0 and 1 at once (as two SLURM tasks would), wait for both."""
    port = str(_free_port())
    procs = []
    for machine_rank in (0, 1):
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "2"]
        cmd += ["--num_processes", "2", "--machine_rank", str(machine_rank)]
        cmd += ["--main_process_ip", "127.0.0.1", "--main_process_port", port, "--same_network"]
        procs.append(
            subprocess.Popen(
                cmd + _train_cmd(out, *extra),
                cwd=repo_root,
                env=_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=900)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return results


def _one_node_two_processes(repo_root: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    cmd += ["--main_process_port", str(_free_port())]
    return subprocess.run(
        cmd + _train_cmd(out, *extra), cwd=repo_root, env=_env(), capture_output=True, text=True, timeout=900
    )


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.slow
def test_two_node_launch_splits_stream_and_resumes_on_one_node(repo_root: Path, tmp_path: Path) -> None:
    two = tmp_path / "two_nodes"
    for res in _two_nodes(repo_root, two):
        assert res.returncode == 0, res.stderr[-4000:]

    summary = _json(two / "train_summary.json")
    assert summary["world_size"] == 2 and summary["steps"] == 4
    assert summary["tiles_seen"] == 4 * 2 * 2  # steps x per-device batch x processes (one per node)
    assert _json(two / "param_digest_rank0.json") == _json(two / "param_digest_rank1.json")
    # the stream is split across the nodes: disjoint slides, every tile from its own node's slides
    s0, s1 = _json(two / "data_stats_rank0.json"), _json(two / "data_stats_rank1.json")
    assert s0["slide_counts"] and s1["slide_counts"]
    assert not set(s0["slides"]) & set(s1["slides"])
    assert set(s0["slide_counts"]) <= set(s0["slides"]) and set(s1["slide_counts"]) <= set(s1["slides"])
    assert sum(s0["slide_counts"].values()) + sum(s1["slide_counts"].values()) >= summary["tiles_seen"]

    # the two-node checkpoint at step 2, resumed by one node running both processes, ends where the
    # uninterrupted two-node run ended
    one = tmp_path / "one_node"
    (one / "checkpoints").mkdir(parents=True)
    shutil.copytree(two / "checkpoints" / "checkpoint-2", one / "checkpoints" / "checkpoint-2")
    res = _one_node_two_processes(repo_root, one, "--resume_from_checkpoint", "latest")
    assert res.returncode == 0, res.stderr[-4000:]
    resumed = _json(one / "train_summary.json")
    assert resumed["resumed_from"].endswith("checkpoint-2") and resumed["steps"] == 4
    assert resumed["losses"] == summary["losses"][2:]
    assert _json(one / "param_digest_rank0.json") == _json(two / "param_digest_rank0.json")
