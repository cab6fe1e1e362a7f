"""PyTorch pathfm Vision Transformer: a timm-layout pre-norm ViT as a ``transformers`` model.

One forward pass, top to bottom: patch embedding (Conv2d, stride = patch) -> prepend CLS (+ registers) and add
learned absolute position embeddings (bicubic-interpolated for other input sizes) -> pre-norm blocks
``x + drop_path(ls1(attn(norm1(x))))``, ``x + drop_path(ls2(mlp(norm2(x))))`` -> final LayerNorm -> pooling.

The block is timm's ``VisionTransformer`` (``timm/models/vision_transformer.py``, timm 1.0): fused ``qkv``
projection, LayerScale and registers as in DINOv2 (``dinov2/models/vision_transformer.py``). Parameter names are
chosen once and mapped to timm keys by ``convert_timm_to_pathfm.py``; position-embedding resampling follows
timm's ``resample_abs_pos_embed`` (``timm/layers/pos_embed.py``) so that outputs equal timm's with
``dynamic_img_size=True`` at any size.

This file travels to the Hugging Face Hub as remote code: it imports only torch, transformers and its sibling
``configuration_pathfm_vit``.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput

from .configuration_pathfm_vit import PathFMViTConfig


class PathFMViTPatchEmbeddings(nn.Module):
    """Non-overlapping patch projection (timm ``PatchEmbed``).

    Input ``pixel_values`` (B, C, H, W) with H, W multiples of ``patch_size``; output (B, rows, cols, D).
    """

    def __init__(self, config: PathFMViTConfig) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        self.num_channels = config.num_channels
        self.projection = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Project patches.

        Args:
            pixel_values: (B, C, H, W) float tensor.

        Returns:
            (B, H // patch, W // patch, D) patch embeddings.

        Raises:
            ValueError: If the input is not 4-D, has the wrong channel count, or H / W is not a multiple of the
                patch size.
        """
        if pixel_values.ndim != 4:
            raise ValueError(
                f"PathFMViT expects pixel_values of shape (batch, channels, height, width), got "
                f"{tuple(pixel_values.shape)}."
            )
        _, channels, height, width = pixel_values.shape
        if channels != self.num_channels:
            raise ValueError(f"PathFMViT expects {self.num_channels} input channels, got {channels}.")
        if height % self.patch_size or width % self.patch_size:
            p = self.patch_size
            raise ValueError(
                f"PathFMViT input size {height}x{width} px is not a multiple of patch_size {p}: resize or crop "
                f"to a multiple of {p} px (e.g. {max(p, height // p * p)}x{max(p, width // p * p)})."
            )
        return self.projection(pixel_values).permute(0, 2, 3, 1)


