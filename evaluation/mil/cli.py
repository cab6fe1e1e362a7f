"""``python -m pathfm.evaluation.mil``: slide-level classification with gated ABMIL (Camelyon16/PANDA-small).

Embeds each slide's tissue tiles to
``<embeddings_dir>/<task>/<model>/<revision>/<tiling>/<slide>.safetensors`` (resumable) with ``slides.csv``
(slide_id, target, split) for export, trains ``runs`` heads and writes ``<output_dir>/<task>/results.json``.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pathfm.evaluation.backbone import BackboneError, load_backbone
from pathfm.evaluation.mil.embed_slides import embed_slides
from pathfm.evaluation.mil.train import MilConfig, load_bags, run_protocol
from pathfm.evaluation.segmentation.features import slug
from pathfm.evaluation.tasks.base import TaskDataError
from pathfm.evaluation.tasks.slide_mil import SLIDE_TASKS
from transformers import HfArgumentParser


@dataclass
class MilArguments:
    """Command-line arguments; tiling defaults come from the task (0 / None = task default)."""

    model: str = field(metadata={"help": "model folder or Hub id"})
    task: str = field(metadata={"help": f"one of {sorted(SLIDE_TASKS)}"})
    data_dir: str = field(metadata={"help": "the task's folder in its official layout"})
    output_dir: str = "eval_results"
    embeddings_dir: str = "embeddings"
    tile_size: int = field(default=0, metadata={"help": "tile side in px (0: the task's, 224)"})
    tiles_per_slide: int = field(default=0, metadata={"help": "max tiles per slide (0: the task's)"})
    min_tissue: float = 0.35
    embed_batch_size: int = 64
    embed_num_workers: int = field(default=0, metadata={"help": "DataLoader workers reading tiles"})
    device: str = "cpu"


def evaluate_task(args: MilArguments, config: MilConfig) -> dict:
    """Embed missing slides, train the heads, write and return results.json's dict."""
    if args.task not in SLIDE_TASKS:
        raise ValueError(f"unknown slide task {args.task!r}; available: {sorted(SLIDE_TASKS)}")
    task = SLIDE_TASKS[args.task](args.data_dir, seed=config.seed)
    tile = args.tile_size or task.TILE_SIZE
    per_slide = args.tiles_per_slide or task.TILES_PER_SLIDE
    backbone = load_backbone(args.model, device=args.device)
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
            backbone,
            slides,
            folder,
            task.MPP,
            tile,
            per_slide,
            args.min_tissue,
            args.embed_batch_size,
            config.seed,
            args.embed_num_workers,
        )
        bags, targets, _ = load_bags(folder, slides)
        if not bags:
            raise TaskDataError(
                f"{task.TASK_NAME}: no slide of split {split!r} could be embedded (see {folder})"
            )
        data[split] = (bags, targets)
        labels += [(s.slide_id, s.target, split) for s in slides]
    with (folder / "slides.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([("slide_id", "target", "split"), *labels])
    results = run_protocol(data, task.num_classes, config, kappa="quadratic_kappa" in task.METRICS)
    results.update(
        task=task.TASK_NAME,
        model=backbone.model_id,
        revision=backbone.revision,
        mpp=task.MPP,
        tile_size=tile,
        tiles_per_slide=per_slide,
        class_names=list(task.CLASS_NAMES),
        slides=counts,
        embeddings=str(folder),
    )
    out = Path(args.output_dir) / task.TASK_NAME
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results


def main(argv: list[str] | None = None) -> int:
    """Parse, run, print one summary line; bad input -> one line on stderr, exit 2."""
    args, config = HfArgumentParser((MilArguments, MilConfig)).parse_args_into_dataclasses(args=argv)
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
