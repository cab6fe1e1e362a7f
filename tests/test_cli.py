"""The ``pathfm`` console script: declared in pyproject.toml, dispatches to each entry point with the same
arguments, and its ``--help`` texts import neither torch nor the model classes."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import pathfm
from pathfm.cli import COMMANDS

REPO = Path(__file__).resolve().parents[1]


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)


def console() -> str:
    path = Path(sys.executable).parent / "pathfm"
    if not path.exists():
        pytest.fail(f"{path} missing: reinstall pathfm (pip install -e .) so that the console script exists")
    return str(path)


def test_console_script_is_declared():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"pathfm": "pathfm.cli:main"}
    for module, function, script, _ in COMMANDS.values():
        if script.startswith("-m "):  # python -m <package or module>
            assert module == script[3:] or module.startswith(script[3:] + "."), (module, script)
        elif module == "pathfm.training.train_command":  # training/dino.py, or several under accelerate
            assert script == "training/dino.py"
        else:
            assert (REPO / script).name == module.rsplit(".", 1)[1] + ".py"
        assert function in ("main", "cli")


def test_top_level_help_and_unknown_command():
    done = run(console(), "--help")
    assert done.returncode == 0
    for name in ("train", "probe", "catalogue", "demo", "convert", "publish", "export"):
        assert f"  {name} " in done.stdout
    done = run(console(), "trian")
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"pathfm: error: unknown command 'trian'; did you mean 'train'? commands: {', '.join(COMMANDS)}"
    ]


@pytest.mark.parametrize(
    ("name", "flag"), [("probe", "--save_head"), ("convert", "--to_timm"), ("demo", "PATHFM_SPACE_MODEL_DIRS")]
)
def test_subcommand_help_is_the_scripts_help(name, flag):
    ours = run(console(), name, "--help")
    theirs = run(sys.executable, COMMANDS[name][2], "--help")
    assert ours.returncode == 0 and theirs.returncode == 0 and flag in ours.stdout
    assert ours.stdout.split("options:", 1)[1] == theirs.stdout.split("options:", 1)[1]
    assert f"usage: pathfm {name}" in ours.stdout


def test_train_help_is_the_training_parser(capsys):
    from pathfm.training.config import parse_config

    ours = run(console(), "train", "--help")
    with pytest.raises(SystemExit):
        parse_config(["--help"])  # what training/dino.py parses its arguments with
    theirs = capsys.readouterr().out
    assert ours.returncode == 0 and "--backbone_preset" in ours.stdout
    assert ours.stdout.split("options:", 1)[1] == theirs.split("options:", 1)[1]


def test_subcommand_errors_exit_like_the_script(tmp_path):
    done = run(
        console(),
        "convert",
        "--checkpoint",
        str(tmp_path / "missing.pth"),
        "--arch",
        "tiny",
        "--output_dir",
        str(tmp_path / "out"),
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"convert_timm_to_pathfm.py: error: Checkpoint {tmp_path / 'missing.pth'} does not exist."
    ]


@pytest.mark.slow  # imports the whole training stack: ~15 s on 2 idle cores
def test_train_in_one_process_is_training_dino(tmp_path):
    """``pathfm train`` without --num_processes runs training/dino.py's cli in this process (same line)."""
    done = run(console(), "train", "cpu_tniy", "--output_dir", str(tmp_path / "run"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("training/dino.py: error: preset 'cpu_tniy' not found")
    assert not (tmp_path / "run").exists()


def test_help_imports_no_torch():
    code = (
        "import sys\n"
        "sys.argv = ['{0}', '--help']\n"
        "import pathfm.cli\n"
        "for name in ('train', 'probe', 'publish', 'demo'):\n"
        "    try:\n        pathfm.cli.main([name, '--help'])\n"
        "    except SystemExit:\n        pass\n"
        "print('TORCH', 'torch' in sys.modules, 'transformers.modeling_utils' in sys.modules)\n"
    ).format(Path(sys.executable).parent / "pathfm")
    out = run(sys.executable, "-c", code).stdout
    assert out.strip().endswith("TORCH False False"), out[-300:]


@pytest.mark.parametrize(
    "module",
    ["pathfm.evaluation.mil", "pathfm.evaluation.segmentation", "pathfm.evaluation.linear_probe",
     "pathfm.datasets_scripts.publish"],
)  # fmt: skip
def test_help_imports_no_datasets_nor_torch(module):
    """``--help`` of the evaluation and publish command lines parses before the task registry / builder
    import ``datasets`` (and torch): that import alone took 2-3 s of the 3-4 s these took on 2 cores."""
    done = run(sys.executable, "-X", "importtime", "-m", module, "--help")
    assert done.returncode == 0 and "usage:" in done.stdout, done.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert not {"datasets", "torch"} & imported, sorted({"datasets", "torch"} & imported)


def test_task_names_without_the_registry_match_it():
    from pathfm.evaluation.tasks import TASK_NAMES, TASKS

    assert TASK_NAMES == tuple(TASKS)


def test_help_only_recognises_our_entry_points_only():
    root = Path(pathfm.__file__).resolve().parents[1]
    assert pathfm.help_only([str(root / "training" / "dino.py"), "--help"])
    assert pathfm.help_only(["/usr/bin/pathfm", "probe", "-h"])
    assert not pathfm.help_only([str(root / "training" / "dino.py"), "--output_dir", "x"])
    assert not pathfm.help_only(["/usr/bin/pytest", "--help"])
    assert not pathfm.help_only([str(root / ".venv" / "bin" / "tool.py"), "--help"])
    assert not pathfm.help_only(["-c", "--help"])
    # python -m: while the parent packages import, argv[0] is the literal "-m"; the module is in orig_argv
    assert pathfm.help_only(["-m", "--help"], ["python", "-m", "pathfm.evaluation.mil", "--help"])
    assert not pathfm.help_only(["-m", "--help"], ["python", "-m", "pytest", "--help"])
    assert not pathfm.help_only(["-m", "--task", "x"], ["python", "-m", "pathfm.evaluation.mil", "--task", "x"])


def _startup_benchmark():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import cli_startup
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return cli_startup


def test_startup_benchmark_finds_every_entry_point():
    bench = _startup_benchmark()
    labels = [label for label, _ in bench.entry_points()]
    for expected in (
        "python training/dino.py --help",
        "python evaluation/cohort_probe.py --help",
        "python -m pathfm.evaluation.mil --help",
        "python -m pathfm.evaluation.segmentation --help",
        "python -m pathfm.evaluation.embeddings --help",
        "python -m pathfm.datasets_scripts.catalogue --help",
    ):
        assert expected in labels
    assert [f"pathfm {name} --help" for name in COMMANDS] == labels[-len(COMMANDS) :]


# entry points whose --help once imported torch; the default suite checks these, the slow suite all of them
ONCE_SLOW = {
    "python training/dino.py --help",
    "python training/export.py --help",
    "python evaluation/cohort_probe.py --help",
    "python modeling/convert_timm_to_pathfm.py --help",
    "python -m pathfm.datasets_scripts.catalogue --help",
    "python -m pathfm.evaluation.mil --help",
    "python -m pathfm.evaluation.segmentation --help",
    "python -m pathfm.evaluation.embeddings --help",
}


@pytest.mark.parametrize(
    "label",
    [
        label if label in ONCE_SLOW else pytest.param(label, marks=pytest.mark.slow)
        for label, _ in _startup_benchmark().entry_points()
    ],
)
def test_every_help_imports_no_torch(label):
    """What keeps each --help within the startup target: torch (and so transformers' models) is never
    imported just to print the arguments (timings themselves: benchmarks/cli_startup.py)."""
    argv = dict(_startup_benchmark().entry_points())[label]
    done = subprocess.run(
        [argv[0], "-X", "importtime", *argv[1:]] if argv[0] == sys.executable else argv,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "torch" not in imported, label
    assert "usage: __main__.py" not in done.stdout, done.stdout[:200]


def test_closed_pipe_ends_quietly():
    """``pathfm --help | head -1``: the reader closes the pipe early; no BrokenPipeError traceback."""
    proc = subprocess.Popen([console(), "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before pathfm writes: every write hits a closed pipe
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) in (0, 141) and err == "", err


def test_console_script_registers_the_model_type_before_a_real_command():
    code = (
        "import sys\n"
        "sys.argv = ['/bin/pathfm', 'probe']\n"
        "import pathfm.cli\n"
        "from transformers import AutoConfig\n"
        "try:\n    AutoConfig.for_model('pathfm_vit')\n    print('early')\n"
        "except ValueError:\n    print('deferred')\n"
        "try:\n    pathfm.cli.main(['probe'])\n"
        "except SystemExit:\n    pass\n"
        "print(type(AutoConfig.for_model('pathfm_vit')).__name__)\n"
    )
    assert run(sys.executable, "-c", code).stdout.split() == ["deferred", "PathFMViTConfig"]
