"""The probing protocol, named and versioned: every number pathfm prints carries ``PROTOCOL_NAME``.

``pathfm-linear-v1`` (close to eva's current patch-level protocol, with its traps removed):
- frozen backbone; images preprocessed by the model's own image processor (no ImageNet default);
- one embedding per image: ``pooler_output`` (or CLS + mean of the patch tokens), computed once and cached;
- one linear layer (cross-entropy over K logits; binary tasks: one logit with BCE, as eva), AdamW with
  lr 3e-4 and weight decay 0 (eva's config sets none, so torch's default 0.01 applies there; we state 0),
  batch 256 drawn by a seeded shuffle each epoch, no learning-rate schedule (eva's ConstantLR warm-up that
  scales lr by 1/3 for 5 epochs is not used), at most 12,500 steps;
- validation balanced accuracy after every epoch; early stopping with patience = ceil(20 % of the maximum
  number of epochs), derived from the split size in code; the best validation checkpoint is kept;
- N runs with seeds 0..N-1 (seed fixes the head's initialisation and the batch order); mean, sample
  standard deviation (ddof=1) and every value reported for validation and test;
- a weighted k-NN probe (k = 20, cosine similarity, DINO's vote weights exp(sim / 0.07)) as a second opinion.

``eva-linear`` (:data:`EVA_LINEAR`) reproduces the settings of eva's offline patch-classification configs
(kaiko-ai/eva ``configs/vision/pathology/offline/classification/*.yaml`` and
``src/eva/core/models/modules/head.py`` at commit 73b61a79): the same head, AdamW lr 3e-4, batch 256,
12,500 steps and patience (eva hard-codes it per dataset in validation checks; BACH's 1,250 equals our
derived 20 % of 6,250 epochs), plus what eva does implicitly: torch's AdamW default weight decay 0.01,
``ConstantLR`` defaults (lr x 1/3 for the first 5 epochs) and seed 42 (``EVA_GLOBAL_SEED``). eva seeds the
global generator once and its runs continue that stream; we seed run i with 42 + i, so single runs do not
match eva bit for bit, the protocol does.

Changing any default here changes the numbers: bump ``PROTOCOL_VERSION`` when you do.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

PROTOCOL_FAMILY = "pathfm-linear"
PROTOCOL_VERSION = 1
PROTOCOL_NAME = f"{PROTOCOL_FAMILY}-v{PROTOCOL_VERSION}"
POOLINGS = ("pooler_output", "cls_mean")
"""Backbone features a probe is trained on: ``pooler_output`` or CLS + patch-token mean (pathfm.evaluation.embed)."""


@dataclass(frozen=True)
class LinearProbeConfig:
    """Linear-head hyperparameters of ``pathfm-linear-v1``.

    Attributes:
        learning_rate: AdamW learning rate, constant.
        weight_decay: AdamW weight decay (0: no decay).
        betas: AdamW betas (torch defaults).
        batch_size: training batch size (embeddings per step).
        max_steps: maximum number of optimizer steps.
        patience_fraction: early-stopping patience as a fraction of the maximum number of epochs.
        n_runs: number of runs; run i uses seed ``first_seed + i``.
        warmup_epochs: epochs at the start trained with lr x ``warmup_factor`` (torch ConstantLR, stepped
            once per epoch); 0: none.
        warmup_factor: lr multiplier during the warm-up epochs.
        first_seed: seed of run 0.
    """

    learning_rate: float = 3e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    batch_size: int = 256
    max_steps: int = 12_500
    patience_fraction: float = 0.2
    n_runs: int = 5
    warmup_epochs: int = 0
    warmup_factor: float = 1.0
    first_seed: int = 0

    def to_dict(self) -> dict:
        """JSON-ready dict of the fields."""
        return dataclasses.asdict(self)


EVA_LINEAR_NAME = "eva-linear"


@dataclass(frozen=True)
class KnnConfig:
    """k-NN probe of ``pathfm-linear-v1`` (DINO eval_knn.py weighted vote).

    Attributes:
        k: number of neighbours.
        temperature: vote weight exp(cosine similarity / temperature).
    """

    k: int = 20
    temperature: float = 0.07

    def to_dict(self) -> dict:
        """JSON-ready dict of the fields."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Schedule:
    """Epoch bookkeeping derived from the training-set size.

    Attributes:
        steps_per_epoch: ceil(n_train / batch_size) (the last batch of an epoch may be smaller).
        max_epochs: ceil(max_steps / steps_per_epoch).
        patience: ceil(patience_fraction * max_epochs), at least 1, in epochs (validation checks).
    """

    steps_per_epoch: int
    max_epochs: int
    patience: int


def derive_schedule(n_train: int, config: LinearProbeConfig) -> Schedule:
    """Steps per epoch, maximum epochs and patience for ``n_train`` training embeddings.

    Example: CRC (100,000 train) -> 391 steps/epoch, 32 epochs, patience 7; BACH (268) -> 2 steps/epoch,
    6,250 epochs, patience 1,250.

    Raises:
        ValueError: n_train < 1.
    """
    if n_train < 1:
        raise ValueError("the training split is empty")
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    max_epochs = math.ceil(config.max_steps / steps_per_epoch)
    patience = max(1, math.ceil(config.patience_fraction * max_epochs))
    return Schedule(steps_per_epoch=steps_per_epoch, max_epochs=max_epochs, patience=patience)


EVA_LINEAR = LinearProbeConfig(weight_decay=0.01, warmup_epochs=5, warmup_factor=1 / 3, first_seed=42)
PROTOCOLS: dict[str, LinearProbeConfig] = {PROTOCOL_NAME: LinearProbeConfig(), EVA_LINEAR_NAME: EVA_LINEAR}
