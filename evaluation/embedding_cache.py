"""Embeddings cached on disk: one safetensors file per split plus a JSON manifest; never silently replaced.

Layout: ``<root>/<task>/<model slug>/<revision slug>/<pooling>-<processor hash>/``
    ``manifest.json``          key (model id, revision, task, pooling, processor settings) and, per split,
                               the file name, count, dim, and every sample's source and target, in row order
    ``<split>.safetensors``    ``embeddings`` (N, D) float32 and ``targets`` (N,) int64

A split is reused when its manifest entry matches the samples listed now (same sources and targets, same
order). A mismatch (data changed, different subset) or a file without a manifest entry raises
:class:`CacheConflictError`; ``overwrite=True`` (``--overwrite_embeddings``) recomputes and replaces. Files are written to a temporary name and renamed,
so an interrupted run never leaves a half-written split that looks complete.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from pathfm.evaluation.tasks.base import Sample
from safetensors.torch import load_file, save_file
from torch import Tensor

CACHE_FORMAT = "pathfm-embeddings-v1"


class CacheConflictError(RuntimeError):
    """Cached embeddings exist but do not match the current request; nothing is overwritten silently."""


@dataclass(frozen=True)
class CacheKey:
    """What embeddings depend on.

    Attributes:
        model_id: model folder or Hub id.
        revision: commit hash / folder sha256 / random-init tag.
        task: task name.
        pooling: pooling name.
        processor_hash: hash of the image-processor settings.
    """

    model_id: str
    revision: str
    task: str
    pooling: str
    processor_hash: str


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[-80:] or "_"


class EmbeddingCache:
    """Read/write the cached embeddings of one (model, revision, task, pooling, preprocessing).

    Args:
        root: cache root folder.
        key: the cache key.
        overwrite: ignore what is cached (``load`` returns None) and let ``save`` replace it.
    """

    def __init__(self, root: str | Path, key: CacheKey, overwrite: bool = False) -> None:
        self.key = key
        self.overwrite = overwrite
        self.folder = (
            Path(root)
            / _slug(key.task)
            / _slug(key.model_id)
            / _slug(key.revision)
            / f"{_slug(key.pooling)}-{key.processor_hash[:12]}"
        )
        self.manifest_path = self.folder / "manifest.json"

    def _manifest(self) -> dict:
        if not self.manifest_path.is_file():
            return {"format": CACHE_FORMAT, "key": asdict(self.key), "splits": {}}
        manifest = json.loads(self.manifest_path.read_text())
        if manifest.get("key") != asdict(self.key) and not self.overwrite:
            raise CacheConflictError(
                f"{self.manifest_path} belongs to {manifest.get('key')}, not {asdict(self.key)}; "
                f"pass --overwrite_embeddings or choose another --embeddings_dir"
            )
        return manifest

    def load(self, split: str, samples: list[Sample]) -> Tensor | None:
        """Cached embeddings (N, D) of ``split`` if they match ``samples``; None if there are none.

        Raises:
            CacheConflictError: something is cached for this split but does not match (unless overwrite).
        """
        if self.overwrite:
            return None
        file = self.folder / f"{split}.safetensors"
        entry = self._manifest()["splits"].get(split)
        if entry is None:
            if file.exists():
                raise CacheConflictError(
                    f"{file} exists but {self.manifest_path} has no entry for it (interrupted run?); "
                    f"pass --overwrite_embeddings to recompute it"
                )
            return None
        sources = [s.source for s in samples]
        targets = [s.target for s in samples]
        if entry["sources"] != sources or entry["targets"] != targets:
            first = next(
                (i for i, (a, b) in enumerate(zip(entry["sources"], sources)) if a != b),
                min(len(sources), len(entry["sources"])),
            )
            raise CacheConflictError(
                f"cached {split} embeddings in {self.folder} were computed for {len(entry['sources'])} samples, "
                f"the data now lists {len(sources)} (first difference at row {first}, or in the targets); "
                f"pass --overwrite_embeddings to recompute, or choose another --embeddings_dir"
            )
        if not file.is_file():
            raise CacheConflictError(f"{self.manifest_path} lists {split} but {file} is missing")
        tensors = load_file(str(file))
        if not torch.equal(tensors["targets"], torch.tensor(targets, dtype=torch.int64)):
            raise CacheConflictError(f"{file}: stored targets differ from its manifest")
        return tensors["embeddings"]

    def save(self, split: str, samples: list[Sample], embeddings: Tensor) -> Path:
        """Write ``split``'s embeddings (N, D) and update the manifest (atomic renames).

        Raises:
            CacheConflictError: an entry exists already and ``overwrite`` is False.
            ValueError: row count differs from ``samples``.
        """
        if len(embeddings) != len(samples):
            raise ValueError(f"{len(embeddings)} embeddings for {len(samples)} samples")
        manifest = self._manifest()
        file = self.folder / f"{split}.safetensors"
        if (split in manifest["splits"] or file.exists()) and not self.overwrite:
            raise CacheConflictError(
                f"{file} exists; refusing to overwrite it without --overwrite_embeddings"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        targets = torch.tensor([s.target for s in samples], dtype=torch.int64)
        tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
        save_file(
            {"embeddings": embeddings.float().contiguous(), "targets": targets},
            str(tmp),
            metadata={
                "task": self.key.task,
                "split": split,
                "model_id": self.key.model_id,
                "revision": self.key.revision,
                "pooling": self.key.pooling,
            },
        )
        os.replace(tmp, file)
        manifest["key"] = asdict(self.key)
        manifest["splits"][split] = {
            "file": file.name,
            "count": len(samples),
            "dim": int(embeddings.shape[1]),
            "sources": [s.source for s in samples],
            "targets": targets.tolist(),
        }
        tmp_manifest = self.manifest_path.with_name(f".manifest.{os.getpid()}.tmp")
        tmp_manifest.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp_manifest, self.manifest_path)
        return file
