"""Export the DINO teacher backbone as a transformers model folder, from a live module or a checkpoint.

The exported folder is what ``AutoModel.from_pretrained(folder_or_repo, trust_remote_code=True)`` loads::

    config.json                  PathFMViTConfig with ``auto_map`` (remote code)
    model.safetensors            teacher backbone weights, fp32 (no DINO head, no student)
    *.py                         configuration / modeling / image-processing code (relative imports only)
    preprocessor_config.json     PathFMViTImageProcessor defaults (resize 224, crop 224, mean = std = 0.5)
    README.md                    model card (see `pathfm.training.model_card`)

From a checkpoint::

    python training/export.py --checkpoint outputs/dino/checkpoints/checkpoint-500 \
        --output_dir outputs/dino/model

``--checkpoint`` may be a checkpoint folder, the run's ``checkpoints/`` folder or the run folder itself
(the newest complete checkpoint is taken). A checkpoint is understood in one of two ways:

1. ``pathfm_checkpoint.json`` (written by `save_export_metadata`): the backbone config, the card info and
   where the teacher weights are (file + key prefix);
2. otherwise, the layout of ``training/dino.py``: ``Accelerator.save_state`` wrote the teacher (registered
   with ``register_for_checkpointing``) to a ``custom_checkpoint_<i>.pkl`` holding ``backbone.*`` and
   ``head.*`` keys, and the run folder holds ``config.yaml`` (``model.backbone_preset``) and the checkpoint
   ``train_complete.json`` (step, tiles seen).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pathfm.training.model_card import ModelCardInfo, build_model_card, slide_name

if TYPE_CHECKING:  # torch and the model classes are imported where used, so that --help returns at once
    import torch

    from pathfm.modeling import PathFMViTConfig, PathFMViTModel

__all__ = [
    "CHECKPOINT_METADATA",
    "TEACHER_WEIGHTS",
    "export_checkpoint",
    "export_teacher",
    "find_checkpoint",
    "load_teacher_from_checkpoint",
    "main",
    "save_export_metadata",
]

#: Name of the file `save_export_metadata` writes into a checkpoint folder.
CHECKPOINT_METADATA = "pathfm_checkpoint.json"
#: Name of the teacher-backbone weights file `save_export_metadata` writes when given the module.
TEACHER_WEIGHTS = "teacher_backbone.safetensors"
_FORMAT = "pathfm-checkpoint/1"
_DINO_TEACHER_PREFIX = "backbone."


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """Strips DDP (``.module``) and torch.compile (``._orig_mod``) wrappers."""
    import torch

    while True:
        if isinstance(module, torch.nn.parallel.DistributedDataParallel):
            module = module.module
        elif hasattr(module, "_orig_mod") and isinstance(module._orig_mod, torch.nn.Module):
            module = module._orig_mod
        else:
            return module


def export_teacher(
    teacher_backbone: PathFMViTModel,
    output_dir: str | Path,
    card_info: ModelCardInfo | dict[str, Any] | None = None,
) -> Path:
    """Writes the teacher backbone as a self-contained transformers model folder.

    Args:
        teacher_backbone: the teacher's ``PathFMViTModel`` (not the DINO wrapper with its head; DDP and
            torch.compile wrappers are stripped). Not modified: a fp32 copy is saved if it is bf16/fp16.
        output_dir: folder to write (created; existing files of the same names are overwritten).
        card_info: facts for the model card (`ModelCardInfo` or a dict of its fields).

    Returns:
        ``output_dir`` as a Path.

    Raises:
        TypeError: if ``teacher_backbone`` is not a ``PathFMViTModel`` (e.g. the DINO wrapper with a head).
        ValueError: if a weight is not finite, or ``card_info`` has unknown keys.
    """
    import torch

    from pathfm.modeling import PathFMViTImageProcessor, PathFMViTModel, register_auto_classes

    model = _unwrap(teacher_backbone)
    if not isinstance(model, PathFMViTModel):
        hint = " (pass its `.backbone`)" if hasattr(model, "backbone") else ""
        raise TypeError(
            "export_teacher: expected the teacher's PathFMViTModel backbone, "
            f"got {type(model).__name__}{hint}"
        )
    info = ModelCardInfo.coerce(card_info)  # validates the keys before anything is written
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"export_teacher: weight {name!r} has NaN/Inf values; refusing to export")
    if any(t.is_floating_point() and t.dtype != torch.float32 for t in model.state_dict().values()):
        model = copy.deepcopy(model).float()
    register_auto_classes()  # save_pretrained then writes auto_map and copies the modeling code

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir, max_shard_size="100GB")  # one model.safetensors file
    processor = PathFMViTImageProcessor()
    processor.save_pretrained(output_dir)
    card = build_model_card(info, model.config.to_dict(), processor.to_dict())
    card.save(output_dir / "README.md")
    return output_dir


def save_export_metadata(
    checkpoint_dir: str | Path,
    config_dict: dict[str, Any],
    card_info: ModelCardInfo | dict[str, Any] | None = None,
    teacher_backbone: torch.nn.Module | None = None,
    teacher_file: str | None = None,
    teacher_prefix: str = "",
) -> Path:
    """Makes a training checkpoint exportable by `export_checkpoint` / the CLI. Main process only.

    Writes ``checkpoint_dir/pathfm_checkpoint.json``; with ``teacher_backbone`` also its fp32 weights to
    ``checkpoint_dir/teacher_backbone.safetensors``.

    Args:
        checkpoint_dir: the folder ``Accelerator.save_state`` wrote (created if missing).
        config_dict: the teacher backbone's ``PathFMViTConfig.to_dict()``.
        card_info: facts for the model card (`ModelCardInfo` or a dict of its fields).
        teacher_backbone: the teacher's backbone module; its weights are written next to the json.
        teacher_file: instead of ``teacher_backbone``, a weights file already in ``checkpoint_dir``
            (``.safetensors``, a torch pickle such as accelerate's ``custom_checkpoint_0.pkl``, or a sharded
            run's ``torch.distributed.checkpoint`` folder).
        teacher_prefix: key prefix to strip from ``teacher_file`` keys (e.g. ``"backbone."``).

    Returns:
        The path of the json file.

    Raises:
        ValueError: if neither or both of ``teacher_backbone`` / ``teacher_file`` are given, if
            ``config_dict`` is not a pathfm_vit config, or if ``card_info`` has unknown keys.
        FileNotFoundError: if ``teacher_file`` does not exist in ``checkpoint_dir``.
    """
    import torch
    from safetensors.torch import save_file

    from pathfm.modeling import PathFMViTConfig

    checkpoint_dir = Path(checkpoint_dir)
    if (teacher_backbone is None) == (teacher_file is None):
        raise ValueError("save_export_metadata: pass exactly one of teacher_backbone or teacher_file")
    if not isinstance(config_dict, dict) or config_dict.get("model_type") != PathFMViTConfig.model_type:
        got = config_dict.get("model_type") if isinstance(config_dict, dict) else type(config_dict).__name__
        raise ValueError(
            "save_export_metadata: config_dict must be PathFMViTConfig.to_dict() "
            f"(model_type {PathFMViTConfig.model_type!r}), got model_type {got!r}"
        )
    info = ModelCardInfo.coerce(card_info)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    if teacher_backbone is not None:
        state = {
            k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous().clone()
            for k, v in _unwrap(teacher_backbone).state_dict().items()
        }
        save_file(state, str(checkpoint_dir / TEACHER_WEIGHTS), metadata={"format": "pt"})
        teacher_file, teacher_prefix = TEACHER_WEIGHTS, ""
    elif not (checkpoint_dir / teacher_file).exists():
        raise FileNotFoundError(f"save_export_metadata: {checkpoint_dir / teacher_file} does not exist")
    payload = {
        "format": _FORMAT,
        "model_config": config_dict,
        "card_info": info.to_dict(),
        "teacher": {"file": teacher_file, "prefix": teacher_prefix},
    }
    path = checkpoint_dir / CHECKPOINT_METADATA
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str))
    tmp.replace(path)
    return path


def _is_checkpoint(folder: Path) -> bool:
    return (folder / CHECKPOINT_METADATA).is_file() or any(folder.glob("custom_checkpoint_*.pkl"))


def find_checkpoint(path: str | Path) -> Path:
    """Resolves a checkpoint folder, a folder of checkpoints, or a run folder to one checkpoint folder.

    Among sub-folders ending in a step number (``checkpoint-500``), the highest step whose save finished
    (a ``train_complete.json`` marker, when the loop writes one) is taken.

    Raises:
        FileNotFoundError: if ``path`` does not exist or holds no checkpoint (the message names it).
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"--checkpoint {path}: no such folder")
    if _is_checkpoint(path):
        return path
    for root in (path, path / "checkpoints"):
        if not root.is_dir():
            continue
        candidates = []
        for sub in root.iterdir():
            match = re.search(r"(\d+)$", sub.name)
            if sub.is_dir() and match and _is_checkpoint(sub):
                complete = (sub / "train_complete.json").exists() or (sub / CHECKPOINT_METADATA).exists()
                candidates.append((complete, int(match[1]), sub))
        if candidates:
            return max(candidates)[2]
    raise FileNotFoundError(
        f"--checkpoint {path}: no checkpoint found (a folder with {CHECKPOINT_METADATA} or accelerate's "
        "custom_checkpoint_*.pkl, or a folder of such checkpoint-<step> folders)"
    )


