"""Gated attention-based MIL head (ABMIL) over a padded bag of tile embeddings.

Shapes as eva's leaderboard head (kaiko-ai/eva 0.4.5 ``eva/vision/models/networks/abmil.py``, after Ilse et
al. 2018, arXiv 1802.04712, gated attention eq. 9): Linear D->128, gated attention
``w^T (tanh(V h) * sigmoid(U h))`` with 128 hidden units, softmax over the bag's real instances only,
attention-weighted sum, MLP 128->128->64->C with ReLU.

Padding never changes the output: padded rows get attention -inf (weight exactly 0) and their features are
zeroed before any layer sees them. The order of instances does not matter (sum under softmax weights).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class GatedABMIL(nn.Module):
    """Gated ABMIL classifier.

    Args:
        input_size: D, embedding width.
        num_classes: C.
        projected_size: width after the input projection (128).
        attention_size: hidden width of the gated attention (128).
        mlp_sizes: hidden widths of the classifier MLP (128, 64).
        dropout: dropout on the projection, attention and MLP (eva's leaderboard: 0).
    """

    def __init__(
        self,
        input_size: int,
        num_classes: int,
        projected_size: int = 128,
        attention_size: int = 128,
        mlp_sizes: Sequence[int] = (128, 64),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.projection = nn.Sequential(nn.Linear(input_size, projected_size), nn.Dropout(dropout))
        self.attention_tanh = nn.Sequential(
            nn.Linear(projected_size, attention_size), nn.Dropout(dropout), nn.Tanh()
        )
        self.attention_gate = nn.Sequential(
            nn.Linear(projected_size, attention_size), nn.Dropout(dropout), nn.Sigmoid()
        )
        self.attention_out = nn.Linear(attention_size, 1)
        layers: list[nn.Module] = []
        width = projected_size
        for size in mlp_sizes:
            layers += [nn.Linear(width, size), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout > 0 else [])
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.classifier = nn.Sequential(*layers)

    def attention(self, bags: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Attention weights (B, N) summing to 1 over real instances, and projected instances (B, N, P).

        Args:
            bags: (B, N, D) float embeddings, padded rows arbitrary.
            mask: (B, N) bool, True for real instances; None: all real.

        Raises:
            ValueError: a bag without any real instance, or shapes that do not fit.
        """
        if bags.ndim != 3:
            raise ValueError(f"bags must be (B, N, D), got {tuple(bags.shape)}")
        if mask is None:
            mask = torch.ones(bags.shape[:2], dtype=torch.bool, device=bags.device)
        if mask.shape != bags.shape[:2]:
            raise ValueError(f"mask {tuple(mask.shape)} does not fit bags {tuple(bags.shape)}")
        if not bool(mask.any(dim=1).all()):
            raise ValueError("a bag has no real instance (mask all False)")
        h = self.projection(bags.masked_fill(~mask[..., None], 0.0))
        logits = self.attention_out(self.attention_tanh(h) * self.attention_gate(h)).squeeze(-1)
        return torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=1), h

    def forward(self, bags: Tensor, mask: Tensor | None = None) -> Tensor:
        """Class logits (B, C) for bags (B, N, D) with real-instance mask (B, N) (see :meth:`attention`)."""
        weights, h = self.attention(bags, mask)
        return self.classifier(torch.einsum("bn,bnp->bp", weights, h))


def eva_names(num_hidden: int = 2) -> dict[str, str]:
    """Our parameter-name prefixes -> eva 0.4.5 ``ABMIL``'s (no dropout), for copying weights by name."""
    names = {
        "projection.0": "projector.0",
        "attention_tanh.0": "gated_attention.attention_a.0",
        "attention_gate.0": "gated_attention.attention_b.0",
        "attention_out": "gated_attention.attention_c",
    }
    for i in range(num_hidden + 1):
        names[f"classifier.{2 * i}"] = f"classifier._network.{2 * i}"
    return names
