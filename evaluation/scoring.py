"""Load the local `evaluate` metric scripts and score one set of predictions.

The scripts live in ``evaluation/metrics/<name>/<name>.py`` and are loaded by path, which works offline
(Hub-hosted metrics such as ``evaluate.load("accuracy")`` need the network). ``fast_balanced_accuracy``
is the same quantity in torch, used inside the early-stopping loop where calling `evaluate` once per
epoch would dominate the probe's run time; tests check that the two agree.
"""

from __future__ import annotations

import functools
from pathlib import Path

import evaluate
import numpy as np
import torch

METRICS_DIR = Path(__file__).resolve().parent / "metrics"
METRIC_NAMES = ("balanced_accuracy", "macro_f1", "auroc", "dice", "segmentation_dice")


@functools.cache
def load_metric(name: str) -> evaluate.EvaluationModule:
    """Load ``evaluation/metrics/<name>`` with ``evaluate.load`` (offline).

    Args:
        name: one of ``METRIC_NAMES``.

    Raises:
        ValueError: unknown metric name.
        FileNotFoundError: the script is missing from the install.
    """
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; available: {METRIC_NAMES}")
    path = METRICS_DIR / name / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"metric script {path} is missing")
    return evaluate.load(str(path.parent))


def classification_scores(
    references: np.ndarray, predictions: np.ndarray, probabilities: np.ndarray, num_classes: int
) -> dict[str, float]:
    """Balanced accuracy, macro F1 and AUROC through the `evaluate` scripts.

    Args:
        references: true class ids (N,), int.
        predictions: predicted class ids (N,), int.
        probabilities: class scores (N, K), K == num_classes.
        num_classes: K; the label set passed to every metric is ``range(K)``.

    Returns:
        ``{"balanced_accuracy": float, "f1_macro": float, "auroc": float}``.
    """
    labels = list(range(num_classes))
    refs = np.asarray(references, dtype=np.int64).tolist()
    preds = np.asarray(predictions, dtype=np.int64).tolist()
    bacc = load_metric("balanced_accuracy").compute(predictions=preds, references=refs, labels=labels)
    f1 = load_metric("macro_f1").compute(predictions=preds, references=refs, labels=labels)
    auroc = load_metric("auroc").compute(
        predictions=np.asarray(probabilities, dtype=np.float64).tolist(), references=refs, labels=labels
    )
    return {"balanced_accuracy": bacc["balanced_accuracy"], "f1_macro": f1["f1"], "auroc": auroc["roc_auc"]}


def confusion_matrix(references: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrix (K, K), rows = reference class, columns = predicted class."""
    refs = np.asarray(references, dtype=np.int64)
    preds = np.asarray(predictions, dtype=np.int64)
    return np.bincount(refs * num_classes + preds, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def fast_balanced_accuracy(references: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> float:
    """Balanced accuracy in torch (classes without references left out, as in the metric script).

    Args:
        references: (N,) int64 class ids.
        predictions: (N,) int64 class ids.
        num_classes: K.
    """
    cm = torch.bincount(references * num_classes + predictions, minlength=num_classes * num_classes)
    cm = cm.reshape(num_classes, num_classes)
    support = cm.sum(dim=1)
    present = support > 0
    return float((cm.diagonal()[present].double() / support[present].double()).mean())
