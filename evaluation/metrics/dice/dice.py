"""Dice score for semantic segmentation as an `evaluate` metric script.

Dice_c = 2 |P_c ∩ G_c| / (|P_c| + |G_c|), with the pixel counts accumulated over every image given (across
all ``add_batch`` calls) before dividing (dataset-level, "micro over images"), then averaged over classes
with equal weight. A class absent from both predictions and references has an undefined Dice and is left
out; pixels whose reference equals ``ignore_index`` are dropped. Per class, Dice equals the F1 score of the
flattened pixel labels, so the macro value equals scikit-learn's
``f1_score(ref_pixels, pred_pixels, labels=<classes that occur>, average="macro")``.

Inputs are masks flattened per image (lists of ints; images may have different sizes). Loaded offline
with ``evaluate.load("<repo>/evaluation/metrics/dice")``; self-contained.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Macro Dice over classes, pixel counts accumulated over all images."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of int): predicted class id per pixel, one flattened mask per image.
    references (list of list of int): true class id per pixel, same lengths as predictions.
    labels (list of int, optional): the task's label set; default: sorted union of the inputs.
    ignore_index (int, optional): reference value whose pixels are ignored (e.g. 255).
Returns:
    dice (float): macro Dice in [0, 1].
    per_class_dice (dict[str, float | None]): Dice per label (None where undefined).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Dice(evaluate.Metric):
    """Macro Dice for segmentation masks."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("int64")),
                    "references": datasets.Sequence(datasets.Value("int64")),
                }
            ),
        )

    def _compute(self, predictions, references, labels=None, ignore_index=None) -> dict:
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predicted masks but {len(references)} reference masks")
        for i, (p, r) in enumerate(zip(predictions, references)):
            if len(p) != len(r):
                raise ValueError(f"mask {i}: {len(p)} predicted pixels but {len(r)} reference pixels")
        pred = (
            np.concatenate([np.asarray(p, dtype=np.int64) for p in predictions])
            if predictions
            else np.zeros(0)
        )
        ref = (
            np.concatenate([np.asarray(r, dtype=np.int64) for r in references]) if references else np.zeros(0)
        )
        if ignore_index is not None:
            keep = ref != ignore_index
            pred, ref = pred[keep], ref[keep]
        if labels is None:
            labels = sorted(set(np.unique(pred).tolist()) | set(np.unique(ref).tolist()))
        labels = [int(v) for v in labels]
        unknown = sorted((set(np.unique(pred).tolist()) | set(np.unique(ref).tolist())) - set(labels))
        if unknown:
            raise ValueError(f"values {unknown} are not in labels={labels}")
        per_class: dict[str, float | None] = {}
        for label in labels:
            p, g = pred == label, ref == label
            denominator = int(p.sum() + g.sum())
            per_class[str(label)] = None if denominator == 0 else 2.0 * int((p & g).sum()) / denominator
        defined = [v for v in per_class.values() if v is not None]
        return {"dice": float(np.mean(defined)) if defined else float("nan"), "per_class_dice": per_class}
