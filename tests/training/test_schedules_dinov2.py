"""pathfm's schedules against DINOv2's ``CosineScheduler`` / ``build_schedulers`` and its lr scaling rule.

Expected values were produced by running ``CosineScheduler`` (dinov2/utils/utils.py) of
facebookresearch/dinov2 at commit b8931f7bf91576930313be2c6d6af376033b35f0 outside pathfm, configured as
dinov2/train/train.py ``build_schedulers`` does with ssl_default_config.yaml values (base_lr 0.004 sqrt-scaled
to a global batch of 64, min_lr 1e-6, weight decay 0.04 -> 0.4, teacher momentum 0.992 -> 1, teacher
temperature 0.04 -> 0.07) on a short run: OFFICIAL_EPOCH_LENGTH 4, 5 epochs, 2 warm-up epochs, 3
teacher-temperature warm-up epochs. DINOv2 warms the teacher temperature up per iteration;
``teacher_temp_schedule`` with warm-up steps = epochs x epoch length gives the same values.
"""

import math

import numpy as np
import pytest

from pathfm.training.schedules import cosine_scheduler, scaled_lr, teacher_temp_schedule

EPOCH, EPOCHS = 4, 5

DINOV2_LR = [
    0.0, 0.00014285714285714287, 0.00028571428571428574, 0.0004285714285714286,
    0.0005714285714285715, 0.0007142857142857144, 0.0008571428571428572, 0.001,
    0.001, 0.0009829799502313896, 0.0009330796891903273, 0.0008536998372026805,
    0.0007502500000000002, 0.0006297801130287093, 0.0005005000000000001, 0.000371219886971291,
    0.00025075000000000016, 0.00014730016279731955, 6.792031080967287e-05, 1.8020049768610437e-05,
]
DINOV2_WD = [
    0.03999999999999998, 0.04221609869287518, 0.04880982706687231, 0.059618825646093776,
    0.07437694101250947, 0.09272077938642143, 0.11419865458735484, 0.13828171004688156,
    0.16437694101250946, 0.19184179629275844, 0.22, 0.2481582037072415,
    0.2756230589874905, 0.30171828995311845, 0.32580134541264516, 0.3472792206135786,
    0.36562305898749053, 0.3803811743539062, 0.39119017293312763, 0.3977839013071248,
]
DINOV2_MOMENTUM = [
    0.992, 0.9920492466376194, 0.9921957739348194, 0.9924359739032466,
    0.9927639320225002, 0.9931715728752538, 0.9936488589908301, 0.9941840380010418,
    0.9947639320225002, 0.995374262139839, 0.996, 0.996625737860161,
    0.9972360679774998, 0.9978159619989582, 0.9983511410091699, 0.9988284271247462,
    0.9992360679774998, 0.9995640260967534, 0.9998042260651806, 0.9999507533623806,
]
DINOV2_TEACHER_TEMP = [
    0.04, 0.04272727272727273, 0.045454545454545456, 0.04818181818181819,
    0.05090909090909091, 0.05363636363636364, 0.056363636363636366, 0.0590909090909091,
    0.06181818181818183, 0.06454545454545454, 0.06727272727272728, 0.07,
    0.07, 0.07, 0.07, 0.07,
    0.07, 0.07, 0.07, 0.07,
]


def test_schedules_equal_dinov2_element_wise():
    total = EPOCHS * EPOCH
    lr = scaled_lr(0.004, 64, "sqrt_wrt_1024")
    np.testing.assert_allclose(cosine_scheduler(lr, 1e-6, total, 2 * EPOCH), DINOV2_LR, rtol=0, atol=1e-15)
    np.testing.assert_allclose(cosine_scheduler(0.04, 0.4, total), DINOV2_WD, rtol=0, atol=1e-15)
    np.testing.assert_allclose(cosine_scheduler(0.992, 1.0, total), DINOV2_MOMENTUM, rtol=0, atol=1e-15)
    temps = teacher_temp_schedule(0.04, 0.07, 3 * EPOCH, total)
    np.testing.assert_allclose(temps, DINOV2_TEACHER_TEMP, rtol=0, atol=1e-15)


def test_scaled_lr_rules():
    assert scaled_lr(0.004, 1024, "sqrt_wrt_1024") == 0.004
    assert scaled_lr(0.004, 256, "sqrt_wrt_1024") == pytest.approx(0.002)
    assert scaled_lr(5e-4, 512) == pytest.approx(1e-3)
    assert scaled_lr(0.004, 64, "sqrt_wrt_1024") == pytest.approx(0.004 * math.sqrt(64 / 1024))
    with pytest.raises(ValueError, match="rule must be"):
        scaled_lr(0.004, 64, "sqrt")
