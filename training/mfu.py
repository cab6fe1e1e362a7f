"""Model-FLOPs utilisation (MFU) of DINO training: FLOPs per image, the device's peak, and their ratio.

MFU = (model FLOPs per image x images/s) / (peak FLOP/s of the devices), as defined for PaLM (Chowdhery et
al. 2022, Appendix B): model FLOPs only, so activation-checkpointing recompute is not counted.

FLOPs are *counted*, not estimated by a formula: ``torch.utils.flop_counter.FlopCounterMode`` records every
matmul / convolution / attention of one training step of the actual recipe (student forward + backward on all
crops, teacher forward on the 2 global crops) run on the ``meta`` device, so counting costs no compute and no
memory even for a ViT-L (the real parameters are swapped for meta tensors with ``torch.func.functional_call``;
the modules are not copied). Elementwise work (LayerNorm, GELU, softmax, the optimizer, the EMA) is not
counted, by the usual convention.

The peak is measured with a large matmul on the device (``measure_matmul_peak``) or looked up from the
vendor's dense-math datasheet value (``lookup_peak``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "DATASHEET_PEAK_FLOPS",
    "count_flops",
    "dino_flops_per_image",
    "lookup_peak",
    "measure_matmul_peak",
    "mfu",
    "throughput_logs",
]

#: Dense bf16 tensor-core peak, FLOP/s, from NVIDIA's datasheets (SXM parts, without sparsity). Keys are
#: matched as substrings of ``torch.cuda.get_device_name()``, most specific first.
DATASHEET_PEAK_FLOPS: dict[str, float] = {
    "H200": 989.4e12,
    "H100": 989.4e12,
    "A100": 312e12,
    "L40S": 362.1e12,
    "L4": 121e12,
    "A10": 125e12,
    "V100": 125e12,  # fp16 tensor cores (V100 has no bf16)
}


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of everything ``fn`` runs, counted by ``FlopCounterMode`` (2 per multiply-add).

    Args:
        fn: A callable with no arguments, e.g. ``lambda: model(x).sum().backward()``.

    Returns:
        The total FLOP count (an int).
    """
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _meta_state(module: nn.Module, requires_grad: bool) -> dict[str, torch.Tensor]:
    """Meta-device stand-ins for every parameter and buffer of ``module`` (same names, shapes, dtypes)."""
    state: dict[str, torch.Tensor] = {}
    for name, p in module.named_parameters():
        state[name] = torch.empty_like(p, device="meta").requires_grad_(requires_grad and p.requires_grad)
    for name, b in module.named_buffers():
        state[name] = torch.empty_like(b, device="meta")
    return state


def dino_flops_per_image(
    student: nn.Module,
    teacher: nn.Module,
    global_crop_size: int,
    local_crop_size: int,
    local_crops_number: int,
    global_crops_number: int = 2,
    batch_size: int = 2,
) -> dict[str, float]:
    """FLOPs of one DINO training image, counted on the ``meta`` device.

    The recipe is the training loop's: the teacher runs forward on the ``global_crops_number`` global crops
    (no gradient), the student runs forward on all crops (globals, then locals, as ``MultiCropWrapper``
    batches them) and backward from a scalar of its output. Counting runs with the modules in eval mode so
    that activation checkpointing does not add its recompute (model FLOPs, not hardware FLOPs); the modes
    are restored afterwards.

    Args:
        student: The student (``MultiCropWrapper``, unwrapped from DDP; any device). A ``DINOv2Wrapper`` is
            counted without masks: its iBOT head on the masked patches (a few percent) is left out.
        teacher: The teacher (same interface).
        global_crop_size: Side of a global crop in px.
        local_crop_size: Side of a local crop in px.
        local_crops_number: Local crops per image.
        global_crops_number: Global crops per image (DINO: 2).
        batch_size: Images in the counted batch (the result is per image; > 1 so that batch-size-dependent
            layers such as BatchNorm behave as in training).

    Returns:
        ``{"student_fwd_bwd": ..., "teacher_fwd": ..., "total": ...}``, FLOPs per image.

    Raises:
        ValueError: If a size or count is not positive.
    """
    if min(global_crop_size, local_crop_size, global_crops_number, batch_size) < 1 or local_crops_number < 0:
        raise ValueError(
            f"dino_flops_per_image: sizes and counts must be positive, got global {global_crop_size} px x "
            f"{global_crops_number}, local {local_crop_size} px x {local_crops_number}, batch {batch_size}"
        )
    channels = 3

    def crops(side: int, n: int) -> list[torch.Tensor]:
        return [torch.empty(batch_size, channels, side, side, device="meta") for _ in range(n)]

    views = crops(global_crop_size, global_crops_number) + crops(local_crop_size, local_crops_number)
    modes = {m: m.training for m in (student, teacher)}
    try:
        student.eval()
        teacher.eval()
        student_state = _meta_state(student, requires_grad=True)
        teacher_state = _meta_state(teacher, requires_grad=False)

        def teacher_step() -> None:
            with torch.no_grad():
                functional_call(teacher, teacher_state, (views[:global_crops_number],))

        def student_step() -> None:
            out = functional_call(student, student_state, (views,))
            # DINO: logits tensor; DINOv2: DINOv2Output, whose first field holds the CLS logits of all crops
            (out if isinstance(out, torch.Tensor) else out[0]).float().sum().backward()

        teacher_flops = count_flops(teacher_step)
        student_flops = count_flops(student_step)
    finally:
        for m, training in modes.items():
            m.train(training)
    return {
        "student_fwd_bwd": student_flops / batch_size,
        "teacher_fwd": teacher_flops / batch_size,
        "total": (student_flops + teacher_flops) / batch_size,
    }


