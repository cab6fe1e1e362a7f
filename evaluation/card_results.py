"""Add probe results to a model folder's model card (``README.md``) as model-index ``EvalResult`` entries.

Entries carry the protocol name in ``metric_name`` so numbers from different protocols never mix; an
entry with the same task, split, metric and protocol is replaced, never duplicated.
"""

from __future__ import annotations

import re
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

CARD_METRICS = {"balanced_accuracy": "Balanced accuracy", "f1_macro": "Macro F1", "auroc": "AUROC"}


def eval_results_for(results: dict) -> list[EvalResult]:
    """One ``EvalResult`` per (split, metric) of the linear probe (mean over runs)."""
    task, protocol = results["task"], results["protocol"]
    n = len(protocol["linear"]["seeds"])
    out = []
    for split, metrics in results["linear_probe"].items():
        for metric, label in CARD_METRICS.items():
            if metrics[metric]["mean"] is None:  # undefined (AUROC of a single-class split): no card entry
                continue
            out.append(
                EvalResult(
                    task_type="image-classification",
                    task_name="Linear probe (frozen backbone)",
                    dataset_type=f"pathfm/{task['name']}",
                    dataset_name=task["name"] + (" (proxy labels)" if task["proxy_labels"] else ""),
                    dataset_split=split,
                    metric_type=metric,
                    metric_value=round(metrics[metric]["mean"], 4),
                    metric_name=f"{label} ({protocol['name']}, mean of {n} runs)",
                )
            )
    return out


def _entry_key(result: EvalResult) -> tuple:
    """(task, split, metric, protocol): a re-run with another number of runs replaces, never duplicates."""
    found = re.search(r"\(([^,()]+),", result.metric_name or "")
    protocol = found.group(1) if found else result.metric_name
    return (result.dataset_type, result.dataset_split, result.metric_type, protocol)


def update_model_card(model_dir: Path, results: dict) -> Path:
    """Add (or replace) this task's entries in ``model_dir/README.md``; creates a minimal card if absent.

    Returns:
        the README path.
    """
    path = Path(model_dir) / "README.md"
    card = ModelCard.load(path) if path.is_file() else ModelCard.from_template(ModelCardData())
    new = eval_results_for(results)
    keys = {_entry_key(r) for r in new}
    kept = [r for r in (card.data.eval_results or []) if _entry_key(r) not in keys]
    card.data.eval_results = kept + new
    if not card.data.model_name:
        card.data.model_name = Path(model_dir).resolve().name
    card.save(path)
    return path
