"""The training command line on a newcomer's mistakes: one line naming the value or file (with a suggestion
where there is one), exit status 2, no traceback, no model or checkpoint written; also under
``accelerate launch`` with 2 processes (slow), where the line must appear once (rank 0)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

SMALL = ["--report_to", "none", "--max_steps", "2", "--per_device_batch_size", "2", "--num_workers", "0"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    """Model folders for --pretrained_weights: good, truncated, not JSON, another architecture, missing."""
    from pathfm.modeling import PathFMViTConfig, PathFMViTModel

    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    PathFMViTModel(PathFMViTConfig.from_preset("tiny")).save_pretrained(root / "good")
    folders = {"missing": root / "missing"}
    for name in ("truncated", "not_json", "other_arch"):
        folders[name] = root / name
        shutil.copytree(root / "good", folders[name])
    data = (root / "good" / "model.safetensors").read_bytes()
    (folders["truncated"] / "model.safetensors").write_bytes(data[:400])
    (folders["not_json"] / "config.json").write_text("{oops")
    save_file({"encoder.weight": torch.zeros(4, 4)}, str(folders["other_arch"] / "model.safetensors"))
    folders["bad_yaml"] = root / "bad_preset.yaml"
    folders["bad_yaml"].write_text("max_steps: [3\n")
    return folders


CASES = {
    "unknown preset": (["cpu_tniy"], "preset 'cpu_tniy' not found", "did you mean 'cpu_tiny'?"),
    "unknown backbone": (["--backbone_preset", "vit_smal"], "--backbone_preset 'vit_smal'", "vits"),
    "unknown flag": (
        ["--learnin_rate", "1e-3"],
        "unknown flag --learnin_rate",
        "did you mean --learning_rate?",
    ),
    "crop size": (
        ["--backbone_preset", "vitl14_reg4", "--global_crop_size", "98", "--local_crop_size", "96"],
        "--local_crop_size 96 is not a multiple of the patch size 14",
        "use 98",
    ),
    "truncated": (
        ["--pretrained_weights", "{truncated}"],
        "truncated or not a safetensors file",
        "truncated",
    ),
    "not json": (["--pretrained_weights", "{not_json}"], "config.json: not valid JSON", "not_json"),
    "missing": (["--pretrained_weights", "{missing}"], "--pretrained_weights", "missing"),
    "other arch": (["--pretrained_weights", "{other_arch}"], "model.safetensors lacks", "other_arch"),
    "nothing to resume": (["--resume_from_checkpoint", "latest"], "checkpoint", "latest"),
    "preset not yaml": (["{bad_yaml}"], "bad_preset.yaml: not valid YAML (line 2)", "fix the syntax"),
    "mpp zero": (["--mpps", "0", "1"], "--mpps must be µm/px between 0.05 and 20", "[0.0, 1.0]"),
    "tissue fraction": (["--min_tissue", "1.5"], "--min_tissue is a tissue fraction in [0, 1]", "1.5"),
    "negative lr": (["--learning_rate", "-1"], "--lr must be > 0", "-1"),
    "mpp override": (["--mpp_override", "30"], "--mpp_override is a level-0 µm/px between 0.05 and 10", "30"),
}
PARSE_ONLY = {
    "unknown preset", "unknown backbone", "unknown flag", "crop size", "preset not yaml", "mpp zero",
    "tissue fraction", "negative lr", "mpp override",
}


def _args(case: str, weights: dict[str, Path], out: Path) -> list[str]:
    extra, *_ = CASES[case]
    extra = [a.format(**{k: str(v) for k, v in weights.items()}) for a in extra]
    preset = extra[:1] if extra and not extra[0].startswith("-") else []
    return [*preset, *extra[len(preset) :], *SMALL, "--output_dir", str(out)]


def _check_output_dir(case: str, out: Path) -> None:
    if case in PARSE_ONLY:
        assert not out.exists(), f"{case}: {out} created before the arguments were checked"
    else:
        assert not (out / "model").exists() and not list(out.glob("checkpoints/*")), (
            f"{case}: half-written run"
        )


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_line(case, weights, tmp_path, capsys):
    from pathfm.training import dino

    out = tmp_path / "run"
    assert dino.cli(_args(case, weights, out)) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    _, *needles = CASES[case]
    assert err and err[-1].startswith("training/dino.py: error: "), err
    assert sum("error:" in line for line in err) == 1 and not any("Traceback" in line for line in err), err
    for needle in needles:
        assert needle in err[-1], (needle, err[-1])
    _check_output_dir(case, out)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_under_accelerate_two_processes(case, weights, tmp_path, repo_root):
    out = tmp_path / "run"
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launcher += ["--main_process_port", "29541"]
    done = subprocess.run(
        [*launcher, "training/dino.py", *_args(case, weights, out), "--expected_world_size", "2"],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode != 0
    lines = done.stderr.rstrip().splitlines()
    ours = [line for line in lines if "training/dino.py: error: " in line]
    # recorded by rank 0 alone, in torch elastic's error file: the launcher's report prints it as the root
    # cause, in its last lines (only the report's closing border follows)
    assert len(ours) == 1 and ours[0] in lines[-2:], done.stderr[-3000:]
    assert ours[0].startswith("  traceback : training/dino.py: error: "), ours[0]
    _, *needles = CASES[case]
    for needle in needles:
        assert needle in ours[0], (needle, ours[0])
    _check_output_dir(case, out)


def _pathfm_train(args: list[str], repo_root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    console = Path(sys.executable).parent / "pathfm"
    return subprocess.run(
        [str(console), "train", "--num_processes", "2", "--main_process_port", "29543", *args],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize(
    "case",
    [
        c if c in ("unknown preset", "unknown flag") else pytest.param(c, marks=pytest.mark.slow)
        for c in sorted(PARSE_ONLY)
    ],
)
def test_pathfm_train_checks_arguments_before_launching(case, weights, tmp_path, repo_root):
    """``pathfm train --num_processes 2``: a mistake in the arguments is the only output, exit 2, and no
    process is started (nothing from the launcher, no output folder)."""
    out = tmp_path / "run"
    done = _pathfm_train(_args(case, weights, out), repo_root)
    assert done.returncode == 2
    _, *needles = CASES[case]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("training/dino.py: error: "), done.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    _check_output_dir(case, out)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["truncated", "nothing to resume"])
def test_pathfm_train_prints_a_run_error_once_and_last(case, weights, tmp_path, repo_root):
    """A mistake only the 2-process run finds: the launcher's output streams through, our line comes once,
    as the very last line; exit status 2."""
    out = tmp_path / "run"
    done = _pathfm_train([*_args(case, weights, out), "--expected_world_size", "2"], repo_root)
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.rstrip().splitlines()
    ours = [line for line in lines if "training/dino.py: error: " in line]
    assert ours == [lines[-1]] and lines[-1].startswith("training/dino.py: error: "), done.stderr[-3000:]
    assert "Root Cause" in done.stderr  # the launcher's report was passed through, above our line
    _, *needles = CASES[case]
    for needle in needles:
        assert needle in ours[0], (needle, ours[0])
    _check_output_dir(case, out)


def test_abbreviated_flag_is_an_unknown_flag_with_a_suggestion(repo_root, tmp_path):
    """argparse's prefix matching would read `--max_step 2` as --max_steps; HF users expect exact names."""
    import subprocess
    import sys

    cmd = [sys.executable, "training/dino.py", "--max_step", "2", "--output_dir", str(tmp_path / "out")]
    run = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr.strip().splitlines()[-1] == (
        "training/dino.py: error: unknown flag --max_step; did you mean --max_steps?"
    )
    assert not (tmp_path / "out").exists()
