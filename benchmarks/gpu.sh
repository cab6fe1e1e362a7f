#!/usr/bin/env bash
# The prepared GPU check: one table of DINO training speed (images/s, MFU, peak memory, data wait; each fast
# path on vs off) on a bare machine with an NVIDIA GPU and no network, within 8 minutes.
#
#   bash benchmarks/gpu_wheels.sh        # here, with network: the missing wheels -> benchmarks/wheels/
#   bash benchmarks/gpu.sh               # there: install them + pathfm into a --target folder, run the table
#   bash benchmarks/gpu.sh --dry-run     # any CPU machine: same code path, tiny model, 2 steps per row
#
# The machine's own python3 (torch, torchvision, transformers, accelerate, timm, tifffile, scikit-image,
# pyarrow, tensorboard) is used as it is; only what it lacks comes from benchmarks/wheels, installed with
# `pip install --no-index --no-deps --target`, only when pathfm does not import already (here, .venv has it:
# nothing is installed). PYTHON picks the interpreter (default: .venv/bin/python if present, else python3).
# Outputs also go to $OUT when it is set (gpu_table.md, gpu_rows.json, gpu_log.txt). Extra arguments go to
# benchmarks/gpu.py (--budget_s, --out).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=${PYTHON:-python3}
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
fi
SITE=${PATHFM_SITE:-/tmp/pathfm_site}
if ! "$PY" -P -c "import pathfm.training.dino" 2>/dev/null; then
  if ! compgen -G "benchmarks/wheels/*.whl" >/dev/null; then
    echo "gpu.sh: pathfm does not import with $PY and benchmarks/wheels is empty: run" \
      "benchmarks/gpu_wheels.sh on a machine with network and bring that folder" >&2
    exit 1
  fi
  rm -rf "$SITE"
  "$PY" -m pip install --quiet --disable-pip-version-check --no-index --no-deps --no-compile \
    --target "$SITE" benchmarks/wheels/*.whl
  # pathfm itself, built with the carried setuptools (its pyproject needs setuptools >= 77)
  PYTHONPATH="$SITE" "$PY" -m pip install --quiet --disable-pip-version-check --no-index --no-deps \
    --no-build-isolation --no-compile --target "$SITE/pathfm_pkg" .
  export PYTHONPATH="$SITE/pathfm_pkg:$SITE${PYTHONPATH:+:$PYTHONPATH}"
  if ! "$PY" -P -c "import pathfm.training.dino" 2>/tmp/pathfm_import_error.txt; then
    echo "gpu.sh: pathfm still does not import after installing benchmarks/wheels:" \
      "$(tail -1 /tmp/pathfm_import_error.txt)" >&2
    exit 1
  fi
fi
export PYTHONUNBUFFERED=1
# PATHFM_GPU_SCRIPT runs another prepared check after the same install (benchmarks/fsdp_gpu.py)
exec "$PY" "${PATHFM_GPU_SCRIPT:-benchmarks/gpu.py}" "$@"
