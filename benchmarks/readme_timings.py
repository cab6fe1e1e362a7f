"""The timings the README states, measured: set-up from a fresh copy, the main job, the default test suite.

    python benchmarks/readme_timings.py [--steps setup,main,tests] [--keep]

- **setup**: ``bash setup.sh`` in a fresh export of the current commit (``git archive HEAD``; a new ``.venv``,
  pip resolving and installing everything, the TCGA slide fetched), as a newcomer's first command;
- **main**: the README's main job, ``accelerate launch training/dino.py`` with its preset, into a fresh
  ``--output_dir`` (this checkout's ``.venv``);
- **tests**: ``python -m pytest -q`` (the default suite, offline).

Each step is timed once (they take minutes); ``python -c "import torch"`` is timed before and after them as
the side-by-side yardstick of how loaded the machine was (ratio column). Prints one table; exit status 1 if a
step failed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent
STEPS = ("setup", "main", "tests")


def timed(argv: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> tuple[float, int]:
    """(wall seconds, exit status) of one command; its output goes to ``log``."""
    start = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.run(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    return time.perf_counter() - start, code


def fresh_copy(target: Path) -> Path:
    """The committed tree of this checkout (plus the committed slides) in ``target``, without .venv."""
    target.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {STEPS}")
    parser.add_argument(
        "--keep", action="store_true", help="keep the work folder (fresh copy, outputs, logs)"
    )
    args = parser.parse_args(argv)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        parser.error(f"unknown step(s) {unknown}; choose from {STEPS}")
    work = Path(tempfile.mkdtemp(prefix="pathfm_readme_timings_"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "true"}
    torch_cmd = [str(VENV / "python"), "-c", "import torch"]
    results: list[tuple[str, float, int]] = []
    before, _ = timed(torch_cmd, REPO, work / "torch_before.log")
    commands = {
        "setup": (["bash", "setup.sh"], None),
        "main": (
            [str(VENV / "accelerate"), "launch", "training/dino.py", "--output_dir", str(work / "dino")],
            REPO,
        ),
        "tests": ([str(VENV / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"], REPO),
    }
    for step in steps:
        command, cwd = commands[step]
        if cwd is None:
            cwd = fresh_copy(work / "fresh")
        seconds, code = timed(command, cwd, work / f"{step}.log", env)
        results.append((step, seconds, code))
        print(f"{step}: {seconds:.0f} s (exit {code}; log {work / f'{step}.log'})", flush=True)
    after, _ = timed(torch_cmd, REPO, work / "torch_after.log")
    yardstick = (before + after) / 2
    print(f"\n{'step':<8} {'wall s':>8} {'min':>6} {'x import torch':>15}  exit")
    for step, seconds, code in results:
        print(f"{step:<8} {seconds:8.0f} {seconds / 60:6.1f} {seconds / yardstick:15.0f}  {code:4d}")
    torch_note = f"(python -c 'import torch': {before:.1f} s before, {after:.1f} s after)"
    print(f"{'torch':<8} {yardstick:8.1f} {'':>6} {1:15d}     {torch_note}")
    print(f"{os.cpu_count()} CPUs; {sys.version.split()[0]}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if any(code for _, _, code in results) else 0


if __name__ == "__main__":
    sys.exit(main())
