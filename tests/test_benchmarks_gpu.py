"""``bash benchmarks/gpu.sh --dry-run``: the prepared GPU check runs its whole code path on CPU (tiny model,
2 steps per row, a generated JPEG pyramid, the real loop in a fresh process per row) and writes its table to
``$OUT``; the FLOPs per image it reports equal FlopCounterMode's count for the dry run's recipe. The default
suite skips the embedded-slide row (``--real_seconds 0``, ~25 s on an idle 2-core machine); the slow test runs
it too (2 steps on the real slides, export, ``embedded_retrieval`` of the teacher and of random init)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pathfm.training.config import parse_config
from pathfm.training.mfu import dino_flops_per_image
from pathfm.training.networks import build_student_teacher


def _dry_run(repo_root: Path, out: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        ["bash", "benchmarks/gpu.sh", "--dry-run", *extra],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["gpu_log.txt", "gpu_rows.json", "gpu_table.md"]  # <= 8 small files
    report = json.loads((out / "gpu_rows.json").read_text())
    return res, {r["name"]: r for r in report["rows"]} | {"_report": report}


def test_gpu_sh_dry_run_writes_the_table(repo_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res, rows = _dry_run(repo_root, out, "--real_seconds", "0")
    report = rows.pop("_report")
    on, off = rows["tiny (dry run) DINO, all fast paths on"], rows["tiny (dry run) DINO, all fast paths off"]
    # the dry run's recipe: cpu_tiny with 64 px globals, 32 px locals x 2
    m, _, _, _ = parse_config(["cpu_tiny"])
    student, teacher = build_student_teacher(m)
    expected = dino_flops_per_image(student, teacher, 64, 32, 2)["total"]
    for row in (on, off):
        assert "error" not in row, row
        assert row["images_per_s"] > 0 and 0 <= row["data_wait_share"] <= 1
        assert row["flops_per_image"] == expected
        assert row["mfu"] == pytest.approx(expected * row["images_per_s"] / report["peak_flops"])
    assert rows["tiny (dry run) DINO, 2 steps on the embedded slides"]["error"] == "skipped: --real_seconds 0"
    table = (out / "gpu_table.md").read_text()
    assert table.count("\n") == 2 + len(report["rows"])
    assert (out / "gpu_log.txt").read_text().splitlines()[-1].startswith("total ")
    assert table.splitlines()[2] in res.stdout  # what it prints is what it writes


@pytest.mark.slow  # + a real-slide run, export and two retrieval embeddings: ~1 min on 2 idle cores
def test_gpu_sh_dry_run_scores_the_real_slide_run(repo_root: Path, tmp_path: Path) -> None:
    _, rows = _dry_run(repo_root, tmp_path / "out")
    real = rows["tiny (dry run) DINO, 2 steps on the embedded slides"]
    assert "error" not in real, real
    assert 0 < real["retrieval_chance"] < real["retrieval_top1_random_init"] < 1.0  # not saturated
    assert 0 <= real["retrieval_top1"] <= 1.0
    assert "embedded_retrieval top-1" in (tmp_path / "out" / "gpu_table.md").read_text()
