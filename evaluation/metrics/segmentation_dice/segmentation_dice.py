"""Dice for semantic segmentation as eva's leaderboard reports it, plus micro and per-class Dice.

Leaderboard variant (``VARIANT``), as MONAI's ``DiceMetric(include_background=False, reduction="mean",
ignore_empty=True)`` computes it (monai/metrics/meandice.py and monai/metrics/utils.py
``do_metric_reduction``; used by kaiko-ai/eva 0.4.5 ``MonaiDiceScore``):

1. per tile t and foreground class c (background, class 0, excluded):
   ``D[t, c] = 2 |P ∩ G| / (|P| + |G|)``; when class c is absent from the tile's reference, D[t, c] is
   undefined (skipped), whatever was predicted;
2. per tile: mean of its defined D[t, c]; a tile with none (all background) is skipped;
3. the score: mean over the tiles that were not skipped.

Pixels whose *reference* equals ``ignore_index`` are dropped from both masks before counting (eva takes the
ignore mask from the predictions, a quirk we do not reproduce; the difference only shows when an ignored
class is predicted).

``micro_dice`` pools |P ∩ G|, |P| and |G| over all tiles and foreground classes before dividing.
``per_class_dice[c]`` is the mean of D[t, c] over the tiles where it is defined (MONAI ``mean_batch``).

Inputs are masks flattened per tile (tiles may differ in size). Loaded offline with
``evaluate.load("<repo>/evaluation/metrics/segmentation_dice")``; self-contained.
"""

import datasets
import evaluate
import numpy as np

VARIANT = "monai-mean: per-tile mean over foreground classes present in the reference, then mean over tiles"
_DESCRIPTION = "Segmentation Dice (MONAI-style leaderboard variant), micro Dice and per-class Dice."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of int): predicted class id per pixel, one flattened mask per tile.
    references (list of list of int): true class id per pixel, same lengths as predictions.
    num_classes (int): K, classes 0..K-1 with 0 the background.
    ignore_index (int, optional): reference value whose pixels are dropped (e.g. 255 or MoNuSAC's 5).
Returns:
    dice (float): leaderboard variant in [0, 1] (nan when no tile has a foreground class).
    variant (str): how ``dice`` was computed.
    micro_dice (float): pooled foreground Dice.
    per_class_dice (dict[str, float | None]): per foreground class (None where never defined).
"""


def tile_counts(pred: np.ndarray, ref: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class counts of one tile: int64 (K, 3) with columns |P ∩ G|, |P|, |G|."""
    inter = np.bincount(ref[pred == ref], minlength=num_classes)
    return np.stack(
        [inter, np.bincount(pred, minlength=num_classes), np.bincount(ref, minlength=num_classes)], axis=1
    )[:num_classes]


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SegmentationDice(evaluate.Metric):
    """MONAI-style per-tile Dice for segmentation masks."""

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

    def _compute(self, predictions, references, num_classes=None, ignore_index=None) -> dict:
        if num_classes is None or int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2 (background + foreground), got {num_classes}")
        k = int(num_classes)
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predicted masks but {len(references)} reference masks")
        counts = np.zeros((len(predictions), k, 3), dtype=np.int64)
        for i, (p, r) in enumerate(zip(predictions, references)):
            p, r = np.asarray(p, dtype=np.int64), np.asarray(r, dtype=np.int64)
            if p.shape != r.shape:
                raise ValueError(f"tile {i}: {p.size} predicted pixels but {r.size} reference pixels")
            if ignore_index is not None:
                keep = r != ignore_index
                p, r = p[keep], r[keep]
            bad = np.unique(np.concatenate([p[(p < 0) | (p >= k)], r[(r < 0) | (r >= k)]]))
            if bad.size:
                raise ValueError(f"tile {i}: class ids {bad.tolist()} outside 0..{k - 1} (num_classes={k})")
            counts[i] = tile_counts(p, r, k)
        fg = counts[:, 1:].astype(np.float64)  # (T, K-1, 3)
        defined = fg[..., 2] > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            d = np.where(defined, 2 * fg[..., 0] / (fg[..., 1] + fg[..., 2]), np.nan)
        tiles = defined.any(axis=1)
        per_tile = np.nansum(d[tiles], axis=1) / defined[tiles].sum(axis=1)
        per_class = {}
        for c in range(1, k):
            col = d[defined[:, c - 1], c - 1]
            per_class[str(c)] = float(col.mean()) if col.size else None
        pooled = fg.sum(axis=(0, 1))
        denom = pooled[1] + pooled[2]
        return {
            "dice": float(per_tile.mean()) if per_tile.size else float("nan"),
            "variant": VARIANT,
            "micro_dice": float(2 * pooled[0] / denom) if denom > 0 else float("nan"),
            "per_class_dice": per_class,
        }