class PathFMViTEmbeddings(nn.Module):
    """CLS token, register tokens, patch embeddings and learned absolute position embeddings.

    ``position_embeddings`` has shape (1, P + rows * cols, D) where P = 1 + registers when
    ``config.pos_embed_has_prefix_tokens`` (timm default) and P = 0 otherwise (timm ``no_embed_class``, DINOv2).
    """

    def __init__(self, config: PathFMViTConfig) -> None:
        super().__init__()
        self.config = config
        self.grid_size = config.grid_size
        self.num_pos_prefix = config.num_prefix_tokens if config.pos_embed_has_prefix_tokens else 0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, config.num_register_tokens, config.hidden_size))
            if config.num_register_tokens
            else None
        )
        self.mask_token = nn.Parameter(torch.zeros(1, config.hidden_size)) if config.use_mask_token else None
        self.patch_embeddings = PathFMViTPatchEmbeddings(config)
        num_positions = self.num_pos_prefix + self.grid_size[0] * self.grid_size[1]
        self.position_embeddings = nn.Parameter(torch.zeros(1, num_positions, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def interpolate_pos_encoding(self, rows: int, cols: int) -> torch.Tensor:
        """Position embeddings for a ``rows`` x ``cols`` patch grid.

        At the native grid the stored tensor is returned unchanged (bit-exact). Otherwise the patch part is
        resampled with ``F.interpolate`` (mode ``config.interpolate_mode``, ``align_corners=False``, antialias
        ``config.interpolate_antialias``) in float32, exactly as timm's ``resample_abs_pos_embed``; prefix slots
        are kept as they are.

        Args:
            rows: Patch rows of the input (H // patch).
            cols: Patch columns of the input (W // patch).

        Returns:
            (1, P + rows * cols, D) position embeddings.
        """
        pos = self.position_embeddings
        if (rows, cols) == tuple(self.grid_size):
            return pos
        prefix, patch_pos = pos[:, : self.num_pos_prefix], pos[:, self.num_pos_prefix :]
        dim = pos.shape[-1]
        patch_pos = (
            patch_pos.float().reshape(1, self.grid_size[0], self.grid_size[1], dim).permute(0, 3, 1, 2)
        )
        patch_pos = F.interpolate(
            patch_pos,
            size=(rows, cols),
            mode=self.config.interpolate_mode,
            align_corners=False,
            antialias=self.config.interpolate_antialias,
        )
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, rows * cols, dim).to(pos.dtype)
        return torch.cat([prefix, patch_pos], dim=1)

    def forward(
        self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Embed images into the token sequence.

        Args:
            pixel_values: (B, C, H, W), H and W multiples of ``patch_size``.
            bool_masked_pos: Optional bool (B, (H / patch) * (W / patch)); True patches are replaced by
                ``mask_token`` before the position embedding is added (as dinov2's
                ``prepare_tokens_with_masks`` and transformers' ViT / Dinov2 embeddings).

        Returns:
            (B, 1 + registers + (H / patch) * (W / patch), D) tokens in the order CLS, registers, patches
            (row-major).

        Raises:
            ValueError: If ``bool_masked_pos`` is given without ``config.use_mask_token``, or has the wrong
                shape.
        """
        patches = self.patch_embeddings(pixel_values)
        batch, rows, cols, dim = patches.shape
        patches = patches.reshape(batch, rows * cols, dim)
        if bool_masked_pos is not None:
            if self.mask_token is None:
                raise ValueError("bool_masked_pos needs a model whose config has use_mask_token=True.")
            if tuple(bool_masked_pos.shape) != (batch, rows * cols):
                raise ValueError(
                    f"bool_masked_pos must be (batch, num_patches) = {(batch, rows * cols)}, "
                    f"got {tuple(bool_masked_pos.shape)}."
                )
            mask = bool_masked_pos.to(torch.bool).unsqueeze(-1)
            patches = torch.where(mask, self.mask_token.to(patches.dtype).unsqueeze(0), patches)
        pos = self.interpolate_pos_encoding(rows, cols)
        prefix = [self.cls_token.expand(batch, -1, -1)]
        if self.register_tokens is not None:
            prefix.append(self.register_tokens.expand(batch, -1, -1))
        if self.num_pos_prefix:
            # original timm / DINO layout: position slots for the prefix tokens, concat then add
            embeddings = torch.cat([*prefix, patches], dim=1) + pos
        else:
            # timm no_embed_class (DINOv2): positions for patches only, add then concat
            embeddings = torch.cat([*prefix, patches + pos], dim=1)
        return self.dropout(embeddings)


class PathFMViTAttention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection (timm ``Attention``).

    SDPA (``F.scaled_dot_product_attention``) by default; the eager softmax path runs when attention maps are
    requested or ``config._attn_implementation == "eager"``.
    """

    def __init__(self, config: PathFMViTConfig) -> None:
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.attn_dropout = nn.Dropout(config.attention_probs_dropout_prob)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.proj_dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend.

        Args:
            hidden_states: (B, N, D).
            output_attentions: Return the attention probabilities (forces the eager path).

        Returns:
            ``(output (B, N, D), attention (B, heads, N, N) or None)``.
        """
        batch, tokens, dim = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(batch, tokens, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        weights = None
        if output_attentions or self.config._attn_implementation == "eager":
            weights = torch.softmax((query * self.scale) @ key.transpose(-2, -1), dim=-1)
            context = self.attn_dropout(weights) @ value
        else:
            context = F.scaled_dot_product_attention(
                query, key, value, dropout_p=self.attn_dropout.p if self.training else 0.0
            )
        context = context.transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj_dropout(self.proj(context)), (weights if output_attentions else None)


class PathFMViTMLP(nn.Module):
    """Two-layer MLP ``fc2(drop(act(fc1(x))))`` (timm ``Mlp``)."""

    def __init__(self, config: PathFMViTConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, N, D)."""
        return self.dropout(self.fc2(self.dropout(self.activation(self.fc1(hidden_states)))))


class PathFMViTLayerScale(nn.Module):
    """Per-channel learned scale ``x * gamma`` (CaiT / DINOv2 LayerScale), gamma initialised to a constant."""

    def __init__(self, config: PathFMViTConfig) -> None:
        super().__init__()
        self.init_value = float(config.layerscale_value)
        self.gamma = nn.Parameter(torch.full((config.hidden_size,), self.init_value))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, N, D)."""
        return hidden_states * self.gamma


class PathFMViTDropPath(nn.Module):
    """Stochastic depth per sample (timm ``DropPath`` with ``scale_by_keep=True``)."""

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Zero whole residual branches of random samples in training, scaled by 1 / keep probability."""
        if self.drop_prob == 0.0 or not self.training:
            return hidden_states
        keep = 1.0 - self.drop_prob
        mask = hidden_states.new_empty(
            (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
        ).bernoulli_(keep)
        return hidden_states * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class PathFMViTLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block (timm ``Block``): attention and MLP residual branches with LayerScale and
    drop path. Gradient checkpointing wraps ``forward`` (transformers ``GradientCheckpointingLayer``)."""

    def __init__(self, config: PathFMViTConfig, drop_path: float = 0.0) -> None:
        super().__init__()
        use_ls = config.layerscale_value is not None
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = PathFMViTAttention(config)
        self.layer_scale1 = PathFMViTLayerScale(config) if use_ls else nn.Identity()
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = PathFMViTMLP(config)
        self.layer_scale2 = PathFMViTLayerScale(config) if use_ls else nn.Identity()
        self.drop_path = PathFMViTDropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, N, D) -> ``((B, N, D), attention (B, heads, N, N) or None)``."""
        attn_out, weights = self.attention(self.norm1(hidden_states), output_attentions)
        hidden_states = hidden_states + self.drop_path(self.layer_scale1(attn_out))
        hidden_states = hidden_states + self.drop_path(self.layer_scale2(self.mlp(self.norm2(hidden_states))))
        return hidden_states, weights


class PathFMViTPreTrainedModel(PreTrainedModel):
    """Weight init and the transformers plumbing shared by the pathfm ViT models."""

    config_class = PathFMViTConfig
    config: PathFMViTConfig
    base_model_prefix = "vit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["PathFMViTEmbeddings", "PathFMViTLayer"]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        """timm-style init: truncated normal (std ``initializer_range``) for linear layers and position
        embeddings, CLS / registers normal std 1e-6, mask token 0, LayerNorm (1, 0), LayerScale gamma =
        ``layerscale_value``."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, PathFMViTEmbeddings):
            init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)
            init.normal_(module.cls_token, mean=0.0, std=1e-6)
            if module.mask_token is not None:
                init.zeros_(module.mask_token)
            if module.register_tokens is not None:
                init.normal_(module.register_tokens, mean=0.0, std=1e-6)
        elif isinstance(module, PathFMViTLayerScale):
            init.constant_(module.gamma, module.init_value)

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs) -> None:
        """``PreTrainedModel.save_pretrained`` with weights always stored as fp32 safetensors.

        Floating-point tensors are cast to float32 (a bf16 / fp16 model is saved in full precision) and, when
        the class is registered for an Auto class (``register_auto_classes``), ``config.auto_map`` names both
        ``AutoModel`` and ``AutoModelForImageClassification`` so either loads the saved folder as remote code.
        Other arguments are passed through unchanged (with ``push_to_hub=True`` and a non-fp32 model, the pushed
        config.json still names the in-memory dtype; upload the folder after saving instead).
        """
        if kwargs.get("state_dict") is None:
            kwargs["state_dict"] = {
                k: (v.float() if v.is_floating_point() else v) for k, v in self.state_dict().items()
            }
        if self._auto_class is not None:
            module = type(self).__module__.rsplit(".", 1)[-1]
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            auto_map["AutoModel"] = f"{module}.PathFMViTModel"
            auto_map["AutoModelForImageClassification"] = f"{module}.PathFMViTForImageClassification"
            self.config.auto_map = auto_map
        original_dtype = self.config.dtype
        super().save_pretrained(save_directory, *args, **kwargs)
        if self.dtype != torch.float32:
            # super() records the in-memory dtype; the file holds fp32, so the saved config must say so
            self.config.dtype = torch.float32
            self.config.save_pretrained(save_directory)
            self.config.dtype = original_dtype


class PathFMViTModel(PathFMViTPreTrainedModel):
    """The pathfm ViT backbone: embeddings -> blocks -> final LayerNorm -> pooling.

    Args:
        config: Model configuration (see :class:`PathFMViTConfig` and ``PathFMViTConfig.from_preset``).
    """

    def __init__(self, config: PathFMViTConfig) -> None:
        super().__init__(config)
        self.embeddings = PathFMViTEmbeddings(config)
        if config.drop_path_uniform:
            rates = [config.drop_path_rate] * config.num_hidden_layers
        else:
            rates = torch.linspace(0, config.drop_path_rate, config.num_hidden_layers, device="cpu").tolist()
        self.layers = nn.ModuleList([PathFMViTLayer(config, drop_path=rate) for rate in rates])
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> PathFMViTPatchEmbeddings:
        """The patch-embedding module."""
        return self.embeddings.patch_embeddings

    def pool(self, sequence_output: torch.Tensor) -> torch.Tensor:
        """Pool the final-norm tokens.

        Args:
            sequence_output: (B, 1 + registers + patches, D) after the final LayerNorm.

        Returns:
            (B, D) CLS token for ``pooling="cls"``; (B, 2D) CLS concatenated with the mean of the patch tokens
            (registers excluded) for ``"cls_mean"``.
        """
        cls = sequence_output[:, 0]
        if self.config.pooling == "cls_mean":
            patch_mean = sequence_output[:, self.config.num_prefix_tokens :].mean(dim=1)
            return torch.cat([cls, patch_mean], dim=-1)
        return cls

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        bool_masked_pos: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
    ) -> BaseModelOutputWithPooling | tuple:
        """Encode images.

        Args:
            pixel_values: (B, C, H, W) float tensor, H and W any multiples of ``patch_size`` px (position
                embeddings are interpolated from the native grid when the size differs).
            bool_masked_pos: Optional bool (B, num_patches): patches to replace by the learned mask token
                (needs ``config.use_mask_token``); see :meth:`PathFMViTEmbeddings.forward`.
            output_attentions: Also return per-layer attention probabilities, each (B, heads, N, N)
                (computed with eager attention).
            output_hidden_states: Also return the embeddings and each block's output (pre final norm), a tuple
                of ``num_hidden_layers + 1`` tensors (B, N, D).
            return_dict: Return a ``BaseModelOutputWithPooling`` (default) or a plain tuple.
            interpolate_pos_encoding: Accepted for compatibility with ``transformers``' ViT; ignored, since
                position embeddings are always interpolated when the input size differs from the native one.

        Returns:
            ``BaseModelOutputWithPooling`` with ``last_hidden_state`` (B, N, D) after the final LayerNorm, where
            N = 1 + registers + (H / patch) * (W / patch); ``pooler_output`` (B, D) or (B, 2D) (see
            :meth:`pool`); ``hidden_states`` and ``attentions`` when requested.

        Raises:
            ValueError: If ``pixel_values`` is missing, or its shape / size does not fit the model.
        """
        if pixel_values is None:
            raise ValueError(
                "PathFMViTModel.forward needs pixel_values of shape (batch, channels, height, width)."
            )
        output_attentions = (
            output_attentions if output_attentions is not None else self.config.output_attentions
        )
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict

        pixel_values = pixel_values.to(self.embeddings.patch_embeddings.projection.weight.dtype)
        hidden_states = self.embeddings(pixel_values, bool_masked_pos)
        all_hidden = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, weights = layer(hidden_states, bool(output_attentions))
            if output_hidden_states:
                all_hidden = all_hidden + (hidden_states,)
            if output_attentions:
                all_attentions = all_attentions + (weights,)
        sequence_output = self.layernorm(hidden_states)
        pooled_output = self.pool(sequence_output)

        if not return_dict:
            return tuple(
                v for v in (sequence_output, pooled_output, all_hidden, all_attentions) if v is not None
            )
        return BaseModelOutputWithPooling(
            last_hidden_state=sequence_output,
            pooler_output=pooled_output,
            hidden_states=all_hidden,
            attentions=all_attentions,
        )


