"""PatchCamelyon (Veeling et al. 2018): lymph-node patches, tumour vs no tumour, 96 x 96 px at ~0.97 µm/px.

Layout under ``--data_dir`` (the official .h5.gz files, https://zenodo.org/records/2546921, gunzipped)::

    camelyonpatch_level_2_split_{train,valid,test}_x.h5   dataset "x": (N, 96, 96, 3) uint8
    camelyonpatch_level_2_split_{train,valid,test}_y.h5   dataset "y": (N, 1, 1, 1) 0/1

Splits: 262,144 train / 32,768 validation / 32,768 test (eva ``classification/patch_camelyon.py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import numpy as np
from pathfm.evaluation.tasks.base import EvalTask, Sample, TaskDataError

FILE_SPLITS = {"train": "train", "validation": "valid", "test": "test"}


def h5_path(root: Path, split: str, kind: str) -> Path:
    """``root/camelyonpatch_level_2_split_<split>_<kind>.h5`` with the file's own split word (valid)."""
    return root / f"camelyonpatch_level_2_split_{FILE_SPLITS[split]}_{kind}.h5"


def open_h5(path: Path) -> object:
    """``h5py.File(path, "r")``; an unreadable file (truncated, not HDF5) raises :class:`TaskDataError`
    naming it."""
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise TaskDataError(f"{path}: not a readable HDF5 file ({err}); re-download and gunzip it") from None


class PatchCamelyon(EvalTask):
    """PCam from its six official HDF5 files."""

    TASK_NAME = "pcam"
    CLASS_NAMES = ("no_tumor", "tumor")
    SPLIT_NAMES = ("train", "validation", "test")
    EXPECTED_COUNTS: ClassVar[dict[str, int]] = {"train": 262_144, "validation": 32_768, "test": 32_768}
    DESCRIPTION = "PatchCamelyon lymph-node patches (96 px), tumour vs no tumour; official train/valid/test."

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._handles: dict[tuple[int, str], object] = {}

    @classmethod
    def is_present(cls, data_dir: str | Path | None) -> bool:
        return data_dir is not None and any(Path(data_dir).glob("camelyonpatch_level_2_split_*.h5"))

    def _list(self, split: str) -> list[Sample]:
        x_path, y_path = h5_path(self.root, split, "x"), h5_path(self.root, split, "y")
        for path in (x_path, y_path):
            if not path.is_file():
                raise TaskDataError(f"missing file {path} (gunzip the official .h5.gz)")
        with open_h5(x_path) as fx, open_h5(y_path) as fy:
            if "x" not in fx or "y" not in fy:
                raise TaskDataError(f"{x_path.name} needs dataset 'x' and {y_path.name} dataset 'y'")
            x_shape = fx["x"].shape
            try:
                y = np.asarray(fy["y"]).reshape(-1)
            except (OSError, ValueError) as err:
                raise TaskDataError(
                    f"{y_path}: labels unreadable ({err}); re-download and gunzip it"
                ) from None
        if len(x_shape) != 4 or x_shape[3] != 3 or x_shape[0] != len(y):
            raise TaskDataError(
                f"{x_path}: x has shape {x_shape}, expected (N, 96, 96, 3) with N = {len(y)} labels"
            )
        if not set(np.unique(y).tolist()) <= {0, 1}:
            raise TaskDataError(f"{y_path}: labels must be 0/1, found {sorted(np.unique(y).tolist())}")
        return [Sample(f"{x_path}#{i}", int(t)) for i, t in enumerate(y)]

    def load_image(self, source: str) -> np.ndarray:
        path, index = source.rsplit("#", 1)
        key = (os.getpid(), path)  # HDF5 handles must not cross a fork: each DataLoader worker opens its own
        handle = self._handles.get(key)
        if handle is None:
            handle = self._handles[key] = open_h5(Path(path))
        try:
            return np.asarray(handle["x"][int(index)])
        except (OSError, ValueError) as err:  # truncated data behind an intact header
            raise TaskDataError(
                f"{path}: patch {index} unreadable ({err}); re-download and gunzip it"
            ) from None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"] = {}  # h5py handles do not pickle; workers reopen
        return state
