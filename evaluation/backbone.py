"""Load a frozen backbone and its own image processor, and pin down which weights they are.

The preprocessing always comes from the model (``preprocessor_config.json`` next to the weights, or an
explicit ``image_processor`` argument): a model without one is an error, never a silent ImageNet default.
The revision that keys the embedding cache is the Hub commit hash for Hub ids, and a sha256 of
``config.json`` + the weight files for local folders.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

import pathfm  # noqa: F401  (registers the pathfm_vit Auto classes)

# Model weights only: probe_head.safetensors (written by --save_head) must not change the revision.
WEIGHT_PATTERNS = ("model*.safetensors", "pytorch_model*.bin")
PROCESSOR_FILE = "preprocessor_config.json"


class BackboneError(ValueError):
    """The model or its image processor cannot be used (message says what is missing and how to fix it)."""


@dataclass
class Backbone:
    """A frozen model ready to embed images.

    Attributes:
        model: the transformers model, in eval mode, parameters frozen.
        processor: its image processor.
        model_id: what the user passed (folder or Hub id).
        revision: Hub commit hash, ``sha256:<12 hex>`` of a local folder, or ``random-init-...``.
        local_dir: the folder for local models (model card and probe head go there), else None.
        processor_config: the processor's settings (dict), part of the embedding cache key.
        random_init: True when the weights were replaced by a seeded random initialisation.
    """

    model: torch.nn.Module
    processor: object
    model_id: str
    revision: str
    local_dir: Path | None
    processor_config: dict = field(default_factory=dict)
    random_init: bool = False

    @property
    def processor_hash(self) -> str:
        """sha256 (16 hex) of the processor settings."""
        return hashlib.sha256(json.dumps(self.processor_config, sort_keys=True).encode()).hexdigest()[:16]


def folder_revision(folder: Path) -> str:
    """``sha256:<12 hex>`` over config.json and the weight files of a local model folder.

    Raises:
        BackboneError: no weight file in the folder.
    """
    weights = sorted({p for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern)})
    if not weights:
        raise BackboneError(f"{folder} holds no weights ({' / '.join(WEIGHT_PATTERNS)})")
    digest = hashlib.sha256()
    for path in [folder / "config.json", *weights]:
        if path.is_file():
            digest.update(path.name.encode())
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 22), b""):
                    digest.update(chunk)
    return f"sha256:{digest.hexdigest()[:12]}"


def _hub_commit(model_id: str, revision: str | None) -> str:
    from transformers.utils import cached_file

    path = Path(cached_file(model_id, "config.json", revision=revision))
    parts = path.parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts else (revision or "unknown")


def _processor_config(processor: object) -> dict:
    config = processor.to_dict() if hasattr(processor, "to_dict") else dict(vars(processor))
    return json.loads(json.dumps(config, sort_keys=True, default=str))


def load_backbone(
    model_id: str,
    revision: str | None = None,
    image_processor: str | None = None,
    random_init: bool = False,
    seed: int = 0,
    device: str = "cpu",
) -> Backbone:
    """Load a model with ``AutoModel`` and its processor with ``AutoImageProcessor``, frozen, in eval mode.

    Args:
        model_id: local folder (``save_pretrained`` output) or Hub id (must be in the local cache offline).
        revision: Hub revision (branch, tag or commit).
        image_processor: folder or Hub id of the processor when the model has none (explicit, never implied).
        random_init: keep the architecture and processor but re-initialise the weights (seeded), for the
            "trained vs random" comparison.
        seed: seed of the random initialisation.
        device: torch device.

    Raises:
        BackboneError: ``model_id`` is a file or a missing folder, missing preprocessor_config.json (and no
            ``image_processor``), unloadable model.
    """
    from pathfm.modeling.loading import ModelFolderError, load_checked
    from transformers import AutoConfig, AutoImageProcessor, AutoModel

    local = Path(model_id).is_dir()
    if Path(model_id).is_file():
        parent = Path(model_id).parent
        hint = (
            f"pass its folder: --model {parent}"
            if (parent / "config.json").is_file()
            else "pass the folder save_pretrained wrote (config.json, model.safetensors, "
            f"{PROCESSOR_FILE}) or a Hub id"
        )
        raise BackboneError(f"--model {model_id}: this is a file, not a model folder; {hint}")
    if not local and (model_id.startswith((".", "/", "~")) or Path(model_id).exists()):
        raise BackboneError(f"--model {model_id}: no such model folder")
    if local and not (Path(model_id) / "config.json").is_file():
        raise BackboneError(
            f"--model {model_id}: not a model folder (no config.json; expected save_pretrained output)"
        )
    if local:
        try:
            json.loads((Path(model_id) / "config.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise BackboneError(
                f"{Path(model_id) / 'config.json'} is not valid JSON ({err}): re-export the model (save_pretrained)"
            ) from None
    local_dir = Path(model_id).resolve() if local else None
    processor_source = image_processor or model_id
    if Path(processor_source).is_dir() and not (Path(processor_source) / PROCESSOR_FILE).is_file():
        raise BackboneError(
            f"{Path(processor_source) / PROCESSOR_FILE} is missing: pathfm never falls back to ImageNet "
            f"preprocessing. Save the model's processor next to it (processor.save_pretrained(dir)) or pass "
            f"--image_processor DIR_OR_HUB_ID explicitly."
        )
    try:
        processor = AutoImageProcessor.from_pretrained(
            processor_source, revision=None if image_processor else revision
        )
    except OSError as err:
        raise BackboneError(
            f"no image processor for {processor_source!r} ({err}); pass --image_processor explicitly "
            f"(pathfm never falls back to ImageNet preprocessing)"
        ) from err
    try:
        if random_init:
            config = AutoConfig.from_pretrained(model_id, revision=revision)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = AutoModel.from_config(config)
            config_hash = hashlib.sha256(config.to_json_string().encode()).hexdigest()[:12]
            revision_id = f"random-init-seed{seed}-config-{config_hash}"
        else:
            model = load_checked(AutoModel, model_id, local, revision=revision)
            revision_id = (
                folder_revision(local_dir) if local_dir is not None else _hub_commit(model_id, revision)
            )
    except (OSError, ModelFolderError) as err:
        raise BackboneError(f"cannot load model {model_id!r}: {err}") from None
    model.eval().requires_grad_(False).to(device)
    return Backbone(
        model=model,
        processor=processor,
        model_id=str(local_dir) if local_dir is not None else model_id,
        revision=revision_id,
        local_dir=local_dir,
        processor_config=_processor_config(processor),
        random_init=random_init,
    )


def preset_backbone(preset: str, seed: int = 0, revision: str = "random-init") -> Backbone:
    """A randomly initialised (``seed``) pathfm ViT of ``preset`` with the default image processor.

    For benchmarks and tests that need an architecture without a saved model folder.
    """
    from pathfm.modeling import PathFMViTConfig, PathFMViTImageProcessor, PathFMViTModel

    torch.manual_seed(seed)
    model = PathFMViTModel(PathFMViTConfig.from_preset(preset)).eval().requires_grad_(False)
    processor = PathFMViTImageProcessor()
    return Backbone(
        model=model,
        processor=processor,
        model_id=f"random {preset}",
        revision=f"{revision}-seed{seed}",
        local_dir=None,
        processor_config=processor.to_dict(),
        random_init=True,
    )
