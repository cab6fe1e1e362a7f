"""MFU accounting: FlopCounterMode counts of the DINO recipe against hand counts, and the MFU arithmetic."""

from __future__ import annotations

import pytest
import torch
from pathfm.modeling import PathFMViTConfig, PathFMViTModel
from pathfm.training.heads import DINOHead, MultiCropWrapper
from pathfm.training.mfu import (
    count_flops,
    dino_flops_per_image,
    lookup_peak,
    measure_matmul_peak,
    mfu,
    throughput_logs,
)
from pathfm.training.networks import enable_activation_checkpointing
from pathfm.training.teacher import make_teacher

HEAD = {"hidden_dim": 48, "bottleneck_dim": 16, "nlayers": 3}
OUT_DIM = 40


def test_single_linear_hand_count() -> None:
    """y = x W^T + b with x (3, 7), W (5, 7): forward 2*3*7*5 = 210 FLOPs; backward computes dL/dx and
    dL/dW, 210 each. Bias adds are not counted."""
    layer = torch.nn.Linear(7, 5)
    x = torch.randn(3, 7, requires_grad=True)
    assert count_flops(lambda: layer(x)) == 210
    assert count_flops(lambda: layer(x).sum().backward()) == 3 * 210
    x_frozen = torch.randn(3, 7)  # no input gradient: forward + dL/dW only
    assert count_flops(lambda: layer(x_frozen).sum().backward()) == 2 * 210


def _student_teacher(**overrides) -> tuple[MultiCropWrapper, MultiCropWrapper]:
    torch.manual_seed(0)
    config = PathFMViTConfig.from_preset("tiny", **overrides)
    student = MultiCropWrapper(PathFMViTModel(config), DINOHead(config.hidden_size, OUT_DIM, **HEAD))
    teacher = make_teacher(student)
    return student, teacher


def _vit_forward_flops(config: PathFMViTConfig, side: int) -> tuple[int, int]:
    """Hand count of one image's forward: (patch-embedding conv FLOPs, transformer-block FLOPs)."""
    grid = (side // config.patch_size) ** 2
    n = grid + 1 + config.num_register_tokens
    d, f = config.hidden_size, config.intermediate_size
    conv = 2 * grid * (3 * config.patch_size**2) * d
    per_layer = 2 * n * d * 3 * d + 2 * n * d * d + 2 * 2 * n * d * f  # qkv, proj, fc1 + fc2
    per_layer += 2 * (2 * n * n * d)  # q k^T and attn @ v, over all heads
    return conv, config.num_hidden_layers * per_layer


def _head_forward_flops(in_dim: int) -> int:
    h, b = HEAD["hidden_dim"], HEAD["bottleneck_dim"]
    return 2 * (in_dim * h + h * h + h * b + b * OUT_DIM)  # weight norm of the last layer: elementwise


@pytest.mark.parametrize("registers", [0, 2])
def test_dino_flops_match_hand_count(registers: int) -> None:
    """Teacher: forward on 2 global crops. Student: forward on all crops, backward = 2x forward for every
    matmul except the patch-embedding conv, whose input needs no gradient (dL/dW only: 1x)."""
    student, teacher = _student_teacher(num_register_tokens=registers)
    config = student.backbone.config
    g_conv, g_blocks = _vit_forward_flops(config, 32)
    l_conv, l_blocks = _vit_forward_flops(config, 16)
    head = _head_forward_flops(config.hidden_size)
    n_local = 3
    teacher_expected = 2 * (g_conv + g_blocks + head)
    student_fwd_blocks_head = 2 * (g_blocks + head) + n_local * (l_blocks + head)
    student_conv = 2 * g_conv + n_local * l_conv
    student_expected = 3 * student_fwd_blocks_head + 2 * student_conv
    student.train()
    got = dino_flops_per_image(student, teacher, 32, 16, n_local, batch_size=4)
    assert got["teacher_fwd"] == teacher_expected
    assert got["student_fwd_bwd"] == student_expected
    assert got["total"] == teacher_expected + student_expected
    assert student.training and not teacher.training  # modes restored
    assert all(p.device.type == "cpu" for p in student.parameters())  # real weights untouched


def test_meta_count_equals_flopcountermode_on_a_real_step() -> None:
    """The meta-device count equals FlopCounterMode around a real CPU step of the same recipe, with
    gradient checkpointing off (with it on, the real step also counts the recompute: model FLOPs exclude
    it). The real step uses eager attention: FlopCounterMode has no formula for the CPU flash-attention kernel
    that SDPA picks on CPU (one reason counting runs on meta, where SDPA is plain matmuls)."""
    student, teacher = _student_teacher(attn_implementation="eager")
    sdpa_student, sdpa_teacher = _student_teacher()
    batch = 3
    crops = [torch.randn(batch, 3, 48, 48) for _ in range(2)]
    crops += [torch.randn(batch, 3, 32, 32) for _ in range(4)]

    def real_step() -> None:
        with torch.no_grad():
            teacher(crops[:2])
        student(crops).sum().backward()

    real = count_flops(real_step)
    counted = dino_flops_per_image(student, teacher, 48, 32, 4, batch_size=batch)
    assert counted["total"] * batch == real
    assert dino_flops_per_image(sdpa_student, sdpa_teacher, 48, 32, 4, batch_size=batch) == counted
    enable_activation_checkpointing(student.backbone)
    student.train()
    assert dino_flops_per_image(student, teacher, 48, 32, 4, batch_size=batch)["total"] * batch == real
    assert count_flops(real_step) > real  # recompute of the checkpointed blocks is real extra work


def test_mfu_arithmetic_and_peaks() -> None:
    # 124e9 FLOP/image at 2550 images/s on one 790 TFLOP/s device: 40 %
    assert mfu(124e9, 2550, 790e12) == pytest.approx(0.4003, abs=1e-4)
    assert mfu(124e9, 2550, 790e12, num_devices=2) == pytest.approx(0.2001, abs=1e-4)
    with pytest.raises(ValueError, match="positive"):
        mfu(1.0, 1.0, 0.0)
    assert lookup_peak("NVIDIA H200") == 989.4e12 and lookup_peak("NVIDIA L40S") == 362.1e12
    assert lookup_peak("NVIDIA L4") == 121e12 and lookup_peak("some CPU") is None
    peak = measure_matmul_peak("cpu", size=256, repeats=3)
    assert 1e8 < peak < 1e14  # between 0.1 GFLOP/s and 100 TFLOP/s on any CPU
    with pytest.raises(ValueError, match="positive"):
        dino_flops_per_image(*_student_teacher(), 0, 16, 2)


def test_throughput_logs() -> None:
    logs = throughput_logs(640, 2.0, 0.5, 1.5, flops_per_image=1e9, peak_flops_per_s=1e12, num_devices=2)
    assert logs == pytest.approx(
        {"images_per_s": 320.0, "data_wait_share": 0.25, "model_tflops": 0.32, "mfu": 0.16}
    )
    assert set(throughput_logs(10, 1.0, 0.0, 1.0)) == {"images_per_s", "data_wait_share"}
