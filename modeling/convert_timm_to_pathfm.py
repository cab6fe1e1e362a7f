"""Convert ViT weights between timm's ``VisionTransformer`` layout and pathfm's, both ways.

kaiko's released checkpoints (``towards_large_pathology_fms``) are timm models: ``vit_small_patch16_224``,
``vit_small_patch8_224``, ``vit_base_patch16_224``, ``vit_base_patch8_224`` and
``vit_large_patch14_reg4_dinov2``. Their state dicts map one-to-one onto :class:`PathFMViTModel` (same fused
``qkv``, same tensor shapes), so conversion is a key rename table plus checks:

| timm                           | pathfm                                          |
|--------------------------------|-------------------------------------------------|
| ``cls_token``                  | ``embeddings.cls_token``                        |
| ``reg_token``                  | ``embeddings.register_tokens``                  |
| ``pos_embed``                  | ``embeddings.position_embeddings``              |
| ``patch_embed.proj.*``         | ``embeddings.patch_embeddings.projection.*``    |
| ``blocks.{i}.norm1.*``         | ``layers.{i}.norm1.*``                          |
| ``blocks.{i}.attn.qkv.*``      | ``layers.{i}.attention.qkv.*``                  |
| ``blocks.{i}.attn.proj.*``     | ``layers.{i}.attention.proj.*``                 |
| ``blocks.{i}.ls1.gamma``       | ``layers.{i}.layer_scale1.gamma``               |
| ``blocks.{i}.norm2.*``         | ``layers.{i}.norm2.*``                          |
| ``blocks.{i}.mlp.fc1/fc2.*``   | ``layers.{i}.mlp.fc1/fc2.*``                    |
| ``blocks.{i}.ls2.gamma``       | ``layers.{i}.layer_scale2.gamma``               |
| ``norm.*``                     | ``layernorm.*``                                 |

A classifier ``head.*`` (ImageNet logits, or a DINO projection head) is not part of the backbone and is dropped.

CLI::

    python modeling/convert_timm_to_pathfm.py --checkpoint FILE --arch vits16 --output_dir DIR
    python modeling/convert_timm_to_pathfm.py --checkpoint PATHFM_DIR --arch vits16 --output_dir DIR --to_timm

Not remote code (``save_pretrained`` never copies it), so it may import ``pathfm`` when run as a script.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch, transformers and the model classes are imported where used: --help is immediate
    import torch
    from pathfm.modeling.configuration_pathfm_vit import PathFMViTConfig
    from pathfm.modeling.modeling_pathfm_vit import PathFMViTModel

logger = logging.getLogger(__name__)


def _configuration() -> ModuleType:
    """The ``configuration_pathfm_vit`` module (PRESETS, TIMM_ARCHITECTURES, PathFMViTConfig), imported on
    first use: it imports transformers, hence torch (relative when imported as a package module)."""
    try:
        from . import configuration_pathfm_vit
    except ImportError:  # run as a script: `python modeling/convert_timm_to_pathfm.py`
        from pathfm.modeling import configuration_pathfm_vit
    return configuration_pathfm_vit


def _model_class() -> type[PathFMViTModel]:
    """:class:`PathFMViTModel`, imported on first use (relative when imported as a package module)."""
    try:
        from .modeling_pathfm_vit import PathFMViTModel
    except ImportError:  # run as a script
        from pathfm.modeling.modeling_pathfm_vit import PathFMViTModel
    return PathFMViTModel


# (timm regex, pathfm template); applied to whole keys, first match wins
_TIMM_TO_PATHFM: list[tuple[str, str]] = [
    (r"cls_token", "embeddings.cls_token"),
    (r"reg_token", "embeddings.register_tokens"),
    (r"pos_embed", "embeddings.position_embeddings"),
    (r"patch_embed\.proj\.(weight|bias)", r"embeddings.patch_embeddings.projection.\1"),
    (r"blocks\.(\d+)\.norm([12])\.(weight|bias)", r"layers.\1.norm\2.\3"),
    (r"blocks\.(\d+)\.attn\.(qkv|proj)\.(weight|bias)", r"layers.\1.attention.\2.\3"),
    (r"blocks\.(\d+)\.ls([12])\.gamma", r"layers.\1.layer_scale\2.gamma"),
    (r"blocks\.(\d+)\.mlp\.(fc[12])\.(weight|bias)", r"layers.\1.mlp.\2.\3"),
    (r"norm\.(weight|bias)", r"layernorm.\1"),
]
_PATHFM_TO_TIMM: list[tuple[str, str]] = [
    (r"embeddings\.cls_token", "cls_token"),
    (r"embeddings\.register_tokens", "reg_token"),
    (r"embeddings\.position_embeddings", "pos_embed"),
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"layers\.(\d+)\.norm([12])\.(weight|bias)", r"blocks.\1.norm\2.\3"),
    (r"layers\.(\d+)\.attention\.(qkv|proj)\.(weight|bias)", r"blocks.\1.attn.\2.\3"),
    (r"layers\.(\d+)\.layer_scale([12])\.gamma", r"blocks.\1.ls\2.gamma"),
    (r"layers\.(\d+)\.mlp\.(fc[12])\.(weight|bias)", r"blocks.\1.mlp.\2.\3"),
    (r"layernorm\.(weight|bias)", r"norm.\1"),
]
# wrappers seen in training checkpoints (DINO's checkpoint.pth, Lightning, DDP, torch.compile)
_NESTED_KEYS = ("teacher", "state_dict", "model", "module")
_PREFIXES = ("module.", "_orig_mod.", "backbone.", "model.", "encoder.")
_IGNORED = re.compile(r"head\..*|head_drop\..*")


class CheckpointMismatchError(ValueError):
    """Raised when a checkpoint does not fit the requested architecture; lists missing / unexpected keys."""


def _rename(key: str, table: list[tuple[str, str]]) -> str | None:
    for pattern, template in table:
        if re.fullmatch(pattern, key):
            return re.sub(f"^{pattern}$", template, key)
    return None


def _expected_shapes(config: PathFMViTConfig) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of ``PathFMViTModel(config)`` (built on the meta device: no memory, no init)."""
    import torch

    with torch.device("meta"):
        model = _model_class()(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _check(
    state_dict: dict[str, torch.Tensor],
    config: PathFMViTConfig,
    source: str,
    unexpected: list[str],
    naming: list[tuple[str, str]] | None = None,
) -> None:
    """Raise ``CheckpointMismatchError`` unless ``state_dict`` (pathfm keys) fits ``PathFMViTModel(config)``.

    ``unexpected`` holds source keys that had no pathfm name; ``naming`` (a rename table pathfm -> source
    layout) makes the message use the checkpoint's own key names.
    """
    expected = _expected_shapes(config)

    def name(key: str) -> str:
        return (_rename(key, naming) or key) if naming else key

    missing = sorted(name(k) for k in set(expected) - set(state_dict))
    unexpected = sorted(set(unexpected) | {name(k) for k in set(state_dict) - set(expected)})
    wrong_shape = sorted(
        f"{name(k)}: checkpoint {tuple(state_dict[k].shape)} vs model {expected[k]}"
        for k in set(expected) & set(state_dict)
        if tuple(state_dict[k].shape) != expected[k]
    )
    if missing or unexpected or wrong_shape:
        arch = config.preset or "the given config"
        raise CheckpointMismatchError(
            f"{source} does not match architecture {arch!r} "
            f"(hidden {config.hidden_size}, {config.num_hidden_layers} layers, patch {config.patch_size}, "
            f"image {config.image_size}, {config.num_register_tokens} registers, "
            f"layerscale {config.layerscale_value}).\n"
            f"  missing keys ({len(missing)}): {missing}\n"
            f"  unexpected keys ({len(unexpected)}): {unexpected}\n"
            f"  shape mismatches ({len(wrong_shape)}): {wrong_shape}"
        )


def timm_to_pathfm_state_dict(
    state_dict: dict[str, torch.Tensor], config: PathFMViTConfig, source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Rename a timm ``VisionTransformer`` state dict to pathfm keys and check it against ``config``.

    Args:
        state_dict: timm keys (``cls_token``, ``pos_embed``, ``blocks.0.attn.qkv.weight``, ...); ``head.*`` keys
            are dropped.
        config: Target architecture.
        source: Name used in error messages (e.g. the file path).

    Returns:
        A new dict with pathfm keys (tensors shared, not copied), loadable with ``strict=True``.

    Raises:
        CheckpointMismatchError: If keys are missing, unexpected, or have the wrong shape for ``config``; the
            message lists each under its timm name.
    """
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        if _IGNORED.fullmatch(key):
            continue
        new = _rename(key, _TIMM_TO_PATHFM)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    _check(out, config, source, unknown, naming=_PATHFM_TO_TIMM)
    return out


def pathfm_to_timm_state_dict(
    state_dict: dict[str, torch.Tensor], config: PathFMViTConfig, source: str = "state dict"
) -> dict[str, torch.Tensor]:
    """Rename a :class:`PathFMViTModel` state dict to timm ``VisionTransformer`` keys.

    The result loads into ``timm.create_model(TIMM_ARCHITECTURES[preset], num_classes=0,
    img_size=config.image_size)`` with ``strict=True``.

    Args:
        state_dict: pathfm keys (as from ``PathFMViTModel.state_dict()``; a ``vit.`` prefix from
            ``PathFMViTForImageClassification`` is stripped and ``classifier.*`` dropped).
        config: The architecture the state dict belongs to (checked).
        source: Name used in error messages.

    Returns:
        A new dict with timm keys (tensors shared).

    Raises:
        CheckpointMismatchError: If the state dict does not match ``config``.
    """
    stripped = {(k.removeprefix("vit.")): v for k, v in state_dict.items() if not k.startswith("classifier.")}
    _check(stripped, config, source, [])
    return {_rename(k, _PATHFM_TO_TIMM): v for k, v in stripped.items()}


def _unwrap(obj: object, source: str) -> dict[str, torch.Tensor]:
    """Find the tensor dict inside a training checkpoint and strip wrapper prefixes (``module.``,
    ``backbone.``, ...)."""
    import torch

    while isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in _NESTED_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        else:
            raise CheckpointMismatchError(
                f"{source}: no tensors found; top-level keys are {sorted(obj)[:20]} (expected a state dict or "
                f"one nested under {_NESTED_KEYS})."
            )
    if not isinstance(obj, dict):
        raise CheckpointMismatchError(f"{source}: expected a dict of tensors, got {type(obj).__name__}.")
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    if any(k.startswith("backbone.") for k in state):
        # DINO / DINOv2 student or teacher: backbone.* next to the projection head.*; keep the backbone
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


def read_timm_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a timm-layout checkpoint file (``.safetensors``, ``.pth``, ``.pt``, ``.bin``).

    Args:
        path: The file. ``.pth``/``.pt``/``.bin`` are read with ``torch.load(weights_only=True)``.

    Returns:
        The (unwrapped) state dict with timm keys.

    Raises:
        FileNotFoundError: If the file does not exist.
        CheckpointMismatchError: If the file holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} does not exist.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: object = load_file(str(path))
        except Exception as err:  # noqa: BLE001  (safetensors' own error type for a truncated header)
            raise CheckpointMismatchError(f"{path}: truncated or not a safetensors file ({err}).") from None
    else:
        import torch

        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001  (bytes that are not a pickle fail anywhere in the unpickler)
            text = str(err).strip().splitlines()[0] if str(err).strip() else ""
            reason = f"{type(err).__name__}: {text}" if text else type(err).__name__
            raise CheckpointMismatchError(
                f"{path}: not a readable torch checkpoint ({reason}); "
                "expected a timm state dict saved with torch.save (.pth/.pt/.bin) or a .safetensors file."
            ) from None
    return _unwrap(obj, str(path))


def _grid_from_pos_embed(state_dict: dict[str, torch.Tensor], config: PathFMViTConfig) -> int | None:
    """Side of the square patch grid stored in a timm ``pos_embed``, or ``None`` if it cannot be inferred."""
    pos = state_dict.get("pos_embed")
    if pos is None or pos.ndim != 3:
        return None
    prefix = config.num_prefix_tokens if config.pos_embed_has_prefix_tokens else 0
    side = math.isqrt(pos.shape[1] - prefix)
    return side if side * side == pos.shape[1] - prefix else None


def load_pretrained_backbone(path: str, preset: str, **overrides) -> PathFMViTModel:
    """Load a backbone from a timm checkpoint file or a pathfm folder.

    Args:
        path: A timm-layout ``.pth`` / ``.bin`` / ``.safetensors`` file (e.g. a kaiko release), or a folder
            written by ``PathFMViTModel.save_pretrained``. A folder without a pathfm ``config.json`` but with one
            ``model.safetensors`` / ``pytorch_model.bin`` is read as a timm checkpoint.
        preset: Architecture name from ``PRESETS``. For timm files the native image size is taken from the
            checkpoint's position grid when it differs from the preset (kaiko's ViT-L/14 may be stored at
            224 px where timm's default is 518), so outputs match timm built with that ``img_size``.
        **overrides: Extra config fields (e.g. ``pooling="cls_mean"``, ``drop_path_rate=0.1``).

    Returns:
        The model in eval mode.

    Raises:
        KeyError: Unknown preset.
        FileNotFoundError: ``path`` does not exist / the folder holds no weights.
        CheckpointMismatchError: The weights do not fit ``preset`` (lists missing / unexpected keys).
    """
    configuration = _configuration()
    config_class, presets = configuration.PathFMViTConfig, sorted(configuration.PRESETS)
    if preset not in presets:
        raise KeyError(f"Unknown PathFMViT preset {preset!r}; choose one of {presets}.")
    src = Path(path)
    if src.is_dir():
        config_file = src / "config.json"
        try:
            model_type = (
                json.loads(config_file.read_text()).get("model_type") if config_file.is_file() else None
            )
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CheckpointMismatchError(f"{config_file}: not valid JSON ({err}).") from None
        if model_type == "pathfm_vit":
            try:
                from .loading import load_checked
            except ImportError:  # run as a script
                from pathfm.modeling.loading import load_checked
            model = load_checked(_model_class(), str(src), is_folder=True, **overrides)
            reference = config_class.from_preset(preset)
            fields = (
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "intermediate_size",
                "patch_size",
                "num_register_tokens",
            )
            diff = {
                f: (getattr(model.config, f), getattr(reference, f))
                for f in fields
                if getattr(model.config, f) != getattr(reference, f)
            }
            if diff:
                raise CheckpointMismatchError(
                    f"{src} holds a pathfm model that is not {preset!r}: field (folder, preset) = {diff}."
                )
            return model.eval()
        candidates = [src / n for n in ("model.safetensors", "pytorch_model.bin") if (src / n).is_file()]
        if not candidates:
            raise FileNotFoundError(
                f"{src} has neither a pathfm config.json nor model.safetensors / pytorch_model.bin."
            )
        src = candidates[0]
    timm_sd = read_timm_checkpoint(src)
    config = config_class.from_preset(preset, **overrides)
    side = _grid_from_pos_embed(timm_sd, config)
    if "image_size" not in overrides and side is not None and (side, side) != config.grid_size:
        logger.warning(
            "%s: position grid %dx%d differs from preset %s (%dx%d); using image_size=%d px.",
            src,
            side,
            side,
            preset,
            *config.grid_size,
            side * config.patch_size,
        )
        config = config_class.from_preset(preset, **{**overrides, "image_size": side * config.patch_size})
    state = timm_to_pathfm_state_dict(timm_sd, config, source=str(src))
    model = _model_class()(config)
    model.load_state_dict(state, strict=True)
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; see the module docstring. Returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint", required=True, help="timm .pth/.bin/.safetensors file (or pathfm folder)"
    )
    parser.add_argument(
        "--arch", required=True, metavar="PRESET", help="PathFMViTConfig preset (a wrong name lists them all)"
    )
    parser.add_argument("--output_dir", required=True, help="folder to write")
    parser.add_argument("--pooling", choices=("cls", "cls_mean"), default=None, help="pooler_output mode")
    parser.add_argument(
        "--to_timm",
        action="store_true",
        help="reverse: read a pathfm folder, write <output_dir>/model.safetensors in timm layout",
    )
    args = parser.parse_args(argv)
    presets = sorted(_configuration().PRESETS)  # checked after parsing: the list costs the torch import
    if args.arch not in presets:
        parser.error(f"argument --arch: invalid choice: {args.arch!r} (choose from {', '.join(presets)})")
    from safetensors.torch import save_file

    try:
        from .image_processing_pathfm_vit import PathFMViTImageProcessor
    except ImportError:  # run as a script
        from pathfm.modeling.image_processing_pathfm_vit import PathFMViTImageProcessor
    out = Path(args.output_dir)
    overrides = {"pooling": args.pooling} if args.pooling else {}
    model = load_pretrained_backbone(args.checkpoint, args.arch, **overrides)
    out.mkdir(parents=True, exist_ok=True)  # only once the checkpoint has loaded: nothing half-written
    if args.to_timm:
        timm_sd = pathfm_to_timm_state_dict(model.state_dict(), model.config, source=args.checkpoint)
        save_file({k: v.float().contiguous() for k, v in timm_sd.items()}, str(out / "model.safetensors"))
        timms = _configuration().TIMM_ARCHITECTURES
        timm_name = timms.get(args.arch, timms["vits16"])
        print(
            f"wrote {out / 'model.safetensors'} (timm layout): load with timm.create_model({timm_name!r}, "
            f"num_classes=0, img_size={model.config.image_size}) + load_state_dict"
        )
        return 0
    model.save_pretrained(str(out))
    PathFMViTImageProcessor().save_pretrained(str(out))
    print(f"wrote {out} (pathfm {args.arch}: config.json, model.safetensors, preprocessor_config.json, code)")
    return 0


def cli(argv: list[str] | None = None) -> int:
    """:func:`main` for the command line: a bad or mismatched checkpoint prints one line (the key lists
    included) instead of a traceback, and returns 2."""
    try:
        return main(argv)
    except (ValueError, FileNotFoundError) as err:
        print(f"convert_timm_to_pathfm.py: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
