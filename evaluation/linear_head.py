"""Train one linear probe head on in-memory embeddings (``pathfm-linear-v1``, see ``protocol.py``).

All embeddings sit in one tensor, a step is a gather + one matmul + AdamW, so 12,500 steps take seconds
on a CPU (eva's file-per-sample loader manages about 12 steps/s on 2 cores).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from pathfm.evaluation.protocol import LinearProbeConfig, derive_schedule
from pathfm.evaluation.scoring import fast_balanced_accuracy
from torch import Tensor, nn


@dataclass
class HeadFit:
    """Outcome of one run.

    Attributes:
        head: the linear layer at its best validation epoch (out_features = 1 for binary, else K).
        seed: the run's seed.
        best_epoch: 1-based epoch of the best validation balanced accuracy.
        best_val_balanced_accuracy: that value.
        steps: optimizer steps taken.
        epochs: epochs run (a last partial epoch counts).
        stopped_early: True if patience ran out before max_steps.
        history: validation balanced accuracy after each epoch.
    """

    head: nn.Linear
    seed: int
    best_epoch: int
    best_val_balanced_accuracy: float
    steps: int
    epochs: int
    stopped_early: bool
    history: list[float] = field(default_factory=list)


def make_head(in_features: int, num_classes: int, seed: int) -> nn.Linear:
    """A freshly initialised linear head (torch's default init), seeded without touching global RNG state.

    Binary tasks get one output (a logit for class 1, trained with BCE as eva does); others get K.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Linear(in_features, 1 if num_classes == 2 else num_classes)


def predict_proba(head: nn.Linear, embeddings: Tensor, num_classes: int) -> Tensor:
    """Class probabilities (N, K) from a head; a one-logit binary head gives [1 - sigmoid, sigmoid]."""
    with torch.no_grad():
        logits = head(embeddings)
        if num_classes == 2:
            p1 = torch.sigmoid(logits[:, 0])
            return torch.stack([1 - p1, p1], dim=1)
        return torch.softmax(logits, dim=1)


def linear_head_gradients(head: nn.Linear, x: Tensor, targets: Tensor, binary: bool) -> tuple[Tensor, Tensor]:
    """Closed-form gradients of the mean loss of a linear head (what autograd returns, without its overhead).

    For z = x W^T + b: cross-entropy gives dL/dz = (softmax(z) - onehot(y)) / B; BCE with logits on one
    output gives dL/dz = (sigmoid(z) - t) / B. Then dL/dW = (dL/dz)^T x and dL/db = sum_rows(dL/dz).

    Args:
        head: the linear layer (weight (K', D), bias (K',)), K' = 1 for binary.
        x: (B, D) batch of embeddings.
        targets: (B,) int64 class ids (multiclass) or float 0/1 (binary).
        binary: one-logit BCE head.

    Returns:
        ``(weight_grad (K', D), bias_grad (K',))``.
    """
    with torch.no_grad():
        logits = torch.addmm(head.bias, x, head.weight.T)
        if binary:
            delta = (torch.sigmoid(logits[:, 0]) - targets).unsqueeze(1)
        else:
            delta = torch.softmax(logits, dim=1)
            delta[torch.arange(len(x)), targets] -= 1.0
        delta /= len(x)
        return delta.T @ x, delta.sum(dim=0)


def _predict(head: nn.Linear, embeddings: Tensor, num_classes: int) -> Tensor:
    with torch.no_grad():
        logits = head(embeddings)
        return (logits[:, 0] > 0).long() if num_classes == 2 else logits.argmax(dim=1)


def train_linear_head(
    train_x: Tensor,
    train_y: Tensor,
    val_x: Tensor,
    val_y: Tensor,
    num_classes: int,
    config: LinearProbeConfig,
    seed: int,
) -> HeadFit:
    """Train one head with early stopping on validation balanced accuracy.

    Args:
        train_x: (N, D) float32 training embeddings.
        train_y: (N,) int64 class ids in [0, K).
        val_x: (M, D) float32 validation embeddings.
        val_y: (M,) int64 class ids.
        num_classes: K >= 2.
        config: protocol hyperparameters.
        seed: seeds the head's initialisation and the per-epoch shuffles (run i uses seed i).

    Returns:
        ``HeadFit`` with the best-validation head.

    Raises:
        ValueError: shape mismatch, K < 2, labels out of range or an empty split.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if train_x.ndim != 2 or val_x.ndim != 2 or train_x.shape[1] != val_x.shape[1]:
        raise ValueError(
            f"embeddings must be (N, D) with one D, got {tuple(train_x.shape)} / {tuple(val_x.shape)}"
        )
    if len(train_x) != len(train_y) or len(val_x) != len(val_y) or len(val_x) == 0:
        raise ValueError("embeddings and labels differ in length, or the validation split is empty")
    for name, y in (("train", train_y), ("validation", val_y)):
        if int(y.min()) < 0 or int(y.max()) >= num_classes:
            raise ValueError(
                f"{name} labels must lie in [0, {num_classes}), got [{int(y.min())}, {int(y.max())}]"
            )
    schedule = derive_schedule(len(train_x), config)
    train_x = train_x.float().contiguous()
    val_x = val_x.float().contiguous()
    binary = num_classes == 2
    targets = train_y.float() if binary else train_y.long()
    head = make_head(train_x.shape[1], num_classes, seed)
    # fused AdamW: one kernel per step instead of a dozen small ops (the head is tiny, overhead dominates).
    optimizer = torch.optim.AdamW(
        head.parameters(),
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        betas=config.betas,
        fused=True,
    )
    generator = torch.Generator().manual_seed(seed)

    best_state = copy.deepcopy(head.state_dict())
    best, best_epoch, bad_epochs, step, epoch = -1.0, 0, 0, 0, 0
    history: list[float] = []
    stopped_early = False
    n = len(train_x)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # (256 x D) @ (D x K) is too small to gain from threads; they only add overhead
    try:
        while step < config.max_steps and epoch < schedule.max_epochs:
            # ---- one epoch: seeded shuffle (one gather per epoch), then batches of batch_size ----
            warm = epoch < config.warmup_epochs
            for group in optimizer.param_groups:  # ConstantLR: factor during warm-up, stepped per epoch
                group["lr"] = config.learning_rate * (config.warmup_factor if warm else 1.0)
            order = torch.randperm(n, generator=generator)
            epoch_x, epoch_t = train_x[order], targets[order]
            for start in range(0, n, config.batch_size):
                if step >= config.max_steps:
                    break
                batch_x = epoch_x[start : start + config.batch_size]
                weight_grad, bias_grad = linear_head_gradients(
                    head, batch_x, epoch_t[start : start + config.batch_size], binary
                )
                head.weight.grad, head.bias.grad = weight_grad, bias_grad
                optimizer.step()
                step += 1
            epoch += 1
            # ---- validation and early stopping ----
            value = fast_balanced_accuracy(val_y, _predict(head, val_x, num_classes), num_classes)
            history.append(value)
            if value > best:
                best, best_epoch, bad_epochs = value, epoch, 0
                best_state = copy.deepcopy(head.state_dict())
            else:
                bad_epochs += 1
                if bad_epochs >= schedule.patience:
                    stopped_early = step < config.max_steps
                    break
    finally:
        torch.set_num_threads(threads)
    head.load_state_dict(best_state)
    head.eval()
    return HeadFit(
        head=head,
        seed=seed,
        best_epoch=best_epoch,
        best_val_balanced_accuracy=best,
        steps=step,
        epochs=epoch,
        stopped_early=stopped_early,
        history=history,
    )
