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

from tests.conftest import SLIDES_DIR

SMALL = ["--report_to", "none", "--max_steps", "2", "--per_device_batch_size", "2", "--num_workers", "0"]
# a run small enough to train in seconds, for the cases that resume its checkpoint
TINY_RUN = [
    "--slides", str(SLIDES_DIR / "CMU-1-Small-Region.svs"), "--mpps", "0.5", "--tile_size", "64",
    "--global_crop_size", "32", "--local_crop_size", "16", "--local_crops_number", "2", "--out_dim", "64",
    "--head_hidden_dim", "32", "--head_bottleneck_dim", "16", "--probe_size", "0", "--export", "false",
]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    """Model folders for --pretrained_weights: good, truncated, not JSON, another architecture, missing."""
    from pathfm.modeling import PathFMViTConfig, PathFMViTModel

    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    PathFMViTModel(PathFMViTConfig.from_preset("tiny")).save_pretrained(root / "good")
    folders = {"missing": root / "missing", "good": root / "good"}
    for name in ("truncated", "not_json", "other_arch"):
        folders[name] = root / name
        shutil.copytree(root / "good", folders[name])
    data = (root / "good" / "model.safetensors").read_bytes()
    (folders["truncated"] / "model.safetensors").write_bytes(data[:400])
    (folders["not_json"] / "config.json").write_text("{oops")
    save_file({"encoder.weight": torch.zeros(4, 4)}, str(folders["other_arch"] / "model.safetensors"))
    folders["bad_yaml"] = root / "bad_preset.yaml"
    folders["bad_yaml"].write_text("max_steps: [3\n")
    folders["list_yaml"] = root / "list_preset.yaml"
    folders["list_yaml"].write_text("- max_steps: 3\n- lr: 0.1\n")
    folders["scalar_yaml"] = root / "scalar_preset.yaml"
    folders["scalar_yaml"].write_text("cpu_tiny\n")
    return folders


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory) -> Path:
    """The last checkpoint of a 2-step run (``SMALL`` + ``TINY_RUN``, one process)."""
    from pathfm.training import dino
    from tests.training.conftest import reset_accelerate_state

    out = tmp_path_factory.mktemp("trained") / "run"
    assert dino.cli([*SMALL, *TINY_RUN, "--output_dir", str(out)]) == 0
    reset_accelerate_state()
    return out / "checkpoints" / "checkpoint-2"


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
    "nothing to resume": (
        ["--resume_from_checkpoint", "latest"],
        "--resume_from_checkpoint latest: --output_dir",
        "does not exist; pass the --output_dir of the run to continue, or leave out --resume_from_checkpoint",
    ),
    "resume no such path": (
        ["--resume_from_checkpoint", "/no/such/path"],
        "--resume_from_checkpoint /no/such/path: no such file or folder",
        "pass latest (with the run's --output_dir)",
    ),
    "resume not a checkpoint": (
        ["--resume_from_checkpoint", "{good}"],
        "not a checkpoint folder written by training/dino.py (no train_complete.json in it)",
        "pass latest",
    ),
    "resume other flags": (
        ["--resume_from_checkpoint", "{checkpoint}", *TINY_RUN, "--max_steps", "3", "--lr", "0.001"],
        "was written with other settings (--lr 0.016 -> 0.001, --max_steps 2 -> 3",
        "checkpoint-2/config.yaml --resume_from_checkpoint",
    ),
    "batch size negative": (
        ["--per_device_batch_size", "-4"],
        "--per_device_batch_size must be >= 1 (tiles per process per micro-batch), got -4",
    ),
    "tile size zero": (["--tile_size", "0"], "--tile_size must be >= 1 (tile side in px), got 0"),
    "logging steps zero": (["--logging_steps", "0"], "--logging_steps must be >= 1", "got 0"),
    "preset a list": (
        ["{list_yaml}"],
        "list_preset.yaml: the file holds a YAML list (2 items), not a mapping of config keys",
        "write one `key: value` per line",
    ),
    "preset a string": (
        ["{scalar_yaml}"],
        "scalar_preset.yaml: the file holds a YAML string ('cpu_tiny'), not a mapping",
        "write one `key: value` per line",
    ),
    "preset not yaml": (["{bad_yaml}"], "bad_preset.yaml: not valid YAML (line 2)", "fix the syntax"),
    "mpp zero": (["--mpps", "0", "1"], "--mpps must be µm/px between 0.05 and 20", "[0.0, 1.0]"),
    "tissue fraction": (["--min_tissue", "1.5"], "--min_tissue is a tissue fraction in [0, 1]", "1.5"),
    "negative lr": (["--learning_rate", "-1"], "--lr must be > 0", "-1"),
    "mpp override": (["--mpp_override", "30"], "--mpp_override is a level-0 µm/px between 0.05 and 10", "30"),
    "empty slide source": (
        ["--slides", "", "embedded"], "empty slide source in ['', 'embedded'] (an unset shell variable?)"
    ),
    "mask cache a file": (
        ["--mask_cache_dir", "{bad_yaml}"], "--mask_cache_dir ", "bad_preset.yaml is a file: give a folder"
    ),
    "mask cache not creatable": (
        ["--mask_cache_dir", "/proc/pathfm-masks"],
        "--mask_cache_dir /proc/pathfm-masks: cannot create it (No such file or directory);",
        "give a writable folder",
    ),
}
PARSE_ONLY = {
    "unknown preset", "unknown backbone", "unknown flag", "crop size", "preset not yaml", "mpp zero",
    "tissue fraction", "negative lr", "mpp override", "batch size negative", "tile size zero",
    "logging steps zero", "preset a list", "preset a string", "mask cache a file",
}


