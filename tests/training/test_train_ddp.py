"""Real 2-process CPU DDP run (`accelerate launch --multi_gpu --num_processes 2`) on the embedded real slides.

Checks: same export layout as a one-process run, parameters equal across ranks, ranks read disjoint slides,
and the launch/world-size guard. Slow (two processes on two cores, about 2 minutes): run with ``-m slow``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SMALL = [
    "--tile_size",
    "64",
    "--tiles_per_slide",
    "8",
    "--num_workers",
    "0",
    "--global_crop_size",
    "32",
    "--local_crop_size",
    "16",
    "--local_crops_number",
    "2",
    "--out_dim",
    "64",
    "--head_hidden_dim",
    "32",
    "--head_bottleneck_dim",
    "16",
    "--per_device_batch_size",
    "2",
    "--steps_per_epoch",
    "2",
    "--max_steps",
    "4",
    "--save_steps",
    "2",
    "--report_to",
    "none",
    "--probe_size",
    "4",
    "--logging_steps",
    "1",
]


def _launch(repo_root: Path, out: Path, nproc: int, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    launcher = [sys.executable, "-m", "accelerate.commands.launch"]
    if nproc > 1:
        launcher += ["--multi_gpu", "--num_processes", str(nproc), "--main_process_port", "29533"]
    else:
        launcher += ["--num_processes", "1"]
    cmd = [*launcher, "training/dino.py", "cpu_tiny", *SMALL, "--output_dir", str(out), *extra]
    return subprocess.run(cmd, cwd=repo_root, env=env, capture_output=True, text=True, timeout=900)


def _layout(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.slow
def test_two_process_ddp_matches_single_process_layout(repo_root, tmp_path):
    ddp = _launch(repo_root, tmp_path / "ddp", 2, "--expected_world_size", "2")
    assert ddp.returncode == 0, ddp.stderr[-4000:]
    single = _launch(repo_root, tmp_path / "single", 1)
    assert single.returncode == 0, single.stderr[-4000:]

    assert _layout(tmp_path / "ddp" / "model") == _layout(tmp_path / "single" / "model")
    assert {"config.json", "model.safetensors", "README.md", "preprocessor_config.json"} <= set(
        _layout(tmp_path / "ddp" / "model")
    )

    # parameters equal across ranks (student and teacher digests written by each rank)
    d0 = json.loads((tmp_path / "ddp" / "param_digest_rank0.json").read_text())
    d1 = json.loads((tmp_path / "ddp" / "param_digest_rank1.json").read_text())
    assert d0 == d1

    # each rank read its own slides, and only those
    s0 = json.loads((tmp_path / "ddp" / "data_stats_rank0.json").read_text())
    s1 = json.loads((tmp_path / "ddp" / "data_stats_rank1.json").read_text())
    assert s0["slide_counts"] and s1["slide_counts"]
    assert not set(s0["slide_counts"]) & set(s1["slide_counts"])
    assert set(s0["slide_counts"]) <= set(s0["slides"]) and set(s1["slide_counts"]) <= set(s1["slides"])
    # 3 embedded slides round robin: rank 0 gets slides 0 and 2, rank 1 slide 1
    assert len(s0["slides"]) == 2 and len(s1["slides"]) == 1

    summary = json.loads((tmp_path / "ddp" / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4
    assert summary["tiles_seen"] == 4 * 2 * 2  # steps x per-device batch x processes


@pytest.mark.slow
def test_single_process_launch_with_expected_two_is_refused(repo_root, tmp_path):
    res = _launch(repo_root, tmp_path / "bad", 1, "--expected_world_size", "2")
    assert res.returncode != 0
    assert "world size mismatch" in res.stderr


@pytest.mark.slow
def test_the_rank_whose_slides_give_no_batch_reports_it(repo_root, tmp_path, cmu_svs):
    """Two processes, rank 1's only slide holds no tissue: rank 1's one-line error is the launcher's root
    cause, naming the rank (not rank 0's lost connection to its peer, and not nothing at all)."""
    import shutil

    from tests.datasets_scripts.synthetic import blank, write_slide

    slides = tmp_path / "slides"
    slides.mkdir()
    shutil.copy(cmu_svs, slides / "a_tissue.svs")  # sorted first: rank 0
    write_slide(slides / "b_glass.tiff", blank(512, 512), level_sizes=[(128, 128)])  # rank 1: glass only
    run = _launch(repo_root, tmp_path / "run", 2, "--slides", str(slides), "--tiles_per_slide", "4")
    assert run.returncode != 0
    ours = [line for line in run.stderr.splitlines() if "training/dino.py: error:" in line]
    assert ours and all("rank 1 of 2: " in line and "b_glass" in line for line in ours), run.stderr[-3000:]
    assert "produced no full batch" in ours[0]
    root = run.stderr[run.stderr.index("Root Cause") :]
    assert "rank 1 of 2: " in root, root
