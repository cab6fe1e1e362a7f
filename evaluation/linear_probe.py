"""Frozen-backbone probing under a named, versioned protocol (``pathfm-linear-v1``).

    python evaluation/linear_probe.py --model DIR_OR_HUB_ID --task NAME [--data_dir DIR] --output_dir DIR
        [--n_runs 5] [--pooling pooler_output|cls_mean] [--save_head [DIR]] [--random_init]
        [--compare_random_init] ...

``--task all`` runs every task whose data is found (the embedded tasks always; BACH, CRC, MHIST and PCam when
their official layout is under ``--data_dir`` or ``--data_dir/<task>``). One folder per task under
``--output_dir``: ``results.json``, ``report.md``, ``runs.png``, ``confusion_<split>.png``. Embeddings are
cached under ``--embeddings_dir`` (default ``<output_dir>/embeddings``) and reused. For a local model folder
the results are also added to its model card (``README.md`` model-index), unless ``--no_model_card``.

With ``--dataset`` (a user's folder, tile table or embeddings file) the arguments go to
``evaluation/cohort_probe.py`` instead: grouped splits / ``--folds K``, several ``--model``, bootstrap CIs.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder is sys.path[0]; drop it so our module names never shadow a library's.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse
import dataclasses
import difflib
import json
import re
import time
from typing import TYPE_CHECKING

from pathfm.evaluation.protocol import POOLINGS, PROTOCOL_NAME, KnnConfig, LinearProbeConfig
from pathfm.evaluation.tasks import TASK_NAMES  # names only: the task registry imports datasets

if TYPE_CHECKING:  # torch-heavy modules are imported where used, so that --help returns at once
    from pathfm.evaluation.backbone import Backbone


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (see module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model",
        required=True,
        action="append",
        help="model folder (save_pretrained output) or Hub id; repeat to compare models on the same splits",
    )
    p.add_argument("--revision", default=None, help="Hub revision (branch, tag, commit)")
    p.add_argument(
        "--image_processor",
        default=None,
        help="processor folder/Hub id when the model has no preprocessor_config.json (never implied)",
    )
    p.add_argument("--task", required=True, help=f"one of {sorted(TASK_NAMES)}, a comma-separated list, or 'all'")
    p.add_argument("--data_dir", default=None, help="folder holding the benchmarks' official layouts")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--n_runs", type=int, default=LinearProbeConfig.n_runs, help="runs with seeds 0..N-1")
    p.add_argument("--pooling", choices=POOLINGS, default="pooler_output")
    p.add_argument("--embeddings_dir", default=None, help="embedding cache (default <output_dir>/embeddings)")
    p.add_argument(
        "--overwrite_embeddings", action="store_true", help="recompute embeddings and replace cached ones"
    )
    p.add_argument("--batch_size", type=int, default=64, help="images per forward pass when embedding")
    p.add_argument(
        "--num_workers", type=int, default=None, help="image-loading workers (default min(4, CPUs))"
    )
    p.add_argument("--device", default=None, help="torch device (default cuda if available, else cpu)")
    p.add_argument(
        "--max_steps",
        type=int,
        default=LinearProbeConfig.max_steps,
        help="protocol deviation if changed: results are then marked '+custom'",
    )
    p.add_argument(
        "--no_check_counts",
        action="store_true",
        help="do not enforce the official sample counts (miniature layouts); class names still checked",
    )
    p.add_argument(
        "--save_head",
        nargs="?",
        const="",
        default=None,
        metavar="DIR",
        help="write probe_head.safetensors/.json (best run) into DIR, default the model folder "
        "(or <output_dir>/<task> for Hub models); needs a single task",
    )
    p.add_argument(
        "--no_model_card", action="store_true", help="do not add EvalResult entries to the model card"
    )
    p.add_argument(
        "--random_init", action="store_true", help="evaluate the same architecture, randomly initialised"
    )
    p.add_argument(
        "--compare_random_init",
        action="store_true",
        help="also evaluate the randomly initialised architecture and write comparison.md",
    )
    return p.parse_args(argv)


def resolve_tasks(spec: str, data_dir: str | None) -> list[str]:
    """Task names from ``--task`` (``all`` = every task whose data is present)."""
    from pathfm.evaluation.tasks import TASKS, absent_tasks, present_tasks

    if spec == "all":
        for name, reason in absent_tasks(data_dir).items():
            print(f"skipped {name}: {reason}", flush=True)
        return present_tasks(data_dir)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    for name in names:
        if name in TASKS:
            continue
        elsewhere = other_commands()
        if name in elsewhere:
            raise ValueError(f"--task {name} is not a probe task: {elsewhere[name]}")
        close = difflib.get_close_matches(name, [*TASKS, *elsewhere], n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"unknown --task {name!r}; {hint}probe tasks: {', '.join(sorted(TASKS))} or 'all'")
    return names


def other_commands() -> dict[str, str]:
    """Task names that other pathfm commands evaluate -> why not here and the command that runs them."""
    from pathfm.evaluation.segmentation.arguments import SEGMENTATION_TASKS
    from pathfm.evaluation.tasks.slide_mil import SLIDE_TASKS

    why = {
        "embedded_retrieval": "it scores top-1 retrieval of perturbed tiles (no class labels to train a head "
        "on); run python benchmarks/retrieval.py --model DIR"
    }
    for name in SEGMENTATION_TASKS:
        why[name] = f"it is segmentation; run python -m pathfm.evaluation.segmentation --task {name} ..."
    for name in SLIDE_TASKS:
        why[name] = f"it is slide-level MIL; run python -m pathfm.evaluation.mil --task {name} ..."
    return why


def _probe_config(args: argparse.Namespace) -> LinearProbeConfig:
    return LinearProbeConfig(n_runs=args.n_runs, max_steps=args.max_steps)


def _evaluate(
    backbone: Backbone,
    names: list[str],
    args: argparse.Namespace,
    out_root: Path,
    outcomes: dict | None = None,
) -> dict[str, dict]:
    from pathfm.evaluation.card_results import update_model_card
    from pathfm.evaluation.head_export import save_probe_head
    from pathfm.evaluation.probe_runner import RunOptions, run_task
    from pathfm.evaluation.report import write_task_outputs
    from pathfm.evaluation.tasks import build_task

    options = RunOptions(
        embeddings_dir=Path(args.embeddings_dir or Path(args.output_dir) / "embeddings"),
        pooling=args.pooling,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        overwrite_embeddings=args.overwrite_embeddings,
        probe=_probe_config(args),
        knn=KnnConfig(),
        progress=True,
    )
    deviations = {
        f.name: getattr(options.probe, f.name)
        for f in dataclasses.fields(LinearProbeConfig)
        if f.name != "n_runs" and getattr(options.probe, f.name) != f.default
    }
    all_results = {}
    for name in names:
        task = build_task(name, args.data_dir, check_counts=not args.no_check_counts)
        tag = " (random init)" if backbone.random_init else ""
        print(f"[{name}]{tag} splits {task.split_sizes()}", flush=True)
        outcome = run_task(backbone, task, options)
        results = outcome.results
        if deviations:
            results["protocol"]["name"] = f"{PROTOCOL_NAME}+custom"
            results["protocol"]["deviations"] = deviations
        folder = out_root / name
        paths = write_task_outputs(results, folder)
        lp = results["linear_probe"]
        for split, metrics in lp.items():
            m = metrics["balanced_accuracy"]
            std = f" ± {m['std']:.3f}" if m["std"] is not None else ""
            print(
                f"  linear {split}: balanced accuracy {m['mean']:.3f}{std} "
                f"(k-NN {results['knn_probe'][split]['balanced_accuracy']:.3f})",
                flush=True,
            )
        print(f"  wrote {paths['results']} and {paths['report']}", flush=True)
        if not backbone.random_init:
            if backbone.local_dir is not None and not args.no_model_card:
                print(f"  model card: {update_model_card(backbone.local_dir, results)}", flush=True)
            if args.save_head is not None:
                target = Path(args.save_head) if args.save_head else (backbone.local_dir or folder)
                head_paths = save_probe_head(target, outcome.best_fit.head, results)
                print(f"  probe head: {head_paths[0]} + {head_paths[1].name}", flush=True)
        all_results[name] = results
        if outcomes is not None:
            outcomes[name] = outcome
    return all_results


def comparison_markdown(trained: dict[str, dict], random: dict[str, dict]) -> str:
    """Trained vs randomly initialised backbone, balanced accuracy (mean ± sd over seeds), per task/split."""
    lines = [
        f"# Trained vs random initialisation ({PROTOCOL_NAME}, linear probe balanced accuracy)",
        "",
        "| task | split | trained | random init | k-NN trained | k-NN random |",
        "|---|---|---|---|---|---|",
    ]
    for name, res in trained.items():
        for split, metrics in res["linear_probe"].items():
            a, b = metrics["balanced_accuracy"], random[name]["linear_probe"][split]["balanced_accuracy"]
            sa = f" ± {a['std']:.3f}" if a["std"] is not None else ""
            sb = f" ± {b['std']:.3f}" if b["std"] is not None else ""
            proxy = " (proxy labels)" if res["task"]["proxy_labels"] else ""
            lines.append(
                f"| {name}{proxy} | {split} | {a['mean']:.3f}{sa} | {b['mean']:.3f}{sb} | "
                f"{res['knn_probe'][split]['balanced_accuracy']:.3f} | "
                f"{random[name]['knn_probe'][split]['balanced_accuracy']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    cohort_argv = sys.argv[1:] if argv is None else argv
    if any(a == "--dataset" or a.startswith("--dataset=") for a in cohort_argv):
        # a user's own data: see cohort_probe.py
        from pathfm.evaluation.cohort_probe import main as cohort_main

        return cohort_main(cohort_argv)
    args = parse_args(argv)
    names = resolve_tasks(args.task, args.data_dir)
    if not names:
        raise ValueError(f"no task data found under --data_dir {args.data_dir}")
    if args.save_head is not None and len(names) != 1:
        raise ValueError("--save_head needs a single --task (one head per folder)")
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(args.output_dir)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    outcomes: dict[str, dict] = {}  # model label -> {task: TaskOutcome}, for the pairwise comparison
    summaries = []
    try:
        for model_id in args.model:
            folder = out if len(args.model) == 1 else out / _slug(model_id)
            summaries.append(_run_model(model_id, args, names, folder, device, outcomes))
    except BaseException:
        if created and not any(out.iterdir()):  # a bad --model must not leave an empty output folder behind
            out.rmdir()
        raise
    summary = summaries[0] if len(summaries) == 1 else {"models": summaries}
    if len(outcomes) > 1:
        summary["comparison"] = str(_write_comparison(outcomes, names, out))
    summary["wall_time_s"] = time.perf_counter() - start
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return 0


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[-60:] or "model"


def _run_model(
    model_id: str, args: argparse.Namespace, names: list[str], out: Path, device: str, outcomes: dict
):
    """Evaluate one model (and its random init with --compare_random_init) into ``out``; returns its summary."""
    from pathfm.evaluation.backbone import load_backbone

    backbone = load_backbone(
        model_id, args.revision, args.image_processor, random_init=args.random_init, device=device
    )
    print(f"{PROTOCOL_NAME}: model {backbone.model_id} @ {backbone.revision}, tasks {names}", flush=True)
    outcomes[model_id + (" (random init)" if args.random_init else "")] = mine = {}
    trained = _evaluate(backbone, names, args, out, mine)
    protocols = sorted({r["protocol"]["name"] for r in trained.values()})
    summary = {
        "protocol": protocols[0] if len(protocols) == 1 else protocols,
        "model": backbone.model_id,
        "revision": backbone.revision,
        "tasks": {n: str(out / n / "results.json") for n in names},
    }
    if args.compare_random_init and not args.random_init:
        random_backbone = load_backbone(
            model_id, args.revision, args.image_processor, random_init=True, device=device
        )
        outcomes[f"{model_id} (random init)"] = theirs = {}
        random = _evaluate(random_backbone, names, args, out / "random_init", theirs)
        (out / "comparison.md").write_text(comparison_markdown(trained, random))
        summary["random_init_tasks"] = {n: str(out / "random_init" / n / "results.json") for n in names}
        print((out / "comparison.md").read_text(), flush=True)
    return summary


def _write_comparison(outcomes: dict[str, dict], names: list[str], out: Path) -> Path:
    """``comparison_ci.md`` + one PNG per task: every model, paired bootstrap CI of every difference."""
    from pathfm.evaluation.compare import pairwise_bootstrap, task_comparison

    sections = [f"# Model comparison ({PROTOCOL_NAME}, paired bootstrap over test samples)", ""]
    pairs_json = {}
    for name in names:
        per_model = {label: o[name] for label, o in outcomes.items()}
        first = next(iter(per_model.values()))
        split = "test" if "test" in first.predictions else "validation"
        pairs = pairwise_bootstrap(
            first.targets[split],
            {label: o.predictions[split] for label, o in per_model.items()},
            len(first.results["task"]["classes"]),
        )
        pairs_json[name] = pairs
        results = {label: o.results for label, o in per_model.items()}
        sections.append(task_comparison(name, split, results, pairs, out))
    (out / "comparison_ci.json").write_text(json.dumps(pairs_json, indent=2))
    path = out / "comparison_ci.md"
    path.write_text("\n".join(sections))
    print(path.read_text(), flush=True)
    return path


def cli() -> int:
    """Run :func:`main`; errors about the data, the model or the arguments print one line, exit status 2."""
    try:
        return main()
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"evaluation/linear_probe.py: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(cli())