def _paths(case: str, weights: dict[str, Path], request: pytest.FixtureRequest) -> dict[str, Path]:
    """``weights``, plus the trained checkpoint for the cases that name it (trained once, when needed)."""
    if any("{checkpoint}" in a for a in CASES[case][0]):
        return {**weights, "checkpoint": request.getfixturevalue("trained_checkpoint")}
    return weights


def _args(case: str, weights: dict[str, Path], out: Path) -> list[str]:
    extra, *_ = CASES[case]
    extra = [a.format(**{k: str(v) for k, v in weights.items()}) for a in extra]
    preset = extra[:1] if extra and not extra[0].startswith("-") else []
    # the case's flags last: they win over SMALL's (e.g. --per_device_batch_size)
    return [*preset, *SMALL, *extra[len(preset) :], "--output_dir", str(out)]


def _check_output_dir(case: str, out: Path) -> None:
    if case in PARSE_ONLY:
        assert not out.exists(), f"{case}: {out} created before the arguments were checked"
    else:
        assert not (out / "model").exists() and not list(out.glob("checkpoints/*")), (
            f"{case}: half-written run"
        )


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_line(case, weights, tmp_path, capsys, request):
    from pathfm.training import dino

    out = tmp_path / "run"
    assert dino.cli(_args(case, _paths(case, weights, request), out)) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    _, *needles = CASES[case]
    assert err and err[-1].startswith("training/dino.py: error: "), err
    assert sum("error:" in line for line in err) == 1 and not any("Traceback" in line for line in err), err
    for needle in needles:
        assert needle in err[-1], (needle, err[-1])
    _check_output_dir(case, out)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_under_accelerate_two_processes(case, weights, tmp_path, repo_root, request):
    out, weights = tmp_path / "run", _paths(case, weights, request)
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


@pytest.mark.slow
def test_one_process_accelerate_launch_quiet_prints_our_line_alone(repo_root, tmp_path):
    """A one-process ``accelerate launch`` re-raises the script's exit status 2 as a CalledProcessError
    traceback after our line (accelerate's launcher, nothing the script can change; README troubleshooting);
    accelerate's public ``-q`` / ``--quiet`` leaves our line as the last one."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    launcher = [sys.executable, "-m", "accelerate.commands.launch"]
    script = ["training/dino.py", "--bad_flag", "1", "--output_dir", str(tmp_path / "out")]
    ours = "training/dino.py: error: unknown flag --bad_flag; see --help for the flags"
    runs = {}
    for name, quiet in (("loud", []), ("quiet", ["-q"])):
        runs[name] = subprocess.run(
            [*launcher, *quiet, *script], cwd=repo_root, env=env, capture_output=True, text=True, timeout=300
        )
    loud, quiet = runs["loud"], runs["quiet"]
    assert loud.returncode != 0 and ours in loud.stderr and "subprocess.CalledProcessError" in loud.stderr
    lines = [line for line in quiet.stderr.splitlines() if line.strip()]
    assert quiet.returncode == 1 and lines[-1] == ours and lines.count(ours) == 1, quiet.stderr[-2000:]
    assert "Traceback" not in quiet.stderr
    assert not (tmp_path / "out").exists()
