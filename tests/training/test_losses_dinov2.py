"""DINOv2 losses (Sinkhorn-Knopp, DINO CLS, iBOT, KoLeo) against facebookresearch/dinov2 on fixed inputs.

Expected values were produced by running facebookresearch/dinov2 at commit
b8931f7bf91576930313be2c6d6af376033b35f0 (files dinov2/loss/dino_clstoken_loss.py,
dinov2/loss/ibot_patch_loss.py, dinov2/loss/koleo_loss.py, with the term weighting and teacher-chunk swap of
dinov2/train/ssl_meta_arch.py) outside pathfm, with torch 2.14.1 on CPU, on the inputs of
tests/training/dinov2_inputs.py: B=3 images, K=7 prototypes, 2 local crops, teacher temperature 0.05. The iBOT
Sinkhorn-Knopp reference ran in a 1-process gloo group (upstream's unguarded all-reduce needs one); pathfm's
runs without. The KDE values come from ``KDELoss`` of MedARC-AI/OpenMidnight at commit
f7d5a6457d7f34c0a7be194ed8d0b1199e5360ca (dinov2/loss/kde_loss.py), run the same way.
"""

import math

import pytest
import torch

from pathfm.training.losses.dino_v2 import DINOv2CLSLoss
from pathfm.training.losses.ibot import IBOTPatchLoss, masked_patch_weights
from pathfm.training.losses.kde import kde_loss, kde_per_crop
from pathfm.training.losses.koleo import koleo_loss, koleo_per_crop
from pathfm.training.losses.sinkhorn import sinkhorn_knopp
from tests.training.dinov2_inputs import wave

B, K, N_LOCAL, TEACHER_TEMP, ATOL = 3, 7, 2, 0.05, 1e-6

SK_CLS_SWAPPED = [
    [0.216785312, 0.0263259746, 0.00119645591, 0.00114942738,
     0.209120616, 0.530213177, 0.015209062],
    [0.000599279301, 0.00469749374, 0.322954357, 0.634513497,
     0.0355969332, 0.000212983286, 0.00142550364],
    [0.248498142, 0.388704926, 0.00109446922, 0.00047054654,
     0.31833443, 0.0428160094, 8.14684536e-05],
    [0.0099445032, 0.236537695, 0.419067979, 0.120751783,
     0.194253385, 0.0180804878, 0.00136419095],
    [0.00458617788, 0.00556082278, 0.00253569637, 0.00177167309,
     0.0562129915, 0.289191306, 0.640141249],
    [0.413954675, 0.142085761, 0.00411941204, 0.000272084144,
     0.00487028155, 0.0665853322, 0.368112445],
]
IBOT_SK_TARGETS = [
    [0.0552375056, 0.0826717317, 0.590504229, 0.242346734,
     0.0207304396, 0.00756182801, 0.000947506167],
    [0.000584067195, 0.000147595347, 0.00131457869, 0.00578782754,
     0.0231977273, 0.41958046, 0.549387753],
    [0.0932533443, 0.00216275081, 0.000945639389, 0.00070115237,
     0.00357035524, 0.247205123, 0.652161598],
    [0.0850984603, 0.000982547645, 0.00135709404, 0.0149933537,
     0.22302261, 0.662648559, 0.0118973805],
    [0.000218998903, 0.000984957325, 0.527520537, 0.459120452,
     0.00100608834, 0.000178514718, 0.0109704565],
    [0.716651142, 0.015104983, 0.000702076824, 0.00703477114,
     0.236373469, 0.0239143744, 0.000219152105],
    [0.0202809293, 0.675248981, 0.0191603545, 0.000892938348,
     0.108080581, 0.175907582, 0.000428679981],
    [0.0230154991, 0.526950479, 0.003714066, 0.00651092036,
     0.434884608, 0.00238538464, 0.0025391418],
    [0.396341026, 0.000450156396, 0.00435644109, 0.486689478,
     0.000106601699, 0.00759079587, 0.104465477],
    [0.00050408463, 0.263082653, 0.0617685132, 0.00316666905,
     0.499364316, 0.000600289204, 0.171513438],
]
CLS_SK = [2.40654349, 1.26448119]
CLS_SK_NOLOCAL = [0, 2.52896237]
CLS_CENTER_STEPS = [(2.36728072, 1.18897986), (2.01696777, 1.4083184), (1.60934985, 1.11235225)]
CLS_CENTER_FINAL = [
    -0.00410229899, -0.0123873837, -0.00577099808, 0.0106286816, 0.0155898361, 0.00465690391,
    -0.00411672983,
]
IBOT_CENTER_STEPS = [1.31321394, 0.508117795, 0.771217167]
IBOT_CENTER_FINAL = [
    0.00168848725, -0.0053731706, -0.00848257355, 0.0132633932, 0.0105468575, -0.00562628219,
    -0.0026213841,
]
IBOT_DEFAULT_WEIGHT = 1.31321394
IBOT_SK_LOSS = 1.41022289
KOLEO_8X5 = 0.295320451
KOLEO_PER_CROP = -0.1393058
KDE_8X5 = -5.29973936
KDE_PER_CROP = -10.266201
KDE_DUPLICATES = -4.88256979


