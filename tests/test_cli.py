"""The ``pathfm`` console script: declared in pyproject.toml, dispatches to each entry point with the same
arguments, and its ``--help`` texts import neither torch nor the model classes."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pathfm
import pytest
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
    ("name", "flag"),
    [
        ("train", "--backbone_preset"),
        ("probe", "--save_head"),
        ("convert", "--to_timm"),
        ("publish", "--grid_mpp"),
    ],
)
def test_subcommand_help_is_the_scripts_help(name, flag):
    ours = run(console(), name, "--help")
    script = COMMANDS[name][2]
    theirs = run(sys.executable, script, "--help")
    assert ours.returncode == 0 and theirs.returncode == 0 and flag in ours.stdout
    assert ours.stdout.split("options:", 1)[1] == theirs.stdout.split("options:", 1)[1]
    assert f"usage: pathfm {name}" in ours.stdout


def test_subcommand_errors_exit_like_the_script(tmp_path):
    done = run(
        console(),
        "probe",
        "--model",
        str(tmp_path / "missing"),
        "--task",
        "crc",
        "--output_dir",
        str(tmp_path),
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr and "missing" in done.stderr


def test_help_imports_no_torch():
    code = (
        "import sys; sys.argv = ['{0}', '--help']\n"
        "import pathfm.cli\n"
        "try:\n    pathfm.cli.main(['{1}', '--help'])\n"
        "except SystemExit:\n    pass\n"
        "print('TORCH', 'torch' in sys.modules, 'transformers.modeling_utils' in sys.modules)\n"
    )
    for name in ("train", "probe", "convert", "publish", "demo"):
        out = run(sys.executable, "-c", code.format(str(Path(sys.executable).parent / "pathfm"), name)).stdout
        # the converter's --arch choices come from the config module, which transformers builds on torch
        expected = "TORCH True False" if name == "convert" else "TORCH False False"
        assert out.strip().endswith(expected), (name, out[-300:])


def test_help_only_recognises_our_entry_points_only():
    root = Path(pathfm.__file__).resolve().parents[1]
    assert pathfm.help_only([str(root / "training" / "dino.py"), "--help"])
    assert pathfm.help_only(["/usr/bin/pathfm", "probe", "-h"])
    assert not pathfm.help_only([str(root / "training" / "dino.py"), "--output_dir", "x"])
    assert not pathfm.help_only(["/usr/bin/pytest", "--help"])
    assert not pathfm.help_only([str(root / ".venv" / "bin" / "tool.py"), "--help"])
    assert not pathfm.help_only(["-c", "--help"])
