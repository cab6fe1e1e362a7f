"""Student/teacher construction: initialisation from a local timm file, drop path, no gradients."""

import pytest
import timm
import torch

from pathfm.training.config import parse_config
from pathfm.training.networks import build_student_teacher
from pathfm.training.optim import get_params_groups


def test_init_from_local_timm_file(tmp_path):
    torch.manual_seed(0)
    # a timm ViT with the `tiny` preset's shape (vits16 layout: hidden 64, 2 layers, 4 heads, mlp 256)
    ref = timm.create_model(
        "vit_small_patch16_224", pretrained=False, embed_dim=64, depth=2, num_heads=4, num_classes=0
    )
    path = tmp_path / "imagenet_tiny.pth"
    torch.save(ref.state_dict(), path)
    m, _, _, _ = parse_config(["--pretrained_weights", str(path)])
    student, teacher = build_student_teacher(m)
    # the student backbone reproduces the timm model's CLS output, and the teacher starts equal to the student
    x = torch.randn(2, 3, 224, 224)
    student.eval()
    with torch.no_grad():
        ours = student.backbone(pixel_values=x).pooler_output
        theirs = ref.forward_features(x)[:, 0]
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    for (name, p_s), (_, p_t) in zip(student.named_parameters(), teacher.named_parameters(), strict=True):
        assert torch.equal(p_s, p_t), name
        assert not p_t.requires_grad
    assert student.backbone.config.drop_path_rate == 0.1 and teacher.backbone.config.drop_path_rate == 0.0


def test_missing_pretrained_file_is_named(tmp_path):
    m, _, _, _ = parse_config(["--pretrained_weights", str(tmp_path / "nope.pth")])
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_student_teacher(m)


def test_param_groups_no_decay_on_biases_and_norms():
    m, _, _, _ = parse_config([])
    student, _ = build_student_teacher(m)
    decay, no_decay = get_params_groups(student)
    names = {id(p): n for n, p in student.named_parameters()}
    assert no_decay["weight_decay"] == 0.0
    assert all(names[id(p)].endswith(".bias") or p.ndim == 1 for p in no_decay["params"])
    assert all(p.ndim > 1 and not names[id(p)].endswith(".bias") for p in decay["params"])
    frozen_g = "head.last_layer.parametrizations.weight.original0"
    assert frozen_g not in {names[id(p)] for p in decay["params"] + no_decay["params"]}