def _close(actual, expected) -> None:
    expected = torch.tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(actual.double(), expected, rtol=0, atol=ATOL)


def _unswap(rows) -> torch.Tensor:
    """Upstream's rows are in swapped crop order [g1; g0]; pathfm keeps [g0; g1]."""
    first, second = torch.tensor(rows).chunk(2)
    return torch.cat((second, first))


def _masks() -> torch.Tensor:
    """6 global-crop images x 6 patches; images 1, 2 and 5 have no mask, image 4 is fully masked."""
    masks = torch.zeros(2 * B, 6, dtype=torch.bool)
    masks[0, [1, 2, 5]] = True
    masks[3, [0]] = True
    masks[4, :] = True
    return masks


def test_sinkhorn_knopp_equals_dinov2_cls_path():
    targets = sinkhorn_knopp(wave(2 * B, K, 0.3, 0.2), TEACHER_TEMP)
    assert targets.dtype == torch.float32
    _close(targets, _unswap(SK_CLS_SWAPPED).tolist())
    torch.testing.assert_close(targets.sum(-1), torch.ones(2 * B), rtol=0, atol=1e-6)


def test_sinkhorn_knopp_is_finite_where_upstream_exp_overflows():
    # / 0.05 -> exponents 90..110: float32 exp overflows without the shift
    logits = 5.0 + wave(4, K, 0.0, 0.5)
    assert not torch.isfinite(torch.exp(logits / TEACHER_TEMP)).all()
    targets = sinkhorn_knopp(logits, TEACHER_TEMP)
    torch.testing.assert_close(targets, sinkhorn_knopp(logits - 5.0, TEACHER_TEMP), rtol=0, atol=1e-6)
    assert torch.isfinite(targets).all()
    torch.testing.assert_close(targets.sum(-1), torch.ones(4), rtol=0, atol=1e-5)


def test_sinkhorn_knopp_prototypes_that_underflow_get_no_mass_not_nan():
    # temperature 0.01, logits spread over 2: after the shift many prototypes are exp(-200) = 0 for every
    # sample
    logits = wave(2, 32, 0.0, 1.0)
    logits[:, 0] = 1.5  # both samples share the top prototype
    targets = sinkhorn_knopp(logits, 0.01)
    assert torch.isfinite(targets).all()
    underflowed = torch.exp(logits / 0.01 - logits.max() / 0.01).sum(0) == 0
    assert underflowed.sum() >= 8 and (targets[:, underflowed] == 0).all()
    torch.testing.assert_close(targets.sum(-1), torch.ones(2), rtol=0, atol=1e-6)


@pytest.mark.parametrize("local", [True, False], ids=["local_crops", "no_local_crops"])
def test_dino_cls_loss_sinkhorn_equals_dinov2(local):
    loss = DINOv2CLSLoss(K)
    targets = loss.teacher_targets(wave(2 * B, K, 0.3, 0.2), TEACHER_TEMP, "sinkhorn_knopp")
    student_local = wave(N_LOCAL * B, K, 2.3, 0.3) if local else None
    out = loss(wave(2 * B, K, 1.1, 0.3), student_local, targets)
    _close(torch.stack(list(out)), CLS_SK if local else CLS_SK_NOLOCAL)


def test_dino_cls_loss_ema_centering_equals_dinov2_over_steps():
    loss = DINOv2CLSLoss(K)
    for step, expected in enumerate(CLS_CENTER_STEPS):
        teacher = wave(2 * B, K, 0.3 + step, 0.2)
        targets = loss.teacher_targets(teacher, TEACHER_TEMP, "centering")
        loss.update_center(teacher)
        out = loss(wave(2 * B, K, 1.1, 0.3), wave(N_LOCAL * B, K, 2.3, 0.3), targets)
        _close(torch.stack(list(out)), expected)
    _close(loss.center.flatten(), CLS_CENTER_FINAL)


def test_dino_cls_loss_rejects_wrong_shapes():
    loss = DINOv2CLSLoss(K)
    with pytest.raises(ValueError, match="out_dim=7"):
        loss.teacher_targets(torch.zeros(6, 5), TEACHER_TEMP, "centering")
    with pytest.raises(ValueError, match="not a multiple"):
        loss(torch.zeros(6, K), torch.zeros(4, K), torch.zeros(6, K))
    with pytest.raises(ValueError, match="centering must be"):
        loss.teacher_targets(torch.zeros(6, K), TEACHER_TEMP, "softmax")


