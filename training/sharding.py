"""FSDP2 sharding of the student and the teacher, for backbones that do not fit one GPU.

``--fsdp full_shard`` (or ``shard_grad_op``; the names of ``transformers.TrainingArguments.fsdp``), or an
``accelerate launch --use_fsdp --fsdp_version 2`` launch, builds the Accelerator with
:func:`fsdp_plugin`: FSDP2 (``torch.distributed.fsdp.fully_shard``) applied bottom-up by Accelerate's
``fsdp2_prepare_model`` to every module named in :data:`WRAP_CLASS_NAMES` (each transformer block, the
backbone, the head), then to the wrapper as root. Each rank keeps ``1 / world_size`` of every parameter,
gradient and AdamW state; a block's full weights exist only between its all-gather and its reshard.

The teacher is sharded the same way as the student (same units, same mesh), so every teacher parameter is a
``DTensor`` whose local shard matches the student's local shard element for element: the EMA
(``teacher.update_teacher``) runs on the local shards, with no gather (:func:`check_same_sharding` asserts
it once at setup). Checkpoints are sharded (``checkpointing.save_checkpoint`` writes
``torch.distributed.checkpoint`` folders); the end-of-run export gathers the teacher once
(:func:`gather_backbone`).

Accelerate runs CPU launches as DDP even with an FSDP plugin, so sharding is a GPU path; the two-process CPU
test (``tests/training/test_train_fsdp.py``) applies ``fully_shard`` itself on gloo to the same units.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin, fsdp2_prepare_model
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy
from torch.distributed.tensor import DTensor

from pathfm.modeling import PathFMViTConfig, PathFMViTModel
from pathfm.training.networks import state_digest
from pathfm.training.teacher import local

__all__ = [
    "FSDP_MODES",
    "WRAP_CLASS_NAMES",
    "check_same_sharding",
    "clip_gradients_sharded",
    "fsdp_mode",
    "fsdp_plugin",
    "full_state_digest",
    "gather_backbone",
    "is_sharded",
    "shard_student_teacher",
    "wrap_units",
]

#: ``--fsdp`` values (``transformers.TrainingArguments.fsdp`` names) -> FSDP2 ``reshard_after_forward``.
FSDP_MODES = {"full_shard": True, "shard_grad_op": False}
#: Classes that become one FSDP2 unit each: the transformer block, the backbone (embeddings + final norm,
#: also called alone by the RankMe probe), the head. The ``MultiCropWrapper`` root is sharded last.
WRAP_CLASS_NAMES = ("PathFMViTLayer", "PathFMViTModel", "DINOHead")


def fsdp_mode(fsdp: str) -> str | None:
    """The sharding asked for: ``--fsdp`` or an ``accelerate launch --use_fsdp`` launch; None for DDP.

    ``--fsdp`` takes ``transformers.TrainingArguments`` words separated by spaces: ``full_shard`` or
    ``shard_grad_op``, optionally ``auto_wrap`` (always on: one unit per block). A launch with
    ``--use_fsdp`` (``ACCELERATE_USE_FSDP=true``) means ``full_shard`` unless ``FSDP_RESHARD_AFTER_FORWARD``
    is false.

    Raises:
        ValueError: An unknown word, both modes, or a launch asking for FSDP1 (``--fsdp_version 1``).
    """
    words = set(fsdp.split())
    if not words and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        if os.environ.get("FSDP_VERSION", "1") != "2":
            raise ValueError(
                "accelerate launch --use_fsdp: pathfm shards with FSDP2 only; add --fsdp_version 2"
            )
        reshard = os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() in {"true", "1", "full_shard"}
        return "full_shard" if reshard else "shard_grad_op"
    unknown = words - set(FSDP_MODES) - {"auto_wrap"}
    modes = words & set(FSDP_MODES)
    if unknown or len(modes) > 1 or (words and not modes):
        raise ValueError(
            f"--fsdp {fsdp!r}: expected one of {sorted(FSDP_MODES)} (optionally with auto_wrap), "
            "e.g. --fsdp full_shard; leave it empty for DDP"
        )
    return modes.pop() if modes else None


def fsdp_plugin(mode: str, mixed_precision: str) -> FullyShardedDataParallelPlugin:
    """Accelerate's FSDP plugin for FSDP2 over :data:`WRAP_CLASS_NAMES`.

    Args:
        mode: A key of :data:`FSDP_MODES`.
        mixed_precision: The run's resolved precision (``no``, ``bf16``, ``fp16``); with ``bf16`` the
            gathered parameters are bf16 and gradients are reduce-scattered in fp32.

    ``fp16`` is refused by the config check (its loss scaler needs an optimizer prepared by Accelerate).
    """
    policy = None
    if mixed_precision == "bf16":
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return FullyShardedDataParallelPlugin(
        fsdp_version=2,
        reshard_after_forward=FSDP_MODES[mode],
        auto_wrap_policy="transformer_based_wrap",
        transformer_cls_names_to_wrap=list(WRAP_CLASS_NAMES),
        state_dict_type="SHARDED_STATE_DICT",
        mixed_precision_policy=policy,
        cpu_ram_efficient_loading=False,
    )


def wrap_units(model: nn.Module) -> list[nn.Module]:
    """The submodules that get their own FSDP2 unit, children before parents (the root excluded)."""
    units = [m for m in model.modules() if type(m).__name__ in WRAP_CLASS_NAMES and m is not model]
    return units[::-1]


def is_sharded(module: nn.Module) -> bool:
    """Whether ``module`` is an FSDP2 module (its parameters are ``DTensor`` shards)."""
    return isinstance(module, FSDPModule)


def shard_student_teacher(
    accelerator: Accelerator, student: nn.Module, teacher: nn.Module
) -> tuple[nn.Module, nn.Module]:
    """Shard both networks with Accelerate's FSDP2 plugin (in place) and check their shards line up.

    Neither is registered with the Accelerator: checkpoints of sharded runs are written by
    ``checkpointing.save_checkpoint`` (the same code under the CPU test's ``fully_shard``).

    Raises:
        ValueError: The Accelerator is not an FSDP2 one: a CPU launch (Accelerate keeps CPU runs on DDP) or
            a plain ``python`` / single-process ``accelerate launch`` without a distributed launcher.
    """
    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    if accelerator.distributed_type != DistributedType.FSDP or plugin is None or plugin.fsdp_version != 2:
        raise ValueError(
            f"--fsdp: Accelerate set up {accelerator.distributed_type.value}, not FSDP; launch with "
            "`accelerate launch --use_fsdp --fsdp_version 2 --num_processes N` or `torchrun "
            "--nproc_per_node N` (N may be 1) on GPUs"
        )
    student = fsdp2_prepare_model(accelerator, student.to(accelerator.device))
    teacher = fsdp2_prepare_model(accelerator, teacher)
    check_same_sharding(student, teacher)
    return student, teacher


def check_same_sharding(student: nn.Module, teacher: nn.Module) -> None:
    """Assert that every teacher parameter is sharded exactly as the student's of the same name.

    Raises:
        ValueError: Names, placements, meshes or local shapes differ (the first parameter is named).
    """
    s_params, t_params = dict(student.named_parameters()), dict(teacher.named_parameters())
    if s_params.keys() != t_params.keys():
        raise ValueError("sharded student and teacher have different parameter names")
    for name, pt in t_params.items():
        ps = s_params[name]
        same = isinstance(pt, DTensor) and isinstance(ps, DTensor)
        same = same and pt.placements == ps.placements and pt.device_mesh == ps.device_mesh
        if not same or pt.to_local().shape != ps.to_local().shape:
            raise ValueError(f"teacher parameter {name!r} is not sharded as the student's")


@torch.no_grad()
def clip_gradients_sharded(model: nn.Module, clip: float) -> Tensor:
    """Per-parameter gradient clipping to L2 norm ``clip`` on sharded gradients (one all-reduce).

    Same result as ``optim.clip_gradients`` on the full gradients (upstream DINO ``utils.clip_gradients``):
    the squared norms of the local shards are summed over ranks in one all-reduce, then each gradient whose
    norm exceeds ``clip`` is scaled by ``clip / (norm + 1e-6)``. Nothing is read back to the host.

    Args:
        model: Sharded module whose ``.grad`` DTensors are clipped in place.
        clip: Per-parameter maximum norm; ``<= 0`` only measures.

    Returns:
        The global gradient norm before clipping, a 0-d fp32 tensor on the gradients' device.

    Raises:
        ValueError: A gradient is not sharded over a 1-D mesh of all ranks (e.g. HSDP's 2-D mesh).
    """
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    if any(not isinstance(g, DTensor) or g.device_mesh.ndim != 1 for g in grads):
        raise ValueError("clip_gradients_sharded: expects DTensor gradients on a 1-D mesh of all ranks")
    squares = torch.stack([local(g).detach().float().square().sum() for g in grads])
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(squares)  # every parameter is Shard(0) over the whole world: the sum is the total
    norms = squares.sqrt()
    if clip > 0:
        coefs = (clip / (norms + 1e-6)).clamp(max=1.0)
        for g, coef in zip(grads, coefs.unbind(), strict=True):
            local(g).mul_(coef.to(g.dtype))
    return squares.sum().sqrt()


def _full_state_dict(module: nn.Module) -> dict[str, Tensor]:
    """Full (gathered) state dict on rank 0's CPU, empty on other ranks. Collective: every rank calls it."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(module, options=options)


def gather_backbone(teacher: nn.Module, config: PathFMViTConfig) -> PathFMViTModel | None:
    """The full teacher backbone as a plain fp32 ``PathFMViTModel`` on rank 0 (None on other ranks).

    Collective: every rank must call it. Peak host memory on rank 0: one full teacher.
    """
    state = _full_state_dict(teacher)
    if not state:
        return None
    backbone = PathFMViTModel(config)
    prefix = "backbone."
    backbone.load_state_dict({k[len(prefix) :]: v.float() for k, v in state.items() if k.startswith(prefix)})
    return backbone.eval()


def full_state_digest(module: nn.Module) -> str | None:
    """sha256 of the full (gathered) parameters in name order, as ``networks.param_digest`` of the
    unsharded module; on rank 0 only (None elsewhere). Collective."""
    state = _full_state_dict(module)
    return state_digest(state) if state else None
