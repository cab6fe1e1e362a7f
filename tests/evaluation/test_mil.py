"""Slide-level MIL tasks end to end on miniature Camelyon16 / PANDA layouts, and their layout checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pathfm.evaluation.embeddings import main as emb_main
from pathfm.evaluation.mil.cli import main
from pathfm.evaluation.tasks.base import TaskDataError
from pathfm.evaluation.tasks.slide_mil import Camelyon16Small, PandaSmall, stratified_split
from safetensors.torch import load_file

from tests.evaluation.slide_layouts import make_camelyon16, make_panda

FAST = ["--tile_size", "32", "--tiles_per_slide", "6", "--epochs", "3", "--patience", "2", "--runs", "2"]


def _argv(model: Path, task: str, root: Path, tmp_path: Path) -> list[str]:
    folders = ["--output_dir", str(tmp_path / "out"), "--embeddings_dir", str(tmp_path / "emb")]
    return ["--model", str(model), "--task", task, "--data_dir", str(root), *folders, *FAST]


def test_stratified_split_keeps_every_class_in_proportion() -> None:
    which = stratified_split([0] * 10 + [1] * 5, (0.8, 0.2), seed=3)
    assert [which[:10].count(1), which[10:].count(1)] == [2, 1]
    assert which == stratified_split([0] * 10 + [1] * 5, (0.8, 0.2), seed=3)


def test_camelyon16_end_to_end_resume_and_corrupt_slide(tmp_path: Path, tiny_model_dir: Path) -> None:
    root = make_camelyon16(tmp_path / "c16")
    task = Camelyon16Small(root)
    assert [len(task.list_samples(s)) for s in task.SPLIT_NAMES] == [4, 2, 2]
    (root / "training" / "tumor" / "tumor_003.tif").write_bytes(b"not a slide")
    argv = _argv(tiny_model_dir, "camelyon16_small", root, tmp_path)
    assert main(argv) == 0
    results = json.loads((tmp_path / "out" / "camelyon16_small" / "results.json").read_text())
    assert results["protocol"] == "eva-mil-v1" and len(results["runs"]) == 2
    assert sum(c["failed"] for c in results["slides"].values()) == 1
    assert set(results["summary"]) >= {"test/balanced_accuracy", "test/auroc", "validation/balanced_accuracy"}
    folder = Path(results["embeddings"])
    saved = load_file(folder / "normal_001.safetensors")
    assert saved["embeddings"].shape == (6, 64) and saved["coords"].shape == (6, 2)
    assert "tumor_003" in json.loads((folder / "failed.json").read_text())
    assert main(argv) == 0  # resumes: every readable slide reused
    again = json.loads((tmp_path / "out" / "camelyon16_small" / "results.json").read_text())
    assert sum(c["embedded"] for c in again["slides"].values()) == 0
    assert sum(c["reused"] for c in again["slides"].values()) == 7
    # to eva's layout and back: the heads train on the imported folder without the model or the slides
    assert (
        emb_main(
            ["export", "--kind", "slide", "--source", str(folder), "--output_dir", str(tmp_path / "eva")]
        )
        == 0
    )
    imported = tmp_path / "imported"
    assert (
        emb_main(
            ["import", "--kind", "slide", "--source", str(tmp_path / "eva"), "--output_dir", str(imported)]
        )
        == 0
    )
    back = load_file(imported / "normal_001.safetensors")
    assert torch.equal(back["embeddings"], saved["embeddings"]) and torch.equal(
        back["coords"], saved["coords"]
    )
    argv = [
        "--task",
        "camelyon16_small",
        "--embeddings_folder",
        str(imported),
        "--output_dir",
        str(tmp_path / "o2"),
    ]
    assert main([*argv, *FAST[4:]]) == 0
    from_eva = json.loads((tmp_path / "o2" / "camelyon16_small" / "results.json").read_text())
    assert from_eva["embeddings"] == str(imported) and len(from_eva["runs"]) == 2


def test_panda_reports_quadratic_kappa(tmp_path: Path, tiny_model_dir: Path) -> None:
    root = make_panda(tmp_path / "panda")
    argv = _argv(tiny_model_dir, "panda_small", root, tmp_path)
    assert main(argv) == 0
    results = json.loads((tmp_path / "out" / "panda_small" / "results.json").read_text())
    assert -1.0 <= results["summary"]["test/quadratic_kappa"]["mean"] <= 1.0
    assert results["mpp"] == 0.5


def test_layout_errors_name_the_file(tmp_path: Path) -> None:
    root = make_panda(tmp_path / "panda", per_grade=1, size=64)
    (root / "train_images" / "000abc.tiff").unlink()
    with pytest.raises(TaskDataError, match="lists 000abc but .*000abc.tiff is missing"):
        PandaSmall(root).list_samples("train")
    c16 = tmp_path / "c16"
    (c16 / "training" / "normal").mkdir(parents=True)
    with pytest.raises(TaskDataError, match=f"missing {c16 / 'training' / 'tumor'}"):
        Camelyon16Small(c16).list_samples("train")


def test_tile_draw_on_a_real_slide_is_seeded_and_row_major(cmu_svs: Path) -> None:
    from pathfm.evaluation.mil.embed_slides import slide_seed, tile_coords

    all_tiles = tile_coords(str(cmu_svs), 0.5, 224, 10_000, 0.35, seed=0)
    drawn = tile_coords(str(cmu_svs), 0.5, 224, 10, 0.35, slide_seed("CMU-1", 0))
    again = tile_coords(str(cmu_svs), 0.5, 224, 10, 0.35, slide_seed("CMU-1", 0))
    other = tile_coords(str(cmu_svs), 0.5, 224, 10, 0.35, slide_seed("CMU-2", 0))
    assert len(all_tiles) > 10 and len(drawn) == 10 and drawn == again and drawn != other
    assert set(drawn) <= set(all_tiles)
    assert [(c.y, c.x) for c in drawn] == sorted((c.y, c.x) for c in drawn)
    assert all(c.tissue_fraction >= 0.35 for c in drawn)


def test_worker_reading_gives_the_main_process_result(
    tmp_path: Path, tiny_model_dir: Path, cmu_svs: Path
) -> None:
    """Slides read whole by 2 DataLoader workers (interleaved batches) give the files a single process writes,
    and an unreadable slide among them is skipped and counted the same way."""
    from pathfm.evaluation.backbone import load_backbone
    from pathfm.evaluation.mil.embed_slides import embed_slides
    from pathfm.evaluation.tasks.slide_mil import SlideSample

    slides = []
    for i in range(3):
        link = tmp_path / f"entry_{i}.svs"
        link.symlink_to(cmu_svs)
        slides.append(SlideSample(str(link), link.stem, 0))
    (tmp_path / "broken.svs").write_bytes(b"not a slide" * 50)
    slides.insert(1, SlideSample(str(tmp_path / "broken.svs"), "broken", 1))
    backbone = load_backbone(str(tiny_model_dir))
    counts = {}
    for workers in (0, 2):
        counts[workers] = embed_slides(
            backbone, slides, tmp_path / f"w{workers}", 0.5, 32, 7, 0.35, batch_size=3, num_workers=workers
        )
    assert counts[0] == counts[2] == {"embedded": 3, "reused": 0, "failed": 1}
    for i in range(3):
        one, two = (load_file(tmp_path / f"w{w}" / f"entry_{i}.safetensors") for w in (0, 2))
        assert one["embeddings"].shape[0] == 7 and torch.equal(one["coords"], two["coords"])
        torch.testing.assert_close(one["embeddings"], two["embeddings"])
    assert json.loads((tmp_path / "w2" / "failed.json").read_text()).keys() == {"broken"}
