"""Our ABMIL and segmentation decoders give kaiko-eva's outputs with the weights copied by name.

``data/eva_parity.safetensors`` holds the outputs of eva's own modules, produced outside the project with
kaiko-eva 0.4.5 from PyPI (github.com/kaiko-ai/eva: ``eva/vision/models/networks/abmil.py``,
``.../decoders/segmentation/semantic/{common,with_image}.py``) on the inputs and weights built below: every
parameter and BatchNorm buffer of eva's module, in sorted eva-name order i, filled with
``default_rng([seed, i]).standard_normal(shape) * 0.3`` (running_var: ``abs(.) + 0.5``), modules in eval mode.
ABMIL bags padded with eva's pad value -inf; ours get the same padding through the mask.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pathfm.evaluation.mil.abmil import GatedABMIL, eva_names
from pathfm.evaluation.segmentation.decoders import EVA_NAMES, ConvDecoderMS, ConvDecoderWithImage
from safetensors.torch import load_file

EXPECTED = load_file(Path(__file__).parent / "data" / "eva_parity.safetensors")


def _fill_as_eva(module: torch.nn.Module, prefixes: dict[str, str], seed: int) -> torch.nn.Module:
    ours = {k: v for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}

    def to_eva(name: str) -> str:
        prefix = max((p for p in prefixes if name.startswith(p + ".")), key=len)
        return prefixes[prefix] + name[len(prefix) :]

    eva_of = {to_eva(k): k for k in ours}
    assert len(eva_of) == len(ours)
    new = {}
    for i, eva_name in enumerate(sorted(eva_of)):
        value = np.random.default_rng([seed, i]).standard_normal(tuple(ours[eva_of[eva_name]].shape)) * 0.3
        if eva_name.endswith("running_var"):
            value = np.abs(value) + 0.5
        new[eva_of[eva_name]] = torch.from_numpy(value.astype(np.float32))
    module.load_state_dict(new, strict=False)
    return module.eval()


def _inputs(seed: int, *shape: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def test_decoders_match_eva() -> None:
    feats, images = _inputs(1, 2, 8, 4, 4), _inputs(2, 2, 3, 16, 16)
    ms = _fill_as_eva(ConvDecoderMS(8, 3), EVA_NAMES["ConvDecoderMS"], 10)
    wi = _fill_as_eva(ConvDecoderWithImage(8, 3), EVA_NAMES["ConvDecoderWithImage"], 11)
    with torch.no_grad():
        torch.testing.assert_close(ms([feats], (16, 16)), EXPECTED["conv_ms"], atol=1e-5, rtol=0)
        torch.testing.assert_close(wi(feats, images), EXPECTED["conv_with_image"], atol=1e-5, rtol=0)


def test_abmil_matches_eva_with_padding() -> None:
    bags = _inputs(3, 3, 7, 32)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 5:] = False
    mask[2, 2:] = False
    bags[~mask] = 123.0  # whatever the padding holds, the mask decides
    model = _fill_as_eva(GatedABMIL(32, 4), eva_names(), 12)
    with torch.no_grad():
        torch.testing.assert_close(model(bags, mask), EXPECTED["abmil"], atol=1e-5, rtol=0)


def test_abmil_is_permutation_and_padding_invariant() -> None:
    torch.manual_seed(0)
    model = GatedABMIL(16, 3).eval()
    bag = torch.randn(1, 9, 16)
    with torch.no_grad():
        ref = model(bag)
        perm = model(bag[:, torch.randperm(9)])
        padded = torch.cat([bag, torch.randn(1, 5, 16) * 50], dim=1)
        mask = torch.zeros(1, 14, dtype=torch.bool)
        mask[0, :9] = True
        pad = model(padded, mask)
        weights, _ = model.attention(padded, mask)
    torch.testing.assert_close(perm, ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(pad, ref, atol=1e-6, rtol=0)
    assert torch.all(weights[0, 9:] == 0) and float(weights.sum()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no real instance"):
        model(padded, torch.zeros(1, 14, dtype=torch.bool))
