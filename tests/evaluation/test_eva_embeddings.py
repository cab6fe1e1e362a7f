"""Export to / import from eva's embeddings layout: lossless round trip; eva's datasets read our export."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from pathfm.evaluation.embedding_cache import CacheKey, EmbeddingCache
from pathfm.evaluation.embeddings import export_patch, export_slides, load_pt, main, read_patch
from pathfm.evaluation.tasks.base import Sample
from safetensors.torch import load_file, save_file


def _cache(root: Path) -> tuple[EmbeddingCache, dict]:
    cache = EmbeddingCache(root, CacheKey("tiny", "sha256:abc", "crc", "pooler_output", "f" * 16))
    data = {}
    for split, n in (("train", 5), ("validation", 3)):
        samples = [Sample(f"/data/{split}/{i}.tif", i % 3) for i in range(n)]
        emb = torch.randn(n, 7, generator=torch.Generator().manual_seed(n))
        cache.save(split, samples, emb)
        data[split] = (samples, emb)
    return cache, data


def test_patch_round_trip_is_lossless(tmp_path: Path) -> None:
    cache, data = _cache(tmp_path / "cache")
    assert main(["export", "--source", str(cache.folder), "--output_dir", str(tmp_path / "eva")]) == 0
    with (tmp_path / "eva" / "manifest.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["origin", "embeddings", "target", "split"]
    assert {r["split"] for r in rows} == {"train", "val"}
    back = read_patch(tmp_path / "eva")
    for split, (samples, emb) in data.items():
        origins, got, targets = back[split]
        assert origins == [s.source for s in samples] and targets.tolist() == [s.target for s in samples]
        assert torch.equal(got, emb)
    argv = [
        "import",
        "--source",
        str(tmp_path / "eva"),
        "--embeddings_dir",
        str(tmp_path / "imp"),
        "--task",
        "crc",
        "--model_id",
        "eva-model",
    ]
    assert main(argv) == 0
    imported = next((tmp_path / "imp").rglob("train.safetensors"))
    assert torch.equal(load_file(imported)["embeddings"], data["train"][1])
    assert main(argv) == 2  # refuses to overwrite


def test_pickled_objects_are_refused(tmp_path: Path, capsys) -> None:
    evil = tmp_path / "eva"
    (evil / "e").mkdir(parents=True)
    torch.save({"not": object()}, evil / "e" / "0.pt")
    (evil / "manifest.csv").write_text("origin,embeddings,target,split\na.png,e/0.pt,1,train\n")
    argv = [
        "import",
        "--source",
        str(evil),
        "--embeddings_dir",
        str(tmp_path / "imp"),
        "--task",
        "crc",
        "--model_id",
        "m",
    ]
    assert main(argv) == 2
    assert f"{evil / 'e' / '0.pt'} holds something other than tensors" in capsys.readouterr().err
    with pytest.raises(ValueError, match="missing embeddings file"):
        load_pt(evil / "e" / "1.pt")


def _slide_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    rows = [("slide_id", "target", "split")]
    for i, split in enumerate(("train", "train", "validation")):
        n = 4 + i
        save_file(
            {"embeddings": torch.randn(n, 6), "coords": torch.arange(2 * n).reshape(n, 2)},
            root / f"s{i}.safetensors",
        )
        rows.append((f"s{i}", str(i % 2), split))
    with (root / "slides.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return root


def test_eva_datasets_load_the_export(tmp_path: Path) -> None:
    pytest.importorskip("eva", reason="kaiko-eva is not installed (it is not a pathfm dependency)")
    from eva.core.data.datasets.classification import (
        EmbeddingsClassificationDataset,
        MultiEmbeddingsClassificationDataset,
    )

    cache, data = _cache(tmp_path / "cache")
    export_patch(cache.folder, tmp_path / "eva")
    patch = EmbeddingsClassificationDataset(str(tmp_path / "eva"), "manifest.csv", split="val")
    patch.setup()
    assert len(patch) == 3
    emb, target = patch[1]
    assert torch.equal(emb, data["validation"][1][1]) and int(target) == data["validation"][0][1].target
    slides = _slide_folder(tmp_path / "slides")
    export_slides(slides, tmp_path / "eva_slides")
    bags = MultiEmbeddingsClassificationDataset(
        str(tmp_path / "eva_slides"), "manifest.csv", split="train", column_mapping={"multi_id": "wsi_id"}
    )
    bags.setup()
    assert len(bags) == 2
    bag, target = bags[1]
    assert torch.equal(bag, load_file(slides / "s1.safetensors")["embeddings"]) and int(target) == 1


def test_eva_segmentation_dataset_loads_the_export(tmp_path: Path) -> None:
    pytest.importorskip("eva", reason="kaiko-eva is not installed (it is not a pathfm dependency)")
    from eva.vision.data.datasets.segmentation.embeddings import EmbeddingsSegmentationDataset
    from pathfm.evaluation.embeddings import export_segmentation

    source = tmp_path / "tokens"
    source.mkdir()
    features, masks = torch.randn(3, 8, 2, 2), torch.randint(0, 5, (3, 32, 32))
    images = torch.zeros(3, 32, 32, 3, dtype=torch.uint8)
    save_file({"features": features, "images": images, "masks": masks}, source / "train.safetensors")
    (source / "manifest.json").write_text('{"train": ["a.png@0,0", "a.png@32,0", "b.png@0,0"]}')
    export_segmentation(source, tmp_path / "eva")
    data = EmbeddingsSegmentationDataset(str(tmp_path / "eva"), "manifest.csv", split="train")
    data.setup()
    grids, mask = data[2]
    assert len(data) == 3 and torch.equal(grids[0], features[2]) and torch.equal(mask, masks[2])
