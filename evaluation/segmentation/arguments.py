"""Command-line arguments of ``python -m pathfm.evaluation.segmentation`` and the decoder training settings.

Kept apart from the torch modules so that ``--help`` builds the parser without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pathfm.evaluation.tasks.consep import CoNSeP
from pathfm.evaluation.tasks.monusac import MoNuSAC

SEGMENTATION_TASKS = {cls.TASK_NAME: cls for cls in (CoNSeP, MoNuSAC)}


@dataclass
class SegmentationArguments:
    """Command-line arguments (protocol settings come from :class:`SegmentationConfig`)."""

    model: str = field(metadata={"help": "model folder or Hub id"})
    task: str = field(metadata={"help": f"one of {sorted(SEGMENTATION_TASKS)}"})
    data_dir: str = field(metadata={"help": "the task's folder in its official layout"})
    output_dir: str = field(default="eval_results")
    embeddings_dir: str = field(default="embeddings", metadata={"help": "patch-token cache root"})
    tile_size: int = field(default=224, metadata={"help": "tile side in px (multiple of the patch size)"})
    check_counts: bool = field(default=True, metadata={"help": "enforce the official image counts"})
    overwrite_embeddings: bool = False


@dataclass
class SegmentationConfig:
    """Decoder training settings (defaults: eva's leaderboard)."""

    decoder: str = "conv_with_image"
    steps: int = 2000
    batch_size: int = 64
    learning_rate: float = 2e-3
    eval_every: int = 100
    device: str = "cpu"  # backbone forward and decoder training
    runs: int = 5
    seed: int = 0
