"""Wall time of ``--help`` for every pathfm entry point, side by side with ``python -c "import torch"``.

    python benchmarks/cli_startup.py [--repeats 3] [--target_s 3]

Each command runs ``--repeats`` times, interleaved with the torch baseline so that machine noise hits all of
them alike; the table gives the median wall time in s and its ratio to ``import torch``. The target of the
project is <= 3 s per ``--help`` on a 2-core machine. Exit status 1 when a command fails or misses the target.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
BASELINE = ("python -c 'import torch'", [PYTHON, "-c", "import torch"])


def entry_points() -> list[tuple[str, list[str]]]:
    """(label, argv) of every ``--help`` measured: the scripts, then the ``pathfm`` console script."""
    scripts = [
        "training/dino.py",
        "training/export.py",
        "evaluation/linear_probe.py",
        "datasets_scripts/publish.py",
        "modeling/convert_timm_to_pathfm.py",
        "spaces/app.py",
    ]
    commands = [(f"python {s} --help", [PYTHON, str(REPO / s), "--help"]) for s in scripts]
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
