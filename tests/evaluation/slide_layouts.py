"""Miniature Camelyon16 and PANDA folders: tifffile pyramids with tissue blobs and tumour-textured spots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.datasets_scripts.synthetic import PINK, blank, write_slide


def tissue_slide(path: Path, size: int, mpp: float, tumour: float, seed: int) -> Path:
    """A ``size`` px square slide at ``mpp``: one pink textured blob; ``tumour`` in [0, 1] sets how much of it
    carries dense dark-purple nuclei spots."""
    rng = np.random.default_rng(seed)
    img = blank(size, size).astype(np.int16)
    yy, xx = np.mgrid[:size, :size]
    cx, cy = rng.uniform(0.4, 0.6, 2) * size
    blob = ((xx - cx) / (0.38 * size)) ** 2 + ((yy - cy) / (0.32 * size)) ** 2 <= 1
    img[blob] = np.array(PINK) + rng.integers(-15, 16, (int(blob.sum()), 1))
    spots = blob & (rng.random((size, size)) < 0.25 * tumour) & (xx < cx + (tumour - 0.5) * size)
    img[spots] = (60, 20, 90)
    return write_slide(path, np.clip(img, 0, 255).astype(np.uint8), [(size // 4, size // 4)], mpp=mpp)


def make_camelyon16(root: Path, per_class: int = 3, n_test: int = 2, size: int = 768) -> Path:
    """``training/{normal,tumor}/*.tif``, ``testing/images/test_NNN.tif`` + ``testing/reference.csv``."""
    for target, name in enumerate(("normal", "tumor")):
        (root / "training" / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            tissue_slide(
                root / "training" / name / f"{name}_{i + 1:03d}.tif", size, 0.25, target, 10 * target + i
            )
    (root / "testing" / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_test):
        tissue_slide(root / "testing" / "images" / f"test_{i + 1:03d}.tif", size, 0.25, i % 2, 100 + i)
        rows.append(f"test_{i + 1:03d},{'Tumor' if i % 2 else 'Normal'},Macro,None\n")
    (root / "testing" / "reference.csv").write_text("".join(rows))
    return root


def make_panda(root: Path, grades: tuple[int, ...] = (0, 4), per_grade: int = 7, size: int = 512) -> Path:
    """``train_images/<id>.tiff`` + ``train.csv`` (image_id,data_provider,isup_grade,gleason_score)."""
    (root / "train_images").mkdir(parents=True, exist_ok=True)
    rows = ["image_id,data_provider,isup_grade,gleason_score\n"]
    for grade in grades:
        for i in range(per_grade):
            image_id = f"{grade}{i:02d}abc"
            tissue_slide(
                root / "train_images" / f"{image_id}.tiff", size, 0.5, grade / 5, 1000 + 10 * grade + i
            )
            rows.append(f"{image_id},radboud,{grade},0+0\n")
    (root / "train.csv").write_text("".join(rows))
    return root
