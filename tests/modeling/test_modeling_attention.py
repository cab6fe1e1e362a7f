"""The attention switch (transformers' ``attn_implementation``): the ``sdpa`` path
(``F.scaled_dot_product_attention``, flash / memory-efficient kernels on GPU) and the ``eager`` softmax path
give the same outputs in fp32, each path is the one that actually runs, and ``output_attentions`` always takes
the eager path."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from pathfm.modeling import PathFMViTConfig, PathFMViTModel
from transformers import AutoModel


def _no_sdpa(*args, **kwargs):
    raise AssertionError("scaled_dot_product_attention was called on the eager path")


@pytest.mark.parametrize("overrides", [{}, {"num_register_tokens": 2, "layerscale_value": 0.5}])
def test_sdpa_and_eager_agree_fp32(overrides: dict) -> None:
    torch.manual_seed(0)
    sdpa = PathFMViTModel(PathFMViTConfig.from_preset("tiny", **overrides)).eval()
    eager_config = PathFMViTConfig.from_preset("tiny", attn_implementation="eager", **overrides)
    eager = PathFMViTModel(eager_config).eval()
    eager.load_state_dict(sdpa.state_dict())
    assert sdpa.config._attn_implementation == "sdpa" and eager.config._attn_implementation == "eager"
    x = torch.randn(3, 3, 96, 64)  # a non-native size: interpolated positions on both paths
    with torch.no_grad():
        expected = sdpa(x).last_hidden_state
        with mock.patch.object(F, "scaled_dot_product_attention", _no_sdpa):
            got = eager(x).last_hidden_state
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # the outputs are not trivially equal (e.g. all-zero attention): they depend on the input
    assert not torch.allclose(expected[0], expected[1], atol=1e-3)


def test_sdpa_path_calls_sdpa_and_attentions_force_eager() -> None:
    torch.manual_seed(0)
    model = PathFMViTModel(PathFMViTConfig.from_preset("tiny")).eval()
    x = torch.randn(1, 3, 32, 32)
    with mock.patch.object(F, "scaled_dot_product_attention", wraps=F.scaled_dot_product_attention) as spy:
        model(x)
        assert spy.call_count == model.config.num_hidden_layers
        spy.reset_mock()
        out = model(x, output_attentions=True)
        assert spy.call_count == 0 and len(out.attentions) == model.config.num_hidden_layers


def test_gradients_agree_between_paths() -> None:
    """Backward through SDPA equals backward through the eager softmax (the training path), up to fp32
    rounding of the two kernels' different summation orders (measured: <= 4e-4 of each tensor's largest
    gradient)."""
    torch.manual_seed(0)
    sdpa = PathFMViTModel(PathFMViTConfig.from_preset("tiny")).train()
    eager = PathFMViTModel(PathFMViTConfig.from_preset("tiny", attn_implementation="eager")).train()
    eager.load_state_dict(sdpa.state_dict())
    x = torch.randn(2, 3, 48, 48)
    sdpa(x).pooler_output.square().sum().backward()
    eager(x).pooler_output.square().sum().backward()
    for (name, p_s), p_e in zip(sdpa.named_parameters(), eager.parameters(), strict=True):
        scale = p_s.grad.abs().max().item()
        assert scale > 0, name
        assert (p_e.grad - p_s.grad).abs().max().item() <= 1e-3 * scale, name


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_from_pretrained_attn_implementation(tiny_saved_dir: Path, impl: str) -> None:
    """The switch follows transformers' convention: ``from_pretrained(..., attn_implementation=...)``."""
    model = AutoModel.from_pretrained(tiny_saved_dir, attn_implementation=impl).eval()
    assert model.config._attn_implementation == impl
    reference = AutoModel.from_pretrained(tiny_saved_dir).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(
            model(x).last_hidden_state, reference(x).last_hidden_state, atol=1e-5, rtol=1e-5
        )
