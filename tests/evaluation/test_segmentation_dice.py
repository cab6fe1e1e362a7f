"""The segmentation Dice metric script: hand-worked cases and MONAI's DiceMetric on fixed tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pathfm.evaluation.scoring import load_metric


def test_hand_worked_tiles() -> None:
    # K=3. Tile A: ref [0 1 1 2], pred [0 1 2 2]: class 1 |P|=1 |G|=2 inter 1 -> 2/3; class 2 |P|=2 |G|=1
    # inter 1 -> 2/3; tile mean 2/3. Tile B: ref [1 1 1 0], pred [1 2 2 0]: class 1 -> 2*1/(1+3) = 1/2;
    # class 2 absent from the reference -> skipped although predicted; tile mean 1/2. Tile C: all background
    # reference -> skipped. Leaderboard Dice (2/3 + 1/2) / 2 = 7/12.
    # Micro: inter 1+1+1 = 3, |P| 3+3+2 = 8, |G| 3+3+0 = 6 -> 6/14. Per class: 1 -> (2/3 + 1/2)/2, 2 -> 2/3.
    got = load_metric("segmentation_dice").compute(
        predictions=[[0, 1, 2, 2], [1, 2, 2, 0], [1, 2]],
        references=[[0, 1, 1, 2], [1, 1, 1, 0], [0, 0]],
        num_classes=3,
    )
    assert got["dice"] == pytest.approx(7 / 12)
    assert got["micro_dice"] == pytest.approx(6 / 14)
    assert got["per_class_dice"] == pytest.approx({"1": 7 / 12, "2": 2 / 3})
    assert got["variant"].startswith("monai-mean")


def test_ignored_pixels_are_dropped_from_both_masks() -> None:
    metric = load_metric("segmentation_dice")
    got = metric.compute(predictions=[[1, 2, 1]], references=[[1, 255, 1]], num_classes=3, ignore_index=255)
    assert got["dice"] == pytest.approx(1.0)
    assert got["micro_dice"] == pytest.approx(1.0)
    assert got["per_class_dice"]["2"] is None
    with pytest.raises(ValueError, match="outside 0..2"):
        metric.compute(predictions=[[1, 2, 1]], references=[[1, 255, 1]], num_classes=3)


def test_only_background_gives_nan() -> None:
    got = load_metric("segmentation_dice").compute(predictions=[[0, 1]], references=[[0, 0]], num_classes=2)
    assert np.isnan(got["dice"])
    assert got["per_class_dice"] == {"1": None}


def test_equals_monai_dice_metric_on_fixed_tensors() -> None:
    # Expected values from MONAI 1.6.1 (github.com/Project-MONAI/MONAI, monai/metrics/meandice.py), run
    # outside the project on these exact masks:
    # DiceMetric(include_background=False, reduction="mean" | "mean_batch", ignore_empty=True)
    # called on (one_hot(p), one_hot(r)).
    rng = np.random.default_rng(0)
    k = 5
    preds = rng.integers(0, k, (6, 1, 8, 8))
    refs = rng.integers(0, k, (6, 1, 8, 8))
    refs[1][refs[1] == 3] = 0  # class 3 absent from tile 1
    preds[2] = rng.integers(1, k, (1, 8, 8))
    refs[2] = 0  # all-background reference tile
    refs[3][refs[3] == 2] = 1
    got = load_metric("segmentation_dice").compute(
        predictions=preds.reshape(6, -1).tolist(), references=refs.reshape(6, -1).tolist(), num_classes=k
    )
    assert got["dice"] == pytest.approx(0.18338161706924438, abs=1e-6)
    monai_mean_batch = [0.1708422750234604, 0.16804029047489166, 0.14075106382369995, 0.2177269011735916]
    assert [got["per_class_dice"][str(c)] for c in range(1, k)] == pytest.approx(monai_mean_batch, abs=1e-6)


def test_dice_loss_equals_monai() -> None:
    # MONAI 1.6.1 (monai/losses/dice.py) on these exact tensors, outside the project:
    # DiceLoss(softmax=True, to_onehot_y=True, batch=True)(logits, target[:, None]) = 0.7709546089172363
    from pathfm.evaluation.segmentation.train import dice_loss

    rng = np.random.default_rng(5)
    logits = torch.from_numpy(rng.standard_normal((3, 4, 6, 6)).astype(np.float32))
    target = torch.from_numpy(rng.integers(0, 4, (3, 1, 6, 6)))
    target[target == 2] = 0  # class 2 absent from every tile
    assert float(dice_loss(logits, target[:, 0])) == pytest.approx(0.7709546089172363, abs=1e-6)
    # ignored pixels change nothing when none are marked, and drop out of both sums when they are
    marked = target[:, 0].clone()
    marked[:, 0] = 255
    kept = dice_loss(logits[:, :, 1:], target[:, 0, 1:])
    assert float(dice_loss(logits, marked, ignore_index=255)) == pytest.approx(float(kept), abs=1e-6)
