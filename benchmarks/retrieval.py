"""``embedded_retrieval`` (perturbed-tile retrieval among slide-mates): a trained model vs random init.

    python benchmarks/retrieval.py [--model outputs/dino/model] [--presets tiny,vits16] [--batch_size 32]

Prints top-1 retrieval (and chance) for ``--model`` (default: the README main job's output), the same
architecture randomly initialised, and each ``--presets`` architecture randomly initialised, side by side in
one run, with the trained / random-init ratio. Embeddings go to a temporary folder (never reused).
"""

from __future__ import annotations

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse
import tempfile

from pathfm.evaluation.backbone import load_backbone, preset_backbone
from pathfm.evaluation.probe_runner import RunOptions
from pathfm.evaluation.tasks.retrieval import evaluate_retrieval


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="outputs/dino/model")
    p.add_argument("--presets", default="vits16", help="comma-separated presets to score at random init")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--num_workers", type=int, default=1)
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        options = RunOptions(Path(tmp), batch_size=args.batch_size, num_workers=args.num_workers)
        backbones = []
        if Path(args.model).is_dir():
            backbones += [load_backbone(args.model), load_backbone(args.model, random_init=True)]
        else:
            print(f"{args.model}: not found, run `accelerate launch training/dino.py` first; skipping it")
        backbones += [preset_backbone(p) for p in args.presets.split(",") if p]
        for backbone in backbones:
            r = evaluate_retrieval(backbone, options=options)
            rows.append((backbone, r))
            tag = " (random init)" if backbone.random_init else ""
            print(
                f"  {backbone.model_id}{tag}: top-1 {r['top1']:.3f}  per slide {r['per_group']}", flush=True
            )
    print(f"\nembedded_retrieval, {rows[0][1]['n']} queries, chance {rows[0][1]['chance']:.3f}:")
    print("| backbone | top-1 |\n|---|---|")
    for backbone, r in rows:
        tag = " (random init)" if backbone.random_init else ""
        print(f"| {backbone.model_id}{tag} | {r['top1']:.3f} |")
    if Path(args.model).is_dir():
        trained, random = rows[0][1]["top1"], rows[1][1]["top1"]
        print(f"trained / random init (same architecture): {trained / max(random, 1e-9):.2f}")


if __name__ == "__main__":
    main()
