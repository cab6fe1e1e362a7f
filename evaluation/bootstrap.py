"""Paired bootstrap confidence interval of a difference in balanced accuracy between two models.

Both models are scored on the same test samples; each bootstrap replicate draws the test samples with
replacement (seeded) and recomputes both models' balanced accuracy on that same draw, so the interval
reflects how much the gap depends on which samples happened to be tested (percentile interval, Efron &
Tibshirani 1993, ch. 13). With groups, whole groups are drawn (a cluster bootstrap), since samples of one
patient are not independent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def weighted_balanced_accuracy(
    y: np.ndarray, pred: np.ndarray, weights: np.ndarray, num_classes: int
) -> np.ndarray:
    """Balanced accuracy under sample weights (a bootstrap replicate = how often each sample was drawn).

    Args:
        y: (N,) int64 reference classes.
        pred: (N,) int64 predicted classes.
        weights: (B, N) non-negative weights, one row per replicate.
        num_classes: K.

    Returns:
        (B,) float64; classes with zero weight in a replicate are left out of its mean (as the metric script).
    """
    correct = (pred == y).astype(np.float64)
    onehot = np.eye(num_classes)[y]  # (N, K)
    support = weights @ onehot  # (B, K)
    hits = weights @ (onehot * correct[:, None])
    present = support > 0
    recall = np.where(present, hits / np.where(present, support, 1.0), 0.0)
    return recall.sum(axis=1) / present.sum(axis=1)


def paired_bootstrap(
    y: Sequence[int],
    pred_a: Sequence[int],
    pred_b: Sequence[int],
    num_classes: int,
    groups: Sequence[str] | None = None,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Balanced accuracy of A minus B on the test samples, with a paired percentile bootstrap interval.

    Args:
        y: (N,) reference classes.
        pred_a, pred_b: (N,) predicted classes of models A and B for the same samples, same order.
        num_classes: K.
        groups: (N,) group of each sample: resample whole groups (cluster bootstrap); None: samples.
        n_boot: replicates.
        confidence: interval level.
        seed: generator seed (same seed, same interval).

    Returns:
        ``{"a", "b", "difference", "ci_low", "ci_high", "confidence", "n_boot", "n", "unit",
        "excludes_zero"}`` (a, b and difference on the full test set).

    Raises:
        ValueError: lengths differ or the test set is empty.
    """
    y, pa, pb = (np.asarray(v, dtype=np.int64) for v in (y, pred_a, pred_b))
    if not len(y) or len(pa) != len(y) or len(pb) != len(y):
        raise ValueError(f"bootstrap needs equal, non-empty lengths; got {len(y)}, {len(pa)}, {len(pb)}")
    diff, unit = [], ""
    for w, unit in _replicate_weights(len(y), groups, n_boot, seed):
        diff.append(
            weighted_balanced_accuracy(y, pa, w, num_classes)
            - weighted_balanced_accuracy(y, pb, w, num_classes)
        )
    full = np.ones((1, len(y)))
    a = float(weighted_balanced_accuracy(y, pa, full, num_classes)[0])
    b = float(weighted_balanced_accuracy(y, pb, full, num_classes)[0])
    return _interval(a, b, np.concatenate(diff), confidence, n_boot, len(y), unit)


def paired_mean_bootstrap(
    score_a: Sequence[float],
    score_b: Sequence[float],
    groups: Sequence | None = None,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Mean per-sample score of A minus that of B (e.g. retrieval hits 0/1), with a paired percentile
    bootstrap interval; same resampling as :func:`paired_bootstrap`.

    Args:
        score_a, score_b: (N,) per-sample scores of models A and B on the same samples, same order.
        groups: (N,) group of each sample (e.g. the gallery tile several queries were made from): whole
            groups are resampled; None: samples.
        n_boot, confidence, seed: as :func:`paired_bootstrap`.

    Returns:
        :func:`paired_bootstrap`'s dict, with means in place of balanced accuracies.

    Raises:
        ValueError: lengths differ or there are no samples.
    """
    sa, sb = np.asarray(score_a, dtype=np.float64), np.asarray(score_b, dtype=np.float64)
    if not len(sa) or len(sb) != len(sa):
        raise ValueError(f"bootstrap needs equal, non-empty lengths; got {len(sa)}, {len(sb)}")
    diff, unit = [], ""
    for w, unit in _replicate_weights(len(sa), groups, n_boot, seed):
        diff.append((w @ (sa - sb)) / w.sum(axis=1))
    diff = np.concatenate(diff)
    return _interval(float(sa.mean()), float(sb.mean()), diff, confidence, n_boot, len(sa), unit)


def _replicate_weights(n: int, groups: Sequence | None, n_boot: int, seed: int):
    """Yield ``(weights (chunk, n), unit)``: how often each sample is drawn in each replicate (whole groups
    drawn with replacement when ``groups`` is given), in chunks that keep the matrix small."""
    rng = np.random.default_rng(seed)
    if groups is None:
        gid, n_units, unit = np.arange(n), n, "test samples"
    else:
        _, gid = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
        n_units, unit = int(gid.max()) + 1, "groups (cluster bootstrap)"
    for start in range(0, n_boot, 256):
        draws = rng.integers(0, n_units, (min(256, n_boot - start), n_units))
        unit_weights = np.stack([np.bincount(d, minlength=n_units) for d in draws]).astype(np.float64)
        yield unit_weights[:, gid], unit  # a sample weighs as often as its group (or itself) was drawn


def _interval(
    a: float, b: float, diff: np.ndarray, confidence: float, n_boot: int, n: int, unit: str
) -> dict:
    alpha = (1 - confidence) / 2
    low, high = np.quantile(diff, [alpha, 1 - alpha])
    return {
        "a": a,
        "b": b,
        "difference": a - b,
        "ci_low": float(low),
        "ci_high": float(high),
        "confidence": confidence,
        "n_boot": n_boot,
        "n": n,
        "unit": unit,
        "excludes_zero": bool(low > 0 or high < 0),
    }
