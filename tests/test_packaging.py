"""The wheel holds every module and data file of the source folders, under ``pathfm.<folder>`` only."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

SOURCE_FOLDERS = ["modeling", "datasets_scripts", "training", "evaluation", "spaces"]
DATA_SUFFIXES = {".py", ".yaml", ".png"}


def _expected_members(repo_root: Path) -> set[str]:
    expected = {"pathfm/__init__.py"}
    for folder in SOURCE_FOLDERS:
        for path in (repo_root / folder).rglob("*"):
            if path.suffix in DATA_SUFFIXES and "__pycache__" not in path.parts:
                expected.add(f"pathfm/{folder}/{path.relative_to(repo_root / folder).as_posix()}")
    return expected


@pytest.fixture(scope="module")
def wheel_members(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(repo_root),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("pathfm-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return {name for name in zf.namelist() if not name.startswith("pathfm-")}


def test_wheel_has_every_source_file(repo_root: Path, wheel_members: set[str]) -> None:
    missing = _expected_members(repo_root) - wheel_members
    assert not missing, f"files missing from the wheel (add their package / package-data): {sorted(missing)}"


def test_wheel_claims_no_generic_top_level_names(wheel_members: set[str]) -> None:
    top_level = {name.split("/")[0] for name in wheel_members}
    assert top_level == {"pathfm"}, top_level
