"""Command-line arguments of ``python -m pathfm.evaluation.mil`` and the ABMIL training settings.

Kept apart from the torch modules so that ``--help`` builds the parser without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pathfm.evaluation.tasks.slide_mil import SLIDE_TASKS


@dataclass
class MilArguments:
    """Command-line arguments; tiling defaults come from the task (0 / None = task default)."""

    task: str = field(metadata={"help": f"one of {sorted(SLIDE_TASKS)}"})
    model: str = field(default="", metadata={"help": "model folder or Hub id (not with --embeddings_folder)"})
    data_dir: str = field(default="", metadata={"help": "the task's folder in its official layout"})
    output_dir: str = "eval_results"
    embeddings_dir: str = "embeddings"
    tile_size: int = field(default=0, metadata={"help": "tile side in px (0: the task's, 224)"})
    tiles_per_slide: int = field(default=0, metadata={"help": "max tiles per slide (0: the task's)"})
    min_tissue: float = 0.35
    embed_batch_size: int = 64
    embeddings_folder: str = field(
        default="",
        metadata={"help": "train on this slide-embedding folder (e.g. imported from eva); no embedding"},
    )
    embed_num_workers: int = field(default=0, metadata={"help": "DataLoader workers reading tiles"})


@dataclass
class MilConfig:
    """ABMIL training settings (defaults: eva's leaderboard)."""

    epochs: int = 100
    patience: int = 20
    batch_size: int = 32
    learning_rate: float = 1e-3
    runs: int = 20
    device: str = "cpu"  # backbone forward and head training
    seed: int = 0