class PathFMViTForImageClassification(PathFMViTPreTrainedModel):
    """Backbone + linear head on ``pooler_output`` for probing and fine-tuning.

    ``config.num_labels`` outputs (``config.id2label`` names them); ``num_labels = 0`` gives an identity head.
    The loss follows ``config.problem_type`` (inferred from labels when unset): MSE for regression,
    cross-entropy for single-label, BCE-with-logits for multi-label classification.
    """

    # the loss is a plain per-batch mean (no num_items_in_batch): let Trainer scale it for gradient accumulation
    accepts_loss_kwargs = False

    def __init__(self, config: PathFMViTConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vit = PathFMViTModel(config)
        self.classifier = (
            nn.Linear(config.pooled_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        )
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
    ) -> ImageClassifierOutput | tuple:
        """Classify images.

        Args:
            pixel_values: (B, C, H, W), as for :class:`PathFMViTModel`.
            labels: (B,) class indices (single-label), (B, num_labels) floats (multi-label / regression).
            output_attentions: See :class:`PathFMViTModel`.
            output_hidden_states: See :class:`PathFMViTModel`.
            return_dict: Return an ``ImageClassifierOutput`` (default) or a tuple.
            interpolate_pos_encoding: Ignored (always on), see :class:`PathFMViTModel`.

        Returns:
            ``ImageClassifierOutput`` with ``logits`` (B, num_labels) and ``loss`` (scalar) when labels are given.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.vit(
            pixel_values,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.classifier(outputs.pooler_output)
        loss = None
        if labels is not None:
            loss = self._loss(logits, labels.to(logits.device))
        if not return_dict:
            rest = tuple(v for v in (outputs.hidden_states, outputs.attentions) if v is not None)
            return ((loss,) if loss is not None else ()) + (logits,) + rest
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss for ``config.problem_type`` (set from the labels' dtype / the label count when unset)."""
        if self.config.problem_type is None:
            if self.num_labels == 1:
                self.config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        if self.config.problem_type == "regression":
            if self.num_labels == 1:
                return F.mse_loss(logits.squeeze(-1), labels.squeeze(-1).to(logits.dtype))
            return F.mse_loss(logits, labels.to(logits.dtype))
        if self.config.problem_type == "single_label_classification":
            return F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


__all__ = [
    "PathFMViTForImageClassification",
    "PathFMViTModel",
    "PathFMViTPreTrainedModel",
]
