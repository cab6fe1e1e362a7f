"""Benchmark loaders on miniature official layouts built from real H&E tiles, and clear errors when broken."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pathfm.evaluation.tasks import build_task, present_tasks
from pathfm.evaluation.tasks.bach import split_of_index
from pathfm.evaluation.tasks.base import TaskDataError

from tests.evaluation.conftest import (
    MHIST_ROWS,
    PCAM_COUNTS,
    make_bach,
    make_crc,
    make_mhist,
    make_pcam,
    pcam_labels,
)


def test_bach_full_size_split_is_evas() -> None:
    splits = [split_of_index(i) for i in range(400)]
    assert Counter(splits) == {"train": 268, "validation": 132}
    # eva's validation ranges per class block of 100 (Benign 0-99, InSitu 100-199, Invasive 200-299,
    # Normal 300-399): Benign (41,59) + (60,90) = 48; InSitu (139,169) = 30; Invasive (240,258) + (260,273) = 31;
    # Normal (345,368) = 23.
    per_class = [Counter(splits[c * 100 : (c + 1) * 100])["validation"] for c in range(4)]
    assert per_class == [48, 30, 31, 23]
    assert (
        splits[40] == "train"
        and splits[41] == "validation"
        and splits[59] == "train"
        and splits[399] == "train"
    )


def test_bach_miniature(tmp_path: Path, he_tiles: list[np.ndarray]) -> None:
    make_bach(tmp_path, he_tiles, per_class=8)
    task = build_task("bach", tmp_path, check_counts=False)
    train, val = task.list_samples("train"), task.list_samples("validation")
    # 32 images -> position floor(i * 400 / 32) = 12.5 i. Benign (i = 0..7): 0, 12, 25, 37 train; 50 val (41-59);
    # 62, 75, 87 val (60-90).
    benign_train = [Path(s.source).name for s in train if s.target == 0]
    assert benign_train == ["benign000.tif", "benign001.tif", "benign002.tif", "benign003.tif"]
    # InSitu 100..187: 150, 162 val; Invasive 200..287: 250, 262 val; Normal 300..387: 350, 362 val.
    assert Counter(s.target for s in val) == {0: 4, 1: 2, 2: 2, 3: 2}
    assert len(train) == 22
    image = task.load_image(train[0].source)
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    with pytest.raises(TaskDataError, match="expected 400"):
        build_task("bach", tmp_path, check_counts=True).list_samples("train")


def test_crc_miniature_and_streaming_builder(tmp_path: Path, he_tiles: list[np.ndarray]) -> None:
    make_crc(tmp_path, he_tiles, n_train=3, n_val=2)
    task = build_task("crc", tmp_path, check_counts=False)
    assert task.split_sizes() == {"train": 27, "validation": 18}
    assert Counter(s.target for s in task.list_samples("validation")) == {c: 2 for c in range(9)}
    # the datasets builder API yields decoded examples with ClassLabel names
    ds = task.as_streaming_dataset(split="validation")
    examples = list(ds)
    assert len(examples) == 18
    assert ds.features["label"].names == list(task.CLASS_NAMES)
    first = examples[0]
    assert first["label"] == 0 and first["source"].endswith("ADI-0000.tif")
    assert np.asarray(first["image"]).shape == (56, 56, 3)
    with pytest.raises(TaskDataError, match="expected 100000"):
        build_task("crc", tmp_path).list_samples("train")


def test_mhist_miniature(tmp_path: Path, he_tiles: list[np.ndarray]) -> None:
    make_mhist(tmp_path, he_tiles)
    task = build_task("mhist", tmp_path, check_counts=False)
    train = task.list_samples("train")
    expected = [(n, 0 if lab == "HP" else 1) for n, lab, part in MHIST_ROWS if part == "train"]
    assert [(Path(s.source).name, s.target) for s in train] == expected
    assert len(task.list_samples("validation")) == 3  # Partition "test" is used as validation


def test_pcam_miniature(tmp_path: Path, he_tiles: list[np.ndarray]) -> None:
    make_pcam(tmp_path, he_tiles)
    task = build_task("pcam", tmp_path, check_counts=False)
    assert task.split_sizes() == {"train": 8, "validation": 4, "test": 4}
    val = task.list_samples("validation")
    assert [s.target for s in val] == pcam_labels("valid").tolist()
    image = task.load_image(val[2].source)
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    with pytest.raises(TaskDataError, match="expected 262144"):
        build_task("pcam", tmp_path).list_samples("train")
    assert sum(PCAM_COUNTS.values()) == 16


def test_task_all_finds_present_data(tmp_path: Path, he_tiles: list[np.ndarray]) -> None:
    make_crc(tmp_path / "crc", he_tiles)
    make_pcam(tmp_path, he_tiles)
    found = present_tasks(tmp_path)
    assert "crc" in found and "pcam" in found and "bach" not in found and "mhist" not in found
    assert build_task("crc", tmp_path, check_counts=False).config.data_dir == str(tmp_path / "crc")


# ----------------------------------------------------------------------------------------- broken layouts
def test_bach_missing_class_folder_is_named(tmp_path: Path, he_tiles: list[np.ndarray]) -> None:
    make_bach(tmp_path, he_tiles, per_class=2)
    shutil.rmtree(tmp_path / "ICIAR2018_BACH_Challenge" / "Photos" / "Normal")
    with pytest.raises(TaskDataError, match=r"Photos: expected class folders .* missing \['Normal'\]"):
        build_task("bach", tmp_path, check_counts=False).list_samples("train")


def test_bach_missing_root_is_named(tmp_path: Path) -> None:
    with pytest.raises(TaskDataError, match="missing folder .*ICIAR2018_BACH_Challenge/Photos"):
        build_task("bach", tmp_path, check_counts=False).list_samples("train")


def test_crc_missing_validation_folder_is_named(tmp_path: Path, he_tiles: list[np.ndarray]) -> None:
    make_crc(tmp_path, he_tiles)
    shutil.rmtree(tmp_path / "CRC-VAL-HE-7K")
    task = build_task("crc", tmp_path, check_counts=False)
    assert len(task.list_samples("train")) == 27
    with pytest.raises(TaskDataError, match="missing folder .*CRC-VAL-HE-7K"):
        task.list_samples("validation")


def test_crc_wrong_class_names(tmp_path: Path, he_tiles: list[np.ndarray]) -> None:
    make_crc(tmp_path, he_tiles)
    (tmp_path / "NCT-CRC-HE-100K" / "TUM").rename(tmp_path / "NCT-CRC-HE-100K" / "TUMOR")
    with pytest.raises(TaskDataError, match=r"missing \['TUM'\], unexpected \['TUMOR'\]"):
        build_task("crc", tmp_path, check_counts=False).list_samples("train")


def test_mhist_missing_image_and_csv_are_named(tmp_path: Path, he_tiles: list[np.ndarray]) -> None:
    make_mhist(tmp_path, he_tiles)
    (tmp_path / "images" / "MHIST_aab.png").unlink()
    with pytest.raises(
        TaskDataError, match=r"1 image\(s\) listed in annotations.csv are missing.*MHIST_aab.png"
    ):
        build_task("mhist", tmp_path, check_counts=False).list_samples("train")
    (tmp_path / "annotations.csv").unlink()
    with pytest.raises(TaskDataError, match="missing file .*annotations.csv"):
        build_task("mhist", tmp_path, check_counts=False).list_samples("train")


def test_mhist_bad_label_is_named(tmp_path: Path, he_tiles: list[np.ndarray]) -> None:
    make_mhist(tmp_path, he_tiles)
    text = (tmp_path / "annotations.csv").read_text().replace("MHIST_aac.png,HP", "MHIST_aac.png,TA")
    (tmp_path / "annotations.csv").write_text(text)
    with pytest.raises(TaskDataError, match="line 4: label 'TA'"):
        build_task("mhist", tmp_path, check_counts=False).list_samples("train")


def test_pcam_missing_file_is_named(tmp_path: Path, he_tiles: list[np.ndarray]) -> None:
    make_pcam(tmp_path, he_tiles)
    (tmp_path / "camelyonpatch_level_2_split_valid_y.h5").unlink()
    task = build_task("pcam", tmp_path, check_counts=False)
    assert len(task.list_samples("train")) == 8
    with pytest.raises(TaskDataError, match="missing file .*camelyonpatch_level_2_split_valid_y.h5"):
        task.list_samples("validation")
