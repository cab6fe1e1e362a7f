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
from pathfm.spaces.probe_head import PROBE_CONFIG, PROBE_WEIGHTS, ProbeHead, ProbeHeadError, load_probe_head

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
        smoke_test: Whether the model card (README.md) says the model comes from a smoke-test run.
    """

    name: str
    model: PathFMViTModel
    processor: PathFMViTImageProcessor
    warning: str | None
    probe: ProbeHead | None
    description: str
    smoke_test: bool = False

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


def card_says_smoke_test(card_text: str) -> bool:
    """Whether a model card marks its model as a smoke test.

    Args:
        card_text: README.md of the model folder (YAML front matter + Markdown).

    Returns:
        True when the front matter's tags include ``smoke-test`` / ``smoke_test`` or the text says
        "smoke test".
    """
    lowered = card_text.lower()
    return any(marker in lowered for marker in ("smoke-test", "smoke_test", "smoke test"))


def _is_smoke_test(source: str, is_folder: bool) -> bool:
    """Read the model card next to a local model (Hub ids: not looked up, nothing is downloaded)."""
    card = Path(source) / "README.md"
    if not is_folder or not card.is_file():
        return False
    try:
        return card_says_smoke_test(card.read_text(errors="replace"))
    except OSError:
        return False


def _load_backbone(name: str, source: str, is_folder: bool) -> PathFMViTModel:
    """``AutoModel.from_pretrained`` with every failure turned into one :class:`ModelLoadError` line."""
    from pathfm.modeling.loading import ModelFolderError, load_checked
    from transformers import AutoModel

    where = "folder" if is_folder else "Hub id (offline: only ids already in the local cache load)"
    try:
        model = load_checked(AutoModel, source, is_folder)
    except ModelFolderError as error:
        raise ModelLoadError(f"{name}: cannot load a pathfm model from this {where}: {error}") from None
    if not isinstance(model, PathFMViTModel):
        raise ModelLoadError(
            f"{name}: holds a {type(model).__name__} (model_type {model.config.model_type!r}), not a pathfm_vit "
            "backbone."
        )
    return model


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

    path = Path(name).expanduser()
    is_folder = path.is_dir()
    if not is_folder and (path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise ModelLoadError(f"{name}: not a model folder (expected a directory with config.json).")
    source = str(path) if is_folder else name
    model = _load_backbone(name, source, is_folder).float().eval()
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
    return LoadedModel(name, model, processor, warning, probe, description, _is_smoke_test(source, is_folder))


MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "README.md",
    PROBE_WEIGHTS,
    PROBE_CONFIG,
)
"""Files whose change (written, replaced, deleted) makes the cache load a folder again."""


def folder_signature(name: str) -> tuple:
    """(file, size, mtime) of a model folder's :data:`MODEL_FILES`; empty for Hub ids and the random model."""
    path = Path((name or "").strip()).expanduser()
    if not path.is_dir():
        return ()
    stats = []
    for file in MODEL_FILES:
        try:
            stat = (path / file).stat()
        except OSError:
            continue
        stats.append((file, stat.st_size, stat.st_mtime_ns))
    return tuple(stats)


class ModelCache:
    """Thread-safe least-recently-used cache of :class:`LoadedModel` (gradio runs handlers in threads).

    A folder is loaded again when one of its :data:`MODEL_FILES` changed since it was cached, so a model
    re-exported or a probe head saved after the Space started is picked up without a restart.

    Args:
        capacity: Number of models kept in memory.
    """

    def __init__(self, capacity: int = 2) -> None:
        self.capacity = capacity
        self._models: OrderedDict[str, tuple[tuple, LoadedModel]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str) -> LoadedModel:
        """Return the cached model or load it (raises :class:`ModelLoadError` like :func:`load_model`)."""
        key = (name or "").strip()
        signature = folder_signature(key)
        with self._lock:
            if key in self._models and self._models[key][0] == signature:
                self._models.move_to_end(key)
                return self._models[key][1]
            self._models.pop(key, None)
            loaded = load_model(key)
            self._models[key] = (signature, loaded)
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
            return loaded


def center_square(rgb: np.ndarray) -> np.ndarray:
    """The central min(H, W) x min(H, W) square of a tile: the region the processor keeps.

    The processor resizes the shorter side to S and center-crops S x S; cropping the same region first gives
    the same picture without ever building the (S, S * aspect) intermediate, which for a 1 x 40000 px strip
    would be gigabytes.

    Args:
        rgb: (H, W, C) array.

    Returns:
        (m, m, C) view with m = min(H, W).
    """
    height, width = rgb.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return rgb[top : top + side, left : left + side]


def resize_note(height: int, width: int, size: int) -> str | None:
    """A sentence for the page when a tile is far from the model input (strong rescale or extreme aspect).

    Args:
        height: Tile height in px.
        width: Tile width in px.
        size: Model input side S in px.

    Returns:
        None when the tile is within 4x of S and at most 2:1; else how it was resized and what was kept.
    """
    side = min(height, width)
    kept = side * side / (height * width)
    scale = size / side
    if 0.25 <= scale <= 4 and kept >= 0.5:
        return None
    how = "upsampled" if scale > 1 else "downsampled"
    return (
        f"ℹ️ Tile {width} x {height} px: the center {side} x {side} px square ({kept:.0%} of the tile) "
        f"was {how} {max(scale, 1 / scale):.1f}x to the model input {size} x {size} px. For a faithful "
        "picture upload a "
        f"square tile near {size} px at the model's µm/px."
    )


def center_crop_display(rgb: np.ndarray, size: int) -> np.ndarray:
    """Center-crop the square the processor keeps and resize it to ``size`` x ``size`` for display.

    Used to draw overlays on exactly the pixels the model sees (the processor resizes with bilinear
    interpolation and crops the center; this repeats that geometry with PIL, up to rounding).

    Args:
        rgb: uint8 (H, W, 3).
        size: Output side in px.

    Returns:
        uint8 (size, size, 3).
    """
    image = PIL.Image.fromarray(np.ascontiguousarray(center_square(rgb)))
    if image.size != (size, size):
        image = image.resize((size, size), PIL.Image.BILINEAR)
    return np.asarray(image)


@torch.inference_mode()
def embed_tiles(
    loaded: LoadedModel, tiles: list[np.ndarray], output_attentions: bool = False, batch_size: int = 32
) -> TileFeatures:
    """Run the backbone on RGB tiles.

    Args:
        loaded: The model.
        tiles: uint8 (H, W, 3) arrays, any size (the processor resizes and crops to the model input; a very
            elongated tile is best cut with :func:`center_square` first).
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
        # channels_last stated: a 3 x N px strip would otherwise be read as channels-first
        pixel_values = loaded.processor(images=batch, return_tensors="pt", input_data_format="channels_last")[
            "pixel_values"
        ].float()
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