def test_ibot_forward_masked_ema_centering_equals_dinov2_with_unmasked_crops():
    masks = _masks()
    n_masked = int(masks.sum())
    loss = IBOTPatchLoss(K)
    for step, expected in enumerate(IBOT_CENTER_STEPS):
        teacher = wave(n_masked, K, 0.7 + step, 0.2)
        targets = loss.teacher_targets(teacher, TEACHER_TEMP, "centering")
        loss.update_center(teacher)
        value = loss.forward_masked(wave(n_masked, K, 1.9, 0.3), targets, masks, masked_patch_weights(masks))
        _close(value, expected)
    _close(loss.center.flatten(), IBOT_CENTER_FINAL)
    # the weights computed inside forward_masked are upstream's default masks_weight
    fresh = IBOTPatchLoss(K)
    targets = torch.softmax(wave(n_masked, K, 0.7, 0.2) / TEACHER_TEMP, -1)
    _close(fresh.forward_masked(wave(n_masked, K, 1.9, 0.3), targets, masks), IBOT_DEFAULT_WEIGHT)


def test_ibot_sinkhorn_equals_dinov2():
    masks = _masks()
    n_masked = int(masks.sum())
    loss = IBOTPatchLoss(K)
    targets = loss.teacher_targets(wave(n_masked, K, 0.7, 0.2), TEACHER_TEMP, "sinkhorn_knopp")
    _close(targets, IBOT_SK_TARGETS)
    _close(loss.forward_masked(wave(n_masked, K, 1.9, 0.3), targets, masks), IBOT_SK_LOSS)


def test_ibot_no_masked_patch_gives_zero_and_finite_center():
    masks = torch.zeros(4, 6, dtype=torch.bool)
    loss = IBOTPatchLoss(K)
    empty = torch.zeros(0, K)
    assert float(loss.forward_masked(empty, empty, masks)) == 0.0
    loss.update_center(empty)
    assert torch.isfinite(loss.center).all()
    masks[0, 0] = True
    with pytest.raises(ValueError, match="1 masked patches in masks but student has 2 rows"):
        loss.forward_masked(torch.zeros(2, K), torch.zeros(2, K), masks)


def test_koleo_equals_dinov2():
    _close(koleo_loss(wave(8, 5, 0.2, 1.5)), KOLEO_8X5)
    _close(koleo_per_crop(wave(8, 5, 0.9, 1.0)), KOLEO_PER_CROP)


@pytest.mark.parametrize(
    "rows, expected",
    [
        ([[0.0, 1.0], [0.0, -1.0]], -math.log(2)),
        ([[0.0, 1.0], [1.0, 0.0]], -math.log(2**0.5)),
        ([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [-1.0, -1.0]], 0.2674),
    ],
)
def test_koleo_equals_lightly_published_values(rows, expected):
    """Values of lightly-ai/lightly tests/loss/test_koleo_loss.py (commit
    e8d317fc5a87f4387a85a35e689869039ec249ee), produced there with dinov2's code, 4 decimals. Its 5th case, a
    single row (17.7275 = -log(2e-8), the row's distance to itself), does not apply: a row with no other row
    has no neighbour here and adds nothing."""
    assert float(koleo_loss(torch.tensor(rows))) == pytest.approx(expected, abs=1e-4)
    assert float(koleo_loss(torch.tensor([[1.0]]))) == 0.0


def test_koleo_ignores_duplicate_and_blank_rows():
    x = wave(6, 5, 0.2, 1.5)
    with_repeats = torch.cat([x, x, torch.zeros(2, 5)]).requires_grad_(True)
    value = koleo_loss(with_repeats)
    # every row twice + 2 blank rows: duplicates are never nearest neighbours, blank rows are left out
    _close(value, float(koleo_loss(x)))
    value.backward()
    assert torch.isfinite(with_repeats.grad).all() and with_repeats.grad.abs().max() < 100
    all_same = x[:1].repeat(4, 1).requires_grad_(True)
    zero = koleo_loss(all_same)
    zero.backward()
    assert float(zero.detach()) == 0.0 and torch.count_nonzero(all_same.grad) == 0


def test_kde_equals_openmidnight_including_duplicate_and_blank_rows():
    _close(kde_loss(wave(8, 5, 0.2, 1.5)), KDE_8X5)
    _close(kde_per_crop(wave(8, 5, 0.9, 1.0)), KDE_PER_CROP)
    x = wave(3, 5, 0.2, 1.5)
    repeated = torch.cat([x, x, torch.zeros(2, 5)]).requires_grad_(True)
    value = kde_loss(repeated)
    _close(value, KDE_DUPLICATES)
    value.backward()
    assert torch.isfinite(repeated.grad).all()
