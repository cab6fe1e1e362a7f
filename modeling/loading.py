"""``from_pretrained`` with every way a model folder can be broken turned into one readable line.

Used by the probe (``pathfm.evaluation.backbone``) and the Space (``pathfm.spaces.model_store``): a truncated
``model.safetensors``, a ``config.json`` that is not JSON, weights that do not fit the config (another size)
and weights of another architecture (none of the backbone's tensor names) each name the file and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class ModelFolderError(ValueError):
    """A model folder / Hub id cannot be loaded; the message names the file and the problem (no traceback)."""


def _first_mismatch(source: str) -> str:
    """The first checkpoint tensor whose shape differs from what ``config.json`` builds, for messages."""
    import torch
    from pathfm.modeling import PathFMViTConfig, PathFMViTModel
    from safetensors import safe_open

    weights = Path(source) / "model.safetensors"
    config = PathFMViTConfig.from_pretrained(source)
    with torch.device("meta"):
        expected = PathFMViTModel(config).state_dict()
    with safe_open(str(weights), framework="pt") as handle:
        for key in handle.keys():
            shape = list(handle.get_slice(key).get_shape())
            if key in expected and list(expected[key].shape) != shape:
                return f" (e.g. {key}: {shape} in the weights, {list(expected[key].shape)} from config.json)"
    return ""


def _describe(error: Exception, source: str, is_folder: bool) -> str:
    """One line for a ``from_pretrained`` failure."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if type(error).__name__ == "SafetensorError":
        return f"{Path(source) / 'model.safetensors'} is truncated or not a safetensors file ({text})"
    if "mismatched_sizes" in text and is_folder:
        try:
            detail = _first_mismatch(source)
        except Exception:  # noqa: BLE001  (the detail is a bonus; the plain message stays right)
            detail = ""
        return (
            f"{Path(source) / 'model.safetensors'} does not fit {Path(source) / 'config.json'}{detail}: "
            "a checkpoint of another architecture or size"
        )
    if is_folder and "not a valid JSON file" in text:
        return f"{Path(source) / 'config.json'} is not valid JSON: re-export the model (save_pretrained)"
    return text


def load_checked(auto_class: Any, source: str, is_folder: bool, **kwargs: Any) -> Any:
    """``auto_class.from_pretrained(source, **kwargs)`` that fails with one line instead of a traceback.

    Args:
        auto_class: e.g. ``transformers.AutoModel``.
        source: Local folder or Hub id.
        is_folder: Whether ``source`` is a local folder (messages then name its files).
        **kwargs: Passed to ``from_pretrained`` (``revision``...).

    Returns:
        The model.

    Raises:
        ModelFolderError: unreadable or incompatible files; weights that leave some of the model's tensors
            unset (a checkpoint of another architecture, which transformers would fill with random values).
    """
    from transformers.utils import logging as hf_logging

    # transformers logs a multi-line load report for missing / mismatched tensors, which the error below says,
    # and a progress bar per load: both would bury the one line
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        model, info = auto_class.from_pretrained(source, output_loading_info=True, **kwargs)
    except Exception as error:  # noqa: BLE001  (transformers / safetensors / json raise many types here)
        raise ModelFolderError(_describe(error, source, is_folder)) from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        where = Path(source) / "model.safetensors" if is_folder else f"{source} weights"
        raise ModelFolderError(
            f"{where} lacks {len(missing)} of the model's tensors (e.g. {missing[0]}): a checkpoint of "
            "another "
            "architecture? Convert it first (pathfm convert / modeling/convert_timm_to_pathfm.py)."
        )
    return model
