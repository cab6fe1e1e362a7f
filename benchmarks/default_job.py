"""The default job's learning curve and its exported model vs random init on ``embedded_retrieval``.

    python benchmarks/default_job.py                         # runs `accelerate launch training/dino.py` first
    python benchmarks/default_job.py --run outputs/dino      # reads a finished run instead

Prints, side by side in one run: the run's loss / teacher entropy (fraction of log K) / RankMe per logged
step from ``metrics.jsonl``, the number of collapse warnings in the log, and top-1 of the
``embedded_retrieval`` proxy task (``evaluation/tasks/retrieval.py``: a perturbed tile among its
slide-mates, chance ~0.017) for the exported teacher and for the same architecture randomly initialised,
with their ratio.
"""

from __future__ import annotations

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse
import json
import math
import subprocess
import tempfile

import yaml


def run_default_job(output_dir: Path) -> str:
    """``accelerate launch training/dino.py`` (preset cpu_tiny) into ``output_dir``; returns its log."""
    repo = Path(__file__).resolve().parents[1]
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--num_processes", "1", str(repo / "training" / "dino.py")]
    cmd += ["--output_dir", str(output_dir), "--report_to", "none", "--overwrite_output_dir", "true"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=repo)
    if done.returncode != 0:
        raise SystemExit(f"default job failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return done.stderr + done.stdout


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default=None, help="a finished run folder (default: run the default job now)")
    args = p.parse_args()
    from pathfm.evaluation.backbone import load_backbone
    from pathfm.evaluation.probe_runner import RunOptions
    from pathfm.evaluation.tasks.retrieval import evaluate_retrieval

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.run) if args.run else Path(tmp) / "run"
        log = None if args.run else run_default_job(run)
        print_curve(run, log)
        options = RunOptions(Path(tmp) / "embeddings", batch_size=32, num_workers=1)
        trained = evaluate_retrieval(load_backbone(str(run / "model")), options=options)
        random = evaluate_retrieval(load_backbone(str(run / "model"), random_init=True), options=options)
    print(f"\nembedded_retrieval top-1 ({trained['n']} queries, chance {trained['chance']:.3f}): "
          f"trained {trained['top1']:.3f}, random init {random['top1']:.3f}, "
          f"ratio {trained['top1'] / max(random['top1'], 1e-9):.2f}")


if __name__ == "__main__":
    main()
