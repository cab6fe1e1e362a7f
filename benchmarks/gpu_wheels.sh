#!/usr/bin/env bash
# Download, here (with network), the wheels that benchmarks/gpu.sh installs on an offline GPU machine whose
# python3 (3.12, x86-64) already has torch, torchvision, transformers, accelerate, timm, tifffile,
# scikit-image, pyarrow and tensorboard, but not datasets, openslide, kornia, evaluate or imagecodecs.
#
#   bash benchmarks/gpu_wheels.sh            # -> benchmarks/wheels/*.whl (git-ignored, ~37 MiB)
#
# Versions are the ones pathfm's own environment uses (pyproject.toml bounds); pure-Python wheels where they
# exist. Only these packages and the few of their dependencies that such a machine lacks (dill,
# multiprocess, kornia_rs) are fetched: no dependency resolution (--no-deps), one version of each.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
DEST=benchmarks/wheels
WHEELS=(
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 evaluate==0.4.6
  openslide-python==1.4.7 openslide-bin==4.0.1.2
  kornia==0.9.0 kornia_rs==0.2.0 imagecodecs==2026.3.6
  setuptools==84.2.1  # builds pathfm there (pyproject needs setuptools >= 77; the machine's may be older)
)
mkdir -p "$DEST"
"$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 --platform any \
  -d "$DEST" "${WHEELS[@]}"
size_mib=$(du -sm "$DEST" | cut -f1)
echo "gpu_wheels.sh: $(ls "$DEST"/*.whl | wc -l) wheels, ${size_mib} MiB in $DEST"
if [ "$size_mib" -gt 60 ]; then
  echo "gpu_wheels.sh: $DEST is ${size_mib} MiB, over the 60 MiB the GPU machine takes; remove old versions" >&2
  exit 1
fi
