"""The ``pathfm`` console script: declared in pyproject.toml, dispatches to each entry point with the same
arguments, and its ``--help`` texts import neither torch nor the model classes."""

from __future__ import annotations

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


@pytest.mark.parametrize(("name", "flag"), [("probe", "--save_head"), ("convert", "--to_timm")])
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


def test_help_only_recognises_our_entry_points_only():
    root = Path(pathfm.__file__).resolve().parents[1]
    assert pathfm.help_only([str(root / "training" / "dino.py"), "--help"])
    assert pathfm.help_only(["/usr/bin/pathfm", "probe", "-h"])
    assert not pathfm.help_only([str(root / "training" / "dino.py"), "--output_dir", "x"])
    assert not pathfm.help_only(["/usr/bin/pytest", "--help"])
    assert not pathfm.help_only([str(root / ".venv" / "bin" / "tool.py"), "--help"])
    assert not pathfm.help_only(["-c", "--help"])


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
