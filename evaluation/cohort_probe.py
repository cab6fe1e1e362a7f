"""Probe one or more models on a user's own cohort: grouped splits or k-fold CV, mean ± std, paired CIs.

    python evaluation/cohort_probe.py --dataset TABLE_OR_FOLDER_OR_EMBEDDINGS --output_dir DIR
        [--model A --model B ...] [--compare_random_init] [--folds K] [--split_seeds 0,1,2]
        [--protocol pathfm-linear-v1|eva-linear] [--n_runs N] [--classes a,b,...] [--no_model_card]

Input (see ``cohort_data.py``): a folder of class subfolders, a ``path,label[,group][,split]`` CSV/parquet,
precomputed embeddings (.npz / .parquet / .safetensors; then ``--model`` is not used), or a slide manifest
``slide,label[,group][,split][,mpp]`` (``cohort_slides.py``: mean-pooled tissue-tile embeddings per slide).

Splits (``splits.py``): a ``split`` column is kept as given (a group found in two splits is printed as a
leakage warning and recorded); otherwise a seeded, stratified, group-aware 60/20/20 split per
``--split_seeds`` value, or with ``--folds K`` grouped K-fold cross-validation (round i tests fold i,
validates on fold i+1). Metrics are mean ± std over every (split seed, fold, head seed). For every pair of
models (and each model vs its random init) a paired bootstrap CI of the test balanced-accuracy difference
(``bootstrap.py``) uses the out-of-fold test predictions of split seed 0 (mean class scores over head
seeds), resampling whole groups when the data has groups.

Writes ``DIR/<model slug>/results.json`` (protocol, splits with the group -> split/fold map, every number)
and ``report.md``; ``DIR/comparison.md`` and ``DIR/comparison.png`` (bars, error bars = std); local model
folders get model-index entries in their card unless ``--no_model_card``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import pathfm

if __name__ == "__main__" and pathfm.help_only(sys.argv):  # the parser alone: no torch / numpy import
    from pathfm.evaluation.cohort_args import parse_args

    parse_args(description=__doc__)  # prints the help and exits 0

import argparse
import dataclasses
import json
import re
import warnings

import numpy as np
import torch
from pathfm.evaluation.bootstrap import paired_bootstrap
from pathfm.evaluation.cohort_args import parse_args
from pathfm.evaluation.cohort_data import Cohort, CohortImages, load_cohort
from pathfm.evaluation.cohort_slides import SlideManifest, SlideTiles, is_slide_manifest
from pathfm.evaluation.probe_runner import METRICS, RunOptions, get_embeddings, probe_embeddings, summarize
from pathfm.evaluation.protocol import PROTOCOLS, KnnConfig
from pathfm.evaluation.splits import (
    SplitError,
    SplitPlan,
    check_scored_splits,
    given_split,
    grouped_kfold,
    split_report,
    stratified_group_split,
)


def make_plans(cohort: Cohort, folds: int, seeds: list[int]) -> tuple[dict[int, list[SplitPlan]], dict, str]:
    """``({split seed: plans}, leaking groups, kind)``; kind is ``given``, ``holdout`` or ``{K}-fold``."""
    if cohort.splits is not None and not folds:
        plan, leaks = given_split(cohort.splits, cohort.groups)
        check_scored_splits(plan, cohort.labels, cohort.class_names, cohort.source)
        if leaks:
            shown = ", ".join(f"{g} ({'/'.join(s)})" for g, s in list(leaks.items())[:5])
            print(
                f"WARNING: {cohort.source}: {len(leaks)} group(s) in more than one split (leakage): {shown}; "
                f"drop the split column to get a group-aware split",
                flush=True,
            )
        return {0: [plan]}, leaks, "given"
    names = cohort.class_names
    try:
        if folds:
            plans = {s: grouped_kfold(cohort.labels, cohort.groups, folds, s, names) for s in seeds}
            return plans, {}, f"{folds}-fold"
        split = {s: stratified_group_split(cohort.labels, cohort.groups, None, s, names) for s in seeds}
        return {s: [plan] for s, plan in split.items()}, {}, "holdout"
    except SplitError as err:
        raise SplitError(f"{cohort.source}: {err}") from None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[-60:] or "model"


def probe_cohort(
    x: torch.Tensor, cohort: Cohort, plans: dict[int, list[SplitPlan]], options: RunOptions
) -> dict:
    """Heads and k-NN on every plan; returns metrics per plan and the split-seed-0 out-of-fold predictions.

    Args:
        x: (N, D) embeddings in cohort order.
    """
    y = torch.as_tensor(cohort.labels, dtype=torch.int64)
    k = len(cohort.class_names)
    rounds, linear, knn = [], {m: [] for m in METRICS}, {m: [] for m in METRICS}
    first = min(plans)
    oof_pred = np.full(len(y), -1, dtype=np.int64)
    for seed, seed_plans in plans.items():
        for plan in seed_plans:
            idx = {s: torch.as_tensor(plan.indices(s)) for s in ("train", "validation", "test")}
            evals = ["test"] if len(idx["test"]) else ["validation"]
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                runs = probe_embeddings(
                    {s: x[i] for s, i in idx.items()}, {s: y[i] for s, i in idx.items()}, k, evals, options
                )
            for w in {str(w.message) for w in caught}:
                print(f"  warning: {w}", flush=True)
            split = evals[0]
            for m in METRICS:
                linear[m] += runs.per_split[split][m]
                knn[m].append(runs.knn[split][m])
            if seed == first:
                mean_probs = torch.stack(runs.probabilities[split]).mean(dim=0)
                oof_pred[idx[split].numpy()] = mean_probs.argmax(dim=1).numpy()
            rounds.append(
                {
                    "split_seed": seed,
                    "fold": plan.fold,
                    "evaluated_split": split,
                    "splits": split_report(
                        plan, [cohort.class_names[t] for t in cohort.labels], cohort.groups
                    ),
                    # undefined metrics (AUROC of a one-class split) as None, so results.json stays JSON
                    "linear_probe": {m: summarize(runs.per_split[split][m])["values"] for m in METRICS},
                    "knn_probe": {m: summarize([v])["values"][0] for m, v in runs.knn[split].items()},
                    "runs": [
                        {k: v for k, v in r.items() if k not in ("validation", "test")} for r in runs.runs
                    ],
                }
            )
    return {"rounds": rounds, "linear": linear, "knn": knn, "oof_pred": oof_pred}


def _assignment(plans: dict[int, list[SplitPlan]]) -> dict:
    """group -> split (holdout / given) or group -> test fold (CV), per split seed: enough to rebuild it."""
    out = {}
    for seed, seed_plans in plans.items():
        if seed_plans[0].fold is None:
            out[str(seed)] = seed_plans[0].group_split
        else:
            out[str(seed)] = {g: p.fold for p in seed_plans for g, s in p.group_split.items() if s == "test"}
    return out


def results_for(
    model: dict, cohort: Cohort, probes: dict, plans, leaks, kind: str, options, protocol
) -> dict:
    """The ``results.json`` dict (compatible with ``card_results`` and ``report``'s summary fields)."""
    n = len(cohort.labels)
    split = probes["rounds"][0]["evaluated_split"]
    return {
        "protocol": {
            "name": protocol,
            "linear": {**options.probe.to_dict(), "seeds": list(range(options.probe.n_runs))},
            "knn": options.knn.to_dict(),
            "pooling": options.pooling,
            "splits": {
                "kind": kind,
                "split_seeds": sorted(plans),
                "leaking_groups": leaks,
                "grouped": cohort.groups is not None,
            },
        },
        "model": model,
        "task": {
            "name": cohort.name,
            "description": f"user cohort from {cohort.source}",
            "proxy_labels": False,
            "classes": list(cohort.class_names),
            "data_dir": cohort.source,
            "samples": n,
            "groups": len(set(cohort.groups)) if cohort.groups is not None else None,
            "class_counts": np.bincount(cohort.labels, minlength=len(cohort.class_names)).tolist(),
        },
        "linear_probe": {split: {m: summarize(v) for m, v in probes["linear"].items()}},
        "knn_probe": {split: {m: summarize(v)["mean"] for m, v in probes["knn"].items()}},
        "knn_probe_rounds": {split: {m: summarize(v) for m, v in probes["knn"].items()}},
        "split_assignment": _assignment(plans),
        "rounds": probes["rounds"],
    }


def _fmt(summary: dict) -> str:
    """``mean ± std``; "undefined" for a metric without a value (AUROC of a one-class split)."""
    if summary["mean"] is None:
        return "undefined"
    return f"{summary['mean']:.3f}" + (f" ± {summary['std']:.3f}" if summary["std"] is not None else "")


def comparison_report(entries: list[dict], pairs: list[dict], folder: Path) -> tuple[Path, Path]:
    """``comparison.md`` (mean ± std per model, bootstrap CI per pair) and ``comparison.png`` (bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = entries[0]["results"]
    split = next(iter(first["linear_probe"]))
    kind = first["protocol"]["splits"]["kind"]
    lines = [
        f"# {first['task']['name']}: {first['protocol']['name']}, {kind} splits, {split} metrics",
        "",
        "Mean ± std over every (split seed, fold, head seed); k-NN mean over (split seed, fold).",
        "",
        "| model | linear balanced accuracy | linear AUROC | k-NN balanced accuracy |",
        "|---|---|---|---|",
    ]
    for e in entries:
        lp, kn = e["results"]["linear_probe"][split], e["results"]["knn_probe_rounds"][split]
        lines.append(
            f"| {e['label']} | {_fmt(lp['balanced_accuracy'])} | {_fmt(lp['auroc'])} | "
            f"{_fmt(kn['balanced_accuracy'])} |"
        )
    if pairs:
        p0 = pairs[0]
        lines += [
            "",
            (
                f"Paired bootstrap of the difference A - B in test balanced accuracy ({p0['n_boot']} "
                f"replicates over {p0['unit']}, {p0['n']} test predictions of split seed 0, "
                f"{p0['confidence']:.0%} percentile interval):"
            ),
            "",
            "| A | B | A | B | A - B | CI | CI excludes 0 |",
            "|---|---|---|---|---|---|---|",
        ]
        for p in pairs:
            lines.append(
                f"| {p['model_a']} | {p['model_b']} | {p['a']:.3f} | {p['b']:.3f} | {p['difference']:+.3f} | "
                f"[{p['ci_low']:+.3f}, {p['ci_high']:+.3f}] | {'yes' if p['excludes_zero'] else 'no'} |"
            )
    lines += ["", "![comparison](comparison.png)", ""]
    md = folder / "comparison.md"
    md.write_text("\n".join(lines))
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(entries), 3.5))
    for i, e in enumerate(entries):
        for j, (name, summary) in enumerate(
            (
                ("linear", e["results"]["linear_probe"][split]["balanced_accuracy"]),
                ("k-NN", e["results"]["knn_probe_rounds"][split]["balanced_accuracy"]),
            )
        ):
            ax.bar(
                i + 0.38 * j,
                summary["mean"],
                0.36,
                yerr=summary["std"] or 0,
                capsize=4,
                color=f"C{j}",
                label=name if i == 0 else None,
            )
    ax.set_xticks(
        [i + 0.19 for i in range(len(entries))], [e["label"] for e in entries], rotation=15, fontsize=8
    )
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"{split} balanced accuracy")
    ax.set_title(f"{first['task']['name']} ({kind}; error bars: std over seeds/folds)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = folder / "comparison.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return md, png


def _model_entries(
    args: argparse.Namespace, cohort: Cohort, options: RunOptions, device: str, manifest: SlideManifest | None
) -> list[dict]:
    """(label, model dict, embeddings (N, D), local_dir) for every model to evaluate, embedding as needed."""
    if cohort.embeddings is not None:
        if args.model:
            raise ValueError(f"--dataset {cohort.source} holds embeddings already; drop --model")
        model = {
            "id": f"precomputed:{cohort.source}",
            "revision": None,
            "random_init": False,
            "embedding_dim": int(cohort.embeddings.shape[1]),
        }
        return [
            {"label": Path(cohort.source).name, "model": model, "x": cohort.embeddings, "local_dir": None}
        ]
    if not args.model:
        raise ValueError(f"--dataset {cohort.source} holds tiles: give --model (one or more) to embed them")
    from pathfm.evaluation.backbone import load_backbone

    task = SlideTiles(manifest) if manifest is not None else CohortImages(cohort)
    entries = []
    for model_id in args.model:
        for random_init in (False, True) if args.compare_random_init else (False,):
            backbone = load_backbone(model_id, random_init=random_init, device=device)
            x = get_embeddings(backbone, task, options)[0]["all"]
            if manifest is not None:  # (tiles, D) -> (slides, D): mean over each slide's tiles
                x = manifest.cohort(x).embeddings
            label = model_id + (" (random init)" if random_init else "")
            print(f"[{label}] embedded {len(x)} tiles", flush=True)
            model = {
                "id": backbone.model_id,
                "revision": backbone.revision,
                "random_init": random_init,
                "class": type(backbone.model).__name__,
                "embedding_dim": int(x.shape[1]),
            }
            entries.append(
                {
                    "label": label,
                    "model": model,
                    "x": x,
                    "local_dir": None if random_init else backbone.local_dir,
                }
            )
    return entries


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    from pathfm.evaluation.card_results import update_model_card

    args = parse_args(argv, __doc__)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    classes = tuple(c.strip() for c in args.classes.split(",")) if args.classes else None
    manifest = None
    if is_slide_manifest(args.dataset):
        manifest = SlideManifest(args.dataset, args.slide_mpp, args.tiles_per_slide, classes)
        cohort = manifest.cohort(torch.zeros(len(manifest.tiles), 1))
        cohort.embeddings = None  # computed per model from the tiles
        print(f"{args.dataset}: {len(manifest.paths)} slides, {len(manifest.tiles)} tissue tiles", flush=True)
    else:
        cohort = load_cohort(args.dataset, classes)
    seeds = [int(s) for s in args.split_seeds.split(",") if s.strip()]
    try:
        plans, leaks, kind = make_plans(cohort, args.folds, seeds)
    except ValueError as err:
        raise ValueError(f"{cohort.source}: {err}") from err
    probe = PROTOCOLS[args.protocol]
    changes = {k: v for k, v in (("n_runs", args.n_runs), ("max_steps", args.max_steps)) if v is not None}
    probe = dataclasses.replace(probe, **changes)
    out = Path(args.output_dir)
    options = RunOptions(
        embeddings_dir=Path(args.embeddings_dir or out / "embeddings"),
        pooling=args.pooling,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        probe=probe,
        knn=KnnConfig(),
    )
    protocol = args.protocol + ("+custom" if probe != PROTOCOLS[args.protocol] else "")
    print(
        f"{protocol}: cohort {cohort.source}: {len(cohort.ids)} samples, classes {list(cohort.class_names)}, "
        f"{len(set(cohort.groups)) if cohort.groups else 'no'} groups, {kind} splits, seeds {sorted(plans)}",
        flush=True,
    )
    entries = _model_entries(args, cohort, options, device, manifest)
    for e in entries:
        probes = probe_cohort(e["x"], cohort, plans, options)
        e["results"] = results_for(e["model"], cohort, probes, plans, leaks, kind, options, protocol)
        e["oof"] = probes["oof_pred"]
        folder = out / _slug(e["label"])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "results.json").write_text(json.dumps(e["results"], indent=2))
        lp = e["results"]["linear_probe"]
        split = next(iter(lp))
        m = lp[split]["balanced_accuracy"]
        sd = f" ± {m['std']:.3f}" if m["std"] is not None else ""
        print(
            f"  {e['label']}: linear {split} balanced accuracy {m['mean']:.3f}{sd} "
            f"(n={len(m['values'])}); wrote {folder / 'results.json'}",
            flush=True,
        )
        if e["local_dir"] is not None and not args.no_model_card:
            print(f"  model card: {update_model_card(e['local_dir'], e['results'])}", flush=True)
    pairs = []
    tested = entries[0]["oof"] >= 0
    groups = np.asarray(cohort.groups)[tested] if cohort.groups is not None else None
    for i, a in enumerate(entries):
        for b in entries[i + 1 :]:
            ci = paired_bootstrap(
                cohort.labels[tested],
                a["oof"][tested],
                b["oof"][tested],
                len(cohort.class_names),
                groups,
                n_boot=args.n_boot,
            )
            pairs.append({"model_a": a["label"], "model_b": b["label"], **ci})
    (out / "comparison.json").write_text(json.dumps(pairs, indent=2))
    md, _ = comparison_report(entries, pairs, out)
    print(md.read_text(), flush=True)
    return 0


def cli() -> int:
    """Run :func:`main`; data, model and argument errors print one line, exit status 2."""
    try:
        return main()
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"evaluation/cohort_probe.py: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(cli())
