"""DINO projection head.

Port of ``DINOHead`` from facebookresearch/dino ``vision_transformer.py`` (Caron et al. 2021, Sec. 3.1 and
Appendix): a 3-layer MLP (hidden 2048, GELU) to a 256-d bottleneck, L2-normalisation, then a weight-normalised
linear layer without bias to ``out_dim`` prototypes (65536 in the paper). With ``norm_last_layer=True`` the
weight-norm magnitude ``g`` is fixed to 1 (not trained), which the DINO authors found stabilises training.

Differences from upstream: ``torch.nn.utils.parametrizations.weight_norm`` replaces the deprecated
``torch.nn.utils.weight_norm`` (same maths; parameters are named
``last_layer.parametrizations.weight.original0`` for ``g`` and ``...original1`` for ``v``). The optional
BatchNorm in the MLP is kept (default off, as upstream).
"""

from __future__ import annotations

import torch
from typing import NamedTuple

from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

__all__ = ["DINOHead", "DINOv2Output", "DINOv2Wrapper", "LAST_LAYER_PREFIX", "MultiCropWrapper"]

#: Parameter-name prefix of the head's weight-normalised last layer (frozen during the first epoch).
LAST_LAYER_PREFIX = "last_layer"


class DINOHead(nn.Module):
    """DINO head: MLP -> L2-normalised bottleneck -> weight-normalised prototypes.

    Args:
        in_dim: Input feature size (the backbone's pooled output, e.g. 384 for ViT-S).
        out_dim: Number of prototypes K (65536 in DINO).
        use_bn: BatchNorm after the hidden linear layers (DINO default False for ViTs).
        norm_last_layer: Fix the weight-norm magnitude ``g`` to 1 (DINO default True).
        nlayers: Number of MLP layers (>= 1; DINO uses 3).
        hidden_dim: MLP hidden size (2048 in DINO).
        bottleneck_dim: Size of the L2-normalised bottleneck (256 in DINO).

    Raises:
        ValueError: If ``nlayers < 1`` or a size is not positive.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        use_bn: bool = False,
        norm_last_layer: bool = True,
        nlayers: int = 3,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
    ) -> None:
        super().__init__()
        if nlayers < 1:
            raise ValueError(f"DINOHead needs nlayers >= 1, got {nlayers}")
        for name, value in (
            ("in_dim", in_dim),
            ("out_dim", out_dim),
            ("hidden_dim", hidden_dim),
            ("bottleneck_dim", bottleneck_dim),
        ):
            if value < 1:
                raise ValueError(f"DINOHead {name} must be positive, got {value}")
        nlayers = max(nlayers, 1)
        if nlayers == 1:
            self.mlp: nn.Module = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim)]
            if use_bn:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.GELU())
            for _ in range(nlayers - 2):
                layers.append(nn.Linear(hidden_dim, hidden_dim))
                if use_bn:
                    layers.append(nn.BatchNorm1d(hidden_dim))
                layers.append(nn.GELU())
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
        self.apply(self._init_weights)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        # upstream: self.last_layer.weight_g.data.fill_(1); weight_g.requires_grad = False if norm_last_layer
        with torch.no_grad():
            self.last_layer.parametrizations.weight.original0.fill_(1.0)
        if norm_last_layer:
            self.last_layer.parametrizations.weight.original0.requires_grad = False

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """Truncated-normal (std 0.02) weights and zero biases for linear layers, as upstream."""
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.constant_(module.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        """Project features to prototype logits.

        Args:
            x: Features, shape (B, in_dim).

        Returns:
            Logits, shape (B, out_dim) (cosine similarity to the prototypes times ``g``).
        """
        x = self.mlp(x)
        x = nn.functional.normalize(x, dim=-1, p=2)
        return self.last_layer(x)


class MultiCropWrapper(nn.Module):
    """Backbone + head applied to every crop, batching crops of equal resolution together.

    Port of ``MultiCropWrapper`` from facebookresearch/dino ``utils.py``: consecutive crops with the same
    spatial size go through the backbone in one forward pass (2 globals, then all locals); the pooled
    features of all crops are concatenated and passed to the head at once.

    Args:
        backbone: A module mapping ``pixel_values`` (B, 3, H, W) to an output with ``pooler_output`` (B, D)
            (e.g. ``PathFMViTModel``).
        head: The projection head mapping (N, D) -> (N, out_dim).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, crops: list[Tensor] | Tensor) -> Tensor:
        """Run all crops.

        Args:
            crops: A list of crop batches, each (B, 3, H_i, W_i), or one tensor (B, 3, H, W).

        Returns:
            Head outputs for all crops concatenated crop-major: shape (len(crops) * B, out_dim).
        """
        if isinstance(crops, Tensor):
            crops = [crops]
        sizes = torch.tensor([c.shape[-1] for c in crops])
        idx_crops = torch.cumsum(torch.unique_consecutive(sizes, return_counts=True)[1], 0)
        start = 0
        features = []
        for end in idx_crops.tolist():
            out = self.backbone(pixel_values=torch.cat(crops[start:end]))
            features.append(out.pooler_output)
            start = end
        return self.head(torch.cat(features))


