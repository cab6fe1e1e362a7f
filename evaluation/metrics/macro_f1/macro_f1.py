"""Macro-averaged F1 score as an `evaluate` metric script.

F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c), averaged over classes with equal weight. Pass ``labels`` (the
task's full label set). A class that occurs neither in the references nor in the predictions has an
undefined F1 and is left out of the mean; a class that is predicted but never true (or true but never
predicted) scores 0 and stays in. This equals scikit-learn's
``f1_score(references, predictions, labels=[c for c in labels if c occurs], average="macro")``.
Several ``add_batch`` calls give the same result as one call on the concatenation.

Loaded offline with ``evaluate.load("<repo>/evaluation/metrics/macro_f1")``; self-contained.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Macro F1 over the classes that occur in references or predictions."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids, shape (N,).
    references (list of int): true class ids, shape (N,).
    labels (list of int, optional): the task's full label set; default: sorted union of the inputs.
Returns:
    f1 (float): macro F1 in [0, 1].
    per_class_f1 (dict[str, float | None]): F1 per label (None where undefined).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MacroF1(evaluate.Metric):
    """Macro F1, binary or multiclass (both classes count in the binary case)."""

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
            raise ValueError("macro_f1 needs at least one reference")
        if labels is None:
            labels = sorted(set(predictions.tolist()) | set(references.tolist()))
        labels = [int(v) for v in labels]
        unknown = sorted((set(predictions.tolist()) | set(references.tolist())) - set(labels))
        if unknown:
            raise ValueError(f"values {unknown} are not in labels={labels}")
        per_class: dict[str, float | None] = {}
        scores = []
        for label in labels:
            tp = int(np.sum((predictions == label) & (references == label)))
            fp = int(np.sum((predictions == label) & (references != label)))
            fn = int(np.sum((predictions != label) & (references == label)))
            denominator = 2 * tp + fp + fn
            if denominator == 0:
                per_class[str(label)] = None
                continue
            per_class[str(label)] = 2 * tp / denominator
            scores.append(2 * tp / denominator)
        return {"f1": float(np.mean(scores)), "per_class_f1": per_class}
