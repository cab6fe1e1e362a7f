"""Write a task's results: ``results.json``, ``report.md`` and two plots (matplotlib, Agg backend)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

METRIC_LABELS = {"balanced_accuracy": "balanced accuracy", "f1_macro": "macro F1", "auroc": "AUROC"}


UNDEFINED = "undefined"
"""Shown for a metric with no value (AUROC of a split with a single class)."""


def _fmt(summary: dict) -> str:
    std = summary["std"]
    if summary["mean"] is None:
        return UNDEFINED
    return f"{summary['mean']:.3f} ± {std:.3f}" if std is not None else f"{summary['mean']:.3f}"


def _fmt_value(value: float | None) -> str:
    return UNDEFINED if value is None else f"{value:.3f}"


def plot_runs(results: dict, path: Path) -> Path:
    """Per-run values (one dot per seed) of each metric and split, linear probe; k-NN as a cross."""
    splits = list(results["linear_probe"])
    fig, axes = plt.subplots(1, len(METRIC_LABELS), figsize=(4 * len(METRIC_LABELS), 3.2), squeeze=False)
    for ax, (metric, label) in zip(axes[0], METRIC_LABELS.items()):
        for i, split in enumerate(splits):
            values = [v for v in results["linear_probe"][split][metric]["values"] if v is not None]
            ax.scatter(np.full(len(values), i), values, label=f"linear ({split})", alpha=0.8)
            knn = results["knn_probe"][split][metric]
            if knn is not None:
                ax.scatter([i + 0.2], [knn], marker="x", color="k")
        ax.set_xticks(range(len(splits)), splits)
        ax.set_title(label)
        ax.set_ylim(-0.02, 1.02)
    fig.suptitle(f"{results['task']['name']} - {results['protocol']['name']} (dots: seeds; x: k-NN)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_confusion(results: dict, split: str, path: Path) -> Path:
    """Confusion matrix of the best-validation run on ``split`` (rows: truth, columns: prediction)."""
    cm = np.asarray(results["best_run"]["confusion_matrix"][split])
    classes = results["task"]["classes"]
    longest = max(len(c) for c in classes)  # rotated tick labels need room
    size = 2.0 + 0.8 * len(classes) + 0.08 * longest
    fig, ax = plt.subplots(figsize=(size + 0.5, size))
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{split}, seed {results['best_run']['seed']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def markdown_report(results: dict, plots: list[str]) -> str:
    """A short Markdown report: protocol, model, split sizes, a metric table, the plots."""
    task, model, protocol = results["task"], results["model"], results["protocol"]
    lines = [
        f"# {task['name']}: {protocol['name']}",
        "",
        f"- model: `{model['id']}` (revision `{model['revision']}`{', RANDOM INIT' if model['random_init'] else ''})",
        f"- pooling: {protocol['pooling']}, embedding dim {model['embedding_dim']}",
        "- splits: " + ", ".join(f"{s} {n}" for s, n in task["split_sizes"].items()),
        (
            f"- linear head: AdamW lr {protocol['linear']['learning_rate']}, weight decay "
            f"{protocol['linear']['weight_decay']}, batch {protocol['linear']['batch_size']}, <= "
            f"{protocol['linear']['max_steps']} steps, patience {protocol['linear']['patience_epochs']} epochs, "
            f"seeds {protocol['linear']['seeds']}"
        ),
        f"- k-NN: k={protocol['knn']['k']}, cosine",
        "",
    ]
    if task["proxy_labels"]:
        lines += ["> **Proxy labels, not a benchmark.** " + task["description"], ""]
    header = "| probe | split | " + " | ".join(METRIC_LABELS.values()) + " |"
    lines += [header, "|" + "---|" * (2 + len(METRIC_LABELS))]
    for split, metrics in results["linear_probe"].items():
        lines.append(
            f"| linear (mean ± sd) | {split} | " + " | ".join(_fmt(metrics[m]) for m in METRIC_LABELS) + " |"
        )
    for split, metrics in results["knn_probe"].items():
        lines.append(
            f"| k-NN | {split} | " + " | ".join(_fmt_value(metrics[m]) for m in METRIC_LABELS) + " |"
        )
    one_class = [s for s, counts in task.get("class_counts", {}).items() if sum(c > 0 for c in counts) < 2]
    if one_class:
        lines += ["", f"AUROC undefined on {', '.join(one_class)}: the split holds a single class."]
    wall = results["wall_time_s"]
    lines += [
        "",
        (
            f"Wall time: embeddings {wall['embeddings']:.1f} s, linear {wall['linear_probe']:.1f} s, "
            f"k-NN {wall['knn_probe']:.1f} s."
        ),
        "",
    ]
    lines += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"


def write_task_outputs(results: dict, folder: Path) -> dict[str, Path]:
    """Write results.json, report.md, runs.png and confusion_<split>.png into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"results": folder / "results.json"}
    paths["results"].write_text(json.dumps(results, indent=2))
    plots = [str(plot_runs(results, folder / "runs.png"))]
    for split in results["best_run"]["confusion_matrix"]:
        plots.append(str(plot_confusion(results, split, folder / f"confusion_{split}.png")))
    paths["report"] = folder / "report.md"
    paths["report"].write_text(markdown_report(results, plots))
    return paths
