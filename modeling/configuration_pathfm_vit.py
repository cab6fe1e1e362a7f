"""Configuration of the pathfm Vision Transformer (``model_type = "pathfm_vit"``).

The defaults reproduce timm's ``vit_small_patch16_224`` (kaiko's ``vits16``). Named presets cover the
architectures of kaiko's released pathology models (arXiv 2404.15217, ``towards_large_pathology_fms``):

| preset        | timm architecture               | hidden | layers | heads | patch | image | registers |
|---------------|---------------------------------|--------|--------|-------|-------|-------|-----------|
| ``tiny``      | (tests / CPU runs)              | 64     | 2      | 4     | 16    | 224   | 0         |
| ``vits16``    | vit_small_patch16_224           | 384    | 12     | 6     | 16    | 224   | 0         |
| ``vits8``     | vit_small_patch8_224            | 384    | 12     | 6     | 8     | 224   | 0         |
| ``vitb16``    | vit_base_patch16_224            | 768    | 12     | 12    | 16    | 224   | 0         |
| ``vitb8``     | vit_base_patch8_224             | 768    | 12     | 12    | 8     | 224   | 0         |
| ``vitl14_reg4``| vit_large_patch14_reg4_dinov2  | 1024   | 24     | 16    | 14    | 518   | 4         |

``vitl14_reg4`` follows timm's DINOv2 layout faithfully: LayerScale (init 1e-5), 4 register tokens, and a
position embedding *without* slots for the CLS / register tokens (timm ``no_embed_class=True``) trained on a
37 x 37 grid (518 px); other input sizes interpolate that grid.

This file travels to the Hugging Face Hub as remote code: it imports only ``transformers``.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        patch_size=16,
        image_size=224,
    ),
    "vits16": dict(
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        intermediate_size=1536,
        patch_size=16,
        image_size=224,
    ),
    "vits8": dict(
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        intermediate_size=1536,
        patch_size=8,
        image_size=224,
    ),
    "vitb16": dict(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        patch_size=16,
        image_size=224,
    ),
    "vitb8": dict(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        patch_size=8,
        image_size=224,
    ),
    "vitl14_reg4": dict(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        patch_size=14,
        image_size=518,
        num_register_tokens=4,
        layerscale_value=1e-5,
        pos_embed_has_prefix_tokens=False,
    ),
}
"""Named architectures: keyword arguments of :class:`PathFMViTConfig` per preset name."""

TIMM_ARCHITECTURES: dict[str, str] = {
    "vits16": "vit_small_patch16_224",
    "vits8": "vit_small_patch8_224",
    "vitb16": "vit_base_patch16_224",
    "vitb8": "vit_base_patch8_224",
    "vitl14_reg4": "vit_large_patch14_reg4_dinov2",
}
"""timm model name whose state-dict layout each released preset matches (``tiny`` uses the vits16 layout)."""

_POOLINGS = ("cls", "cls_mean")
_INTERPOLATE_MODES = ("bicubic", "bilinear")


class PathFMViTConfig(PretrainedConfig):
    r"""Configuration of :class:`PathFMViTModel`, a pre-norm ViT in timm's ``VisionTransformer`` layout.

    Defaults give ViT-S/16 at 224 px (timm ``vit_small_patch16_224``). Use :meth:`from_preset` for the named
    architectures in :data:`PRESETS`.

    Args:
        image_size: Training image side in px (int, or ``[height, width]``). Sets the native position grid
            ``image_size // patch_size``; other sizes are interpolated at run time.
        patch_size: Patch side in px (square patches).
        num_channels: Input channels (3 for RGB).
        hidden_size: Token width ``D``.
        num_hidden_layers: Number of transformer blocks.
        num_attention_heads: Attention heads per block (must divide ``hidden_size``).
        intermediate_size: MLP hidden width (timm ``mlp_ratio * D``).
        hidden_act: MLP activation (key of ``transformers.activations.ACT2FN``; ``"gelu"`` is exact erf GELU
            as in timm's ``nn.GELU``).
        qkv_bias: Bias in the fused query/key/value projection.
        layer_norm_eps: LayerNorm epsilon (timm ViTs use 1e-6).
        num_register_tokens: Learned register tokens inserted after CLS (DINOv2 "registers", 0 = none).
        layerscale_value: Initial LayerScale gamma (DINOv2 / CaiT); ``None`` disables LayerScale.
        pos_embed_has_prefix_tokens: Whether the position embedding has slots for the CLS and register tokens
            (timm default, ``no_embed_class=False``). ``False`` = only patch positions (timm
            ``no_embed_class=True``, DINOv2 checkpoints); prefix tokens then get no position embedding.
        drop_path_rate: Stochastic depth rate, linearly increasing from 0 at the first block to this value at
            the last (timm ``drop_path_rate``), or the same in every block with ``drop_path_uniform``.
        drop_path_uniform: Use ``drop_path_rate`` in every block (DINOv2's ``drop_path_uniform: true`` for
            ViT-L/g) instead of the linear ramp.
        use_mask_token: Add a learned ``embeddings.mask_token`` (1, D) that replaces the patch embeddings
            where ``bool_masked_pos`` is True (iBOT / DINOv2 student crops; transformers ViT
            ``use_mask_token``).
            Off by default so that checkpoints without it load unchanged.
        attention_probs_dropout_prob: Dropout on attention probabilities.
        hidden_dropout_prob: Dropout on embeddings, attention output and MLP activations/outputs.
        initializer_range: Std of the truncated-normal init of linear layers and position embeddings.
        pooling: ``"cls"`` -> ``pooler_output`` is the final-norm CLS token (B, D); ``"cls_mean"`` -> CLS
            concatenated with the mean of the final-norm patch tokens, registers excluded (B, 2D).
        interpolate_mode: ``"bicubic"`` (timm default) or ``"bilinear"`` resampling of the position grid.
        interpolate_antialias: Antialias when the grid is downsampled (timm ``resample_abs_pos_embed``
            default ``True``; needed for outputs to equal timm's ``dynamic_img_size=True``).
        preset: Name of the preset this config was built from (informational), or ``None``.

    Raises:
        ValueError: If a field is out of range (heads not dividing hidden size, unknown pooling, ...).
    """

    model_type = "pathfm_vit"

    image_size: int | list[int] = 224
    patch_size: int = 16
    num_channels: int = 3
    hidden_size: int = 384
    num_hidden_layers: int = 12
    num_attention_heads: int = 6
    intermediate_size: int = 1536
    hidden_act: str = "gelu"
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6
    num_register_tokens: int = 0
    layerscale_value: float | None = None
    pos_embed_has_prefix_tokens: bool = True
    drop_path_rate: float = 0.0
    drop_path_uniform: bool = False
    use_mask_token: bool = False
    attention_probs_dropout_prob: float = 0.0
    hidden_dropout_prob: float = 0.0
    initializer_range: float = 0.02
    pooling: str = "cls"
    interpolate_mode: str = "bicubic"
    interpolate_antialias: bool = True
    preset: str | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        if isinstance(self.image_size, tuple):
            self.image_size = list(self.image_size)
        super().__post_init__(**kwargs)
        self._check()

    def _check(self) -> None:
        """Validate field values; raises ``ValueError`` naming the field."""
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"PathFMViTConfig: hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})."
            )
        if self.pooling not in _POOLINGS:
            raise ValueError(f"PathFMViTConfig: pooling must be one of {_POOLINGS}, got {self.pooling!r}.")
        if self.interpolate_mode not in _INTERPOLATE_MODES:
            raise ValueError(
                f"PathFMViTConfig: interpolate_mode must be one of {_INTERPOLATE_MODES}, "
                f"got {self.interpolate_mode!r}."
            )
        if self.num_register_tokens < 0:
            raise ValueError(
                f"PathFMViTConfig: num_register_tokens must be >= 0, got {self.num_register_tokens}."
            )
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"PathFMViTConfig: drop_path_rate must be in [0, 1), got {self.drop_path_rate}.")
        height, width = self.image_hw
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"PathFMViTConfig: image_size {self.image_size} must be a multiple of patch_size {self.patch_size}."
            )

    @property
    def image_hw(self) -> tuple[int, int]:
        """Native image size as ``(height, width)`` in px."""
        if isinstance(self.image_size, int):
            return self.image_size, self.image_size
        height, width = self.image_size
        return int(height), int(width)

    @property
    def grid_size(self) -> tuple[int, int]:
        """Native position-embedding grid ``(rows, cols)`` = image size // patch size."""
        height, width = self.image_hw
        return height // self.patch_size, width // self.patch_size

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches in the sequence: CLS + registers."""
        return 1 + self.num_register_tokens

    @property
    def pooled_size(self) -> int:
        """Width of ``pooler_output``: ``hidden_size`` for ``"cls"``, ``2 * hidden_size`` for ``"cls_mean"``."""
        return 2 * self.hidden_size if self.pooling == "cls_mean" else self.hidden_size

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> PathFMViTConfig:
        """Build the config of a named architecture.

        Args:
            name: One of :data:`PRESETS` (``tiny``, ``vits16``, ``vits8``, ``vitb16``, ``vitb8``,
                ``vitl14_reg4``).
            **overrides: Fields replacing the preset's values (e.g. ``drop_path_rate=0.1``, ``pooling``).

        Returns:
            The config, with ``preset`` set to ``name``.

        Raises:
            KeyError: If ``name`` is not a preset (the message lists the presets).
        """
        if name not in PRESETS:
            raise KeyError(f"Unknown PathFMViT preset {name!r}; choose one of {sorted(PRESETS)}.")
        return cls(**{**PRESETS[name], "preset": name, **overrides})


__all__ = ["PRESETS", "TIMM_ARCHITECTURES", "PathFMViTConfig"]
