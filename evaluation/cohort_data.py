"""A user's own cohort as probe input: tiles from a folder or a table, or embeddings computed elsewhere.

Accepted inputs (``--dataset`` / ``--embeddings`` of ``evaluation/cohort_probe.py``):

- a folder of class subfolders of tiles: ``DIR/<class>/*.png|jpg|jpeg|tif|tiff`` (no groups, no split);
- a table (``.csv`` or ``.parquet``) with columns ``path,label[,group][,split]``; relative paths are taken
  from the table's folder; ``group`` is the patient (never split across train/validation/test); ``split``
  (train / validation / test) is kept as given, with a leakage warning;
- precomputed embeddings, so that any backbone goes through the same protocol:
  ``.npz`` (arrays ``embeddings`` (N, D), ``ids`` (N,), ``labels`` (N,) [, ``groups``, ``splits``]),
  ``.parquet`` (columns ``id``, ``label``, ``embedding`` (list of D floats) [, ``group``, ``split``]) or
  ``.safetensors`` (tensor ``embeddings`` (N, D); metadata ``ids``, ``labels`` [, ``groups``, ``splits``]
  as JSON lists of strings).

Errors name the file and the row (1-based data row, header not counted) and say how to fix it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from pathfm.evaluation.tasks.base import EvalTask, Sample, TaskDataError, read_rgb

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


@dataclass
class Cohort:
    """Samples of a user's cohort.

    Attributes:
        name: short name (file or folder stem), used in reports and the embedding cache.
        source: the file or folder it was read from.
        ids: (N,) unique sample ids (tile paths for image data).
        labels: (N,) class index into ``class_names``.
        class_names: class names, sorted unless given.
        groups: (N,) group (patient) of each sample, or None.
        splits: (N,) user-given split of each sample, or None.
        embeddings: (N, D) float32 when the input was precomputed embeddings, else None.
    """

    name: str
    source: str
    ids: list[str]
    labels: np.ndarray
    class_names: tuple[str, ...]
    groups: list[str] | None = None
    splits: list[str] | None = None
    embeddings: torch.Tensor | None = field(default=None, repr=False)

    def fingerprint(self) -> str:
        """sha256 (12 hex) of the ids and labels: part of the embedding cache key."""
        digest = hashlib.sha256(json.dumps([self.ids, self.labels.tolist()]).encode()).hexdigest()
        return digest[:12]


def _labels(values: list[str], file: Path, class_names: tuple[str, ...] | None) -> tuple[np.ndarray, tuple]:
    names = class_names or tuple(sorted(set(values)))
    index = {n: i for i, n in enumerate(names)}
    for row, v in enumerate(values, start=1):
        if v not in index:
            raise TaskDataError(f"{file}: row {row}: unknown label {v!r}; known classes {list(names)}")
    if len(names) < 2:
        raise TaskDataError(f"{file}: a single class {list(names)}; a probe needs at least 2")
    return np.asarray([index[v] for v in values], dtype=np.int64), names


def _check_unique(ids: list[str], file: Path) -> None:
    seen: dict[str, int] = {}
    for row, i in enumerate(ids, start=1):
        if i in seen:
            raise TaskDataError(f"{file}: row {row}: id {i!r} repeats row {seen[i]}; ids must be unique")
        seen[i] = row


def from_folder(folder: str | Path, class_names: tuple[str, ...] | None = None) -> Cohort:
    """Tiles from ``folder/<class>/*``, one class per subfolder (sorted names unless ``class_names``).

    Raises:
        TaskDataError: missing folder, fewer than two class folders, or a class folder without images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise TaskDataError(f"{folder}: no such folder")
    found = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = class_names or tuple(found)
    ids, labels = [], []
    for name in names:
        sub = folder / name
        files = (
            sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS) if sub.is_dir() else []
        )
        if not files:
            raise TaskDataError(
                f"{sub}: no {'/'.join(IMAGE_EXTENSIONS)} tile; every class folder needs tiles"
            )
        ids += [str(p) for p in files]
        labels += [name] * len(files)
    y, names = _labels(labels, folder, tuple(names))
    return Cohort(folder.name, str(folder), ids, y, names)


def _read_table(file: Path):
    import pandas as pd

    if not file.is_file():
        raise TaskDataError(f"{file}: no such file")
    try:
        if file.suffix.lower() == ".csv":
            return pd.read_csv(file, dtype=str, keep_default_na=False)
        if file.suffix.lower() == ".parquet":
            return pd.read_parquet(file)
    except (ValueError, OSError) as err:
        raise TaskDataError(f"{file}: cannot read it as a table: {err}") from err
    raise TaskDataError(f"{file}: expected a .csv or .parquet table, a folder, .npz or .safetensors")


def _optional(df, column: str) -> list[str] | None:
    return [str(v) for v in df[column]] if column in df.columns else None


def from_table(file: str | Path, class_names: tuple[str, ...] | None = None) -> Cohort:
    """Tiles listed in a CSV/parquet table ``path,label[,group][,split]``.

    Raises:
        TaskDataError: missing column, empty cell, missing tile file, unknown label (file and row named).
    """
    file = Path(file)
    df = _read_table(file)
    missing = [c for c in ("path", "label") if c not in df.columns]
    if missing:
        raise TaskDataError(f"{file}: missing column(s) {missing}; expected path,label[,group][,split]")
    ids = []
    for row, value in enumerate(df["path"], start=1):
        if not str(value).strip():
            raise TaskDataError(f"{file}: row {row}: empty path")
        path = Path(str(value))
        path = path if path.is_absolute() else file.parent / path
        if not path.is_file():
            raise TaskDataError(
                f"{file}: row {row}: tile {path} not found (relative paths start at {file.parent})"
            )
        ids.append(str(path))
    groups = _optional(df, "group")
    for name, col in (("group", groups), ("label", [str(v) for v in df["label"]])):
        empty = next((r for r, v in enumerate(col or [], start=1) if not v.strip()), None)
        if empty is not None:
            raise TaskDataError(f"{file}: row {empty}: empty {name}")
    _check_unique(ids, file)
    y, names = _labels([str(v) for v in df["label"]], file, class_names)
    return Cohort(file.stem, str(file), ids, y, names, groups, _optional(df, "split"))


def from_embeddings(file: str | Path, class_names: tuple[str, ...] | None = None) -> Cohort:
    """Precomputed embeddings from ``.npz``, ``.parquet`` or ``.safetensors`` (layouts in the module doc).

    Raises:
        TaskDataError: unknown format, missing array/column, length mismatch, non-finite embedding (row named).
    """
    file = Path(file)
    if not file.is_file():
        raise TaskDataError(f"{file}: no such file")
    suffix = file.suffix.lower()
    if suffix == ".npz":
        with np.load(file, allow_pickle=False) as z:
            need = [k for k in ("embeddings", "ids", "labels") if k not in z]
            if need:
                raise TaskDataError(f"{file}: missing array(s) {need}; expected embeddings, ids, labels")
            x, ids, labels = z["embeddings"], z["ids"].tolist(), z["labels"].tolist()
            groups = z["groups"].tolist() if "groups" in z else None
            splits = z["splits"].tolist() if "splits" in z else None
    elif suffix == ".parquet":
        df = _read_table(file)
        need = [c for c in ("id", "label", "embedding") if c not in df.columns]
        if need:
            raise TaskDataError(f"{file}: missing column(s) {need}; expected id, label, embedding")
        x = np.stack([np.asarray(v, dtype=np.float32) for v in df["embedding"]])
        ids, labels = df["id"].tolist(), df["label"].tolist()
        groups, splits = _optional(df, "group"), _optional(df, "split")
    elif suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
            names = set(f.keys())  # safe_open has keys(), no __contains__
            if "embeddings" not in names or "ids" not in meta or "labels" not in meta:
                raise TaskDataError(
                    f"{file}: expected tensor 'embeddings' and metadata 'ids', 'labels' (JSON lists)"
                )
            x = f.get_tensor("embeddings").numpy()
        ids, labels = json.loads(meta["ids"]), json.loads(meta["labels"])
        groups = json.loads(meta["groups"]) if "groups" in meta else None
        splits = json.loads(meta["splits"]) if "splits" in meta else None
    else:
        raise TaskDataError(f"{file}: embeddings must be .npz, .parquet or .safetensors")
    if x.ndim != 2:
        raise TaskDataError(f"{file}: embeddings have shape {x.shape}, expected (N, D)")
    for name, col in (("ids", ids), ("labels", labels), ("groups", groups), ("splits", splits)):
        if col is not None and len(col) != len(x):
            raise TaskDataError(f"{file}: {len(col)} {name} for {len(x)} embeddings")
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if len(bad):
        raise TaskDataError(f"{file}: row {bad[0] + 1}: embedding has NaN or infinite values")
    ids = [str(i) for i in ids]
    _check_unique(ids, file)
    y, names = _labels([str(v) for v in labels], file, class_names)
    as_str = lambda c: [str(v) for v in c] if c is not None else None
    return Cohort(
        file.stem, str(file), ids, y, names, as_str(groups), as_str(splits), torch.from_numpy(x).float()
    )


def load_cohort(path: str | Path, class_names: tuple[str, ...] | None = None) -> Cohort:
    """Dispatch on the input: folder -> :func:`from_folder`; .csv / .parquet with a ``path`` column ->
    :func:`from_table`; .npz / .safetensors / .parquet with an ``embedding`` column -> :func:`from_embeddings`.
    """
    path = Path(path)
    if path.is_dir():
        return from_folder(path, class_names)
    if path.suffix.lower() in (".npz", ".safetensors"):
        return from_embeddings(path, class_names)
    if path.suffix.lower() == ".parquet" and "embedding" in _read_table(path).columns:
        return from_embeddings(path, class_names)
    return from_table(path, class_names)


class CohortImages(EvalTask):
    """The tiles of a :class:`Cohort` as one ``all`` split, so that ``embed_samples`` and the cache apply."""

    SPLIT_NAMES = ("all",)

    def __init__(self, cohort: Cohort) -> None:
        super().__init__(data_dir=cohort.source, check_counts=False)
        self.cohort = cohort
        self.TASK_NAME = f"cohort-{cohort.name}-{cohort.fingerprint()}"
        self.CLASS_NAMES = cohort.class_names

    def _list(self, split: str) -> list[Sample]:
        return [Sample(i, int(t)) for i, t in zip(self.cohort.ids, self.cohort.labels)]

    def load_image(self, source: str) -> np.ndarray:
        return read_rgb(source)
