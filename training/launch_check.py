"""Refuse a run whose process count differs from what the launch asked for.

``accelerate launch --cpu --num_processes 2 script.py`` (without ``--multi_gpu``) starts ONE process and says
nothing, so a user who asked for 2-process DDP silently trains alone. The process cannot see the request in
its environment (accelerate sets no variable for it in that case), so we read it where it is: the command
line of the ``accelerate launch`` process that started us (our parent in single-process runs, the parent of
the torch elastic workers in multi-process runs).
"""

from __future__ import annotations

import os

import psutil

__all__ = ["expected_world_size", "launch_num_processes", "parse_num_processes"]


def parse_num_processes(cmdline: list[str]) -> int | None:
    """``--num_processes`` of an ``accelerate launch`` command line.

    Args:
        cmdline: argv of a process, e.g. ``["/venv/bin/python", "/venv/bin/accelerate", "launch",
            "--num_processes", "2", "training/dino.py"]``.

    Returns:
        The requested number of processes (total over machines), or None when ``cmdline`` is not an
        ``accelerate launch`` or gives no ``--num_processes`` (the accelerate config file then decides).
    """
    names = [os.path.basename(arg) for arg in cmdline]
    launch = ("accelerate" in names and "launch" in cmdline) or "accelerate-launch" in names
    if not (launch or "accelerate.commands.launch" in cmdline):
        return None
    for i, arg in enumerate(cmdline):
        if arg in {"--num_processes", "--num-processes"} and i + 1 < len(cmdline):
            value = cmdline[i + 1]
        elif arg.startswith(("--num_processes=", "--num-processes=")):
            value = arg.split("=", 1)[1]
        else:
            continue
        return int(value) if value.isdigit() else None
    return None


def launch_num_processes(max_depth: int = 3) -> int | None:
    """``--num_processes`` of the ``accelerate launch`` among this process's nearest ancestors, or None."""
    try:
        proc = psutil.Process().parent()
        for _ in range(max_depth):
            if proc is None:
                return None
            found = parse_num_processes(proc.cmdline())
            if found is not None:
                return found
            proc = proc.parent()
    except (psutil.Error, OSError):
        return None
    return None


def expected_world_size(explicit: int | None) -> int:
    """The number of processes this run must have.

    Args:
        explicit: ``--expected_world_size`` (wins when given).

    Returns:
        ``explicit``, else the launching ``accelerate launch --num_processes``, else ``WORLD_SIZE``
        (1 if unset).
    """
    if explicit:
        return explicit
    launched = launch_num_processes()
    if launched is not None:
        return launched
    return int(os.environ.get("WORLD_SIZE", "1"))
