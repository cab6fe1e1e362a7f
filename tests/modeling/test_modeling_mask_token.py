"""``mask_token`` / ``bool_masked_pos`` and registers of the pathfm ViT against facebookresearch/dinov2.

Expected outputs were produced by running ``DinoVisionTransformer.forward_features(x, masks)`` of
facebookresearch/dinov2 at commit b8931f7bf91576930313be2c6d6af376033b35f0
(dinov2/models/vision_transformer.py, ``prepare_tokens_with_masks``; xFormers absent, so its plain attention)
outside pathfm on CPU, for a ViT with patch 14, image 28, width 16, 2 blocks, 2 heads, 4 registers, LayerScale
1e-5 and the fixed weights / inputs of ``tests/training/dinov2_inputs.py``. Stored: the final-norm tokens
(CLS, 4 registers, 4 patches) projected on 3 fixed directions, (2 images, 9 tokens, 3). Image 0 has patches 1
and 2 masked, image 1 none. DINOv2 gives CLS a position embedding and registers none; pathfm's
``pos_embed_has_prefix_tokens=False`` layout gives neither, so the CLS position is folded into the CLS token
(as timm does for DINOv2 weights).
"""

import pytest
import torch

from pathfm.modeling.configuration_pathfm_vit import PathFMViTConfig
from pathfm.modeling.modeling_pathfm_vit import PathFMViTModel
from tests.training.dinov2_inputs import fill_like_dinov2, wave

MASKED = [
    [
        (-1.0296915, 1.6492555, 1.2275127), (4.2382035, -3.9141252, 3.2171812),
        (3.9617777, -4.0884185, 3.3669593), (-0.040678427, 1.2680727, 0.91954088),
        (-2.8943672, 2.5527728, -2.6055455), (-0.77537596, -0.48310181, 5.277637),
        (4.0136995, -4.3442292, 3.0002012), (6.018424, -3.6710603, 5.3784266),
        (2.7477498, -6.5428858, 1.4515979),
    ],
    [
        (-0.88341469, 1.6047382, 1.2986689), (4.2647376, -3.9008455, 3.2124479),
        (3.9942539, -4.0814238, 3.3677223), (0.033442572, 1.2503659, 0.94429445),
        (-2.8645558, 2.5614805, -2.6020772), (0.19037785, 0.44233349, 0.3511636),
        (-2.2449424, 4.0225062, -0.88652837), (3.9196777, -2.2798078, 0.033753522),
        (4.9289398, -5.8616242, 3.6243439),
    ],
]
PLAIN = [
    [
        (-0.9566409, 1.6177654, 1.2719218), (4.249496, -3.9049065, 3.222008),
        (3.9787164, -4.0849729, 3.3753269), (-0.0077900011, 1.2611835, 0.93156087),
        (-2.8777828, 2.5524976, -2.5984089), (-0.77499366, -0.48300835, 5.2777133),
        (-1.1658603, 0.0073083802, 4.7743669), (2.2213888, -5.8313565, 2.0707774),
        (2.748059, -6.5426331, 1.4517193),
    ],
    [
        (-0.88341469, 1.6047382, 1.2986689), (4.2647376, -3.9008455, 3.2124479),
        (3.9942539, -4.0814238, 3.3677223), (0.033442572, 1.2503659, 0.94429445),
        (-2.8645558, 2.5614805, -2.6020772), (0.19037785, 0.44233349, 0.3511636),
        (-2.2449424, 4.0225062, -0.88652837), (3.9196777, -2.2798078, 0.033753522),
        (4.9289398, -5.8616242, 3.6243439),
    ],
]


def _config(**overrides) -> PathFMViTConfig:
    fields = dict(
        image_size=28, patch_size=14, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_register_tokens=4, layerscale_value=1e-5, pos_embed_has_prefix_tokens=False,
    )
    return PathFMViTConfig(**{**fields, **overrides})


def _dinov2_weights() -> PathFMViTModel:
    """pathfm model holding the reference script's weights (named as dinov2 names them)."""
    model = PathFMViTModel(_config(use_mask_token=True)).eval()
    fill_like_dinov2(model)
    return model


def _projected(model: PathFMViTModel, masks: torch.Tensor | None) -> torch.Tensor:
    x = wave(1, 2 * 3 * 28 * 28, 0.5, 1.0).reshape(2, 3, 28, 28)
    with torch.no_grad():
        hidden = model(x, bool_masked_pos=masks).last_hidden_state
    return hidden @ wave(16, 3, 0.25, 1.0)


@pytest.mark.parametrize("masked", [True, False], ids=["masked", "plain"])
def test_masked_forward_equals_dinov2(masked):
    masks = torch.tensor([[False, True, True, False], [False, False, False, False]]) if masked else None
    expected = torch.tensor(MASKED if masked else PLAIN)
    torch.testing.assert_close(_projected(_dinov2_weights(), masks), expected, rtol=0, atol=1e-5)


def test_mask_token_replaces_only_masked_patches_before_positions():
    model = _dinov2_weights()
    x = wave(1, 2 * 3 * 28 * 28, 0.5, 1.0).reshape(2, 3, 28, 28)
    masks = torch.tensor([[False, True, True, False], [False, False, False, True]])
    with torch.no_grad():
        plain = model.embeddings(x)
        masked = model.embeddings(x, masks)
    prefix = 1 + 4
    pos = model.embeddings.position_embeddings[0]
    token = model.embeddings.mask_token[0]
    for image in range(2):
        for patch in range(4):
            expected = token + pos[patch] if masks[image, patch] else plain[image, prefix + patch]
            torch.testing.assert_close(masked[image, prefix + patch], expected)
    torch.testing.assert_close(masked[:, :prefix], plain[:, :prefix])


def test_mask_token_is_off_by_default_and_errors_name_the_fix():
    model = PathFMViTModel(_config())
    assert model.embeddings.mask_token is None and "embeddings.mask_token" not in model.state_dict()
    x = torch.zeros(2, 3, 28, 28)
    with pytest.raises(ValueError, match="use_mask_token=True"):
        model(x, bool_masked_pos=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(2, 4\)"):
        PathFMViTModel(_config(use_mask_token=True))(x, bool_masked_pos=torch.zeros(2, 5, dtype=torch.bool))


def test_mask_token_gets_gradients_and_uniform_drop_path():
    model = PathFMViTModel(_config(use_mask_token=True, drop_path_rate=0.2, drop_path_uniform=True)).train()
    assert [layer.drop_path.drop_prob for layer in model.layers] == [0.2, 0.2]
    masks = torch.tensor([[True, False, False, False], [False, False, False, False]])
    hidden = model(torch.randn(2, 3, 28, 28), bool_masked_pos=masks).last_hidden_state
    # a plain sum would be constant through the final LayerNorm; squares depend on every token
    hidden.pow(2).sum().backward()
    assert model.embeddings.mask_token.grad is not None and model.embeddings.mask_token.grad.abs().sum() > 0
