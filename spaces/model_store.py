"""Load the model the Space shows (local folder, Hub id or random ``tiny``) and run it on tiles.

One :class:`LoadedModel` bundles the backbone, its image processor, an optional linear probe head and a
user-facing warning (random weights, missing preprocessor config). :class:`ModelCache` keeps the last few
models so that switching in the dropdown is instant the second time.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from pathfm.modeling import PathFMViTConfig, PathFMViTImageProcessor, PathFMViTModel
from pathfm.spaces.probe_head import ProbeHead, ProbeHeadError, load_probe_head

import pathfm  # noqa: F401  (registers pathfm_vit with the transformers Auto classes)

TINY_RANDOM = "tiny (random weights)"
"""Dropdown name of the fallback model: ``PathFMViTConfig.from_preset("tiny")`` with seeded random weights."""

RANDOM_SEED = 0
"""Seed of the random ``tiny`` weights, so that every start of the Space shows the same pictures."""


class ModelLoadError(ValueError):
    """The chosen model cannot be loaded; the message names the folder / Hub id and the cause."""


@dataclass
class TileFeatures:
    """What the backbone says about a batch of tiles.

    Attributes:
        pooled: (B, D) the model's pooled embedding (``pooler_output``: CLS, or CLS + patch mean).
        cls_token: (B, hidden) final-norm CLS token.
        patch_tokens: (B, gh * gw, hidden) final-norm patch tokens (registers removed), row-major grid.
        grid: (gh, gw) patch grid.
        cls_attention: (B, heads, gh, gw) last-layer attention of CLS to each patch (softmax rows, so each
            head sums to 1 over CLS + registers + patches), or None when not requested.
    """

    pooled: np.ndarray
    cls_token: np.ndarray
    patch_tokens: np.ndarray
    grid: tuple[int, int]
    cls_attention: np.ndarray | None


@dataclass
class LoadedModel:
    """A backbone ready for inference.

    Attributes:
        name: What the user picked (folder path, Hub id or :data:`TINY_RANDOM`).
        model: The backbone in eval mode on CPU.
        processor: Image processor (the folder's ``preprocessor_config.json`` or kaiko's defaults).
        warning: Text shown in the page when the weights or preprocessing are not what a user expects.
        probe: Linear probe head found next to the weights, if any.
        description: One-line summary (architecture, source).
    """

    name: str
    model: PathFMViTModel
    processor: PathFMViTImageProcessor
    warning: str | None
    probe: ProbeHead | None
    description: str

    @property
    def image_size(self) -> int:
        """Side of the square model input in px (the processor's crop size)."""
        crop = getattr(self.processor, "crop_size", None) or {}
        return int(crop.get("height", self.model.config.image_size))

    @property
    def embedding_dim(self) -> int:
        """Width D of ``pooler_output``."""
        hidden = self.model.config.hidden_size
        return 2 * hidden if self.model.config.pooling == "cls_mean" else hidden


def _load_processor(source: str) -> tuple[PathFMViTImageProcessor, str | None]:
    """The processor saved with the model, or kaiko's defaults plus a warning when there is none."""
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(source), None
    except (OSError, ValueError, KeyError) as error:
        return PathFMViTImageProcessor(), (
            f"No readable preprocessor_config.json with the model ({type(error).__name__}); using kaiko's "
            "preprocessing (resize 224, center crop 224, mean = std = 0.5)."
        )


def load_model(name: str) -> LoadedModel:
    """Load a backbone by dropdown name.

    Args:
        name: :data:`TINY_RANDOM`, a local folder written by ``save_pretrained`` / ``export_teacher`` (with
            config.json and model.safetensors), or a Hub repo id (read from the local cache when offline).

    Returns:
        The loaded model (eval mode, CPU, float32).

    Raises:
        ModelLoadError: if the folder / id holds no loadable pathfm model; the message names it and the cause.
    """
    name = (name or "").strip()
    if not name:
        raise ModelLoadError("No model chosen: pick one in the Model dropdown or type a folder / Hub id.")
    if name == TINY_RANDOM:
        torch.manual_seed(RANDOM_SEED)
        config = PathFMViTConfig.from_preset("tiny")
        model = PathFMViTModel(config).eval()
        warning = (
            "⚠️ **Random weights.** This is the `tiny` preset with random weights (seed 0), the fallback when no "
            "trained model is given (outputs/dino/model absent, no PATHFM_SPACE_MODEL): the pictures show the "
            "pipeline, not what a trained model sees. Train with `python training/dino.py`, or pick a model "
            "folder / Hub id above."
        )
        return LoadedModel(name, model, PathFMViTImageProcessor(), warning, None, "tiny preset, random init")

    from transformers import AutoModel

    path = Path(name).expanduser()
    is_folder = path.is_dir()
    if not is_folder and (path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise ModelLoadError(f"{name}: not a model folder (expected a directory with config.json).")
    source = str(path) if is_folder else name
    try:
        model = AutoModel.from_pretrained(source)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        where = "folder" if is_folder else "Hub id (offline: only ids already in the local cache load)"
        raise ModelLoadError(f"{name}: cannot load a pathfm model from this {where}: {error}") from None
    if not isinstance(model, PathFMViTModel):
        raise ModelLoadError(
            f"{name}: holds a {type(model).__name__} (model_type {model.config.model_type!r}), not a pathfm_vit "
            "backbone."
        )
    model = model.float().eval()
    processor, warning = _load_processor(source)
    try:
        probe = load_probe_head(source, is_folder=is_folder)
    except ProbeHeadError as error:
        probe, warning = None, (warning + " " if warning else "") + f"Classify tab disabled: {error}"
    hidden = model.config.hidden_size
    pooled_dim = 2 * hidden if model.config.pooling == "cls_mean" else hidden
    expected_dim = {"pooler_output": pooled_dim, "cls_mean": 2 * hidden}.get(
        probe.pooling if probe else "", hidden
    )
    if probe is not None and probe.input_dim != expected_dim:
        warning = (warning + " " if warning else "") + (
            f"Classify tab disabled: probe_head.json says input dim {probe.input_dim} with pooling "
            f"{probe.pooling!r}, which does not fit this backbone (hidden {hidden})."
        )
        probe = None
    cfg = model.config
    description = (
        f"pathfm_vit hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers, {cfg.num_attention_heads} heads, "
        f"patch {cfg.patch_size}, pooling {cfg.pooling}; from {'folder' if is_folder else 'Hub id'} {name}"
    )
    return LoadedModel(name, model, processor, warning, probe, description)


class ModelCache:
    """Thread-safe least-recently-used cache of :class:`LoadedModel` (gradio runs handlers in threads).

    Args:
        capacity: Number of models kept in memory.
    """

    def __init__(self, capacity: int = 2) -> None:
        self.capacity = capacity
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str) -> LoadedModel:
        """Return the cached model or load it (raises :class:`ModelLoadError` like :func:`load_model`)."""
        key = (name or "").strip()
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            loaded = load_model(key)
            self._models[key] = loaded
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
            return loaded


def center_crop_display(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize the shorter side to ``size`` and center-crop ``size`` x ``size``, as the processor does.

    Used to draw overlays on exactly the pixels the model sees (the processor resizes with bilinear
    interpolation and crops the center; this repeats that geometry with PIL for display).

    Args:
        rgb: uint8 (H, W, 3).
        size: Output side in px.

    Returns:
        uint8 (size, size, 3).
    """
    height, width = rgb.shape[:2]
    scale = size / min(height, width)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = PIL.Image.fromarray(rgb)
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), PIL.Image.BILINEAR)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)))


@torch.inference_mode()
def embed_tiles(
    loaded: LoadedModel, tiles: list[np.ndarray], output_attentions: bool = False, batch_size: int = 32
) -> TileFeatures:
    """Run the backbone on RGB tiles.

    Args:
        loaded: The model.
        tiles: uint8 (H, W, 3) arrays, any size (the processor resizes and crops to the model input).
        output_attentions: Also return the last-layer CLS attention per head.
        batch_size: Tiles per forward pass.

    Returns:
        :class:`TileFeatures` for the B = len(tiles) tiles.

    Raises:
        ValueError: if ``tiles`` is empty.
    """
    if not tiles:
        raise ValueError("embed_tiles: no tiles given")
    model, cfg = loaded.model, loaded.model.config
    prefix = cfg.num_prefix_tokens
    pooled, cls_tokens, patches, attentions = [], [], [], []
    grid = (0, 0)
    for start in range(0, len(tiles), batch_size):
        # torch.from_numpy warns on read-only arrays (PIL / openslide buffers): hand the processor copies
        batch = [tile if tile.flags.writeable else tile.copy() for tile in tiles[start : start + batch_size]]
        pixel_values = loaded.processor(images=batch, return_tensors="pt")["pixel_values"].float()
        out = model(pixel_values=pixel_values, output_attentions=output_attentions, return_dict=True)
        grid = (pixel_values.shape[2] // cfg.patch_size, pixel_values.shape[3] // cfg.patch_size)
        hidden = out.last_hidden_state
        pooled.append(out.pooler_output.numpy())
        cls_tokens.append(hidden[:, 0].numpy())
        patches.append(hidden[:, prefix:].numpy())
        if output_attentions:
            last = out.attentions[-1]  # (B, heads, N, N)
            attentions.append(last[:, :, 0, prefix:].reshape(last.shape[0], last.shape[1], *grid).numpy())
    return TileFeatures(
        pooled=np.concatenate(pooled).astype(np.float32),
        cls_token=np.concatenate(cls_tokens).astype(np.float32),
        patch_tokens=np.concatenate(patches).astype(np.float32),
        grid=grid,
        cls_attention=np.concatenate(attentions).astype(np.float32) if output_attentions else None,
    )
