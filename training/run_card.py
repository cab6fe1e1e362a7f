"""The model-card facts of a run, built once and completed with the run's progress.

Checkpoints (``pathfm_checkpoint.json``) and the export write the same facts, so both come from one
:class:`RunCard`. Keys are ``pathfm.training.model_card.ModelCardInfo`` fields.
"""

from __future__ import annotations

import time
from typing import Any

from pathfm.training.config import DINODataArguments, DINOModelArguments, DINOTrainingArguments, config_dict


class RunCard:
    """Static facts of a run (model, data, compute) fixed at start; :meth:`info` adds the progress.

    Args:
        m_args, d_args, t_args: The run's arguments.
        slides: Readable slide records (``slide_id`` attribute) used by the run.
        world_size: Number of processes.
        mixed_precision: Resolved precision (``no``, ``bf16``, ``fp16``).
        device: Device string of the main process.
    """

    def __init__(
        self,
        m_args: DINOModelArguments,
        d_args: DINODataArguments,
        t_args: DINOTrainingArguments,
        slides: list,
        world_size: int,
        mixed_precision: str,
        device: str,
    ) -> None:
        self.start = time.perf_counter()
        self.steps_per_epoch = t_args.steps_per_epoch
        self.configured_mpps = [float(m) for m in d_args.mpps]
        objective = getattr(m_args, "objective", "dino")
        self.facts: dict[str, Any] = {
            "repo_id": t_args.hub_model_id,
            "objective": objective,
            "model_name": f"pathfm ViT ({'DINOv2' if objective == 'dinov2' else 'DINO'})",
            "architecture": m_args.backbone_preset,
            "init": f"imagenet ({m_args.pretrained_weights})" if m_args.pretrained_weights else "random",
            "datasets": list(d_args.slides),
            "num_slides": len(slides),
            "slide_ids": [getattr(r, "slide_id", str(r)) for r in slides],
            "tile_size": d_args.tile_size,
            "min_tissue": d_args.min_tissue,
            "hyperparameters": config_dict(m_args, d_args, t_args),
            "compute": {"world_size": world_size, "device": device, "mixed_precision": mixed_precision},
        }

    def info(
        self,
        state: Any,
        final_loss: float | None = None,
        metrics: dict[str, float] | None = None,
        mpps_seen: list[float] | None = None,
    ) -> dict[str, Any]:
        """The facts so far: position (``state.step``, ``state.tiles_seen``), wall time, loss and metrics.

        ``mpps_seen`` (the magnifications of the tiles actually read, all ranks) replaces the configured
        ``mpps`` when given: a slide never serves an mpp finer than its native one, so some configured values
        may be unused.
        """
        notes = None
        if mpps_seen and sorted(mpps_seen) != sorted(self.configured_mpps):
            notes = (
                f"Configured magnifications {self.configured_mpps} µm/px; the slides could serve only "
                f"{sorted(mpps_seen)} µm/px (tiles are never upsampled)."
            )
        info = dict(self.facts)
        info.update(
            notes=notes,
            tiles_seen=state.tiles_seen,
            mpps=sorted(mpps_seen) if mpps_seen else self.configured_mpps,
            steps=state.step,
            epochs=state.step / self.steps_per_epoch,
            compute={**self.facts["compute"], "wall_time_s": time.perf_counter() - self.start},
            final_loss=final_loss,
            metrics=dict(metrics or {}),
        )
        return info