def _load_state_dict(file: Path) -> dict[str, torch.Tensor]:
    import torch
    from safetensors.torch import load_file

    if file.is_dir():  # a sharded run's teacher: a torch.distributed.checkpoint folder, read on one process
        return _load_dcp(file)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: teacher weights file not found")
    try:
        if file.suffix == ".safetensors":
            return load_file(str(file))
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt or foreign file: name it
        raise ValueError(f"{file}: cannot read weights ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict):
        raise ValueError(f"{file}: expected a state dict, got {type(state).__name__}")
    return state


def _load_dcp(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a ``torch.distributed.checkpoint`` folder, gathered into one CPU state dict."""
    import tempfile

    import torch
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    with tempfile.TemporaryDirectory() as tmp:
        try:
            dcp_to_torch_save(str(folder), f"{tmp}/state.pt")
            state = torch.load(f"{tmp}/state.pt", map_location="cpu", weights_only=True)
        except Exception as err:  # corrupt or foreign folder: name it
            raise ValueError(f"{folder}: cannot read sharded weights ({type(err).__name__}: {err})") from err
    return state


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str, file: Path) -> dict[str, torch.Tensor]:
    for candidate in (prefix, f"module.{prefix}", f"_orig_mod.{prefix}"):
        stripped = {k[len(candidate):]: v for k, v in state.items() if k.startswith(candidate)}
        if stripped:
            return stripped
    sample = ", ".join(sorted(state)[:5])
    raise ValueError(f"{file}: no key starts with {prefix!r} (first keys: {sample})")


def _run_config(checkpoint: Path) -> tuple[dict[str, Any], Path]:
    """The run's resolved ``config.yaml`` (training/dino.py writes it in the run folder)."""
    import yaml

    for folder in (checkpoint, checkpoint.parent, checkpoint.parent.parent):
        file = folder / "config.yaml"
        if file.is_file():
            data = yaml.safe_load(file.read_text())
            if isinstance(data, dict) and isinstance(data.get("model"), dict):
                return data, file
    raise FileNotFoundError(
        f"{checkpoint}: no {CHECKPOINT_METADATA} and no run config.yaml (with a 'model' section) in it or "
        "the two folders above; cannot tell the backbone architecture"
    )


def _dino_layout(checkpoint: Path) -> tuple[PathFMViTConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Reads a training/dino.py checkpoint without pathfm_checkpoint.json (see the module docstring)."""
    import torch

    from pathfm.modeling import PathFMViTConfig

    run, config_file = _run_config(checkpoint)
    model_section, data_section = run.get("model", {}), run.get("data", {}) or {}
    preset = model_section.get("backbone_preset")
    if not preset:
        raise ValueError(f"{config_file}: model.backbone_preset is missing")
    config = PathFMViTConfig.from_preset(preset, drop_path_rate=0.0)
    teachers = []
    for file in sorted(checkpoint.glob("custom_checkpoint_*.pkl")):
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception:  # other registered objects (loss center, counters) may not be plain tensors
            continue
        if isinstance(state, dict) and any(k.startswith(_DINO_TEACHER_PREFIX) for k in state):
            teachers.append((file, state))
    if len(teachers) != 1:
        names = [f.name for f, _ in teachers]
        raise ValueError(
            f"{checkpoint}: expected exactly one registered teacher (custom_checkpoint_*.pkl with "
            f"'{_DINO_TEACHER_PREFIX}*' keys), found {names or 'none'}"
        )
    file, state = teachers[0]
    card: dict[str, Any] = {
        "architecture": preset,
        "hyperparameters": {k: run[k] for k in ("model", "data", "training") if k in run},
    }
    facts = run.get("run") or {}
    compute_keys = ("device", "world_size", "mixed_precision", "global_batch")
    card["compute"] = {k: facts[k] for k in compute_keys if k in facts}
    if model_section.get("pretrained_weights"):
        card["init"] = f"ImageNet-pretrained weights from {Path(model_section['pretrained_weights']).name}"
    if data_section.get("mpps"):
        card["mpps"] = list(data_section["mpps"])
    if data_section.get("tile_size"):
        card["tile_size"] = int(data_section["tile_size"])
    if data_section.get("min_tissue") is not None:
        card["min_tissue"] = float(data_section["min_tissue"])
    slides = facts.get("slides")
    if slides:
        card["slide_ids"] = [slide_name(s) for s in slides]
        card["num_slides"] = len(slides)
    marker = checkpoint / "train_complete.json"
    if marker.is_file():
        position = json.loads(marker.read_text())
        card["steps"] = position.get("step")
        card["tiles_seen"] = position.get("tiles_seen")
    return config, _strip_prefix(state, _DINO_TEACHER_PREFIX, file), card


def load_teacher_from_checkpoint(checkpoint: str | Path) -> tuple[PathFMViTModel, dict[str, Any]]:
    """Rebuilds the teacher backbone stored in a checkpoint.

    Args:
        checkpoint: a checkpoint folder, a folder of checkpoints or a run folder (see `find_checkpoint`).

    Returns:
        ``(model, card_info_dict)``: the fp32 ``PathFMViTModel`` in eval mode and the card facts found.

    Raises:
        FileNotFoundError: no checkpoint / weights / config found (the path is named).
        ValueError: unreadable metadata or weights, or keys that do not match the architecture (the missing
            and unexpected keys are listed).
    """
    from pathfm.modeling import PathFMViTConfig, PathFMViTModel

    folder = find_checkpoint(checkpoint)
    meta_file = folder / CHECKPOINT_METADATA
    if meta_file.is_file():
        try:
            meta = json.loads(meta_file.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{meta_file}: not valid JSON ({err})") from err
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{meta_file}: unknown format {meta.get('format')!r} (expected {_FORMAT!r})")
        try:
            config = PathFMViTConfig.from_dict(meta["model_config"])
            weights_file = folder / meta["teacher"]["file"]
            prefix = meta["teacher"].get("prefix", "")
        except (KeyError, TypeError) as err:
            raise ValueError(f"{meta_file}: missing field {err}") from err
        state = _load_state_dict(weights_file)
        state = _strip_prefix(state, prefix, weights_file) if prefix else state
        card = dict(meta.get("card_info") or {})
        source = weights_file
    else:
        config, state, card = _dino_layout(folder)
        source = folder
    model = PathFMViTModel(config)
    result = model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                                   strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{source}: teacher weights do not match the {config.model_type} architecture "
            f"(hidden {config.hidden_size}, {config.num_hidden_layers} layers); "
            f"missing keys: {result.missing_keys}; unexpected keys: {result.unexpected_keys}"
        )
    return model.eval(), card


def export_checkpoint(
    checkpoint: str | Path,
    output_dir: str | Path,
    card_overrides: dict[str, Any] | None = None,
) -> Path:
    """Exports the teacher backbone of a training checkpoint (see `load_teacher_from_checkpoint`).

    Args:
        checkpoint: a checkpoint folder, a folder of checkpoints or a run folder.
        output_dir: the model folder to write.
        card_overrides: `ModelCardInfo` fields that replace what the checkpoint records (e.g. ``repo_id``).

    Returns:
        ``output_dir`` as a Path.
    """
    model, card = load_teacher_from_checkpoint(checkpoint)
    card.update(card_overrides or {})
    return export_teacher(model, output_dir, ModelCardInfo.from_dict(card))


def main(argv: list[str] | None = None) -> Path:
    """CLI: ``python training/export.py --checkpoint DIR --output_dir DIR [--repo_id ID] [--license L]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint", required=True, help="checkpoint folder, its checkpoints/ folder or the run folder"
    )
    parser.add_argument("--output_dir", required=True, help="model folder to write")
    parser.add_argument("--repo_id", default=None, help="Hub id shown in the model card's loading snippet")
    parser.add_argument("--license", default=None, help="licence id for the model card metadata")
    parser.add_argument("--model_name", default=None, help="title of the model card")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in {"repo_id": args.repo_id, "license": args.license,
                                    "model_name": args.model_name}.items() if v is not None}
    try:
        out = export_checkpoint(args.checkpoint, args.output_dir, overrides)
    except (FileNotFoundError, ValueError, TypeError) as err:
        parser.exit(2, f"export.py: error: {err}\n")
    print(f"exported teacher backbone to {out}")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
