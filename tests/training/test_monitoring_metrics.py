"""Monitors checked on hand-worked examples (RankMe, off-diagonal correlation, entropies, collapse check)."""

import math

import pytest
import torch

from pathfm.training.monitoring import (
    check_collapse,
    entropy,
    offdiagonal_correlation,
    rankme,
    teacher_entropy,
)


@pytest.mark.parametrize("d", [1, 4, 16])
def test_rankme_identity_is_dimension(d: int) -> None:
    # s = (1, ..., 1): p_k = 1/d, entropy log d, exp -> d.
    assert rankme(torch.eye(d)) == pytest.approx(d, rel=1e-5)


def test_rankme_rank_one_is_one() -> None:
    u = torch.tensor([[1.0], [2.0], [-3.0], [0.5], [4.0]])
    v = torch.tensor([[0.3, -1.0, 2.0, 0.7]])
    # s = (||u|| ||v||, 0, 0, 0): p = (1 + eps, eps, eps, eps) -> exp(~3 * 1.6e-6) ~ 1.
    assert rankme(u @ v) == pytest.approx(1.0, abs=1e-4)


def test_rankme_two_singular_values_hand_worked() -> None:
    # diag(3, 1): p = (3/4, 1/4); exp(H) = (3/4)^(-3/4) * (1/4)^(-1/4) = 1.75477...
    expected = 0.75**-0.75 * 0.25**-0.25
    assert rankme(torch.tensor([[3.0, 0.0], [0.0, 1.0]])) == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx(1.75477, abs=1e-5)


def test_rankme_invariant_to_rotation_and_scale_and_bounded() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 8, generator=gen) * torch.linspace(0.1, 3.0, 8)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=gen))
    r = rankme(x)
    assert rankme(x @ q) == pytest.approx(r, rel=1e-6)
    assert rankme(7.5 * x) == pytest.approx(r, rel=1e-6)
    assert 1.0 <= r <= 8.0
    # Fewer rows than columns: at most N.
    assert rankme(torch.eye(3, 5)) == pytest.approx(3.0, rel=1e-5)


def test_rankme_bad_input() -> None:
    with pytest.raises(ValueError, match="2-D"):
        rankme(torch.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        rankme(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match="zero"):
        rankme(torch.zeros(4, 3))


def test_offdiagonal_correlation_hand_worked() -> None:
    a = torch.tensor([1.0, -1.0, 1.0, -1.0])
    b = torch.tensor([1.0, 1.0, -1.0, -1.0])
    # a, b orthogonal and zero-mean: corr 0.
    assert offdiagonal_correlation(torch.stack([a, b], dim=1)) == pytest.approx(0.0, abs=1e-12)
    # c = a + b: corr(a, c) = corr(b, c) = 1/sqrt(2); mean over 6 off-diagonal entries = 2 * sqrt(2) / 6.
    x = torch.stack([a, b, a + b], dim=1)
    assert offdiagonal_correlation(x) == pytest.approx(2 * math.sqrt(2) / 6, rel=1e-9)
    # Perfectly (anti-)correlated columns: 1.
    t = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert offdiagonal_correlation(torch.stack([t, 2 * t + 1, -t], dim=1)) == pytest.approx(1.0, rel=1e-9)


def test_offdiagonal_correlation_constant_column_counts_zero() -> None:
    a = torch.tensor([1.0, -1.0, 1.0, -1.0])
    x = torch.stack([a, -a, torch.full((4,), 5.0)], dim=1)
    # Only the (a, -a) pair is correlated: 2 of 6 entries are 1.
    assert offdiagonal_correlation(x) == pytest.approx(2 / 6, rel=1e-9)
    with pytest.raises(ValueError, match="2 dimensions"):
        offdiagonal_correlation(torch.ones(4, 1))


def test_entropy_hand_worked() -> None:
    probs = torch.tensor([[0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    expected = torch.tensor([math.log(2), 0.0, math.log(4)])
    torch.testing.assert_close(entropy(probs), expected)
    torch.testing.assert_close(entropy(probs.T, dim=0), expected)
    with pytest.raises(ValueError, match="non-negative"):
        entropy(torch.tensor([1.5, -0.5]))


def test_teacher_entropy_hand_worked() -> None:
    # softmax([ln 3, 0]) = (3/4, 1/4): H = -(3/4 ln 3/4 + 1/4 ln 1/4).
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    logits = torch.tensor([[math.log(3.0), 0.0]], dtype=torch.float64)
    assert teacher_entropy(logits, None, 1.0) == pytest.approx(h, rel=1e-9)
    # Same distribution from temperature 0.5 on half the logits.
    assert teacher_entropy(logits / 2, None, 0.5) == pytest.approx(h, rel=1e-9)
    # Centering with the row itself gives the uniform distribution: log K.
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    assert teacher_entropy(logits, logits[0], 0.04) == pytest.approx(math.log(4), rel=1e-9)
    # Very low temperature on distinct logits -> one-hot -> ~0.
    assert teacher_entropy(logits, None, 1e-3) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="center has 3"):
        teacher_entropy(logits, torch.zeros(3), 0.04)
    with pytest.raises(ValueError, match="teacher_temp"):
        teacher_entropy(logits, None, 0.0)


def test_check_collapse_modes() -> None:
    k = 65536
    h_max = math.log(k)
    assert check_collapse(0.5 * h_max, k) is None
    low = check_collapse(0.01 * h_max, k)
    assert low is not None and "one-dimension collapse" in low
    high = check_collapse(0.99 * h_max, k)
    assert high is not None and "uniform collapse" in high
    assert "not finite" in check_collapse(float("nan"), k)
    with pytest.raises(ValueError, match="out_dim"):
        check_collapse(1.0, 1)
