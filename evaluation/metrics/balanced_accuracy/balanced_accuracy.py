"""Balanced accuracy (macro-averaged recall) as an `evaluate` metric script.

Binary and multiclass balanced accuracy are the same quantity: the mean over classes of the recall
TP_c / (TP_c + FN_c). This is scikit-learn's ``balanced_accuracy_score`` (``adjusted=False``) and what eva
reports as "MulticlassAccuracy (macro)" / "BinaryBalancedAccuracy".

Class-set handling: pass ``labels`` (the full label set of the task) so that the result does not depend on
which classes happen to occur in one split or one batch. A class with no reference samples has an
undefined recall and is left out of the mean (as scikit-learn does); predictions or references outside
``labels`` raise ``ValueError``. Several ``add_batch`` calls give the same result as one call on the
concatenation, since `evaluate` concatenates the batches before ``_compute``.

Loaded offline with ``evaluate.load("<repo>/evaluation/metrics/balanced_accuracy")``. This file must stay
self-contained (evaluate copies it into its module cache): it imports only datasets, evaluate and numpy.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Balanced accuracy = mean per-class recall over the classes present in the references."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids, shape (N,).
    references (list of int): true class ids, shape (N,).
    labels (list of int, optional): the task's full label set; default: sorted union of the inputs.
Returns:
    balanced_accuracy (float): mean recall over classes with at least one reference sample, in [0, 1].
    per_class_recall (dict[str, float | None]): recall per label (None where the class has no reference).
"""


def confusion(predictions: np.ndarray, references: np.ndarray, labels: list[int]) -> np.ndarray:
    """Confusion matrix (K, K) with rows = reference, columns = prediction, in ``labels`` order."""
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted(
        (set(np.unique(predictions).tolist()) | set(np.unique(references).tolist())) - set(index)
    )
    if unknown:
        raise ValueError(f"values {unknown} are not in labels={labels}")
    k = len(labels)
    ref = np.array([index[v] for v in references.tolist()], dtype=np.int64)
    pred = np.array([index[v] for v in predictions.tolist()], dtype=np.int64)
    return np.bincount(ref * k + pred, minlength=k * k).reshape(k, k)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class BalancedAccuracy(evaluate.Metric):
    """Balanced accuracy (macro recall), binary or multiclass."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, labels=None) -> dict:
        predictions = np.asarray(predictions, dtype=np.int64)
        references = np.asarray(references, dtype=np.int64)
        if len(references) == 0:
            raise ValueError("balanced_accuracy needs at least one reference")
        if labels is None:
            labels = sorted(set(predictions.tolist()) | set(references.tolist()))
        labels = [int(v) for v in labels]
        cm = confusion(predictions, references, labels)
        support = cm.sum(axis=1)
        recall = {
            str(label): (float(cm[i, i] / support[i]) if support[i] else None)
            for i, label in enumerate(labels)
        }
        present = support > 0
        value = float(np.mean(np.diag(cm)[present] / support[present]))
        return {"balanced_accuracy": value, "per_class_recall": recall}
