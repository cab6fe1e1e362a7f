"""Embedding cache: reused when it matches, never silently overwritten, recomputed on request."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from pathfm.evaluation.backbone import BackboneError, load_backbone
from pathfm.evaluation.embedding_cache import CacheConflictError, CacheKey, EmbeddingCache
from pathfm.evaluation.probe_runner import RunOptions, get_embeddings
from pathfm.evaluation.tasks import build_task
from pathfm.evaluation.tasks.base import Sample

from tests.evaluation.conftest import make_crc

KEY = CacheKey("org/model", "abc123", "crc", "pooler_output", "0123456789abcdef")


def _samples(n: int) -> list[Sample]:
    return [Sample(f"img{i}.tif", i % 3) for i in range(n)]


def test_roundtrip_and_manifest(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, KEY)
    emb = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    assert cache.load("train", _samples(4)) is None
    cache.save("train", _samples(4), emb)
    assert torch.equal(EmbeddingCache(tmp_path, KEY).load("train", _samples(4)), emb)
    manifest = (cache.folder / "manifest.json").read_text()
    assert '"img3.tif"' in manifest and '"revision": "abc123"' in manifest


def test_conflicts_raise_unless_overwrite(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, KEY)
    cache.save("train", _samples(4), torch.zeros(4, 3))
    with pytest.raises(CacheConflictError, match="computed for 4 samples, the data now lists 5"):
        cache.load("train", _samples(5))
    with pytest.raises(CacheConflictError, match="refusing to overwrite"):
        cache.save("train", _samples(4), torch.ones(4, 3))
    assert torch.equal(cache.load("train", _samples(4)), torch.zeros(4, 3))  # untouched
    forced = EmbeddingCache(tmp_path, KEY, overwrite=True)
    assert forced.load("train", _samples(5)) is None
    forced.save("train", _samples(5), torch.ones(5, 3))
    assert torch.equal(EmbeddingCache(tmp_path, KEY).load("train", _samples(5)), torch.ones(5, 3))


def test_orphan_file_is_a_conflict(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, KEY)
    cache.save("train", _samples(2), torch.zeros(2, 3))
    shutil.copy(cache.folder / "train.safetensors", cache.folder / "validation.safetensors")
    with pytest.raises(CacheConflictError, match="has no entry for it"):
        cache.load("validation", _samples(2))


def test_cache_is_keyed_by_revision_and_pooling(tmp_path: Path) -> None:
    a = EmbeddingCache(tmp_path, KEY)
    b = EmbeddingCache(tmp_path, CacheKey("org/model", "def456", "crc", "pooler_output", "0123456789abcdef"))
    c = EmbeddingCache(tmp_path, CacheKey("org/model", "abc123", "crc", "cls_mean", "0123456789abcdef"))
    assert len({a.folder, b.folder, c.folder}) == 3


def test_pipeline_reuses_then_detects_changed_data(
    tmp_path: Path, he_tiles: list[np.ndarray], tiny_model_dir: Path
) -> None:
    make_crc(tmp_path / "data", he_tiles, n_train=2, n_val=1)
    backbone = load_backbone(str(tiny_model_dir))
    options = RunOptions(embeddings_dir=tmp_path / "cache", num_workers=0)
    task = build_task("crc", tmp_path / "data", check_counts=False)
    emb1, _targets, info1 = get_embeddings(backbone, task, options)
    assert info1["train"]["cached"] is False and emb1["train"].shape == (18, 64)
    emb2, _, info2 = get_embeddings(
        backbone, build_task("crc", tmp_path / "data", check_counts=False), options
    )
    assert info2["train"]["cached"] is True and torch.equal(emb1["train"], emb2["train"])
    # one more training image: the cached split no longer matches the data
    shutil.copy(
        tmp_path / "data/NCT-CRC-HE-100K/ADI/ADI-0000.tif", tmp_path / "data/NCT-CRC-HE-100K/ADI/ADI-0009.tif"
    )
    with pytest.raises(CacheConflictError, match="computed for 18 samples, the data now lists 19"):
        get_embeddings(backbone, build_task("crc", tmp_path / "data", check_counts=False), options)
    options.overwrite_embeddings = True
    emb3, _, info3 = get_embeddings(
        backbone, build_task("crc", tmp_path / "data", check_counts=False), options
    )
    assert info3["train"]["cached"] is False and emb3["train"].shape == (19, 64)
    # recomputed rows for unchanged images equal the first computation (deterministic embedding)
    torch.testing.assert_close(emb3["train"][:1], emb1["train"][:1])


def test_model_without_processor_is_an_error(tmp_path: Path, tiny_model_dir: Path) -> None:
    folder = tmp_path / "no_processor"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(
        BackboneError, match="preprocessor_config.json is missing: pathfm never falls back to ImageNet"
    ):
        load_backbone(str(folder))
    backbone = load_backbone(str(folder), image_processor=str(tiny_model_dir))
    assert backbone.processor_config["image_mean"] == [0.5, 0.5, 0.5]
