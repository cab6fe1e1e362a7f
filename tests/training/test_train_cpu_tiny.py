"""The default job: `accelerate launch training/dino.py` with no arguments (preset cpu_tiny, embedded slides).

Slow (a few minutes on 2 cores): run with ``-m slow``. The job runs once per module; the tests assert the
< 10 minute budget, the export folder, a loss that falls and stays down without collapse warnings, and that
the exported teacher beats random initialisations of the same architecture on ``embedded_retrieval``.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

QUERIES_PER_TILE = 4
RANDOM_SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def default_job(repo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("cpu_tiny")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    # the only flag is the output folder (the default is outputs/dino); everything else is the preset
    res = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "training/dino.py",
         "--output_dir", str(out)],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    wall = time.perf_counter() - start
    assert res.returncode == 0, res.stderr[-4000:]
    return out, wall, res.stderr + res.stdout


@pytest.mark.slow
def test_default_cpu_tiny_run(default_job):
    out, wall, _ = default_job
    assert wall < 600, f"cpu_tiny took {wall:.0f} s"
    model = out / "model"
    for name in (
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "README.md",
        "modeling_pathfm_vit.py",
        "configuration_pathfm_vit.py",
    ):
        assert (model / name).is_file(), name
    from transformers import AutoModel

    loaded = AutoModel.from_pretrained(model, trust_remote_code=True)
    assert loaded.config.hidden_size == 64


@pytest.mark.slow
def test_default_job_loss_falls_and_stays_down_without_collapse(default_job):
    out, wall, log = default_job
    summary = json.loads((out / "train_summary.json").read_text())
    losses = summary["losses"]
    assert summary["steps"] == len(losses) and len(losses) >= 100
    windows = [np.mean(losses[i : i + 10]) for i in range(len(losses) - 9)]  # 10-step means
    first, last, low = windows[0], windows[-1], min(windows)
    print(f"cpu_tiny wall {wall:.0f} s; loss first10 {first:.4f} lowest10 {low:.4f} last10 {last:.4f}")
    assert first - last > 0.25, (first, last)  # falls (the measured run: 4.99 -> 4.61)
    # and stays down: gives back less than 40 % of its fall (measured 24 %; the previous preset, which fell
    # 6.6 -> 3.4 and climbed back to 5.1, gave back 54 %)
    assert last - low < 0.4 * (first - low), (first, low, last)
    assert "collapse" not in log


@pytest.mark.slow
def test_default_job_beats_random_init_on_retrieval(default_job, tmp_path):
    """embedded_retrieval with 704 queries (4 perturbations of each of 176 gallery tiles): the trained
    teacher's top-1 beats every one of 3 random inits of the same architecture, and its per-query reciprocal
    rank beats their mean with the 99.9 % paired cluster-bootstrap interval of the gap above zero (a model no
    better than random init passes that in about 1 run in 2000)."""
    from pathfm.evaluation.backbone import load_backbone
    from pathfm.evaluation.bootstrap import paired_mean_bootstrap
    from pathfm.evaluation.probe_runner import RunOptions
    from pathfm.evaluation.tasks.retrieval import evaluate_retrieval

    out, _, _ = default_job
    options = RunOptions(tmp_path, batch_size=32, num_workers=1)

    def score(**kw):
        backbone = load_backbone(str(out / "model"), **kw)
        return evaluate_retrieval(backbone, options=options, queries_per_tile=QUERIES_PER_TILE)

    trained = score()
    randoms = [score(random_init=True, seed=s) for s in RANDOM_SEEDS]
    assert trained["n"] == QUERIES_PER_TILE * 176
    random_top1 = [r["top1"] for r in randoms]
    assert max(random_top1) < 0.2  # the task is far from saturated at random init

    def reciprocal(r):
        return (1.0 / (r["ranks"] + 1).float()).numpy()

    tiles = np.arange(trained["n"]) % (trained["n"] // QUERIES_PER_TILE)
    random_rr = np.mean([reciprocal(r) for r in randoms], axis=0)
    gap = paired_mean_bootstrap(reciprocal(trained), random_rr, groups=tiles, confidence=0.999)
    print(f"retrieval top-1 trained {trained['top1']:.3f}, random {random_top1}; MRR {gap['a']:.3f} vs "
          f"{gap['b']:.3f}, gap 99.9% CI [{gap['ci_low']:+.3f}, {gap['ci_high']:+.3f}]")
    assert trained["top1"] > max(random_top1)
    assert gap["ci_low"] > 0, gap
