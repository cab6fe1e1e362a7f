"""The probe CLI on broken benchmark data and broken model folders: one line naming the file, exit status 2;
a split with a single class still gives results.json (AUROC undefined); eva's folder names are found; ``--task
all`` says which tasks it skipped and why."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.evaluation.conftest import make_crc, make_pcam


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def probe(monkeypatch, capsys):
    """Run ``evaluation/linear_probe.py``'s command line in this process (1 run, no model card, miniature
    counts) and return its exit status and output, as a user would see them."""
    from pathfm.evaluation import linear_probe

    def run(model: Path, task: str, out: Path, data_dir: Path | None = None, workers: int = 0) -> Done:
        data = ["--data_dir", str(data_dir)] if data_dir is not None else []
        argv = ["linear_probe.py", "--model", str(model), "--task", task, "--output_dir", str(out), *data]
        argv += ["--n_runs", "1", "--num_workers", str(workers), "--no_model_card", "--no_check_counts"]
        monkeypatch.setattr(sys, "argv", argv)
        capsys.readouterr()
        code = linear_probe.cli()
        captured = capsys.readouterr()
        return Done(code, captured.out, captured.err)

    return run


def one_line_error(done: Done, *needles: str) -> str:
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip() and "it/s]" not in line]
    errors = [line for line in lines if "error" in line.lower()]
    assert len(errors) == 1 and errors[0] == lines[-1], lines  # one error line, printed last
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])
    return lines[-1]


@pytest.fixture(scope="module")
def pcam_eva(he_tiles, tmp_path_factory) -> Path:
    """Miniature PCam in eva's folder name (``patch_camelyon``) whose validation split has one class."""
    import h5py

    root = tmp_path_factory.mktemp("data")
    make_pcam(root / "patch_camelyon", he_tiles)
    with h5py.File(root / "patch_camelyon" / "camelyonpatch_level_2_split_valid_y.h5", "w") as fh:
        fh.create_dataset("y", data=np.zeros((4, 1, 1, 1), dtype=np.uint8))
    return root


def test_one_class_split_and_eva_folder_name(probe, pcam_eva, tiny_model_dir, tmp_path):
    done = probe(tiny_model_dir, "pcam", tmp_path / "out", pcam_eva)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "pcam" / "results.json").read_text())
    validation = results["linear_probe"]["validation"]
    assert validation["auroc"]["mean"] is None  # one class: no ROC curve
    assert validation["balanced_accuracy"]["mean"] is not None
    assert results["linear_probe"]["test"]["auroc"]["mean"] is not None
    report = (tmp_path / "out" / "pcam" / "report.md").read_text()
    assert "AUROC undefined on validation: the split holds a single class." in report


def test_truncated_h5_names_the_file(probe, pcam_eva, tiny_model_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(pcam_eva, data)
    broken = data / "patch_camelyon" / "camelyonpatch_level_2_split_test_x.h5"
    broken.write_bytes(broken.read_bytes()[:3000])
    done = probe(tiny_model_dir, "pcam", tmp_path / "out", data)
    one_line_error(done, "camelyonpatch_level_2_split_test_x.h5")


def test_unreadable_image_names_the_file(probe, he_tiles, tiny_model_dir, tmp_path):
    data = make_crc(tmp_path / "crc", he_tiles)
    bad = sorted((data / "CRC-VAL-HE-7K" / "ADI").iterdir())[0]
    bad.write_bytes(b"II*\x00 not really a tiff")
    for workers in (0, 1):  # in the main process, and in a DataLoader worker (torch adds its traceback)
        done = probe(tiny_model_dir, "crc", tmp_path / "out", data, workers=workers)
        one_line_error(done, bad.name)


def test_task_all_says_what_it_skipped(pcam_eva, capsys):
    from pathfm.evaluation.linear_probe import resolve_tasks

    assert resolve_tasks("all", str(pcam_eva)) == ["embedded_slides", "embedded_tissue", "pcam"]
    out = capsys.readouterr().out
    for name in ("bach", "crc", "mhist"):
        assert f"skipped {name}: its layout is not in {pcam_eva} nor {pcam_eva}/{name}" in out, out
    assert "skipped pcam" not in out
    resolve_tasks("all", None)
    assert "skipped pcam: needs --data_dir" in capsys.readouterr().out


def broken_models(good: Path, root: Path) -> dict[str, tuple[Path, str]]:
    cases = {}
    truncated = root / "truncated"
    shutil.copytree(good, truncated)
    (truncated / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes()[:500])
    cases["truncated"] = (truncated, "model.safetensors")
    not_json = root / "not_json"
    shutil.copytree(good, not_json)
    (not_json / "config.json").write_text("{oops")
    cases["not_json"] = (not_json, "config.json")
    cases["missing"] = (root / "nowhere", "nowhere")
    other = root / "other_arch"
    shutil.copytree(good, other)
    save_file({"encoder.weight": torch.zeros(4, 4)}, str(other / "model.safetensors"))
    cases["other_arch"] = (other, "model.safetensors")
    # a file instead of a folder: the weights file of a good folder (its folder is suggested), or any file
    cases["weights_file"] = (good / "model.safetensors", f"this is a file, not a model folder; pass its folder: "
                             f"--model {good}")  # fmt: skip
    (root / "notes.txt").write_text("not a model")
    cases["other_file"] = (root / "notes.txt", "notes.txt: this is a file, not a model folder; pass the folder")
    return cases


@pytest.mark.parametrize(
    "case", ["truncated", "not_json", "missing", "other_arch", "weights_file", "other_file"]
)
def test_broken_model_folders_give_one_line(probe, case, tiny_model_dir, tmp_path):
    folder, needle = broken_models(tiny_model_dir, tmp_path)[case]
    done = probe(folder, "embedded_tissue", tmp_path / "out")
    one_line_error(done, needle)


@pytest.mark.parametrize(
    ("task", "needles"),
    [
        ("embedded_tisue", ("unknown --task 'embedded_tisue'", "did you mean 'embedded_tissue'?")),
        ("embedded_retrieval", ("--task embedded_retrieval is not a probe task", "benchmarks/retrieval.py")),
        ("consep", ("is segmentation", "python -m pathfm.evaluation.segmentation --task consep")),
        ("panda_small", ("is slide-level MIL", "python -m pathfm.evaluation.mil --task panda_small")),
    ],
)
def test_task_names_outside_the_probe(probe, task, needles, tiny_model_dir, tmp_path):
    done = probe(tiny_model_dir, task, tmp_path / "out")
    one_line_error(done, *needles)
    assert not (tmp_path / "out").exists()


def test_count_mismatch_names_the_cli_flag(pcam_eva):
    from pathfm.evaluation.tasks import TaskDataError, build_task

    with pytest.raises(TaskDataError, match="has 8 samples, expected 262144 .*--no_check_counts skips this"):
        build_task("pcam", pcam_eva, check_counts=True).list_samples("train")
