"""Area under the ROC curve (binary, or one-vs-rest macro for multiclass) as an `evaluate` metric script.

``predictions`` are per-class scores (N, K) (probabilities or logits; only their order matters).
- K == 2: the binary AUROC of column 1 (the positive class, ``labels[1]``), as scikit-learn's
  ``roc_auc_score(references == labels[1], scores[:, 1])``.
- K > 2: one-vs-rest AUROC per class c (``references == labels[c]`` against ``scores[:, c]``), averaged
  with equal weight over the classes that have both positive and negative references. A class missing
  from the split has no ROC curve and is left out (scikit-learn would raise instead).

Each AUROC is computed exactly with the Mann-Whitney U statistic (tied scores count one half), which is
what ``roc_auc_score`` returns. Several ``add_batch`` calls give the same result as one call.

Loaded offline with ``evaluate.load("<repo>/evaluation/metrics/auroc")``; self-contained.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Binary AUROC, or one-vs-rest macro AUROC over the classes present in the references."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of float): per-class scores, shape (N, K).
    references (list of int): true class ids, shape (N,).
    labels (list of int, optional): the class id of each score column; default: range(K).
Returns:
    roc_auc (float): AUROC in [0, 1] (NaN when no class has both positives and negatives).
    per_class_roc_auc (dict[str, float | None]): one-vs-rest AUROC per label (None where undefined).
"""


def binary_auroc(positive: np.ndarray, scores: np.ndarray) -> float | None:
    """Exact AUROC of ``scores`` for the boolean ``positive`` (N,) via ranks; None if one class is empty."""
    n_pos = int(positive.sum())
    n_neg = int(len(positive) - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # Average ranks over runs of equal scores (1-based ranks).
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(scores)]])
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Auroc(evaluate.Metric):
    """Binary or one-vs-rest macro AUROC."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Value("int64"),
                }
            ),
        )

    def _compute(self, predictions, references, labels=None) -> dict:
        scores = np.asarray(predictions, dtype=np.float64)
        references = np.asarray(references, dtype=np.int64)
        if scores.ndim != 2 or scores.shape[0] != len(references):
            raise ValueError(
                f"predictions must be (N, K) scores with N={len(references)}, got {scores.shape}"
            )
        k = scores.shape[1]
        labels = list(range(k)) if labels is None else [int(v) for v in labels]
        if len(labels) != k or k < 2:
            raise ValueError(f"need one label per score column and K >= 2: labels={labels}, K={k}")
        unknown = sorted(set(references.tolist()) - set(labels))
        if unknown:
            raise ValueError(f"reference values {unknown} are not in labels={labels}")
        if k == 2:
            value = binary_auroc(references == labels[1], scores[:, 1])
            nan = float("nan")
            return {"roc_auc": nan if value is None else value, "per_class_roc_auc": {str(labels[1]): value}}
        per_class = {
            str(label): binary_auroc(references == label, scores[:, c]) for c, label in enumerate(labels)
        }
        defined = [v for v in per_class.values() if v is not None]
        return {
            "roc_auc": float(np.mean(defined)) if defined else float("nan"),
            "per_class_roc_auc": per_class,
        }
