"""CoNSeP / MoNuSAC layouts, readers and the segmentation protocol end to end on miniature copies."""

from __future__ import annotations

import hashlib
import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from pathfm.evaluation.segmentation.cli import main
from pathfm.evaluation.tasks.base import TaskDataError
from pathfm.evaluation.tasks.consep import CoNSeP
from pathfm.evaluation.tasks.monusac import MoNuSAC

from tests.evaluation.seg_layouts import make_consep, make_monusac


def test_consep_merges_raw_types_and_names_broken_files(tmp_path: Path) -> None:
    root = make_consep(tmp_path / "consep")
    task = CoNSeP(root, check_counts=False)
    assert [len(task.list_samples(s)) for s in ("train", "validation")] == [3, 2]
    sample = task.list_samples("train")[1]
    raw = scipy.io.loadmat(sample.label)["type_map"]
    _, mask = task.load(sample)
    expected = np.select([raw == 0, raw == 1, raw == 2, raw <= 4], [0, 1, 2, 3], 4)
    assert set(np.unique(raw)) >= {4, 6} and np.array_equal(mask, expected)
    with pytest.raises(TaskDataError, match="expected 27"):
        CoNSeP(root).list_samples("train")
    scipy.io.savemat(sample.label, {"inst_map": raw})
    with pytest.raises(TaskDataError, match=f"{sample.label} has no 'type_map'"):
        task.load(sample)
    missing = root / "Test" / "Labels" / "test_2.mat"
    missing.unlink()
    with pytest.raises(TaskDataError, match=f"annotation file {missing} is missing"):
        CoNSeP(root, check_counts=False).list_samples("validation")


def test_monusac_polygons_unknown_names_and_missing_xml(tmp_path: Path) -> None:
    root = make_monusac(tmp_path / "monusac")
    task = MoNuSAC(root, check_counts=False)
    image, mask = task.load(task.list_samples("train")[0])
    assert image.shape == (64, 64, 3) and mask.shape == (64, 64)
    assert set(np.unique(mask)) <= {0, 1, 2, 3, 4} and len(np.unique(mask)) >= 3
    test_masks = [task.load(s)[1] for s in task.list_samples("validation")]
    assert any((m == 5).any() for m in test_masks)  # "Unknown cell" -> Ambiguous
    assert not any((m == 4).any() for m in test_masks)
    xml = Path(task.list_samples("validation")[0].label)
    xml.unlink()
    with pytest.raises(TaskDataError, match=f"annotation file {xml} is missing"):
        MoNuSAC(root, check_counts=False).list_samples("validation")
    with pytest.raises(TaskDataError, match="missing folder"):
        MoNuSAC(tmp_path / "nowhere").list_samples("train")


@pytest.mark.parametrize(
    ("maker", "name", "decoder"),
    [(make_consep, "consep", "conv_ms"), (make_monusac, "monusac", "conv_with_image")],
)
def test_segmentation_end_to_end(
    tmp_path: Path, tiny_model_dir: Path, maker, name: str, decoder: str, capsys
) -> None:
    root = maker(tmp_path / name)
    argv = [
        "--decoder",
        decoder,
        "--model",
        str(tiny_model_dir),
        "--task",
        name,
        "--data_dir",
        str(root),
        "--no_check_counts",
        "--output_dir",
        str(tmp_path / "out"),
        "--embeddings_dir",
        str(tmp_path / "emb"),
        "--tile_size",
        "32",
        "--steps",
        "6",
        "--eval_every",
        "3",
        "--batch_size",
        "4",
        "--runs",
        "2",
    ]
    assert main(argv) == 0
    results = json.loads((tmp_path / "out" / name / "results.json").read_text())
    assert results["protocol"] == "eva-segmentation-v1"
    assert results["metric_variant"].startswith("monai-mean") and results["config"]["decoder"] == decoder
    values = [r["dice"] for r in results["runs"]]
    assert len(values) == 2 and all(0.0 <= v <= 1.0 for v in values)
    assert results["dice_mean"] == pytest.approx(statistics.fmean(values))
    assert results["dice_std"] == pytest.approx(statistics.stdev(values))
    assert results["tiles"] == ({"train": 12, "validation": 8})
    assert "Dice" in capsys.readouterr().out
    assert main([*argv[:-6], "--steps", "1", "--runs", "1"]) == 0  # reads the cached patch tokens
    cached = list((tmp_path / "emb" / name).rglob("train.safetensors"))
    assert len(cached) == 1
    broken = next(root.rglob("*.mat" if name == "consep" else "*.xml"))
    broken.unlink()
    assert main([*argv, "--overwrite_embeddings"]) == 2
    assert f"annotation file {broken} is missing" in capsys.readouterr().err


def test_monusac_masks_equal_evas(tmp_path: Path) -> None:
    # sha256 (first 16 hex) of the uint8 masks that kaiko-eva 0.4.5's own MoNuSAC dataset
    # (eva/vision/data/datasets/segmentation/monusac.py, github.com/kaiko-ai/eva) builds from this exact
    # generated layout, computed outside the project; every mask was also compared pixel by pixel there.
    expected = {
        ("train", "TCGA-P0-01Z_1.tif"): "4afb2d91083ee995",
        ("train", "TCGA-P0-01Z_3.tif"): "fe6926772438f9d7",
        ("train", "TCGA-P1-01Z_2.tif"): "ed81a9fe929eee35",
        ("validation", "TCGA-P0-01Z_1.tif"): "0f5236bc380fc1bc",
        ("validation", "TCGA-P1-01Z_2.tif"): "6f491e4f5b0b68fd",
    }
    task = MoNuSAC(make_monusac(tmp_path / "m"), check_counts=False)
    got = {
        (split, Path(s.image).name): hashlib.sha256(task.load_mask(s).astype(np.uint8).tobytes()).hexdigest()[
            :16
        ]
        for split in task.SPLIT_NAMES
        for s in task.list_samples(split)
    }
    assert got == expected
