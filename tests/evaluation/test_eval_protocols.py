"""eva-linear protocol settings and warm-up; the k-NN probe's k clip warning."""

from __future__ import annotations

import inspect

import pytest
import torch
from pathfm.evaluation.knn_probe import knn_predict
from pathfm.evaluation.linear_head import train_linear_head
from pathfm.evaluation.protocol import EVA_LINEAR, PROTOCOLS, LinearProbeConfig


def test_eva_linear_uses_torch_defaults_that_eva_leaves_implicit() -> None:
    # eva's configs (kaiko-ai/eva @73b61a79, configs/vision/pathology/offline/classification/bach.yaml) give
    # AdamW only lr 0.0003 and HeadModule defaults lr_scheduler to torch's ConstantLR; eva's global seed is 42.
    adamw = inspect.signature(torch.optim.AdamW).parameters
    constant = inspect.signature(torch.optim.lr_scheduler.ConstantLR).parameters
    assert EVA_LINEAR.weight_decay == adamw["weight_decay"].default == 0.01
    assert EVA_LINEAR.warmup_factor == pytest.approx(constant["factor"].default)
    assert EVA_LINEAR.warmup_epochs == constant["total_iters"].default == 5
    assert (EVA_LINEAR.learning_rate, EVA_LINEAR.batch_size, EVA_LINEAR.max_steps, EVA_LINEAR.n_runs) == (
        3e-4,
        256,
        12_500,
        5,
    )
    assert EVA_LINEAR.first_seed == 42 and set(PROTOCOLS) == {"pathfm-linear-v1", "eva-linear"}


def _data(n: int = 512, d: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (n,), generator=g)
    return torch.randn(3, d, generator=g)[y] + torch.randn(n, d, generator=g), y


def test_warmup_epochs_train_at_the_scaled_rate() -> None:
    x, y = _data()
    # 512 samples, batch 256: 2 steps per epoch; 10 steps = the 5 warm-up epochs only
    eva = train_linear_head(
        x,
        y,
        x,
        y,
        3,
        LinearProbeConfig(
            weight_decay=0.01, max_steps=10, warmup_epochs=5, warmup_factor=1 / 3, patience_fraction=1.0
        ),
        42,
    )
    plain = train_linear_head(
        x,
        y,
        x,
        y,
        3,
        LinearProbeConfig(learning_rate=1e-4, weight_decay=0.01, max_steps=10, patience_fraction=1.0),
        42,
    )
    no_warmup = train_linear_head(
        x, y, x, y, 3, LinearProbeConfig(weight_decay=0.01, max_steps=10, patience_fraction=1.0), 42
    )
    assert eva.epochs == plain.epochs == 5
    torch.testing.assert_close(eva.head.weight, plain.head.weight)
    assert not torch.allclose(eva.head.weight, no_warmup.head.weight)


def test_knn_k_is_clipped_with_a_warning() -> None:
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.2]])
    with pytest.warns(UserWarning, match=r"k=20 but the training split holds 3 embeddings; using k=3"):
        pred, scores = knn_predict(train, torch.tensor([0, 1, 0]), torch.tensor([[1.0, 0.1]]), 2)
    assert pred.tolist() == [0] and scores.shape == (1, 2)


def test_linear_probe_comparison_report_with_cis(tmp_path) -> None:
    import json

    import numpy as np
    from pathfm.evaluation.linear_probe import _write_comparison
    from pathfm.evaluation.probe_runner import TaskOutcome, summarize

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    good = np.where(rng.random(200) < 0.9, y, 1 - y)  # 90 % right
    noise = rng.integers(0, 2, 200)

    def outcome(pred):
        bacc = summarize([0.9, 0.88])
        res = {
            "task": {"classes": ["a", "b"]},
            "linear_probe": {"test": {"balanced_accuracy": bacc}},
            "knn_probe": {"test": {"balanced_accuracy": 0.8}},
        }
        return TaskOutcome(res, None, 4, predictions={"test": pred}, targets={"test": y})

    outcomes = {
        "good": {"t": outcome(good)},
        "noise": {"t": outcome(noise)},
        "good copy": {"t": outcome(good)},
    }
    path = _write_comparison(outcomes, ["t"], tmp_path)
    pairs = json.loads((tmp_path / "comparison_ci.json").read_text())["t"]
    by = {(p["model_a"], p["model_b"]): p for p in pairs}
    assert by[("good", "noise")]["excludes_zero"] and by[("good", "noise")]["ci_low"] > 0.2
    assert by[("good", "good copy")]["ci_low"] <= 0 <= by[("good", "good copy")]["ci_high"]
    assert (tmp_path / "comparison_t.png").is_file() and "| good | noise |" in path.read_text()
