"""Where the embedded slides are looked for when pathfm is not installed editable (the GPU machine's
``pip install --target``: the slides are not package data)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_non_editable_install_finds_the_checkouts_slides(tmp_path):
    site = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site),
         str(REPO)],
        capture_output=True, text=True,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    code = (
        "import pathfm; from pathfm.datasets_scripts.embedded import embedded_slides;"
        "print(pathfm.__file__); print(sorted(r.path for r in embedded_slides()))"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("PATHFM_SLIDES_DIR", None)
    run = subprocess.run([sys.executable, "-P", "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    package_file, paths = run.stdout.splitlines()
    assert package_file.startswith(str(site))  # the --target copy, not the checkout
    assert all(p.startswith(str(REPO / "data" / "slides")) for p in eval(paths))
    # elsewhere, without the variable: the one-line error names the variable
    run = subprocess.run([sys.executable, "-P", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode != 0 and "PATHFM_SLIDES_DIR" in run.stderr
    env["PATHFM_SLIDES_DIR"] = str(REPO / "data" / "slides")
    run = subprocess.run([sys.executable, "-P", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
