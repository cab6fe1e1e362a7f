"""The default job's learning curve and its exported model vs random init on ``embedded_retrieval``.

    python benchmarks/default_job.py                         # runs `accelerate launch training/dino.py` first
    python benchmarks/default_job.py --seeds 0,1,2           # ... once per training seed
    python benchmarks/default_job.py --run outputs/dino      # reads a finished run instead
    python benchmarks/default_job.py --train_args "--random_rot90 false"   # the job with other flags

Prints, side by side in one run: the run's loss / teacher entropy (fraction of log K) / RankMe per logged
step from ``metrics.jsonl``, the number of collapse warnings in the log, and top-1 of the
``embedded_retrieval`` proxy task (``evaluation/tasks/retrieval.py``: a perturbed tile among its
slide-mates, chance ~0.017; here with ``--queries_per_tile`` perturbed queries per gallery tile, 176 tiles)
for the exported teacher and for ``--random_seeds`` random initialisations of the same architecture. The
gap (trained minus the mean of the random inits, per query) gets a 95 % paired cluster-bootstrap interval
(whole gallery tiles resampled with all their queries, ``evaluation/bootstrap.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse
import json
import math
import shlex
import subprocess
import tempfile
import time

import yaml


def run_default_job(
    output_dir: Path, seed: int | None = None, extra: list[str] | tuple[str, ...] = ()
) -> tuple[str, float]:
    """``accelerate launch training/dino.py`` (preset cpu_tiny, then the flags ``extra``) into ``output_dir``.

    Returns:
        (the job's log, wall seconds from launch to export).
    """
    repo = Path(__file__).resolve().parents[1]
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--num_processes", "1", str(repo / "training" / "dino.py")]
    cmd += ["--output_dir", str(output_dir), "--report_to", "none", "--overwrite_output_dir", "true"]
    cmd += ([] if seed is None else ["--seed", str(seed)]) + list(extra)
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=repo)
    if done.returncode != 0:
        raise SystemExit(f"default job failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return done.stderr + done.stdout, time.perf_counter() - start


def print_curve(run: Path, log: str | None) -> None:
    """One row per logged step of ``<run>/metrics.jsonl``."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    config = yaml.safe_load((run / "config.yaml").read_text())
    log_k = math.log(config["model"]["out_dim"])
    print(f"run {run}: {config['model']['backbone_preset']}, K={config['model']['out_dim']}, "
          f"centering={config['training'].get('centering', 'centering')}")
    print("| step | loss | teacher entropy / log K | RankMe |\n|---|---|---|---|")
    for r in rows:
        rankme = r.get("rankme", float("nan"))
        print(f"| {r['step']} | {r['loss']:.3f} | {r['teacher_entropy'] / log_k:.3f} | {rankme:.2f} |")
    if log is not None:
        print(f"collapse warnings in the log: {log.count('collapse')}")


_RANDOM_INIT_SCORES: dict[tuple[str, int, int], dict] = {}  # (config.json, seed, queries/tile) -> score


def compare_to_random_init(model: Path, options, random_seeds: list[int], queries_per_tile: int) -> dict:
    """Retrieval of ``model`` and of ``random_seeds`` random inits of its architecture, with the paired
    bootstrap interval of (trained - mean random init) top-1. Returns the bootstrap dict plus the scores.
    A random init is scored once per architecture (``config.json``) and seed, then reused for later runs."""
    import torch
    from pathfm.evaluation.backbone import load_backbone
    from pathfm.evaluation.bootstrap import paired_mean_bootstrap
    from pathfm.evaluation.tasks.retrieval import evaluate_retrieval

    def score(**kw) -> dict:
        return evaluate_retrieval(load_backbone(str(model), **kw), options=options,
                                  queries_per_tile=queries_per_tile)

    trained = score()
    arch = (model / "config.json").read_text()
    for s in random_seeds:
        if (arch, s, queries_per_tile) not in _RANDOM_INIT_SCORES:
            _RANDOM_INIT_SCORES[arch, s, queries_per_tile] = score(random_init=True, seed=s)
    randoms = [_RANDOM_INIT_SCORES[arch, s, queries_per_tile] for s in random_seeds]
    random_hits = torch.stack([r["hits"] for r in randoms]).mean(dim=0)
    tiles = [i % (trained["n"] // queries_per_tile) for i in range(trained["n"])]
    gap = paired_mean_bootstrap(trained["hits"].numpy(), random_hits.numpy(), groups=tiles)
    return {**gap, "trained": trained, "randoms": randoms}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default=None, help="a finished run folder (default: run the default job now)")
    p.add_argument("--seeds", default="0", help="training seeds of the default job (ignored with --run)")
    p.add_argument("--random_seeds", default="0,1,2,3,4", help="random-init seeds of the same architecture")
    p.add_argument("--queries_per_tile", type=int, default=4)
    p.add_argument("--train_args", default="", help="extra training flags, one string (ignored with --run)")
    args = p.parse_args()
    from pathfm.evaluation.probe_runner import RunOptions

    random_seeds = [int(s) for s in args.random_seeds.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        options = RunOptions(Path(tmp) / "embeddings", batch_size=32, num_workers=1)
        for seed in [None] if args.run else [int(s) for s in args.seeds.split(",")]:
            run = Path(args.run) if args.run else Path(tmp) / f"run-seed{seed}"
            log, seconds = (None, float("nan")) if args.run else run_default_job(
                run, seed, shlex.split(args.train_args)
            )
            if log is not None:
                print(f"\ntraining seed {seed}: {seconds:.0f} s (launch to export)")
            print_curve(run, log)
            gap = compare_to_random_init(run / "model", options, random_seeds, args.queries_per_tile)
            rows.append((seed, gap))
    first = rows[0][1]["trained"]
    print(f"\nembedded_retrieval top-1, {first['n']} queries ({args.queries_per_tile} per gallery tile), "
          f"chance {first['chance']:.3f}; random init seeds {random_seeds}: "
          + ", ".join(f"{r['top1']:.3f}" for r in rows[0][1]["randoms"]))
    print("| training seed | trained top-1 | trained MRR | random init top-1 (mean) | gap | 95 % CI of gap |")
    print("|---|---|---|---|---|---|")
    for seed, g in rows:
        print(f"| {seed if seed is not None else args.run} | {g['a']:.3f} | {g['trained']['mrr']:.3f} | "
              f"{g['b']:.3f} | {g['difference']:+.3f} | [{g['ci_low']:+.3f}, {g['ci_high']:+.3f}] |")


if __name__ == "__main__":
    main()
