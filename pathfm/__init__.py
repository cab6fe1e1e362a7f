"""pathfm: pathology foundation models in the Hugging Face ecosystem.

Importing ``pathfm`` registers the ``pathfm_vit`` model type with the transformers Auto classes, except in
a process started only to print one of pathfm's command-line ``--help`` texts (see :func:`help_only`): it
never builds a model, and registration costs ~3 s of torch / torchvision imports on 2 cores. The ``pathfm``
console script (:mod:`pathfm.cli`) registers once it knows its command is not ``--help``.
"""

import sys as _sys
from pathlib import Path as _Path

__version__ = "0.1.0"

ENTRY_FOLDERS = frozenset({"pathfm", "training", "evaluation", "datasets_scripts", "modeling", "spaces"})
"""Folders (source tree or installed package) whose scripts are pathfm's command-line entry points."""


def help_only(argv: list[str], orig_argv: list[str] | None = None) -> bool:
    """Whether ``argv`` (``sys.argv``) runs a pathfm entry point just to print its help.

    Args:
        argv: Program path followed by its arguments. While ``python -m pathfm.<module>`` imports the parent
            packages, the program path is still the literal ``-m``; the module name is then read from
            ``orig_argv``.
        orig_argv: The interpreter's own command line (default ``sys.orig_argv``), used for ``-m`` only.

    Returns:
        True when ``-h`` / ``--help`` is among the arguments and the program is the ``pathfm`` console
        script, a ``.py`` file under one of :data:`ENTRY_FOLDERS` of this source tree / installed package,
        or ``python -m pathfm.<module>``.
    """
    if len(argv) < 2 or not {"-h", "--help"} & set(argv[1:]):
        return False
    if argv[0] == "-m":
        orig = list(_sys.orig_argv if orig_argv is None else orig_argv)
        module = orig[orig.index("-m") + 1] if "-m" in orig[:-1] else ""
        return module == "pathfm" or module.startswith("pathfm.")
    program = _Path(argv[0])
    if program.name == "pathfm":
        return True
    package = _Path(__file__).resolve().parent
    try:
        program = program.resolve()
    except OSError:
        return False
    for root in (package, package.parent):
        try:
            relative = program.relative_to(root)
        except ValueError:
            continue
        if program.suffix == ".py" and len(relative.parts) > 1 and relative.parts[0] in ENTRY_FOLDERS:
            return True
        if root == package and program.suffix == ".py":
            return True
    return False


def _console_script(argv: list[str]) -> bool:
    """The ``pathfm`` console script registers the classes itself, once it knows the command needs them."""
    return bool(argv) and _Path(argv[0]).name == "pathfm"


if not (help_only(_sys.argv) or _console_script(_sys.argv)):
    from pathfm.modeling import register_auto_classes as _register

    _register()
