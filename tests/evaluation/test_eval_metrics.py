"""The `evaluate` metric scripts against scikit-learn (randomised) and hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pathfm.evaluation.scoring import classification_scores, fast_balanced_accuracy, load_metric
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score


def _random_case(seed: int, k: int, n: int, drop_class: bool):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    if drop_class:
        y[y == k - 1] = 0  # class k-1 absent from the references
    p = np.where(rng.random(n) < 0.5, y, rng.integers(0, k, n))
    scores = rng.random((n, k))
    scores /= scores.sum(axis=1, keepdims=True)
    return y, p, scores


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [2, 3, 9])
def test_balanced_accuracy_matches_sklearn(seed: int, k: int) -> None:
    y, p, _ = _random_case(seed, k, 97, drop_class=False)
    got = load_metric("balanced_accuracy").compute(predictions=p, references=y, labels=list(range(k)))
    assert got["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, p), abs=1e-12)
    assert fast_balanced_accuracy(torch.from_numpy(y), torch.from_numpy(p), k) == pytest.approx(
        got["balanced_accuracy"], abs=1e-12
    )


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [2, 4, 9])
def test_macro_f1_matches_sklearn(seed: int, k: int) -> None:
    y, p, _ = _random_case(seed, k, 83, drop_class=seed % 2 == 1)
    present = sorted(set(y) | set(p))
    got = load_metric("macro_f1").compute(predictions=p, references=y, labels=list(range(k)))
    assert got["f1"] == pytest.approx(f1_score(y, p, labels=present, average="macro"), abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [2, 3, 9])
def test_auroc_matches_sklearn(seed: int, k: int) -> None:
    y, _, scores = _random_case(seed, k, 120, drop_class=False)
    scores = np.round(scores, 2)  # ties, handled as one half
    got = load_metric("auroc").compute(predictions=scores, references=y, labels=list(range(k)))
    if k == 2:
        expected = roc_auc_score(y, scores[:, 1])
    else:
        expected = np.mean([roc_auc_score(y == c, scores[:, c]) for c in range(k)])
    assert got["roc_auc"] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_dice_matches_sklearn_f1_on_pixels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    masks_ref = [rng.integers(0, 4, size) for size in (50, 37, 64)]
    masks_pred = [np.where(rng.random(len(m)) < 0.6, m, rng.integers(0, 4, len(m))) for m in masks_ref]
    metric = load_metric("dice")
    for p, r in zip(masks_pred, masks_ref):  # one image per batch
        metric.add_batch(predictions=[p], references=[r])
    got = metric.compute(labels=[0, 1, 2, 3])
    ref, pred = np.concatenate(masks_ref), np.concatenate(masks_pred)
    assert got["dice"] == pytest.approx(f1_score(ref, pred, labels=[0, 1, 2, 3], average="macro"), abs=1e-12)


def test_hand_worked_binary() -> None:
    # references 0 0 0 1 1, predictions 0 1 0 1 0: recall(0) = 2/3, recall(1) = 1/2 -> 7/12
    # F1(0): tp 2, fp 1, fn 1 -> 4/6; F1(1): tp 1, fp 1, fn 1 -> 2/4; macro 7/12
    # AUROC with scores for class 1: 0.1 0.4 0.35 0.8 0.4 -> pairs (pos, neg): 0.8 beats all 3; 0.4 beats
    # 0.1 and 0.35, ties 0.4 -> (3 + 2 + 0.5) / 6 = 11/12
    y, p = [0, 0, 0, 1, 1], [0, 1, 0, 1, 0]
    s1 = np.array([0.1, 0.4, 0.35, 0.8, 0.4])
    bacc = load_metric("balanced_accuracy").compute(predictions=p, references=y)
    assert bacc["balanced_accuracy"] == pytest.approx(7 / 12)
    assert load_metric("macro_f1").compute(predictions=p, references=y)["f1"] == pytest.approx(7 / 12)
    auroc = load_metric("auroc").compute(predictions=np.stack([1 - s1, s1], 1), references=y)
    assert auroc["roc_auc"] == pytest.approx(11 / 12)


def test_hand_worked_dice() -> None:
    # image 1: ref [0 0 1 1], pred [0 1 1 1]; image 2: ref [1 2], pred [1 2]
    # class 0: |P|=1 |G|=2 inter 1 -> 2/3; class 1: |P|=4 |G|=3 inter 3 -> 6/7; class 2: 1; class 3 absent -> skip
    got = load_metric("dice").compute(
        predictions=[[0, 1, 1, 1], [1, 2]], references=[[0, 0, 1, 1], [1, 2]], labels=[0, 1, 2, 3]
    )
    assert got["dice"] == pytest.approx((2 / 3 + 6 / 7 + 1) / 3)
    assert got["per_class_dice"]["3"] is None
    ignored = load_metric("dice").compute(
        predictions=[[0, 1, 1, 1]], references=[[0, 255, 1, 1]], ignore_index=255
    )
    assert ignored["dice"] == pytest.approx(1.0)


def test_missing_class_and_batches_give_the_same_result() -> None:
    # 3-class task, class 2 absent from references. Batch 1 has only class 0 in its references.
    y = np.array([0, 0, 0, 1, 1, 0, 1])
    p = np.array([0, 2, 0, 1, 0, 0, 1])
    whole = load_metric("balanced_accuracy").compute(predictions=p, references=y, labels=[0, 1, 2])
    metric = load_metric("balanced_accuracy")
    metric.add_batch(predictions=p[:3], references=y[:3])
    metric.add_batch(predictions=p[3:], references=y[3:])
    batched = metric.compute(labels=[0, 1, 2])
    # recall(0) = 3/4, recall(1) = 2/3, class 2 has no reference: (3/4 + 2/3) / 2
    assert whole["balanced_accuracy"] == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert batched == whole
    assert whole["per_class_recall"]["2"] is None
    # macro F1 keeps class 2 (predicted once, never true: F1 = 0): (F1_0 + F1_1 + 0) / 3
    f1 = load_metric("macro_f1").compute(predictions=p, references=y, labels=[0, 1, 2])
    # class 0: tp 3, fp 1 (row 4), fn 1 (row 1); class 1: tp 2, fp 0, fn 1 (row 4)
    f1_0, f1_1 = 2 * 3 / (2 * 3 + 1 + 1), 2 * 2 / (2 * 2 + 0 + 1)
    assert f1["f1"] == pytest.approx((f1_0 + f1_1 + 0) / 3)
    # multiclass AUROC with class 2 missing from the references averages classes 0 and 1 only
    scores = np.eye(3)[p] * 0.8 + 0.1
    got = load_metric("auroc").compute(predictions=scores, references=y, labels=[0, 1, 2])
    expected = np.mean([roc_auc_score(y == c, scores[:, c]) for c in (0, 1)])
    assert got["roc_auc"] == pytest.approx(expected)


def test_labels_outside_the_label_set_raise() -> None:
    with pytest.raises(ValueError, match="not in labels"):
        load_metric("balanced_accuracy").compute(predictions=[0, 3], references=[0, 1], labels=[0, 1])
    with pytest.raises(ValueError, match="not in labels"):
        load_metric("macro_f1").compute(predictions=[0, 1], references=[0, 5], labels=[0, 1])


def test_classification_scores_matches_sklearn() -> None:
    y, p, scores = _random_case(11, 4, 200, drop_class=False)
    got = classification_scores(y, p, scores, 4)
    assert got["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, p))
    assert got["f1_macro"] == pytest.approx(f1_score(y, p, average="macro"))
    assert got["auroc"] == pytest.approx(roc_auc_score(y, scores, multi_class="ovr"))