def _cls_by_size(backbone: nn.Module, crops: list[Tensor]) -> list[Tensor]:
    """Final-norm CLS tokens of ``crops``, one backbone pass per run of equal crop sizes (crop-major)."""
    out, start = [], 0
    sizes = torch.tensor([c.shape[-1] for c in crops])
    for end in torch.cumsum(torch.unique_consecutive(sizes, return_counts=True)[1], 0).tolist():
        out.append(backbone(pixel_values=torch.cat(crops[start:end])).last_hidden_state[:, 0])
        start = end
    return out


class DINOv2Output(NamedTuple):
    """What :class:`DINOv2Wrapper` returns for one batch of crops (B images).

    Attributes:
        cls_logits: DINO head logits of every crop's CLS token, crop-major (n_crops * B, K); the 2 global
            crops come first.
        patch_logits: iBOT head logits of the masked patch tokens of the global crops, (M, K_ibot) in
            ``masks.flatten().nonzero()`` order, or None without masks.
        cls_tokens: Backbone CLS tokens (after the final LayerNorm) of the 2 global crops, (2 * B, D), for
            KoLeo.
    """

    cls_logits: Tensor
    patch_logits: Tensor | None
    cls_tokens: Tensor


class DINOv2Wrapper(nn.Module):
    """Backbone + DINO head + iBOT head (or the DINO head shared), as ``SSLMetaArch``'s student / teacher.

    After facebookresearch/dinov2 ``dinov2/train/ssl_meta_arch.py`` (``forward_backward``): the global crops
    run through the backbone with their masked patches replaced by the backbone's ``mask_token`` (student) or
    unmasked (teacher); the DINO head sees the CLS tokens of all crops, the iBOT head the patch tokens at the
    masked positions only (registers are skipped: patch tokens start at ``config.num_prefix_tokens``). Heads
    are applied row-wise, so one call per head on the concatenated rows equals upstream's block-diagonal call.

    Args:
        backbone: A ``PathFMViTModel`` with ``use_mask_token=True``.
        dino_head: Head for CLS tokens.
        ibot_head: Head for masked patch tokens; None shares ``dino_head`` (dinov2 ``ibot.separate_head``).
    """

    def __init__(self, backbone: nn.Module, dino_head: nn.Module, ibot_head: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.dino_head = dino_head
        self.ibot_head = ibot_head

    def head_modules(self) -> dict[str, nn.Module]:
        """Submodules clipped separately (dinov2 ``clip_grad`` per backbone / dino_head / ibot_head)."""
        modules = {"backbone": self.backbone, "dino_head": self.dino_head}
        if self.ibot_head is not None:
            modules["ibot_head"] = self.ibot_head
        return modules

    def forward(
        self, crops: list[Tensor], masks: Tensor | None = None, mask_input: bool = True,
        mask_indices: Tensor | None = None,
    ) -> DINOv2Output:
        """Run the crops.

        Args:
            crops: [(B, 3, G, G) x 2 global, (B, 3, L, L) x n local] crop batches (n may be 0).
            masks: Bool (2 * B, num_patches) iBOT masks of the global crops (crop-major), or None.
            mask_input: Replace the masked patches by the mask token (student) or only gather the patch tokens
                at the masked positions (teacher, which sees the whole crops).
            mask_indices: (M,) int64 ``masks.flatten().nonzero()``, if known: the gather then needs no
                host-device sync (boolean indexing does).

        Returns:
            A :class:`DINOv2Output`.
        """
        if isinstance(crops, Tensor):
            crops = [crops]
        global_crops = torch.cat(crops[:2])
        masked = masks if (mask_input and masks is not None) else None
        tokens = self.backbone(pixel_values=global_crops, bool_masked_pos=masked).last_hidden_state
        cls_tokens = tokens[:, 0]
        local_cls = _cls_by_size(self.backbone, crops[2:]) if len(crops) > 2 else []
        cls_logits = self.dino_head(torch.cat([cls_tokens, *local_cls]))
        patch_logits = None
        if masks is not None:
            patch_tokens = tokens[:, self.backbone.config.num_prefix_tokens :]
            if mask_indices is None:
                patches = patch_tokens[masks]
            else:
                patches = patch_tokens.flatten(0, 1).index_select(0, mask_indices)
            patch_logits = (self.dino_head if self.ibot_head is None else self.ibot_head)(patches)
        return DINOv2Output(cls_logits, patch_logits, cls_tokens)
