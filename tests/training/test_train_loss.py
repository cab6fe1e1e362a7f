"""DINOLoss and center update against an independent float64 computation (per-sample Python loops)."""

import math

import numpy as np
import pytest
import torch

from pathfm.training.losses.dino import DINOLoss


def _reference_loss(
    student: np.ndarray,
    teacher: np.ndarray,
    center: np.ndarray,
    ncrops: int,
    teacher_temp: float,
    student_temp: float,
) -> float:
    """Caron et al. 2021 eq. (1)+(3), written per sample and per pair with math.exp/log."""
    b = teacher.shape[0] // 2
    k = teacher.shape[1]
    pair_losses = []
    for iq in range(2):
        for v in range(ncrops):
            if v == iq:
                continue
            per_sample = []
            for i in range(b):
                t_row = teacher[iq * b + i]
                s_row = student[v * b + i]
                t_logits = [(t_row[j] - center[j]) / teacher_temp for j in range(k)]
                t_max = max(t_logits)
                t_den = sum(math.exp(x - t_max) for x in t_logits)
                q = [math.exp(x - t_max) / t_den for x in t_logits]
                s_logits = [s_row[j] / student_temp for j in range(k)]
                s_max = max(s_logits)
                log_z = s_max + math.log(sum(math.exp(x - s_max) for x in s_logits))
                per_sample.append(-sum(q[j] * (s_logits[j] - log_z) for j in range(k)))
            pair_losses.append(sum(per_sample) / b)
    return sum(pair_losses) / len(pair_losses)


@pytest.mark.parametrize(
    "batch,n_local,out_dim",
    [(1, 0, 3), (2, 1, 5), (3, 2, 7), (4, 4, 16), (2, 8, 11)],
)
def test_loss_matches_reference(batch, n_local, out_dim):
    gen = torch.Generator().manual_seed(batch * 100 + n_local * 10 + out_dim)
    ncrops = 2 + n_local
    student = torch.randn(ncrops * batch, out_dim, generator=gen, dtype=torch.float64) * 3
    teacher = torch.randn(2 * batch, out_dim, generator=gen, dtype=torch.float64) * 3
    center = torch.randn(1, out_dim, generator=gen, dtype=torch.float64)
    loss_fn = DINOLoss(out_dim, ncrops, student_temp=0.1, center_momentum=0.9)
    loss_fn.center.copy_(center)
    got = loss_fn(student, teacher, teacher_temp=0.05).item()
    want = _reference_loss(student.numpy(), teacher.numpy(), center[0].numpy(), ncrops, 0.05, 0.1)
    # the module computes in float32
    assert got == pytest.approx(want, rel=1e-5, abs=1e-5)


def test_loss_hand_worked_value():
    # B=1, 2 global crops only, K=2, zero center: teacher view 0 -> uniform q=(.5,.5) when logits equal,
    # student view 1 logits (0, 0) -> log p = log .5; pair (0,1) and (1,0) both give log 2.
    loss_fn = DINOLoss(2, 2)
    student = torch.zeros(2, 2)
    teacher = torch.zeros(2, 2)
    assert loss_fn(student, teacher, 0.04).item() == pytest.approx(math.log(2), abs=1e-7)
    # teacher one-hot on class 0 (large margin), student view logits (0.1, 0) / 0.1 = (1, 0):
    # CE = -log softmax(1, 0)[0] = log(1 + e^-1)
    teacher = torch.tensor([[10.0, 0.0], [10.0, 0.0]])
    student = torch.tensor([[0.1, 0.0], [0.1, 0.0]])
    assert loss_fn(student, teacher, 0.04).item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)


def test_loss_has_no_gradient_to_teacher_and_gradient_to_student():
    loss_fn = DINOLoss(8, 4)
    student = torch.randn(4 * 3, 8, requires_grad=True)
    teacher = torch.randn(2 * 3, 8, requires_grad=True)
    loss_fn(student, teacher, 0.04).backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_center_update_is_ema_of_mean():
    loss_fn = DINOLoss(4, 2, center_momentum=0.9)
    loss_fn.center.fill_(1.0)
    rows = torch.tensor([[0.0, 2.0, 4.0, 6.0], [2.0, 2.0, 0.0, 6.0]])
    loss_fn.update_center(rows.sum(0, keepdim=True), rows.shape[0])
    # 0.9 * 1 + 0.1 * mean = 0.9 + 0.1 * (1, 2, 2, 6)
    torch.testing.assert_close(loss_fn.center, torch.tensor([[1.0, 1.1, 1.1, 1.5]]))
    assert "center" in loss_fn.state_dict()


def test_loss_rejects_bad_shapes():
    loss_fn = DINOLoss(8, 3)
    with pytest.raises(ValueError, match="out_dim=8"):
        loss_fn(torch.zeros(6, 7), torch.zeros(4, 7), 0.04)
    with pytest.raises(ValueError, match="ncrops=3"):
        loss_fn(torch.zeros(7, 8), torch.zeros(4, 8), 0.04)
    with pytest.raises(ValueError):
        DINOLoss(8, 1)


def _reference_sinkhorn(teacher: np.ndarray, temp: float, iterations: int = 3) -> np.ndarray:
    """SwAV / DINOv2 Sinkhorn-Knopp in float64 numpy: prototypes get mass 1/K, samples 1/B, 3 rounds."""
    q = np.exp(teacher / temp).T  # (K, B)
    k, b = q.shape
    q /= q.sum()
    for _ in range(iterations):
        q /= q.sum(axis=1, keepdims=True) * k
        q /= q.sum(axis=0, keepdims=True) * b
    return (q * b).T


def test_sinkhorn_knopp_centering_targets_and_loss():
    rng = np.random.default_rng(3)
    b, k, ncrops = 4, 6, 4
    student = rng.normal(size=(ncrops * b, k))
    teacher = rng.normal(size=(2 * b, k))
    loss_fn = DINOLoss(k, ncrops, student_temp=0.1, centering="sinkhorn_knopp")
    loss_fn.center.fill_(5.0)  # ignored by Sinkhorn-Knopp targets
    targets = _reference_sinkhorn(teacher, 0.05)
    got = loss_fn.teacher_probs(torch.tensor(teacher, dtype=torch.float32), 0.05)
    np.testing.assert_allclose(got.numpy(), targets, rtol=1e-5, atol=1e-7)
    # the loss is DINO's cross-entropy with these targets: the reference with log(targets) as logits at T = 1
    want = _reference_loss(student, np.log(targets), np.zeros(k), ncrops, 1.0, 0.1)
    loss = loss_fn(torch.tensor(student, dtype=torch.float32), torch.tensor(teacher, dtype=torch.float32), 0.05)
    assert float(loss) == pytest.approx(want, rel=1e-5)
    with pytest.raises(ValueError, match="centering must be one of"):
        DINOLoss(k, ncrops, centering="mean")
