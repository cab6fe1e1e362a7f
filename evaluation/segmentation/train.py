"""Train a segmentation decoder on cached patch-token grids and score it with the leaderboard Dice.

Protocol ``eva-segmentation-v1`` (kaiko-ai/eva 0.4.5 CoNSeP / MoNuSAC configs): frozen backbone, decoder
trained with Dice loss only, AdamW lr 2e-3, batch 64, 2,000 steps, validation Dice every ``eval_every``
steps, the best validation state kept, ``runs`` seeds; the metric is ``segmentation_dice`` (MONAI-style,
background excluded) on the validation split.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict

import torch
import torch.nn.functional as F
from pathfm.evaluation.scoring import load_metric
from pathfm.evaluation.segmentation.arguments import SegmentationConfig
from pathfm.evaluation.segmentation.decoders import DECODERS
from pathfm.evaluation.threads import threads_for
from torch import Tensor

PROTOCOL = "eva-segmentation-v1"


def dice_loss(
    logits: Tensor, target: Tensor, ignore_index: int | None = None, smooth: float = 1e-5
) -> Tensor:
    """1 - mean over classes of soft Dice, pixels pooled over the batch (MONAI ``DiceLoss(softmax=True,
    to_onehot_y=True, batch=True)``, smooth 1e-5 in numerator and denominator).

    Args:
        logits: (B, C, H, W).
        target: (B, H, W) int64 class ids; ``ignore_index`` pixels contribute nothing.
    """
    num_classes = logits.shape[1]
    keep = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    probs = torch.softmax(logits, dim=1) * keep[:, None]
    onehot = (
        F.one_hot(target.clamp(0, num_classes - 1) * keep, num_classes).permute(0, 3, 1, 2) * keep[:, None]
    )
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    denom = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    return 1.0 - ((2 * inter + smooth) / (denom + smooth)).mean()


def _forward(decoder: torch.nn.Module, features: Tensor, images: Tensor) -> Tensor:
    if isinstance(decoder, DECODERS["conv_with_image"]):
        return decoder(features, images)
    return decoder(features, tuple(images.shape[2:]))


@torch.no_grad()
def predict(decoder: torch.nn.Module, features: Tensor, images: Tensor, batch_size: int = 64) -> Tensor:
    """Predicted class ids (N, H, W) for features (N, D, h, w) and normalised images (N, 3, H, W)."""
    decoder.eval()
    device = next(decoder.parameters()).device
    out = [
        _forward(decoder, features[i : i + batch_size].to(device), images[i : i + batch_size].to(device))
        .argmax(1)
        .cpu()
        for i in range(0, len(features), batch_size)
    ]
    return torch.cat(out)


def score(pred: Tensor, masks: Tensor, num_classes: int, ignore_index: int | None) -> dict:
    """``segmentation_dice`` of predicted (N, H, W) against reference masks (N, H, W)."""
    return load_metric("segmentation_dice").compute(
        predictions=pred.flatten(1).tolist(),
        references=masks.flatten(1).tolist(),
        num_classes=num_classes,
        ignore_index=ignore_index,
    )


def train_one(
    train: dict[str, Tensor],
    val: dict[str, Tensor],
    num_classes: int,
    ignore_index: int | None,
    config: SegmentationConfig,
    seed: int,
) -> dict:
    """Train one decoder; ``{"dice", "micro_dice", "per_class_dice", "best_step", "variant"}`` on validation.

    ``train`` / ``val`` hold ``features`` (N, D, h, w) and normalised ``images`` (N, 3, H, W), ``masks``.
    """
    torch.manual_seed(seed)
    decoder = DECODERS[config.decoder](train["features"].shape[1], num_classes).to(config.device)
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=config.learning_rate)
    generator = torch.Generator().manual_seed(seed)
    n = len(train["features"])
    best, best_step = None, 0
    for step in range(1, config.steps + 1):
        decoder.train()
        idx = torch.randint(0, n, (min(config.batch_size, n),), generator=generator)
        batch = {k: train[k][idx].to(config.device) for k in ("features", "images", "masks")}
        loss = dice_loss(_forward(decoder, batch["features"], batch["images"]), batch["masks"], ignore_index)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % config.eval_every == 0 or step == config.steps:
            result = score(
                predict(decoder, val["features"], val["images"]), val["masks"], num_classes, ignore_index
            )
            if best is None or result["dice"] > best["dice"]:
                best, best_step = result, step
    assert best is not None
    return {**best, "best_step": best_step}


def run_protocol(
    train: dict[str, Tensor],
    val: dict[str, Tensor],
    num_classes: int,
    ignore_index: int | None,
    config: SegmentationConfig,
) -> dict:
    """``config.runs`` seeded runs; per-run values plus mean and std (0 for one run) of the Dice."""
    images = train["images"]
    work = min(config.batch_size, len(images)) * images.shape[2] * images.shape[3]
    with threads_for(work, config.device):  # one thread for small steps (see evaluation/threads.py)
        runs = [
            train_one(train, val, num_classes, ignore_index, config, config.seed + r)
            for r in range(config.runs)
        ]
    values = [r["dice"] for r in runs]
    return {
        "protocol": PROTOCOL,
        "config": asdict(config),
        "metric": "segmentation_dice",
        "metric_variant": runs[0]["variant"],
        "runs": [{k: v for k, v in r.items() if k != "variant"} for r in runs],
        "dice_mean": statistics.fmean(values),
        "dice_std": statistics.stdev(values) if len(values) > 1 else 0.0,
    }
