"""``python -m pathfm.evaluation.segmentation``: frozen-backbone segmentation on CoNSeP / MoNuSAC.

Writes ``<output_dir>/<task>/results.json`` (protocol, metric variant, per-run values, mean ± std).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pathfm.evaluation.segmentation.arguments import (
    SEGMENTATION_TASKS,
    SegmentationArguments,
    SegmentationConfig,
)
from pathfm.evaluation.tasks.common import TaskDataError
from transformers import HfArgumentParser


def evaluate_task(args: SegmentationArguments, config: SegmentationConfig) -> dict:
    """Embed (or load cached) tiles, train ``config.runs`` decoders, write and return results.json's dict."""
    from pathfm.evaluation.backbone import load_backbone
    from pathfm.evaluation.segmentation.features import normalise, split_features
    from pathfm.evaluation.segmentation.train import run_protocol

    if args.task not in SEGMENTATION_TASKS:
        raise ValueError(f"unknown segmentation task {args.task!r}; available: {sorted(SEGMENTATION_TASKS)}")
    task = SEGMENTATION_TASKS[args.task](args.data_dir, check_counts=args.check_counts)
    for split in task.SPLIT_NAMES:  # layout errors before the (slow) model load
        task.list_samples(split)
    backbone = load_backbone(args.model, device=config.device)
    splits = {}
    for split in ("train", "validation"):
        data = split_features(
            backbone, task, split, args.embeddings_dir, args.tile_size, overwrite=args.overwrite_embeddings
        )
        splits[split] = {**data, "images": normalise(data["images"], backbone.processor)}
    results = run_protocol(splits["train"], splits["validation"], task.num_classes, task.IGNORE_INDEX, config)
    results.update(
        task=task.TASK_NAME,
        model=backbone.model_id,
        revision=backbone.revision,
        tile_size=args.tile_size,
        class_names=list(task.CLASS_NAMES),
        ignore_index=task.IGNORE_INDEX,
        tiles={split: len(d["masks"]) for split, d in splits.items()},
        split_scored="validation",
    )
    folder = Path(args.output_dir) / task.TASK_NAME
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results, indent=2))
    return results


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print the summary line; bad input -> one line on stderr, exit 2."""
    parser = HfArgumentParser((SegmentationArguments, SegmentationConfig))
    args, config = parser.parse_args_into_dataclasses(args=argv)
    from pathfm.evaluation.backbone import BackboneError
    from pathfm.evaluation.embedding_cache import CacheConflictError

    try:
        results = evaluate_task(args, config)
    except (TaskDataError, BackboneError, CacheConflictError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"{results['task']}: Dice {results['dice_mean']:.4f} ± {results['dice_std']:.4f} "
        f"({config.runs} runs, {results['metric_variant'].split(':')[0]})"
    )
    return 0
