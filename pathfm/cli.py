"""The ``pathfm`` console script: one command with a subcommand per entry point.

    pathfm train [preset] [--flags]    # = python training/dino.py
    pathfm train --num_processes N ... # = accelerate launch --multi_gpu --num_processes N training/dino.py ...
    pathfm export --checkpoint DIR --output_dir DIR
    pathfm probe --model DIR --task NAME --output_dir DIR
    pathfm catalogue ...               # = python datasets_scripts/catalogue.py
    pathfm demo                        # = python spaces/app.py
    pathfm convert ...                 # = python modeling/convert_timm_to_pathfm.py
    pathfm publish ...                 # = python datasets_scripts/publish.py
    pathfm segmentation ...            # = python -m pathfm.evaluation.segmentation
    pathfm mil ...                     # = python -m pathfm.evaluation.mil
    pathfm embeddings export|import    # = python -m pathfm.evaluation.embeddings

Each subcommand takes exactly the arguments of the script it names and behaves the same (exit status, one-line
errors). Only the chosen subcommand's module is imported, after the subcommand is known, so ``pathfm --help``
imports nothing heavy and ``pathfm <command> --help`` costs what the script's own ``--help`` costs.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Callable

COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "train": (
        "pathfm.training.train_command",
        "main",
        "training/dino.py",
        "DINO pretraining on whole-slide images (--num_processes N: under accelerate launch)",
    ),
    "export": (
        "pathfm.training.export",
        "main",
        "training/export.py",
        "export the teacher as a model folder",
    ),
    "probe": (
        "pathfm.evaluation.linear_probe",
        "cli",
        "evaluation/linear_probe.py",
        "frozen-backbone probes (linear, kNN) on benchmark tasks",
    ),
    "catalogue": (
        "pathfm.datasets_scripts.catalogue",
        "main",
        "datasets_scripts/catalogue.py",
        "list and check slide collections",
    ),
    "demo": ("pathfm.spaces.app", "main", "spaces/app.py", "serve the Gradio Space locally"),
    "convert": (
        "pathfm.modeling.convert_timm_to_pathfm",
        "cli",
        "modeling/convert_timm_to_pathfm.py",
        "convert a timm ViT checkpoint to a pathfm model folder",
    ),
    "publish": (
        "pathfm.datasets_scripts.publish",
        "cli",
        "datasets_scripts/publish.py",
        "build a grid-tile dataset (parquet + card), optionally push it",
    ),
    "segmentation": (
        "pathfm.evaluation.segmentation.cli",
        "main",
        "-m pathfm.evaluation.segmentation",
        "frozen-backbone segmentation (CoNSeP, MoNuSAC) with eva's decoders",
    ),
    "mil": (
        "pathfm.evaluation.mil.cli",
        "main",
        "-m pathfm.evaluation.mil",
        "slide-level gated ABMIL (Camelyon16-small, PANDA-small)",
    ),
    "embeddings": (
        "pathfm.evaluation.embeddings",
        "main",
        "-m pathfm.evaluation.embeddings",
        "embeddings in eva's layout: export | import",
    ),
}
"""subcommand -> (module, function taking argv, script or ``-m module`` it stands for, one-line
description)."""


def usage() -> str:
    """The top-level help text."""
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: pathfm <command> [arguments of that command]",
        "",
        "commands (pathfm <command> --help for the arguments of each):",
    ]
    lines += [
        f"  {name:<{width}}  {desc} (= python {script})" for name, (_, _, script, desc) in COMMANDS.items()
    ]
    lines += ["", "Multi-process training stays: accelerate launch training/dino.py [preset] [--flags]"]
    return "\n".join(lines)


def _train_help(argv: list[str]) -> Callable[[list[str]], int] | None:
    """``pathfm train --help``: the training parser alone (the same one training/dino.py parses with), so
    the help does not wait for torch / accelerate."""
    if not {"-h", "--help"} & set(argv):
        return None
    from pathfm.training.config import parse_config

    def show(args: list[str]) -> int:
        parse_config(args)  # prints the help and exits 0
        return 0

    return show


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``pathfm <command> ...``.

    Args:
        argv: Arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        The exit status of the subcommand (2 for an unknown command; 141 = 128 + SIGPIPE when the reader of
        the output stopped early, as in ``pathfm --help | head -1``, which ends quietly like a coreutils
        tool).
    """
    try:
        try:
            return _dispatch(list(sys.argv[1:] if argv is None else argv))
        finally:
            sys.stdout.flush()  # a closed pipe shows here rather than as an error at interpreter exit
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 128 + signal.SIGPIPE


def _dispatch(argv: list[str]) -> int:
    """Run the subcommand named by ``argv[0]`` with the remaining arguments; its exit status."""
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        print(
            f"pathfm: error: unknown command '{name}'; {hint}commands: {', '.join(COMMANDS)}", file=sys.stderr
        )
        return 2
    module_name, function_name, script, _ = COMMANDS[name]
    # models will be loaded: make the Auto classes know pathfm_vit (train does it in the process that trains)
    if name != "train" and not {"-h", "--help"} & set(rest):
        from pathfm.modeling import register_auto_classes

        register_auto_classes()
    sys.argv = [f"pathfm {name}", *rest]  # argparse's usage line names the subcommand
    function = _train_help(rest) if name == "train" else None
    if function is None:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            print(f"pathfm {name}: error: {script} is not part of this pathfm version", file=sys.stderr)
            return 2
        function = getattr(module, function_name)
    # argparse's --help and usage errors raise SystemExit, which ends the process as the script would
    result = function() if name == "probe" else function(rest)  # linear_probe.cli() reads sys.argv
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
