"""Tiles of a segmentation task and their frozen patch-token grids, cached on disk per split.

Each image is cut into non-overlapping ``tile`` x ``tile`` tiles (the right/bottom remainder is dropped).
A tile's features are the last transformer block's patch tokens before the final norm
(``hidden_states[-1]``, CLS and register tokens removed) as a grid (D, tile/p, tile/p), as eva's
segmentation decoders take them. Pixels are normalised with the model's own processor mean/std; no resize.

Cache: ``<root>/<task>/<model>/<revision>/patch_tokens-<tile>px-<processor hash>/<split>.safetensors``
holding ``features`` (N, D, h, w) float32, ``images`` (N, tile, tile, 3) uint8, ``masks`` (N, tile, tile)
int64, and a ``manifest.json`` listing each tile's ``image@x,y`` source; a listing that no longer matches is
recomputed only with ``overwrite`` (else :class:`CacheConflictError`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from pathfm.evaluation.backbone import Backbone
from pathfm.evaluation.embedding_cache import CacheConflictError
from pathfm.evaluation.tasks.segmentation_base import SegmentationTask
from safetensors.torch import load_file, save_file
from torch import Tensor


def cut_tiles(
    image: np.ndarray, mask: np.ndarray, tile: int
) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """Non-overlapping (x, y, image tile (tile, tile, 3), mask tile (tile, tile)) in row-major order."""
    height, width = mask.shape
    return [
        (x, y, image[y : y + tile, x : x + tile], mask[y : y + tile, x : x + tile])
        for y in range(0, height - tile + 1, tile)
        for x in range(0, width - tile + 1, tile)
    ]


def normalise(images: Tensor, processor: object) -> Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) scaled by 1/255, normalised with the processor's mean/std."""
    mean = torch.tensor(processor.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_std, dtype=torch.float32).view(1, 3, 1, 1)
    return (images.permute(0, 3, 1, 2).float() / 255.0 - mean) / std


@torch.inference_mode()
def patch_token_grid(backbone: Backbone, pixel_values: Tensor) -> Tensor:
    """Last-block patch tokens (pre final norm) as (B, D, H/p, W/p) for pixel_values (B, 3, H, W)."""
    config = backbone.model.config
    prefix = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
    device = next(backbone.model.parameters()).device
    out = backbone.model(pixel_values=pixel_values.to(device), output_hidden_states=True)
    tokens = out.hidden_states[-1][:, prefix:].float().cpu()
    rows, cols = pixel_values.shape[2] // config.patch_size, pixel_values.shape[3] // config.patch_size
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], rows, cols)


def slug(text: str) -> str:
    """A file-name-safe form of ``text`` (at most 80 characters)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[-80:] or "_"


def split_features(
    backbone: Backbone,
    task: SegmentationTask,
    split: str,
    cache_root: str | Path,
    tile: int = 224,
    batch_size: int = 64,
    overwrite: bool = False,
) -> dict[str, Tensor]:
    """``{"features", "images", "masks"}`` of every tile of ``split``, from the cache or computed and cached.

    Raises:
        ValueError: ``tile`` not a multiple of the patch size.
        CacheConflictError: a cached split whose tile listing differs (use ``overwrite``).
    """
    patch = backbone.model.config.patch_size
    if tile % patch:
        raise ValueError(f"tile {tile} px is not a multiple of the model's patch size {patch}")
    folder = (
        Path(cache_root)
        / task.TASK_NAME
        / slug(backbone.model_id)
        / slug(backbone.revision)
        / f"patch_tokens-{tile}px-{backbone.processor_hash[:12]}"
    )
    manifest_path, path = folder / "manifest.json", folder / f"{split}.safetensors"
    images, masks, sources = [], [], []
    for sample in task.list_samples(split):
        image, mask = task.load(sample)
        for x, y, img_tile, mask_tile in cut_tiles(image, mask, tile):
            images.append(img_tile)
            masks.append(mask_tile)
            sources.append(f"{sample.image}@{x},{y}")
    if not sources:
        raise ValueError(
            f"{task.TASK_NAME}: no {tile} px tile fits in the {split} images (use a smaller tile)"
        )
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    if path.is_file() and not overwrite:
        if manifest.get(split) != sources:
            raise CacheConflictError(
                f"{path} holds other tiles than {task.TASK_NAME}/{split} lists now; pass overwrite"
            )
        return load_file(path)
    image_tensor = torch.from_numpy(np.ascontiguousarray(np.stack(images)))
    grids = [
        patch_token_grid(backbone, normalise(image_tensor[i : i + batch_size], backbone.processor))
        for i in range(0, len(sources), batch_size)
    ]
    tensors = {
        "features": torch.cat(grids).contiguous(),
        "images": image_tensor.contiguous(),
        "masks": torch.from_numpy(np.ascontiguousarray(np.stack(masks), dtype=np.int64)),
    }
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path) + ".tmp")
    Path(str(path) + ".tmp").replace(path)
    manifest[split] = sources
    manifest_path.write_text(json.dumps(manifest))
    return tensors
