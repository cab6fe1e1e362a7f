"""Command-line arguments of ``evaluation/cohort_probe.py``.

Kept apart from the probe's torch / numpy modules so that ``--help`` builds the parser without them.
"""

from __future__ import annotations

import argparse

from pathfm.evaluation.protocol import POOLINGS, PROTOCOLS


def parse_args(argv: list[str] | None = None, description: str | None = None) -> argparse.Namespace:
    """Command-line arguments of evaluation/cohort_probe.py (``description``: its module docstring)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="class-folder tree, path/label table, or embeddings file")
    p.add_argument("--model", action="append", default=[], help="model folder or Hub id (repeat to compare)")
    p.add_argument("--compare_random_init", action="store_true", help="also each model's random init")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--folds", type=int, default=0, help="grouped K-fold cross-validation (K >= 3)")
    p.add_argument("--split_seeds", default="0", help="comma-separated split seeds")
    p.add_argument("--protocol", choices=sorted(PROTOCOLS), default="pathfm-linear-v1")
    p.add_argument("--n_runs", type=int, default=None, help="head seeds per split (default: the protocol's)")
    p.add_argument("--max_steps", type=int, default=None, help="head steps (default: the protocol's)")
    p.add_argument("--classes", default=None, help="comma-separated class names in label order")
    p.add_argument("--slide_mpp", type=float, default=1.0, help="tile µm/px for a slide manifest")
    p.add_argument("--tiles_per_slide", type=int, default=64, help="tiles mean-pooled per slide (at most)")
    p.add_argument("--pooling", choices=POOLINGS, default="pooler_output")
    p.add_argument("--embeddings_dir", default=None, help="embedding cache (default <output_dir>/embeddings)")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--num_workers", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--n_boot", type=int, default=2000, help="bootstrap replicates")
    p.add_argument("--no_model_card", action="store_true")
    return p.parse_args(argv)
