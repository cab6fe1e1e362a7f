"""End-to-end: the CLI on the embedded real-slide task with a tiny random model, and as a script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import ModelCard
from pathfm.evaluation import linear_probe
from pathfm.evaluation.head_export import load_probe_head

from tests.evaluation.conftest import make_crc

FAST = ["--n_runs", "2", "--max_steps", "150", "--batch_size", "32"]


def test_embedded_task_end_to_end(tmp_path: Path, tiny_model_dir: Path) -> None:
    model = tmp_path / "model"
    import shutil

    shutil.copytree(tiny_model_dir, model)
    cache = str(tmp_path / "cache")
    args = ["--model", str(model), "--task", "embedded_slides", "--embeddings_dir", cache, *FAST]
    assert linear_probe.main([*args, "--output_dir", str(tmp_path / "a"), "--save_head"]) == 0

    res = json.loads((tmp_path / "a/embedded_slides/results.json").read_text())
    assert res["protocol"]["name"] == "pathfm-linear-v1+custom"  # max_steps changed -> marked
    assert res["protocol"]["deviations"] == {"max_steps": 150}
    assert res["protocol"]["linear"]["weight_decay"] == 0.0 and res["protocol"]["linear"]["seeds"] == [0, 1]
    assert res["model"]["revision"].startswith("sha256:") and res["model"]["random_init"] is False
    assert res["model"]["image_processor"]["image_mean"] == [0.5, 0.5, 0.5]
    assert res["task"]["proxy_labels"] is True
    sizes = res["task"]["split_sizes"]
    assert set(sizes) == {"train", "validation", "test"} and min(sizes.values()) > 0
    bacc = res["linear_probe"]["test"]["balanced_accuracy"]
    assert len(bacc["values"]) == 2 and bacc["mean"] == pytest.approx(np.mean(bacc["values"]))
    assert bacc["std"] == pytest.approx(np.std(bacc["values"], ddof=1))
    assert 0.0 <= res["knn_probe"]["validation"]["balanced_accuracy"] <= 1.0
    cm = np.asarray(res["best_run"]["confusion_matrix"]["test"])
    assert cm.shape == (3, 3) and cm.sum() == sizes["test"]
    assert res["embeddings"]["train"]["cached"] is False
    for name in ("report.md", "runs.png", "confusion_validation.png", "confusion_test.png"):
        assert (tmp_path / "a/embedded_slides" / name).stat().st_size > 0
    assert "| linear (mean ± sd) | test |" in (tmp_path / "a/embedded_slides/report.md").read_text()

    # model card: EvalResult entries with the protocol in the metric name
    card = ModelCard.load(model / "README.md")
    names = {(r.dataset_split, r.metric_type) for r in card.data.eval_results}
    assert ("test", "balanced_accuracy") in names and ("validation", "auroc") in names
    assert all("pathfm-linear-v1" in r.metric_name for r in card.data.eval_results)
    # probe head for the Space
    head, meta = load_probe_head(model)
    assert meta["id2label"]["2"] == "tcga-cr-7395-01a-01-ts1" and meta["input_dim"] == 64
    assert head.weight.shape == (3, 64) and meta["pooling"] == "pooler_output"

    # same seeds, embeddings recomputed from the slides -> the same numbers
    assert linear_probe.main([*args, "--output_dir", str(tmp_path / "b"), "--overwrite_embeddings"]) == 0
    res_b = json.loads((tmp_path / "b/embedded_slides/results.json").read_text())
    assert res_b["embeddings"]["train"]["cached"] is False
    assert (
        res_b["model"]["revision"] == res["model"]["revision"]
    )  # probe_head.safetensors is not a weight file
    assert res_b["linear_probe"] == res["linear_probe"] and res_b["knn_probe"] == res["knn_probe"]
    # third run: cache reused, same numbers, card entries replaced rather than duplicated
    assert linear_probe.main([*args, "--output_dir", str(tmp_path / "c")]) == 0
    res_c = json.loads((tmp_path / "c/embedded_slides/results.json").read_text())
    assert res_c["embeddings"]["train"]["cached"] is True and res_c["linear_probe"] == res["linear_probe"]
    assert len(ModelCard.load(model / "README.md").data.eval_results) == len(card.data.eval_results)


def test_script_on_miniature_crc_with_random_init_comparison(
    tmp_path: Path, he_tiles: list[np.ndarray], tiny_model_dir: Path, repo_root: Path
) -> None:
    data = make_crc(tmp_path / "data", he_tiles, n_train=3, n_val=2)
    cmd = [
        sys.executable,
        str(repo_root / "evaluation/linear_probe.py"),
        "--model",
        str(tiny_model_dir),
        "--task",
        "crc",
        "--data_dir",
        str(data),
        "--output_dir",
        str(tmp_path / "out"),
        "--no_check_counts",
        "--compare_random_init",
        "--no_model_card",
        "--num_workers",
        "0",
        *FAST,
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Trained vs random initialisation" in (tmp_path / "out/comparison.md").read_text()
    trained = json.loads((tmp_path / "out/crc/results.json").read_text())
    random = json.loads((tmp_path / "out/random_init/crc/results.json").read_text())
    assert trained["task"]["split_sizes"] == {"train": 27, "validation": 18}
    assert "test" not in trained["linear_probe"]  # CRC has no test split
    assert random["model"]["random_init"] is True and random["model"]["revision"].startswith(
        "random-init-seed0"
    )
    assert not (tiny_model_dir / "README.md").exists()  # --no_model_card


def test_unknown_task_and_missing_data(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown --task 'nope'; probe tasks: "):
        linear_probe.main(["--model", str(tiny_model_dir), "--task", "nope", "--output_dir", str(tmp_path)])
    from pathfm.evaluation.tasks.base import TaskDataError

    with pytest.raises(TaskDataError, match="missing folder .*NCT-CRC-HE-100K"):
        linear_probe.main(
            [
                "--model",
                str(tiny_model_dir),
                "--task",
                "crc",
                "--data_dir",
                str(tmp_path),
                "--output_dir",
                str(tmp_path / "o"),
            ]
        )
