"""Linear head, k-NN, protocol bookkeeping, head export: exact values and determinism."""

from __future__ import annotations

import math

import pytest
import torch
from pathfm.evaluation.head_export import export_weights
from pathfm.evaluation.knn_probe import knn_predict
from pathfm.evaluation.linear_head import linear_head_gradients, make_head, predict_proba, train_linear_head
from pathfm.evaluation.protocol import PROTOCOL_NAME, LinearProbeConfig, derive_schedule


def _blobs(n: int, d: int, k: int, seed: int, noise: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, d, generator=torch.Generator().manual_seed(123)) * 2
    y = torch.randint(0, k, (n,), generator=g)
    return centers[y] + noise * torch.randn(n, d, generator=g), y


def test_protocol_name_and_defaults() -> None:
    cfg = LinearProbeConfig()
    assert PROTOCOL_NAME == "pathfm-linear-v1"
    assert (cfg.learning_rate, cfg.weight_decay, cfg.batch_size, cfg.max_steps, cfg.n_runs) == (
        3e-4,
        0.0,
        256,
        12_500,
        5,
    )


@pytest.mark.parametrize(
    ("n_train", "steps_per_epoch", "max_epochs", "patience"),
    [
        (100_000, 391, 32, 7),
        (268, 2, 6250, 1250),
        (262_144, 1024, 13, 3),
        (2_175, 9, 1389, 278),
        (10, 1, 12_500, 2500),
    ],
)
def test_schedule_is_derived_from_the_split_size(
    n_train: int, steps_per_epoch: int, max_epochs: int, patience: int
) -> None:
    # steps/epoch = ceil(n / 256); epochs = ceil(12500 / steps); patience = ceil(0.2 * epochs)
    s = derive_schedule(n_train, LinearProbeConfig())
    assert (s.steps_per_epoch, s.max_epochs, s.patience) == (steps_per_epoch, max_epochs, patience)
    assert s.max_epochs == math.ceil(12_500 / math.ceil(n_train / 256))


@pytest.mark.parametrize("binary", [False, True])
def test_closed_form_gradients_equal_autograd(binary: bool) -> None:
    x, y = _blobs(64, 16, 2 if binary else 5, seed=0)
    head = make_head(16, 2 if binary else 5, seed=3)
    logits = head(x)
    if binary:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], y.float())
    else:
        loss = torch.nn.functional.cross_entropy(logits, y)
    loss.backward()
    gw, gb = linear_head_gradients(head, x, y.float() if binary else y, binary)
    torch.testing.assert_close(gw, head.weight.grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(gb, head.bias.grad, atol=1e-6, rtol=1e-5)


def test_same_seed_same_numbers_twice_and_seeds_differ() -> None:
    x, y = _blobs(600, 32, 4, seed=1, noise=4.0)
    vx, vy = _blobs(200, 32, 4, seed=2, noise=4.0)
    cfg = LinearProbeConfig(max_steps=300)
    a = train_linear_head(x, y, vx, vy, 4, cfg, seed=0)
    b = train_linear_head(x, y, vx, vy, 4, cfg, seed=0)
    c = train_linear_head(x, y, vx, vy, 4, cfg, seed=1)
    assert (
        torch.equal(a.head.weight, b.head.weight) and a.history == b.history and a.best_epoch == b.best_epoch
    )
    assert not torch.equal(a.head.weight, c.head.weight)
    assert a.best_val_balanced_accuracy > 0.6  # well above chance (0.25) on separable blobs


def test_early_stopping_keeps_the_best_epoch() -> None:
    x, y = _blobs(300, 8, 3, seed=4, noise=0.3)  # trivially separable: validation hits 1.0 early
    vx, vy = _blobs(100, 8, 3, seed=5, noise=0.3)
    cfg = LinearProbeConfig(max_steps=2000, patience_fraction=0.1)
    fit = train_linear_head(x, y, vx, vy, 3, cfg, seed=0)
    schedule = derive_schedule(300, cfg)  # 2 steps/epoch, 1000 epochs, patience 100
    assert schedule.patience == 100
    assert fit.stopped_early and fit.best_val_balanced_accuracy == 1.0
    assert fit.epochs == fit.best_epoch + schedule.patience  # no gain for exactly `patience` epochs
    assert fit.history[fit.best_epoch - 1] == max(fit.history)


def test_binary_head_and_export_equivalence() -> None:
    x, y = _blobs(400, 16, 2, seed=6)
    vx, vy = _blobs(100, 16, 2, seed=7)
    fit = train_linear_head(x, y, vx, vy, 2, LinearProbeConfig(max_steps=200), seed=0)
    assert fit.head.out_features == 1
    probs = predict_proba(fit.head, vx, 2)
    weight, bias = export_weights(fit.head, 2)
    assert weight.shape == (2, 16)
    torch.testing.assert_close(torch.softmax(vx @ weight.T + bias, dim=1), probs, atol=1e-6, rtol=1e-5)


def test_knn_hand_worked() -> None:
    # 2-D points; query (1, 0.1) is closest in angle to the class-0 points on the x axis.
    train = torch.tensor([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0], [0.1, 2.0]])
    labels = torch.tensor([0, 0, 1, 1])
    pred, scores = knn_predict(
        train, labels, torch.tensor([[1.0, 0.1], [0.0, 3.0]]), 2, k=3, temperature=0.07
    )
    assert pred.tolist() == [0, 1]
    # query 0: neighbours (cosine) 0.995 (class 0), 0.9997 (class 0), then 0.149 (class 1, [0.1, 2.0])
    q = torch.nn.functional.normalize(torch.tensor([1.0, 0.1]), dim=0)
    sims = torch.nn.functional.normalize(train, dim=1) @ q
    w = (sims / 0.07).exp()
    expected0 = (w[0] + w[1]) / (w[0] + w[1] + w[3])
    assert scores[0, 0].item() == pytest.approx(expected0.item(), rel=1e-5)
    torch.testing.assert_close(scores.sum(dim=1), torch.ones(2))
