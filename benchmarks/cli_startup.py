"""Wall time of ``--help`` for every pathfm entry point, side by side with ``python -c "import torch"``.

    python benchmarks/cli_startup.py [--repeats 3] [--target_s 3]

The commands are found, not listed: every script with a ``__main__`` block under pathfm's entry folders,
every ``python -m pathfm.<module>`` named in README.md or the sources, ``pathfm --help`` and every
``pathfm <command> --help``. Each command runs ``--repeats`` times, interleaved with the torch baseline so
that machine noise hits all of them alike; the table gives the median wall time in s and its ratio to
``import torch``. The target of the project is <= 3 s per ``--help`` on a 2-core machine. Exit status 1
when a command fails or misses the target.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pathfm import ENTRY_FOLDERS

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
BASELINE = ("python -c 'import torch'", [PYTHON, "-c", "import torch"])
MAIN_BLOCK = re.compile(r"^if __name__ == [\"']__main__[\"']:", re.MULTILINE)
MODULE_COMMAND = re.compile(r"python -m (pathfm(?:\.[a-z_]+)+)")


def scripts() -> list[str]:
    """Every script of the source tree that runs as a program (has a ``__main__`` block), repo-relative."""
    found = []
    for folder in sorted(ENTRY_FOLDERS - {"pathfm"}):
        for file in sorted((REPO / folder).rglob("*.py")):
            if MAIN_BLOCK.search(file.read_text(encoding="utf-8")):
                found.append(file.relative_to(REPO).as_posix())
    return found


def documented_modules() -> list[str]:
    """Every ``python -m pathfm.<module>`` that README.md or a source file tells users to run."""
    texts = [REPO / "README.md"]
    for folder in sorted(ENTRY_FOLDERS):
        texts += sorted((REPO / folder).rglob("*.py"))
    found: set[str] = set()
    for file in texts:
        found |= set(MODULE_COMMAND.findall(file.read_text(encoding="utf-8")))
    return sorted(module.rstrip(".") for module in found)


def entry_points() -> list[tuple[str, list[str]]]:
    """(label, argv) of every ``--help`` measured: the scripts, the documented ``python -m`` modules, then
    the ``pathfm`` console script and each of its subcommands."""
    commands = [(f"python {s} --help", [PYTHON, str(REPO / s), "--help"]) for s in scripts()]
    commands += [(f"python -m {m} --help", [PYTHON, "-m", m, "--help"]) for m in documented_modules()]
    console = shutil.which("pathfm", path=str(Path(PYTHON).parent)) or shutil.which("pathfm")
    if console:
        from pathfm.cli import COMMANDS

        commands.append(("pathfm --help", [console, "--help"]))
        present = [name for name, (module, *_) in COMMANDS.items() if importlib.util.find_spec(module)]
        commands += [(f"pathfm {name} --help", [console, name, "--help"]) for name in present]
    return commands


def wall_time(argv: list[str]) -> tuple[float, int]:
    """(seconds, exit status) of one run, output discarded."""
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    return time.perf_counter() - start, done.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per command (median reported)")
    parser.add_argument("--target_s", type=float, default=3.0, help="target wall time per --help, s")
    args = parser.parse_args(argv)
    commands = [BASELINE, *entry_points()]
    times: dict[str, list[float]] = {label: [] for label, _ in commands}
    status: dict[str, int] = {}
    for _ in range(args.repeats):
        for label, command in commands:
            seconds, code = wall_time(command)
            times[label].append(seconds)
            status[label] = status.get(label) or code
    base = statistics.median(times[BASELINE[0]])
    width = max(len(label) for label in times)
    print(f"{'command':<{width}}  median s  x import torch  exit")
    failed = False
    for label, values in times.items():
        median = statistics.median(values)
        miss = label != BASELINE[0] and (median > args.target_s or status[label] != 0)
        failed |= miss
        flag = "  <-- over target" if miss and status[label] == 0 else "  <-- failed" if miss else ""
        print(f"{label:<{width}}  {median:8.2f}  {median / base:13.2f}  {status[label]:4d}{flag}")
    print(f"({args.repeats} runs each, interleaved; target <= {args.target_s:g} s per --help)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
