"""Teacher EMA, DINO head and the multi-crop augmentation."""

import pytest
import torch
from torch import nn

from pathfm.training.augmentations import DINOMultiCrop
from pathfm.training.heads import DINOHead
from pathfm.training.teacher import make_teacher, update_teacher


def _student() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), DINOHead(5, 9, hidden_dim=8, bottleneck_dim=4))


def test_momentum_zero_copies_student_and_one_keeps_teacher():
    student = _student()
    teacher = make_teacher(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    update_teacher(student, teacher, 1.0)
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    update_teacher(student, teacher, 0.0)
    for (k, v), (ks, vs) in zip(teacher.named_parameters(), student.named_parameters(), strict=True):
        assert k == ks and torch.equal(v, vs), k


def test_momentum_mixes_linearly():
    student = _student()
    teacher = make_teacher(student)
    with torch.no_grad():
        for p in teacher.parameters():
            p.zero_()
    update_teacher(student, teacher, 0.75)
    for (k, t), s in zip(teacher.named_parameters(), student.parameters(), strict=True):
        torch.testing.assert_close(t, 0.25 * s.detach(), msg=k)
    with pytest.raises(ValueError):
        update_teacher(student, teacher, 1.5)


def test_teacher_gets_no_gradient():
    student = _student()
    teacher = make_teacher(student)
    x = torch.randn(3, 6)
    (student(x).sum() + teacher(x).sum()).backward()
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None for p in student.parameters())


def test_head_shapes_normalisation_and_frozen_g():
    head = DINOHead(5, 9, hidden_dim=8, bottleneck_dim=4, norm_last_layer=True)
    out = head(torch.randn(3, 5))
    assert out.shape == (3, 9)
    g = head.last_layer.parametrizations.weight.original0
    assert not g.requires_grad and torch.all(g == 1)
    # with g = 1 each prototype has unit norm and the input is L2-normalised: |logit| <= 1
    assert out.abs().max() <= 1 + 1e-6
    assert DINOHead(5, 9, norm_last_layer=False).last_layer.parametrizations.weight.original0.requires_grad


def test_multicrop_shapes_range_and_per_sample_params():
    torch.manual_seed(0)
    aug = DINOMultiCrop(global_crop_size=32, local_crop_size=16, local_crops_number=3)
    tiles = torch.randint(0, 256, (4, 3, 48, 48), dtype=torch.uint8)
    tiles[1] = tiles[0]  # identical inputs must still get different random crops
    crops = aug(tiles)
    assert aug.ncrops == 5 and len(crops) == 5
    assert [tuple(c.shape) for c in crops] == [(4, 3, 32, 32)] * 2 + [(4, 3, 16, 16)] * 3
    for c in crops:
        assert c.dtype == torch.float32 and c.min() >= -1 - 1e-6 and c.max() <= 1 + 1e-6
    assert not torch.equal(crops[0][0], crops[0][1])
    with pytest.raises(ValueError, match="uint8"):
        aug(tiles.float())


def test_batchnorm_head_teacher_uses_batch_statistics():
    torch.manual_seed(0)
    student = DINOHead(8, 16, use_bn=True, hidden_dim=12, bottleneck_dim=4)
    teacher = make_teacher(student, DINOHead(8, 16, use_bn=True, hidden_dim=12, bottleneck_dim=4))
    x = torch.randn(6, 8) * 5 + 3
    with torch.no_grad():
        out = teacher(x)
        # stale running statistics (here: nonsense values) must not change the teacher's output
        for m in teacher.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.fill_(100.0)
                m.running_var.fill_(1e-3)
        again = teacher(x)
        # and the output is the batch-statistics one: the head in train mode
        student.load_state_dict(teacher.state_dict())
        student.train()
        want = student(x)
    torch.testing.assert_close(again, out, rtol=0, atol=1e-6)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-6)
    assert not any(p.requires_grad for p in teacher.parameters())
