"""Exchange embeddings with kaiko-ai/eva: ``python -m pathfm.evaluation.embeddings export|import``.

eva's layout (eva 0.4.5 ``eva/core/callbacks/writers/embeddings``, read by
``eva/core/data/datasets/classification/{embeddings,multi_embeddings}.py``): ``<root>/manifest.csv`` with
columns ``origin,embeddings,target,split`` (+ ``wsi_id``, ``coords`` for slides), ``embeddings`` a ``.pt``
path relative to ``<root>``; splits named ``train``, ``val``, ``test``.

Kinds:
- ``patch``: from a pathfm embedding-cache folder (``manifest.json`` + ``<split>.safetensors``); one ``.pt``
  per sample holding a list with one [D] float32 tensor.
- ``slide``: from a slide-embedding folder of ``evaluation/mil`` (``<slide>.safetensors`` + ``slides.csv``);
  one ``.pt`` per slide holding [N, D], its [N, 2] level-0 tile coordinates in ``<slide>-coords.pt``.
- ``segmentation``: from a patch-token cache folder of ``evaluation/segmentation``; per tile ``<i>-0.pt`` =
  list with one [D, h, w] map and ``<i>-0-mask.pt`` = int64 [H, W] mask, whose path is the ``target``.

``import`` reads a ``patch`` folder (eva's or ours) into a pathfm embedding cache, or a ``slide`` folder into
a slide-embedding folder that ``python -m pathfm.evaluation.mil --embeddings_folder`` trains on. ``.pt`` files
are read with ``torch.load(weights_only=True)``: tensors and lists only, never arbitrary pickled objects.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where used, so that --help returns at once
    from torch import Tensor

TO_EVA_SPLIT = {"train": "train", "validation": "val", "test": "test"}
FROM_EVA_SPLIT = {v: k for k, v in TO_EVA_SPLIT.items()}
COLUMNS = ["origin", "embeddings", "target", "split"]


class EmbeddingsFormatError(ValueError):
    """A folder is not in the expected layout (message names the file and the problem)."""


def _write_manifest(out: Path, rows: list[list], extra: tuple[str, ...] = ()) -> Path:
    manifest = out / "manifest.csv"
    if manifest.exists():
        raise EmbeddingsFormatError(f"{manifest} exists; choose an empty --output_dir")
    with manifest.open("w", newline="") as fh:
        csv.writer(fh).writerows([COLUMNS + list(extra), *rows])
    return manifest


def export_patch(source: str | Path, out: str | Path) -> Path:
    """pathfm embedding cache folder -> eva patch layout. Returns the manifest path."""
    import torch
    from safetensors.torch import load_file

    source, out = Path(source), Path(out)
    meta = _json(source / "manifest.json")
    rows = []
    for split, entry in meta.get("splits", {}).items():
        tensors = load_file(source / entry["file"])
        (out / "embeddings" / split).mkdir(parents=True, exist_ok=True)
        for i, (origin, target) in enumerate(zip(entry["sources"], entry["targets"])):
            rel = f"embeddings/{split}/{i}.pt"
            torch.save([tensors["embeddings"][i].clone()], out / rel)
            rows.append([origin, rel, int(target), TO_EVA_SPLIT[split]])
    return _write_manifest(out, rows)


def export_slides(source: str | Path, out: str | Path) -> Path:
    """Slide-embedding folder (with ``slides.csv``) -> eva slide layout (one [N, D] ``.pt`` per slide)."""
    import torch
    from safetensors.torch import load_file

    source, out = Path(source), Path(out)
    labels = source / "slides.csv"
    if not labels.is_file():
        raise EmbeddingsFormatError(f"missing {labels} (written by python -m pathfm.evaluation.mil)")
    (out / "embeddings").mkdir(parents=True, exist_ok=True)
    rows = []
    with labels.open() as fh:
        for row in csv.DictReader(fh):
            file = source / f"{row['slide_id']}.safetensors"
            if not file.is_file():
                continue  # skipped slide (listed in failed.json)
            tensors = load_file(file)
            rel, coords = f"embeddings/{row['slide_id']}.pt", f"embeddings/{row['slide_id']}-coords.pt"
            torch.save(tensors["embeddings"], out / rel)
            torch.save(tensors["coords"], out / coords)
            rows.append(
                [
                    row["slide_id"],
                    rel,
                    int(row["target"]),
                    TO_EVA_SPLIT[row["split"]],
                    row["slide_id"],
                    coords,
                ]
            )
    return _write_manifest(out, rows, ("wsi_id", "coords"))


def export_segmentation(source: str | Path, out: str | Path) -> Path:
    """Patch-token cache folder -> eva segmentation layout ([D, h, w] maps + ``-0-mask.pt`` masks)."""
    import torch
    from safetensors.torch import load_file

    source, out = Path(source), Path(out)
    meta = _json(source / "manifest.json")
    rows = []
    for split, sources in meta.items():
        tensors = load_file(source / f"{split}.safetensors")
        (out / "embeddings" / split).mkdir(parents=True, exist_ok=True)
        for i, origin in enumerate(sources):
            rel, mask = f"embeddings/{split}/{i}-0.pt", f"embeddings/{split}/{i}-0-mask.pt"
            torch.save([tensors["features"][i].clone()], out / rel)
            torch.save(tensors["masks"][i].clone(), out / mask)
            rows.append([origin, rel, mask, TO_EVA_SPLIT[split]])
    return _write_manifest(out, rows)


def _json(path: Path) -> dict:
    if not path.is_file():
        raise EmbeddingsFormatError(f"missing {path}")
    return json.loads(path.read_text())


def load_pt(path: Path) -> Tensor:
    """A ``.pt`` holding a tensor or a list of tensors (stacked), loaded with ``weights_only=True``.

    Raises:
        EmbeddingsFormatError: missing file, or content that is not tensors (names the file).
    """
    import torch

    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise EmbeddingsFormatError(f"missing embeddings file {path}") from err
    except Exception as err:
        raise EmbeddingsFormatError(f"{path} holds something other than tensors: {err}") from err
    if isinstance(value, list) and value and all(isinstance(v, torch.Tensor) for v in value):
        return torch.stack(value) if len(value) > 1 else value[0]
    if isinstance(value, torch.Tensor):
        return value
    raise EmbeddingsFormatError(
        f"{path} holds a {type(value).__name__}, expected a tensor or a list of tensors"
    )


def manifest_rows(root: str | Path, extra: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """Rows of ``<root>/manifest.csv`` with ``split`` mapped to pathfm's names.

    Raises:
        EmbeddingsFormatError: missing manifest, missing columns (``COLUMNS`` + ``extra``), unknown split.
    """
    manifest = Path(root) / "manifest.csv"
    if not manifest.is_file():
        raise EmbeddingsFormatError(f"missing {manifest}")
    with manifest.open() as fh:
        reader = csv.DictReader(fh)
        needed = COLUMNS + list(extra)
        if not set(needed) <= set(reader.fieldnames or []):
            raise EmbeddingsFormatError(f"{manifest}: needs columns {needed}, has {reader.fieldnames}")
        rows = list(reader)
    for row in rows:
        if row["split"] not in FROM_EVA_SPLIT:
            raise EmbeddingsFormatError(
                f"{manifest}: split {row['split']!r} is not one of {list(FROM_EVA_SPLIT)}"
            )
        row["split"] = FROM_EVA_SPLIT[row["split"]]
    return rows


def read_patch(root: str | Path) -> dict[str, tuple[list[str], Tensor, Tensor]]:
    """eva patch folder -> {pathfm split: (origins, embeddings (N, D), targets (N,))}, in manifest order.

    Raises:
        EmbeddingsFormatError: see :func:`manifest_rows`; a [D] tensor of another width in a split.
    """
    import torch

    root = Path(root)
    rows: dict[str, list] = {}
    for row in manifest_rows(root):
        vector = load_pt(root / row["embeddings"]).reshape(-1)
        rows.setdefault(row["split"], []).append((row["origin"], vector, int(row["target"])))
    out = {}
    for split, items in rows.items():
        widths = {len(v) for _, v, _ in items}
        if len(widths) != 1:
            raise EmbeddingsFormatError(f"{root}/manifest.csv: split {split} mixes widths {sorted(widths)}")
        out[split] = (
            [o for o, _, _ in items],
            torch.stack([v.float() for _, v, _ in items]),
            torch.tensor([t for _, _, t in items], dtype=torch.int64),
        )
    return out


def import_slides(root: str | Path, out: str | Path) -> Path:
    """eva slide folder (rows grouped by ``wsi_id``) -> a slide-embedding folder for ``evaluation/mil``.

    Writes ``<out>/<wsi_id>.safetensors`` (``embeddings`` (N, D), ``coords`` (N, 2), -1 where eva has none)
    and ``<out>/slides.csv``. Raises EmbeddingsFormatError for a slide with several targets or splits.
    """
    import torch
    from safetensors.torch import save_file

    root, out = Path(root), Path(out)
    groups: dict[str, list[dict[str, str]]] = {}
    for row in manifest_rows(root, ("wsi_id",)):
        groups.setdefault(row["wsi_id"], []).append(row)
    out.mkdir(parents=True, exist_ok=True)
    labels = [("slide_id", "target", "split")]
    for wsi, rows in groups.items():
        if len({(r["target"], r["split"]) for r in rows}) != 1:
            raise EmbeddingsFormatError(f"{root}/manifest.csv: slide {wsi} has several targets or splits")
        bags = [load_pt(root / r["embeddings"]) for r in rows]
        bag = torch.cat([b.reshape(-1, b.shape[-1]) for b in bags]).float()
        coords = [load_pt(root / r["coords"]) if r.get("coords") else None for r in rows]
        xy = (
            torch.cat(coords).reshape(-1, 2).to(torch.int64)
            if all(c is not None for c in coords)
            else torch.full((len(bag), 2), -1, dtype=torch.int64)
        )
        save_file({"embeddings": bag.contiguous(), "coords": xy.contiguous()}, out / f"{wsi}.safetensors")
        labels.append((wsi, rows[0]["target"], rows[0]["split"]))
    with (out / "slides.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(labels)
    return out


def import_patch(root: str | Path, embeddings_dir: str | Path, task: str, model_id: str) -> Path:
    """eva patch folder -> pathfm embedding cache ``<embeddings_dir>/<task>/<model_id>/eva-import/...``."""
    from pathfm.evaluation.embedding_cache import CacheKey, EmbeddingCache
    from pathfm.evaluation.tasks.base import Sample

    key = CacheKey(
        model_id=model_id, revision="eva-import", task=task, pooling="eva", processor_hash="eva-import"
    )
    cache = EmbeddingCache(embeddings_dir, key)
    for split, (origins, embeddings, targets) in read_patch(root).items():
        cache.save(split, [Sample(o, int(t)) for o, t in zip(origins, targets.tolist())], embeddings)
    return cache.folder


EXPORTERS = {"patch": export_patch, "slide": export_slides, "segmentation": export_segmentation}


def main(argv: list[str] | None = None) -> int:
    """CLI; bad input -> one line on stderr naming the file, exit 2."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("export", help="pathfm embeddings -> eva's layout")
    exp.add_argument("--kind", choices=sorted(EXPORTERS), default="patch")
    exp.add_argument("--source", required=True, help="pathfm cache / slide-embedding folder")
    exp.add_argument("--output_dir", required=True)
    imp = sub.add_parser(
        "import", help="eva embeddings -> pathfm (patch: embedding cache; slide: MIL folder)"
    )
    imp.add_argument("--kind", choices=["patch", "slide"], default="patch")
    imp.add_argument("--source", required=True, help="folder holding eva's manifest.csv")
    imp.add_argument("--embeddings_dir", help="patch: pathfm cache root")
    imp.add_argument("--task", help="patch: task name")
    imp.add_argument("--model_id", help="patch: label of the model the embeddings came from")
    imp.add_argument(
        "--output_dir", help="slide: folder to write (then --embeddings_folder of pathfm.evaluation.mil)"
    )
    args = parser.parse_args(argv)
    from pathfm.evaluation.embedding_cache import CacheConflictError

    try:
        if args.command == "export":
            print(EXPORTERS[args.kind](args.source, args.output_dir))
        else:
            needed = ("output_dir",) if args.kind == "slide" else ("embeddings_dir", "task", "model_id")
            missing = [f"--{n}" for n in needed if not getattr(args, n)]
            if missing:
                raise EmbeddingsFormatError(f"import --kind {args.kind} needs {' '.join(missing)}")
            if args.kind == "slide":
                print(import_slides(args.source, args.output_dir))
            else:
                print(import_patch(args.source, args.embeddings_dir, args.task, args.model_id))
    except (EmbeddingsFormatError, CacheConflictError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.argv[0] = "python -m pathfm.evaluation.embeddings"  # argparse's usage line, not embeddings.py
    sys.exit(main())
