"""Schedules: values worked out by hand from DINO's cosine_scheduler formula."""

import math

import numpy as np
import pytest

from pathfm.training.schedules import cosine_scheduler, epoch_of_step, teacher_temp_schedule


def test_cosine_scheduler_warmup_and_decay_values():
    s = cosine_scheduler(1.0, 0.0, total_steps=6, warmup_steps=2, start_warmup_value=0.5)
    # warm-up: linspace(0.5, 1, 2) = 0.5, 1; then n = 4: 0.5 * (1 + cos(pi * i / 4)), i = 0..3
    want = [0.5, 1.0, 1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4))]
    np.testing.assert_allclose(s, want, rtol=0, atol=1e-12)


def test_cosine_scheduler_momentum_and_weight_decay_endpoints():
    m = cosine_scheduler(0.996, 1.0, 1000)
    assert m[0] == pytest.approx(0.996) and m[-1] == pytest.approx(1.0, abs=1e-7)
    assert np.all(np.diff(m) >= 0)
    wd = cosine_scheduler(0.04, 0.4, 100)
    assert wd[0] == pytest.approx(0.04) and wd[50] == pytest.approx(0.22)


def test_teacher_temp_warmup_then_constant():
    t = teacher_temp_schedule(0.04, 0.07, 4, 6)
    np.testing.assert_allclose(t, [0.04, 0.05, 0.06, 0.07, 0.07, 0.07], atol=1e-12)
    np.testing.assert_allclose(teacher_temp_schedule(0.04, 0.04, 0, 3), [0.04] * 3)


def test_epoch_of_step_and_errors():
    assert [epoch_of_step(s, 3) for s in range(7)] == [0, 0, 0, 1, 1, 1, 2]
    with pytest.raises(ValueError):
        epoch_of_step(1, 0)
    with pytest.raises(ValueError):
        cosine_scheduler(1, 0, 0)


def test_teacher_temp_per_epoch_as_the_references():
    from types import SimpleNamespace

    from pathfm.training.schedules import run_teacher_temp

    args = SimpleNamespace(
        warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=3, teacher_temp_per_epoch=True
    )
    # upstream per epoch: linspace(0.04, 0.07, 3) then 0.07; each value held for the 3 steps of its epoch
    want = [0.04] * 3 + [0.055] * 3 + [0.07] * 3 + [0.07]
    np.testing.assert_allclose(run_teacher_temp(args, 10, 3), want, atol=1e-12)
    args.teacher_temp_per_epoch = False  # default: the same ramp per optimizer step (9 warm-up steps)
    np.testing.assert_allclose(run_teacher_temp(args, 10, 3)[[0, 8, 9]], [0.04, 0.07, 0.07], atol=1e-12)
