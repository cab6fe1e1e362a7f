"""GPU fast paths of the DINO step, each switchable and on by default on CUDA only.

- ``mixed_precision`` (default bf16 on CUDA): bf16 autocast through Accelerate; fp32 master weights; the
  loss, the centering and the monitors in fp32.
- ``attn_implementation`` (default sdpa): ``sdpa`` (flash / memory-efficient kernels) or ``eager``.
- ``torch_compile`` (default on CUDA): ``nn.Module.compile`` of the student's and teacher's backbone and
  head, static shapes (``torch_compile_backend``: inductor).
- ``optim`` (default fused on CUDA): ``adamw_torch_fused`` (one kernel per parameter group) or
  ``adamw_torch``.
- ``sync_free_step`` (default on CUDA): no host-device sync inside the step; loss, grad norm and monitors
  stay on the device and are read only at logging steps.
- ``gradient_checkpointing`` (model argument, default off): activation checkpointing of the student's
  blocks.

Compilation: ``MultiCropWrapper`` runs the backbone once per crop resolution, so a compiled backbone sees two
input shapes (globals, locals) and the teacher one; shapes are compiled statically (``dynamic=False``) and the
modules are compiled in place (``nn.Module.compile``), so parameter names, ``state_dict`` keys, checkpoints
and the EMA are unchanged. ``assert_no_recompiles`` (``torch.compiler.set_stance("fail_on_recompile")``)
turns any later recompile into an error.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "FastPaths",
    "StepMeter",
    "assert_no_recompiles",
    "clip_gradients_no_sync",
    "compile_dino_modules",
    "resolve_fast_paths",
]

OPTIM_CHOICES = ("auto", "adamw_torch", "adamw_torch_fused")


@dataclass(frozen=True)
class FastPaths:
    """Resolved switches (no ``auto`` left). See the module docstring for each."""

    torch_compile: bool
    fused_adamw: bool
    sync_free_step: bool
    compile_backend: str = "inductor"

    def as_dict(self) -> dict[str, object]:
        return {
            "torch_compile": self.torch_compile,
            "fused_adamw": self.fused_adamw,
            "sync_free_step": self.sync_free_step,
            "compile_backend": self.compile_backend,
        }


def resolve_fast_paths(
    use_cuda: bool,
    torch_compile: bool | None = None,
    optim: str = "auto",
    sync_free_step: bool | None = None,
    compile_backend: str = "inductor",
) -> FastPaths:
    """Resolve ``None`` / ``"auto"`` switches: on for CUDA, off otherwise (CPU runs stay as they were).

    Args:
        use_cuda: Whether training runs on a CUDA device.
        torch_compile: Compile the models; None = auto.
        optim: ``auto``, ``adamw_torch`` or ``adamw_torch_fused`` (transformers ``TrainingArguments.optim``
            names).
        sync_free_step: Keep step metrics on the device; None = auto.
        compile_backend: ``torch.compile`` backend (``inductor``; ``aot_eager`` traces without code
            generation).

    Raises:
        ValueError: If ``optim`` is not one of the choices.
    """
    if optim not in OPTIM_CHOICES:
        raise ValueError(f"--optim must be one of {', '.join(OPTIM_CHOICES)}, got {optim!r}")
    return FastPaths(
        torch_compile=use_cuda if torch_compile is None else bool(torch_compile),
        fused_adamw=use_cuda if optim == "auto" else optim == "adamw_torch_fused",
        sync_free_step=use_cuda if sync_free_step is None else bool(sync_free_step),
        compile_backend=compile_backend,
    )


def compile_dino_modules(modules: Iterable[nn.Module], backend: str = "inductor") -> None:
    """Compile each ``MultiCropWrapper``'s backbone and head in place with static shapes (``DINOv2Wrapper``:
    the backbone only).

    The wrapper itself stays eager: it groups crops by resolution on the host, which would break the graph.

    Args:
        modules: Student and teacher wrappers (unwrapped from DDP), each with ``.backbone`` and ``.head``.
        backend: ``torch.compile`` backend.
    """
    for wrapper in modules:
        wrapper.backbone.compile(dynamic=False, backend=backend)
        # DINOv2Wrapper's heads also see the masked patches, a different count every step: they stay eager
        if isinstance(getattr(wrapper, "head", None), nn.Module):
            wrapper.head.compile(dynamic=False, backend=backend)


@contextlib.contextmanager
def assert_no_recompiles() -> Iterator[None]:
    """Inside this context a compiled function that would recompile raises instead (after warm-up)."""
    with torch.compiler.set_stance("fail_on_recompile"):
        yield


@torch.no_grad()
def clip_gradients_no_sync(model: nn.Module, clip: float) -> Tensor:
    """Per-parameter gradient clipping to L2 norm ``clip`` without reading anything back to the host.

    Same result as ``optim.clip_gradients`` (upstream DINO ``utils.clip_gradients``): each gradient whose norm
    exceeds ``clip`` is scaled by ``clip / (norm + 1e-6)``; the others are multiplied by exactly 1.

    Args:
        model: Module whose ``.grad`` tensors are clipped in place.
        clip: Per-parameter maximum norm; ``<= 0`` only measures.

    Returns:
        The global gradient norm before clipping, a 0-d fp32 tensor on the gradients' device.
    """
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norms = torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads])
    if clip > 0:
        coefs = (clip / (norms + 1e-6)).clamp(max=1.0)
        for g, coef in zip(grads, coefs.unbind(), strict=True):
            g.mul_(coef.to(g.dtype))
    return norms.square().sum().sqrt()


class StepMeter:
    """Step metrics kept on the device between logging steps (no ``.item()`` in the step).

    ``add`` records a step's loss and grad norm as tensors; ``read`` (at a logging step) moves the window's
    values to the host once and reports whether every loss was finite.
    """

    def __init__(self) -> None:
        self._losses: list[Tensor] = []
        self._grad_norm: Tensor | None = None

    def add(self, loss: Tensor, grad_norm: Tensor | float | None = None) -> None:
        """Record one optimizer step's loss (0-d tensor, already averaged over ranks) and grad norm (0-d
        tensor or float; None on accumulation micro-steps)."""
        self._losses.append(loss.detach().float().reshape(()))
        if grad_norm is not None:
            self._grad_norm = torch.as_tensor(grad_norm).detach().float().reshape(())

    def read(self) -> dict[str, object]:
        """Losses of the window (host floats, oldest first), the last grad norm, and the first non-finite
        position. Clears the window.

        Returns:
            ``{"losses": [...], "grad_norm": float | None, "first_nonfinite": int | None}`` where
            ``first_nonfinite`` indexes ``losses``.
        """
        values = torch.stack(self._losses).cpu().tolist() if self._losses else []
        grad_norm = float(self._grad_norm) if self._grad_norm is not None else None
        self._losses, self._grad_norm = [], None
        bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
        return {"losses": values, "grad_norm": grad_norm, "first_nonfinite": bad[0] if bad else None}
