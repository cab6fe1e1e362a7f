"""Fixtures for the modeling tests: a tiny seeded pathfm ViT saved with its image processor."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pathfm.modeling import (
    PathFMViTConfig,
    PathFMViTImageProcessor,
    PathFMViTModel,
)  # `import pathfm` registers


def make_tiny_model(seed: int = 0, **overrides) -> PathFMViTModel:
    """A randomly initialised ``tiny`` model (hidden 64, 2 layers, 4 heads, patch 16) in eval mode."""
    torch.manual_seed(seed)
    return PathFMViTModel(PathFMViTConfig.from_preset("tiny", **overrides)).eval()


@pytest.fixture(scope="session")
def tiny_saved_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model (with 2 register tokens and LayerScale, to exercise every code path) and the default image
    processor, written with ``save_pretrained``."""
    folder = tmp_path_factory.mktemp("tiny_pathfm")
    model = make_tiny_model(seed=1, num_register_tokens=2, layerscale_value=0.5)
    model.save_pretrained(folder)
    PathFMViTImageProcessor().save_pretrained(folder)
    return folder
