"""``python -m pathfm.evaluation.mil``: slide-level classification with gated ABMIL (Camelyon16/PANDA-small).

Embeds each slide's tissue tiles to
``<embeddings_dir>/<task>/<model>/<revision>/<tiling>/<slide>.safetensors`` (resumable) with ``slides.csv``
(slide_id, target, split) for export, trains ``runs`` heads and writes ``<output_dir>/<task>/results.json``.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pathfm.evaluation.mil.arguments import MilArguments, MilConfig
from pathfm.evaluation.tasks.common import TaskDataError
from pathfm.evaluation.tasks.slide_mil import SLIDE_TASKS, SlideSample
from transformers import HfArgumentParser

if TYPE_CHECKING:  # torch-heavy modules are imported where used, so that --help returns at once
    from torch import Tensor


def embed_task(args: MilArguments, config: MilConfig) -> tuple[dict, dict]:
    """Embed the task's missing slides; ({split: (bags, targets)}, facts for results.json)."""
    from pathfm.evaluation.backbone import load_backbone
    from pathfm.evaluation.mil.embed_slides import embed_slides
    from pathfm.evaluation.mil.train import load_bags
    from pathfm.evaluation.segmentation.features import slug

    if not args.model:
        raise ValueError("--model is needed (or --embeddings_folder with embeddings made elsewhere)")
    task = SLIDE_TASKS[args.task](args.data_dir or None, seed=config.seed)
    tile = args.tile_size or task.TILE_SIZE
    per_slide = args.tiles_per_slide or task.TILES_PER_SLIDE
    for split in task.SPLIT_NAMES:  # layout errors before the (slow) model load
        task.list_samples(split)
    backbone = load_backbone(args.model, device=config.device)
    folder = (
        Path(args.embeddings_dir)
        / task.TASK_NAME
        / slug(backbone.model_id)
        / slug(backbone.revision)
        / f"slides-{task.MPP}mpp-{tile}px-{per_slide}-{backbone.processor_hash[:12]}"
    )
    data, counts, labels = {}, {}, []
    for split in task.SPLIT_NAMES:
        slides = task.list_samples(split)
        counts[split] = embed_slides(
            backbone, slides, folder, task.MPP, tile, per_slide, args.min_tissue,
            batch_size=args.embed_batch_size, seed=config.seed, num_workers=args.embed_num_workers,
        )  # fmt: skip
        bags, targets, _ = load_bags(folder, slides)
        if not bags:
            raise TaskDataError(
                f"{task.TASK_NAME}: no slide of split {split!r} could be embedded (see {folder})"
            )
        data[split] = (bags, targets)
        labels += [(s.slide_id, s.target, split) for s in slides]
    with (folder / "slides.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([("slide_id", "target", "split"), *labels])
    facts = {"model": backbone.model_id, "revision": backbone.revision, "mpp": task.MPP, "tile_size": tile}
    facts |= {"tiles_per_slide": per_slide, "slides": counts, "embeddings": str(folder)}
    return data, facts


def folder_data(folder: str | Path) -> dict[str, tuple[list, Tensor]]:
    """{split: (bags, targets)} from a slide-embedding folder's ``slides.csv`` (e.g. imported from eva).

    Raises:
        TaskDataError: missing ``slides.csv``, or no train/validation/test slide in it.
    """
    from pathfm.evaluation.mil.train import load_bags

    table = Path(folder) / "slides.csv"
    if not table.is_file():
        raise TaskDataError(f"missing {table} (write it with python -m pathfm.evaluation.embeddings import)")
    with table.open() as fh:
        rows = list(csv.DictReader(fh))
    data = {}
    for split in ("train", "validation", "test"):
        slides = [SlideSample("", r["slide_id"], int(r["target"])) for r in rows if r["split"] == split]
        bags, targets, _ = load_bags(folder, slides)
        if not bags:
            raise TaskDataError(f"{table}: no {split} slide with an embedding file")
        data[split] = (bags, targets)
    return data


def evaluate_task(args: MilArguments, config: MilConfig) -> dict:
    """Embed missing slides (or read ``--embeddings_folder``), train the heads, write results.json."""
    from pathfm.evaluation.mil.train import run_protocol

    if args.task not in SLIDE_TASKS:
        raise ValueError(f"unknown slide task {args.task!r}; available: {sorted(SLIDE_TASKS)}")
    task_cls = SLIDE_TASKS[args.task]
    if args.embeddings_folder:
        data, facts = folder_data(args.embeddings_folder), {"embeddings": args.embeddings_folder}
    else:
        data, facts = embed_task(args, config)
    results = run_protocol(
        data, len(task_cls.CLASS_NAMES), config, kappa="quadratic_kappa" in task_cls.METRICS
    )
    results.update(task=task_cls.TASK_NAME, class_names=list(task_cls.CLASS_NAMES), **facts)
    out = Path(args.output_dir) / task_cls.TASK_NAME
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results


def main(argv: list[str] | None = None) -> int:
    """Parse, run, print one summary line; bad input -> one line on stderr, exit 2."""
    args, config = HfArgumentParser((MilArguments, MilConfig)).parse_args_into_dataclasses(args=argv)
    from pathfm.evaluation.backbone import BackboneError

    try:
        results = evaluate_task(args, config)
    except (TaskDataError, BackboneError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    test = results["summary"]["test/balanced_accuracy"]
    print(
        f"{results['task']}: test balanced accuracy {test['mean']:.4f} ± {test['std']:.4f} "
        f"({config.runs} runs)"
    )
    return 0
