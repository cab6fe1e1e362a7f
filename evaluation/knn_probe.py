"""Weighted k-NN probe on cached embeddings (cosine similarity), a fast second opinion to the linear head.

Voting follows DINO's ``eval_knn.py`` (facebookresearch/dino, ``knn_classifier``): the k nearest training
embeddings by cosine similarity each vote for their class with weight exp(similarity / T), T = 0.07; the
normalised votes are the class scores used for AUROC, the arg-max the prediction. Deterministic.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torch.nn import functional as F


def knn_predict(
    train_x: Tensor,
    train_y: Tensor,
    query_x: Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Predict classes for ``query_x`` from its k nearest neighbours in ``train_x``.

    Args:
        train_x: (N, D) training embeddings.
        train_y: (N,) int64 class ids.
        query_x: (M, D) embeddings to classify.
        num_classes: K.
        k: neighbours; clipped to N with a warning when the training split is smaller.
        temperature: vote temperature T.
        chunk_size: queries per similarity block (memory: chunk_size x N floats); default keeps a block
            under 2**26 floats (256 MiB), e.g. 256 queries against PCam's 262,144 training embeddings.

    Returns:
        ``(predictions (M,) int64, scores (M, K) float32 summing to 1 per row)``.
    """
    if k > len(train_x):
        warnings.warn(
            f"k-NN: k={k} but the training split holds {len(train_x)} embeddings; using k={len(train_x)}",
            stacklevel=2,
        )
        k = len(train_x)
    if chunk_size is None:
        chunk_size = max(1, min(4096, 2**26 // max(1, len(train_x))))
    train_n = F.normalize(train_x.float(), dim=1)
    query_n = F.normalize(query_x.float(), dim=1)
    scores = torch.zeros(len(query_x), num_classes)
    for start in range(0, len(query_x), chunk_size):
        sim = query_n[start : start + chunk_size] @ train_n.T
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / temperature).exp()
        votes = torch.zeros(len(top_sim), num_classes)
        votes.scatter_add_(1, train_y[top_idx], weights)
        scores[start : start + chunk_size] = votes / votes.sum(dim=1, keepdim=True)
    return scores.argmax(dim=1), scores
