"""Train gated ABMIL heads on per-slide embedding files and score them (protocol ``eva-mil-v1``).

kaiko-ai/eva 0.4.5 slide-level configs: AdamW lr 1e-3, batch 32 slides, at most 100 epochs, early stopping
with patience 20 on validation balanced accuracy, best validation state scored on every split; ``runs``
seeds (20, as eva). Metrics: balanced accuracy and AUROC (``evaluate`` scripts), plus quadratic Cohen kappa
(scikit-learn) for ordinal tasks (PANDA).
"""

from __future__ import annotations

import copy
import statistics
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pathfm.evaluation.mil.abmil import GatedABMIL
from pathfm.evaluation.mil.arguments import MilConfig
from pathfm.evaluation.scoring import classification_scores, fast_balanced_accuracy
from pathfm.evaluation.tasks.slide_mil import SlideSample
from pathfm.evaluation.threads import threads_for
from safetensors.torch import load_file
from sklearn.metrics import cohen_kappa_score
from torch import Tensor

PROTOCOL = "eva-mil-v1"


def load_bags(folder: str | Path, slides: list[SlideSample]) -> tuple[list[Tensor], Tensor, list[str]]:
    """(bags [(n_i, D)], targets (S,), slide ids) of the slides whose embedding file exists."""
    bags, targets, ids = [], [], []
    for slide in slides:
        path = Path(folder) / f"{slide.slide_id}.safetensors"
        if path.is_file():
            bags.append(load_file(path)["embeddings"])
            targets.append(slide.target)
            ids.append(slide.slide_id)
    return bags, torch.tensor(targets, dtype=torch.int64), ids


def pad_bags(bags: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Stack bags (n_i, D) into (B, max n, D) zero-padded, and the real-instance mask (B, max n) bool."""
    n = max(len(b) for b in bags)
    out = torch.zeros(len(bags), n, bags[0].shape[1])
    mask = torch.zeros(len(bags), n, dtype=torch.bool)
    for i, b in enumerate(bags):
        out[i, : len(b)], mask[i, : len(b)] = b, True
    return out, mask


@torch.no_grad()
def predict_proba(model: GatedABMIL, bags: list[Tensor], batch_size: int = 32) -> Tensor:
    """Class probabilities (S, C)."""
    model.eval()
    return torch.cat(
        [
            torch.softmax(model(*pad_bags(bags[i : i + batch_size])), 1)
            for i in range(0, len(bags), batch_size)
        ]
    )


def slide_scores(targets: Tensor, probs: Tensor, num_classes: int, kappa: bool) -> dict[str, float]:
    """Balanced accuracy and AUROC (+ quadratic kappa) of slide predictions."""
    pred = probs.argmax(1).numpy()
    scores = classification_scores(targets.numpy(), pred, probs.numpy(), num_classes)
    out = {"balanced_accuracy": scores["balanced_accuracy"], "auroc": scores["auroc"]}
    if kappa:
        out["quadratic_kappa"] = float(
            cohen_kappa_score(targets.numpy(), pred, labels=list(range(num_classes)), weights="quadratic")
        )
    return out


def train_one(
    data: dict[str, tuple[list[Tensor], Tensor]],
    num_classes: int,
    config: MilConfig,
    seed: int,
    kappa: bool = False,
) -> dict:
    """One seeded run: train on ``data["train"]``, early-stop on ``data["validation"]``, score every split."""
    torch.manual_seed(seed)
    train_bags, train_y = data["train"]
    val_bags, val_y = data["validation"]
    model = GatedABMIL(train_bags[0].shape[1], num_classes).to(config.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    rng = np.random.default_rng(seed)
    best, best_state, best_epoch, waited = -1.0, None, 0, 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = rng.permutation(len(train_bags))
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            padded, mask = pad_bags([train_bags[i] for i in idx])
            logits = model(padded.to(config.device), mask.to(config.device))
            loss = F.cross_entropy(logits, train_y[idx].to(config.device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        val = fast_balanced_accuracy(val_y, predict_proba(model, val_bags).argmax(1), num_classes)
        if val > best:
            best, best_state, best_epoch, waited = val, copy.deepcopy(model.state_dict()), epoch, 0
        else:
            waited += 1
            if waited >= config.patience:
                break
    model.load_state_dict(best_state)
    result = {"best_epoch": best_epoch}
    for split, (bags, y) in data.items():
        result[split] = slide_scores(y, predict_proba(model, bags), num_classes, kappa)
    return result


def run_protocol(
    data: dict[str, tuple[list[Tensor], Tensor]], num_classes: int, config: MilConfig, kappa: bool = False
) -> dict:
    """``config.runs`` seeded runs; per-run values and mean/std per split and metric."""
    bags = data["train"][0]
    work = min(config.batch_size, len(bags)) * max(len(b) for b in bags) * bags[0].shape[1]
    with threads_for(work, config.device):  # one thread for small steps (see evaluation/threads.py)
        runs = [train_one(data, num_classes, config, config.seed + r, kappa) for r in range(config.runs)]
    summary = {}
    for split in data:
        for metric in runs[0][split]:
            values = [r[split][metric] for r in runs]
            summary[f"{split}/{metric}"] = {
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            }
    return {"protocol": PROTOCOL, "config": asdict(config), "runs": runs, "summary": summary}
