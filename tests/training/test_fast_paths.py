"""GPU fast paths, checked on CPU through the loop's own ``train_step``: the compiled step equals the eager
one (and never recompiles after warm-up), bf16 autocast keeps the loss near fp32, the sync-free step equals the
synced one, fused AdamW equals AdamW, and the switches default to on for CUDA only."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from pathfm.modeling import PathFMViTConfig, PathFMViTModel
from pathfm.training.fast_paths import (
    StepMeter,
    assert_no_recompiles,
    clip_gradients_no_sync,
    compile_dino_modules,
    resolve_fast_paths,
)
from pathfm.training.heads import DINOHead, MultiCropWrapper
from pathfm.training.loop import read_window
from pathfm.training.losses.dino import DINOLoss
from pathfm.training.optim import build_optimizer, clip_gradients, set_lr_wd
from pathfm.training.step import NonFiniteLossError, StepOutput, train_step
from pathfm.training.teacher import make_teacher

from tests.training.conftest import reset_accelerate_state
from tests.training.test_train_loop import _args, _run

OUT_DIM = 32
N_LOCAL = 3

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def _models() -> tuple[MultiCropWrapper, MultiCropWrapper]:
    torch.manual_seed(0)
    config = PathFMViTConfig.from_preset("tiny")
    head = DINOHead(64, OUT_DIM, hidden_dim=48, bottleneck_dim=16)
    student = MultiCropWrapper(PathFMViTModel(config), head)
    return student, make_teacher(student)


def _batches(n: int, batch: int = 4) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [
        [torch.randn(batch, 3, 32, 32, generator=g) for _ in range(2)]
        + [torch.randn(batch, 3, 16, 16, generator=g) for _ in range(N_LOCAL)]
        for _ in range(n)
    ]


def _run_steps(
    backend: str | None = None,
    sync_free: bool = False,
    fused: bool = False,
    mixed_precision: str = "no",
    steps: int = 3,
) -> tuple[list[StepOutput], MultiCropWrapper, DINOLoss]:
    """``steps`` optimizer steps of ``train_step`` on a tiny student; after the first (warm-up: every shape
    compiled), a recompile would raise."""
    accelerator = Accelerator(cpu=True, mixed_precision=mixed_precision)
    student, teacher = _models()
    loss_fn = DINOLoss(OUT_DIM, 2 + N_LOCAL)
    optimizer = build_optimizer(student, fused=fused)
    set_lr_wd(optimizer, 1e-3, 0.04)
    if backend:
        compile_dino_modules([student, teacher], backend=backend)
    student, optimizer = accelerator.prepare(student, optimizer)
    outs = []
    for i, crops in enumerate(_batches(steps)):
        guard = assert_no_recompiles() if backend and i > 0 else contextlib.nullcontext()
        with guard:
            outs.append(
                train_step(
                    accelerator,
                    student,
                    teacher,
                    loss_fn,
                    optimizer,
                    lambda crops=crops: crops,
                    teacher_temp=0.04,
                    momentum=0.99,
                    freeze_last_layer=False,
                    clip_grad=3.0,
                    step_index=i,
                    sync_free=sync_free,
                )
            )
    reset_accelerate_state()
    return outs, teacher, loss_fn


def _assert_steps_equal(backend: str, atol: float) -> None:
    eager, eager_teacher, eager_loss = _run_steps()
    compiled, compiled_teacher, compiled_loss = _run_steps(backend)
    for e, c in zip(eager, compiled, strict=True):
        assert c.loss == pytest.approx(e.loss, rel=atol, abs=atol)
        assert c.grad_norm == pytest.approx(e.grad_norm, rel=atol, abs=atol)  # ~1e3: relative
        assert c.teacher_entropy == pytest.approx(e.teacher_entropy, rel=atol, abs=atol)
    assert len({round(e.loss, 4) for e in eager}) == len(eager)  # the steps really train
    # state_dict keys are unchanged by in-place compilation: checkpoints and the EMA stay compatible
    assert list(compiled_teacher.state_dict()) == list(eager_teacher.state_dict())
    for name, value in eager_teacher.state_dict().items():
        torch.testing.assert_close(compiled_teacher.state_dict()[name], value, atol=atol, rtol=atol)
    torch.testing.assert_close(compiled_loss.center, eager_loss.center, atol=atol, rtol=atol)


def test_compiled_step_equals_eager_step_aot_eager() -> None:
    """Dynamo + AOTAutograd graphs (no code generation, fast): equal to eager to fp32 rounding."""
    _assert_steps_equal("aot_eager", atol=1e-6)


@pytest.mark.slow  # inductor compiles C++ kernels for fwd + bwd of two shapes: ~40 s on 2 cores
def test_compiled_step_equals_eager_step_inductor() -> None:
    _assert_steps_equal("inductor", atol=1e-5)


def test_recompile_after_warmup_is_an_error() -> None:
    """The guard is real: a third crop size after warm-up would recompile and raises instead."""
    student, teacher = _models()
    compile_dino_modules([teacher], backend="aot_eager")
    crops = _batches(1)[0]
    with torch.no_grad():
        teacher(crops)
        with assert_no_recompiles(), pytest.raises(RuntimeError, match="[Rr]ecompil"):
            teacher([torch.randn(4, 3, 48, 48)])


def test_bf16_autocast_loss_close_to_fp32() -> None:
    """bf16 autocast through Accelerate (``mixed_precision="bf16"``; fp32 master weights): the DINO loss over
    3 steps stays within 2 % of fp32; the loss, the center and the weights are fp32."""
    fp32, _, _ = _run_steps()
    bf16, bf16_teacher, bf16_loss = _run_steps(mixed_precision="bf16")
    fp32_losses = torch.tensor([o.loss for o in fp32])
    bf16_losses = torch.tensor([o.loss for o in bf16])
    torch.testing.assert_close(bf16_losses, fp32_losses, rtol=2e-2, atol=0)
    assert not torch.equal(bf16_losses, fp32_losses)  # bf16 did run
    assert bf16[-1].teacher_output.dtype == torch.bfloat16  # the teacher ran under autocast
    assert bf16_loss.center.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in bf16_teacher.parameters())


def test_sync_free_step_equals_synced_step() -> None:
    """The sync-free step keeps loss and grad norm on the device (tensors), with the same values."""
    synced, synced_teacher, _ = _run_steps()
    free, free_teacher, _ = _run_steps(sync_free=True, fused=True)
    for s_out, f_out in zip(synced, free, strict=True):
        assert isinstance(f_out.loss, torch.Tensor) and isinstance(f_out.grad_norm, torch.Tensor)
        assert f_out.loss.item() == pytest.approx(s_out.loss, rel=1e-5)
        assert f_out.grad_norm.item() == pytest.approx(s_out.grad_norm, rel=1e-5)
    for name, value in synced_teacher.state_dict().items():
        torch.testing.assert_close(free_teacher.state_dict()[name], value, atol=1e-5, rtol=1e-5)


def test_sync_free_loop_reads_nan_with_its_step() -> None:
    """The loop reads a sync-free window at a logging / checkpoint step and names the step that diverged."""
    meter = StepMeter()
    for value in (1.0, float("nan"), 2.0):
        meter.add(torch.tensor(value), torch.tensor(0.5))
    loop = SimpleNamespace(losses=[], last_good=Path("checkpoint-6"))
    out = StepOutput(torch.tensor(2.0), torch.tensor(0.5), None, torch.zeros(2, 4))
    with pytest.raises(NonFiniteLossError, match=r"at step 8 .*checkpoint-6"):
        read_window(loop, meter, out, it=9)
    meter.add(torch.tensor(3.0), torch.tensor(0.25))
    read = read_window(loop, meter, out, it=10)
    assert read.loss == 3.0 and read.grad_norm == 0.25 and loop.losses == [3.0]


def test_sync_free_run_logs_mfu_and_all_losses(cmu_svs, tmp_path) -> None:
    """A real run with every CPU-able fast path on (sync-free step, fused AdamW, aot_eager compile, bf16):
    one loss per step in the summary, MFU and model TFLOP/s in metrics.jsonl, the switches in config.yaml."""
    fast = ["--sync_free_step", "true", "--optim", "adamw_torch_fused", "--torch_compile", "true"]
    fast += ["--torch_compile_backend", "aot_eager", "--mixed_precision", "bf16", "--logging_steps", "2"]
    summary = _run(_args(cmu_svs, tmp_path, "--max_steps", "3", "--save_steps", "0", *fast))
    assert len(summary["losses"]) == 3 and all(isinstance(v, float) for v in summary["losses"])
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(0 < r["mfu"] < 1 and r["model_tflops"] > 0 for r in rows)
    assert rows[-1]["loss"] == summary["losses"][-1]
    config = (tmp_path / "config.yaml").read_text()
    assert "sync_free_step: true" in config and "fused_adamw: true" in config


def test_clip_gradients_no_sync_equals_upstream_clipping() -> None:
    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 4)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    x = torch.randn(5, 8) * 0.3  # mixed gradients: some parameters exceed the clip, some do not
    for m in models:
        m(x).sum().backward()
    norms_before = [p.grad.norm().item() for p in models[0].parameters()]
    assert min(norms_before) < 3.0 < max(norms_before)
    expected = clip_gradients(models[0], 3.0)
    got = clip_gradients_no_sync(models[1], 3.0)
    assert isinstance(got, torch.Tensor) and got.ndim == 0
    assert got.item() == pytest.approx(expected, rel=1e-6)
    for p_ref, p in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(p.grad, p_ref.grad, atol=1e-7, rtol=1e-6)


def test_fused_adamw_equals_adamw() -> None:
    student, _ = _models()
    reference, _ = _models()
    opts = [build_optimizer(m, fused=f) for m, f in ((student, True), (reference, False))]
    assert opts[0].defaults["fused"] and not opts[1].defaults["fused"]
    crops = _batches(1)[0]
    for model, opt in zip((student, reference), opts, strict=True):
        set_lr_wd(opt, 1e-3, 0.04)
        model(crops).square().mean().backward()
        opt.step()
    for p, q in zip(student.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6)


def test_switch_defaults_on_cuda_only() -> None:
    cpu = resolve_fast_paths(use_cuda=False)
    assert not (cpu.torch_compile or cpu.fused_adamw or cpu.sync_free_step)
    cuda = resolve_fast_paths(use_cuda=True)
    assert cuda.torch_compile and cuda.fused_adamw and cuda.sync_free_step
    off = resolve_fast_paths(True, torch_compile=False, optim="adamw_torch", sync_free_step=False)
    assert not (off.torch_compile or off.fused_adamw or off.sync_free_step)
    assert resolve_fast_paths(False, torch_compile=True, optim="adamw_torch_fused").fused_adamw
    with pytest.raises(ValueError, match="--optim must be one of"):
        resolve_fast_paths(False, optim="sgd")


def test_step_meter_reads_once_and_finds_nonfinite() -> None:
    meter = StepMeter()
    for v in (1.5, 2.5):
        meter.add(torch.tensor(v), torch.tensor(0.5))
    assert meter.read() == {"losses": [1.5, 2.5], "grad_norm": 0.5, "first_nonfinite": None}
    meter.add(torch.tensor(1.0))
    meter.add(torch.tensor(float("nan")))
    out = meter.read()
    assert out["first_nonfinite"] == 1 and out["grad_norm"] is None
    assert meter.read()["losses"] == []
