"""Model-card entries (a re-run replaces its entries) and the CLI's errors for a wrong --model."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard

from pathfm.evaluation.card_results import update_model_card


def _results(n_runs: int, value: float, protocol: str = "pathfm-linear-v1") -> dict:
    metrics = {name: {"mean": value} for name in ("balanced_accuracy", "f1_macro", "auroc")}
    return {
        "task": {"name": "embedded_slides", "proxy_labels": True},
        "protocol": {"name": protocol, "linear": {"seeds": list(range(n_runs))}},
        "linear_probe": {"validation": metrics, "test": metrics},
    }


def test_rerun_with_other_run_count_replaces_entries(tmp_path: Path) -> None:
    update_model_card(tmp_path, _results(5, 0.9))
    update_model_card(tmp_path, _results(1, 0.7))
    entries = ModelCard.load(tmp_path / "README.md").data.eval_results
    assert len(entries) == 6  # 2 splits x 3 metrics, not 12
    assert {e.metric_value for e in entries} == {0.7}
    assert all("mean of 1 runs" in e.metric_name for e in entries)


def test_other_protocol_is_kept_beside(tmp_path: Path) -> None:
    update_model_card(tmp_path, _results(5, 0.9))
    update_model_card(tmp_path, _results(5, 0.8, protocol="pathfm-linear-v1+custom"))
    entries = ModelCard.load(tmp_path / "README.md").data.eval_results
    assert len(entries) == 12
    assert {e.metric_value for e in entries} == {0.9, 0.8}


def test_cli_names_a_missing_or_wrong_model_folder(tmp_path: Path, repo_root: Path) -> None:
    import subprocess
    import sys

    for model, expected in [
        (tmp_path / "nope", "no such model folder"),
        (tmp_path, "not a model folder (no config.json"),
    ]:
        proc = subprocess.run(
            [
                sys.executable,
                "evaluation/linear_probe.py",
                "--model",
                str(model),
                "--task",
                "embedded_tissue",
                "--output_dir",
                str(tmp_path / "out"),
            ],
            cwd=repo_root,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 2
        assert f"evaluation/linear_probe.py: error: --model {model}: {expected}" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert not (tmp_path / "out").exists()  # no empty output folder left behind