def measure_matmul_peak(
    device: torch.device | str, dtype: torch.dtype | None = None, size: int | None = None, repeats: int = 10
) -> float:
    """Achieved FLOP/s of a square matmul on ``device``: the practical peak that MFU is measured against.

    Defaults: bf16 at 8192 on CUDA (the dense tensor-core rate), fp32 at 1024 on CPU (bf16 matmul on CPU is
    usually slower than fp32, and training on CPU runs fp32). Two warm-up products, then ``repeats`` timed
    ones; the mean rate is returned.

    Args:
        device: Where to measure.
        dtype: Matmul dtype (default above).
        size: Matrix side (default above).
        repeats: Timed products.

    Returns:
        FLOP/s (``2 * size**3`` FLOPs per product).
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    dtype = dtype or (torch.bfloat16 if cuda else torch.float32)
    size = size or (8192 if cuda else 1024)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    for _ in range(2):
        a @ b
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    elapsed = time.perf_counter() - start
    return 2.0 * size**3 * repeats / elapsed


def lookup_peak(device_name: str) -> float | None:
    """Datasheet dense bf16 peak (FLOP/s) for a GPU name such as ``"NVIDIA H200"``, or None if unknown."""
    for key, value in DATASHEET_PEAK_FLOPS.items():
        if key in device_name:
            return value
    return None


def mfu(flops_per_image: float, images_per_s: float, peak_flops_per_s: float, num_devices: int = 1) -> float:
    """Model-FLOPs utilisation in [0, 1]: achieved model FLOP/s over the peak of all devices.

    Args:
        flops_per_image: From :func:`dino_flops_per_image` (``"total"``).
        images_per_s: Images per second over all devices.
        peak_flops_per_s: Peak FLOP/s of one device.
        num_devices: Devices (processes) sharing the work.

    Raises:
        ValueError: If the peak or device count is not positive.
    """
    if peak_flops_per_s <= 0 or num_devices < 1:
        raise ValueError(f"mfu: peak {peak_flops_per_s} FLOP/s and {num_devices} device(s) must be positive")
    return flops_per_image * images_per_s / (peak_flops_per_s * num_devices)


def throughput_logs(
    images: int,
    elapsed_s: float,
    data_wait_s: float,
    compute_s: float,
    flops_per_image: float | None = None,
    peak_flops_per_s: float | None = None,
    num_devices: int = 1,
) -> dict[str, float]:
    """Throughput metrics of one logging window, as the training loop logs them (also to TensorBoard).

    Args:
        images: Images processed by all ranks in the window.
        elapsed_s: Wall time of the window (s).
        data_wait_s: Time this rank waited for the next batch (s).
        compute_s: Time this rank spent in the step (s; with a sync-free step on a GPU this is host time,
            which the GPU's queue throttles to the GPU's pace).
        flops_per_image: Model FLOPs of one image (:func:`dino_flops_per_image`), or None: no MFU.
        peak_flops_per_s: One device's peak (:func:`measure_matmul_peak` / :func:`lookup_peak`), or None.
        num_devices: Devices in the run.

    Returns:
        ``images_per_s``, ``data_wait_share`` (in [0, 1]) and, with FLOPs and a peak, ``model_tflops``
        (achieved model TFLOP/s, all devices) and ``mfu``.
    """
    rate = images / max(elapsed_s, 1e-9)
    logs = {"images_per_s": rate, "data_wait_share": data_wait_s / max(data_wait_s + compute_s, 1e-9)}
    if flops_per_image is not None:
        logs["model_tflops"] = flops_per_image * rate / 1e12
        if peak_flops_per_s:
            logs["mfu"] = mfu(flops_per_image, rate, peak_flops_per_s, num_devices)
    return logs
