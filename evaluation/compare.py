"""Several models on one task: paired bootstrap CIs of every pairwise difference, a table and a bar chart.

Used by ``linear_probe.py`` when given more than one ``--model`` or ``--compare_random_init``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pathfm.evaluation.bootstrap import paired_bootstrap


def pairwise_bootstrap(
    y: np.ndarray, predictions: dict[str, np.ndarray], num_classes: int, groups=None, n_boot: int = 2000
) -> list[dict]:
    """Paired bootstrap (``bootstrap.paired_bootstrap``) of every pair A, B in ``predictions`` order.

    Args:
        y: (M,) reference classes.
        predictions: ``{model label: (M,) predicted classes}`` on the same samples.
    """
    labels = list(predictions)
    return [
        {
            "model_a": a,
            "model_b": b,
            **paired_bootstrap(y, predictions[a], predictions[b], num_classes, groups, n_boot=n_boot),
        }
        for i, a in enumerate(labels)
        for b in labels[i + 1 :]
    ]


def task_comparison(task: str, split: str, results: dict[str, dict], pairs: list[dict], folder: Path) -> str:
    """Markdown for one task (mean ± std over seeds, pairwise CIs) and ``<folder>/comparison_<task>.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [
        f"## {task} ({split})",
        "",
        "| model | linear balanced accuracy (mean ± sd) | k-NN |",
        "|---|---|---|",
    ]
    means, stds = [], []
    for label, res in results.items():
        m = res["linear_probe"][split]["balanced_accuracy"]
        means.append(m["mean"])
        stds.append(m["std"] or 0.0)
        sd = f" ± {m['std']:.3f}" if m["std"] is not None else ""
        lines.append(
            f"| {label} | {m['mean']:.3f}{sd} | {res['knn_probe'][split]['balanced_accuracy']:.3f} |"
        )
    lines += ["", "| A | B | A - B (mean-score heads) | 95 % CI | excludes 0 |", "|---|---|---|---|---|"]
    for p in pairs:
        lines.append(
            f"| {p['model_a']} | {p['model_b']} | {p['difference']:+.3f} | "
            f"[{p['ci_low']:+.3f}, {p['ci_high']:+.3f}] | {'yes' if p['excludes_zero'] else 'no'} |"
        )
    fig, ax = plt.subplots(figsize=(2 + 1.4 * len(results), 3.4))
    ax.bar(range(len(results)), means, yerr=stds, capsize=4)
    ax.set_xticks(range(len(results)), list(results), rotation=15, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"{split} balanced accuracy")
    ax.set_title(f"{task}: linear probe, error bars = sd over seeds", fontsize=9)
    fig.tight_layout()
    png = folder / f"comparison_{task}.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    lines += ["", f"![{task}]({png.name})", ""]
    return "\n".join(lines)
