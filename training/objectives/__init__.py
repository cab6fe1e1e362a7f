"""Training objectives, chosen by ``--objective``: each builds its networks, loss and optimizer and runs a
step.

An objective is what differs between DINO and DINOv2; everything else (data, augmentation, schedules,
checkpoints, the loop, export) is shared. ``dino.train`` calls, in order: ``build_networks`` ->
``build_loss`` -> ``build_optimizer`` -> (``accelerator.prepare``) -> per step ``step``; ``rank_objects``
names per-rank state saved with each checkpoint. The functions take the model(s) they work on, so a caller can
wrap (shard) the networks between building and preparing.
"""

from __future__ import annotations

from typing import Any

from pathfm.training.objectives.dino import DINOObjective
from pathfm.training.objectives.dinov2 import DINOv2Objective

__all__ = ["OBJECTIVES", "DINOObjective", "DINOv2Objective", "build_objective"]

OBJECTIVES = {"dino": DINOObjective, "dinov2": DINOv2Objective}


def build_objective(
    model_args: Any, data_args: Any, training_args: Any, rank: int
) -> DINOObjective | DINOv2Objective:
    """The objective named by ``model_args.objective`` (``dino`` or ``dinov2``).

    Raises:
        ValueError: Unknown objective (named, with the choices).
    """
    name = getattr(model_args, "objective", "dino")
    if name not in OBJECTIVES:
        raise ValueError(f"--objective {name!r}: choose one of {sorted(OBJECTIVES)}")
    return OBJECTIVES[name](model_args, data_args, training_args, rank)
