"""The model card (README.md) of an exported pathfm backbone, built with huggingface_hub's ModelCard.

`ModelCardInfo` gathers what the training loop knows (slides, tiles seen, magnifications,
hyperparameters, compute); `build_model_card` turns it into a ``huggingface_hub.ModelCard`` whose YAML
metadata (``ModelCardData``) carries the licence, tags, ``pipeline_tag: image-feature-extraction`` and
``library_name: transformers``, and whose body says how to load the model, on what it was trained, how,
what it is for and what it is not for, and what to cite. ``ModelCard.validate()`` is never called: it needs
the Hub.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

__all__ = [
    "DEFAULT_TAGS",
    "DINOV2_CITATION",
    "DINO_CITATION",
    "OBJECTIVE_TEXT",
    "PAPER_CITATION",
    "ModelCardInfo",
    "build_model_card",
    "slide_name",
]

DEFAULT_TAGS = (
    "pathfm",
    "pathology",
    "histopathology",
    "digital-pathology",
    "vision-transformer",
    "dino",
    "self-supervised-learning",
    "image-feature-extraction",
)

PAPER_CITATION = """@misc{ai2024largescale,
    title={Towards Large-Scale Training of Pathology Foundation Models},
    author={kaiko.ai and Nanne Aben and Edwin D. de Jong and Ioannis Gatopoulos and Nicolas K\\"anzig
        and Mikhail Karasikov and Axel Lagr\\'e and Roman Moser and Joost van Doorn and Fei Tang},
    year={2024},
    eprint={2404.15217},
    archivePrefix={arXiv},
    primaryClass={cs.CV}
}"""

DINO_CITATION = """@inproceedings{caron2021emerging,
    title={Emerging Properties in Self-Supervised Vision Transformers},
    author={Caron, Mathilde and Touvron, Hugo and Misra, Ishan and J\\'egou, Herv\\'e and Mairal, Julien
        and Bojanowski, Piotr and Joulin, Armand},
    booktitle={Proceedings of the International Conference on Computer Vision (ICCV)},
    year={2021}
}"""

DINOV2_CITATION = """@article{oquab2024dinov2,
    title={{DINOv2}: Learning Robust Visual Features without Supervision},
    author={Oquab, Maxime and Darcet, Timoth\\'ee and Moutakanni, Th\\'eo and Vo, Huy V. and Szafraniec, Marc
        and others},
    journal={Transactions on Machine Learning Research},
    year={2024}
}"""

#: Per ``--objective``: method named in the card, training-procedure paragraph, citation heading and entry.
OBJECTIVE_TEXT = {
    "dino": (
        "DINO (Caron et al. 2021)",
        "DINO self-distillation: a student and an EMA teacher of the same architecture, each with a DINO\n"
        "projection head; multi-crop (2 global + several local crops per tile) with the DINO augmentations;\n"
        "the teacher sees only the global crops. Only the teacher backbone is released.",
        "DINO",
        DINO_CITATION,
    ),
    "dinov2": (
        "DINOv2 (Oquab et al. 2024)",
        "DINOv2: a student and an EMA teacher of the same architecture with DINO and iBOT projection heads;\n"
        "the DINO loss on the CLS token of 2 global + several local crops per tile, the iBOT loss on patch\n"
        "tokens masked in the student's global crops, and the KoLeo regulariser on the student CLS tokens;\n"
        "the teacher sees only the unmasked global crops. Only the teacher backbone is released.",
        "DINOv2",
        DINOV2_CITATION,
    ),
}

_SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide", ".dcm")


_SECRET_KEY = re.compile(r"token|secret|password|passwd|api_?key|credential", re.IGNORECASE)


def _drop_secrets(values: dict[str, Any]) -> dict[str, Any]:
    """Removes keys that look like credentials (``hub_token``, ``api_key``...), at any nesting depth."""
    return {
        key: _drop_secrets(value) if isinstance(value, dict) else value
        for key, value in values.items()
        if not _SECRET_KEY.search(str(key))
    }


def slide_name(path_or_id: str | Path) -> str:
    """A slide id for the card: the file name without a whole-slide-image suffix (``a/b.svs`` -> ``b``)."""
    name = Path(str(path_or_id)).name
    for suffix in _SLIDE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


#: Approximate objective magnification of a resolution, the usual convention (0.25 µm/px ~ 40x).
_MAGNIFICATION_AT_0_25 = 40.0


@dataclass
class ModelCardInfo:
    """What the model card says about one training run. Every field is optional.

    Attributes:
        model_name: title of the card.
        repo_id: ``namespace/name`` used in the loading snippet (a placeholder when None).
        license: SPDX-like licence id for the Hub metadata (e.g. ``"apache-2.0"``, ``"cc-by-nc-4.0"``).
        architecture: backbone preset name (``"tiny"``, ``"vits16"``, ...).
        base_model: Hub id of the initial weights, if any (goes to the ``base_model`` metadata).
        init: ``"random"``, ``"imagenet"`` or a free-text description of the initialisation.
        datasets: names of the slide collections (e.g. ``["embedded", "TCGA"]``), shown in the body.
        num_slides: number of whole-slide images sampled.
        slide_ids: their ids (listed in the card when there are at most 50).
        tiles_seen: tiles read from the slides during training (each gives 2 global + N local crops).
        mpps: resolutions sampled, in µm/px.
        tile_size: tile side read from the slides, in px.
        min_tissue: minimum tissue fraction of a kept tile (0-1).
        steps: optimizer steps.
        epochs: (pseudo-)epochs, if the loop counts them.
        hyperparameters: json-serialisable settings (lr, batch size, temperatures, crops, ...).
        compute: json-serialisable compute description (device, processes, precision, wall time in s).
        final_loss: Training loss at the end of training (of ``objective``).
        objective: ``"dino"`` or ``"dinov2"`` (``--objective``): names the method, procedure and citation.
        metrics: label-free monitors at the end (e.g. ``{"rankme": 21.3}``).
        tags: extra Hub tags (the `DEFAULT_TAGS` are always added).
        notes: free text appended to the training section.
    """

    model_name: str = "pathfm ViT (DINO)"
    repo_id: str | None = None
    license: str = "apache-2.0"
    architecture: str | None = None
    base_model: str | None = None
    init: str = "random"
    datasets: list[str] = field(default_factory=list)
    num_slides: int | None = None
    slide_ids: list[str] = field(default_factory=list)
    tiles_seen: int | None = None
    mpps: list[float] = field(default_factory=list)
    tile_size: int | None = None
    min_tissue: float | None = None
    steps: int | None = None
    epochs: float | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    compute: dict[str, Any] = field(default_factory=dict)
    final_loss: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    notes: str | None = None
    objective: str = "dino"

    def __post_init__(self) -> None:
        # A card is public: never let a credential from the run config (e.g. training.hub_token) into it.
        self.hyperparameters = _drop_secrets(dict(self.hyperparameters))
        self.compute = _drop_secrets(dict(self.compute))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCardInfo:
        """Builds the info from a plain dict (e.g. read back from ``pathfm_checkpoint.json``).

        Also accepts the names training/dino.py uses: ``slides`` (-> ``slide_ids``), ``backbone_preset``
        (-> ``architecture``) and ``pretrained_weights`` (a local file; -> ``init``).

        Raises:
            ValueError: if ``data`` has keys that are neither fields nor aliases (the message names them
                and the allowed keys).
        """
        data = dict(data)
        if "slides" in data:
            data.setdefault("slide_ids", [slide_name(s) for s in data.pop("slides") or []])
        if "backbone_preset" in data:
            data.setdefault("architecture", data.pop("backbone_preset"))
        if "pretrained_weights" in data:
            weights = data.pop("pretrained_weights")
            if weights:
                data.setdefault("init", f"ImageNet-pretrained weights from {Path(str(weights)).name}")
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValueError(f"card_info: unknown keys {unknown}; allowed keys are {sorted(allowed)}")
        info = cls(**data)
        info.mpps = [float(m) for m in info.mpps]
        info.slide_ids = [str(s) for s in info.slide_ids]
        return info

    def to_dict(self) -> dict[str, Any]:
        """A json-serialisable copy (the inverse of `from_dict`)."""
        return dataclasses.asdict(self)

    @classmethod
    def coerce(cls, info: ModelCardInfo | dict[str, Any] | None) -> ModelCardInfo:
        """Accepts an instance, a dict or None (defaults)."""
        if info is None:
            return cls()
        if isinstance(info, cls):
            return info
        if isinstance(info, dict):
            return cls.from_dict(info)
        raise TypeError(f"card_info must be a ModelCardInfo or a dict, got {type(info).__name__}")


def _magnification(mpp: float) -> str:
    """µm/px -> approximate objective magnification, e.g. 0.5 -> '20x'."""
    mag = _MAGNIFICATION_AT_0_25 * 0.25 / mpp
    return f"{mag:g}x" if math.isclose(mag, round(mag), rel_tol=1e-6) else f"{mag:.1f}x"


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple, dict)):
        return f"`{json.dumps(value)}`"
    return str(value)


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"training": {"lr": 1}}`` -> ``{"training.lr": 1}`` (nested config groups as one table)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _short_list(items: list[str], limit: int = 10) -> str | None:
    """``a, b, c`` or ``a, ..., j (+N more)`` for long lists (e.g. thousands of slide paths)."""
    if not items:
        return None
    shown = ", ".join(str(i) for i in items[:limit])
    return shown if len(items) <= limit else f"{shown} (+{len(items) - limit} more)"


def _table(rows: list[tuple[str, Any]]) -> str:
    lines = ["| | |", "|---|---|"]
    lines += [f"| {key} | {_value(val)} |" for key, val in rows if val is not None and val not in ([], {})]
    return "\n".join(lines) if len(lines) > 2 else "_not recorded_"


def _architecture_text(config: dict[str, Any] | None, architecture: str | None) -> str:
    if not config:
        return f"A ViT backbone{f' (`{architecture}` preset)' if architecture else ''}."
    registers = config.get("num_register_tokens") or 0
    pooling = config.get("pooling", "cls")
    pooled = (
        "the final CLS token" if pooling == "cls" else "the CLS token concatenated with the mean patch token"
    )
    text = (
        f"A Vision Transformer{f' (`{architecture}` preset)' if architecture else ''}: "
        f"{config.get('num_hidden_layers')} layers, hidden size {config.get('hidden_size')}, "
        f"{config.get('num_attention_heads')} heads, patch {config.get('patch_size')} px, "
        f"native input size {config.get('image_size')} px"
    )
    text += f", {registers} register tokens" if registers else ""
    text += f". `pooler_output` is {pooled} (after the final layer norm)."
    return text


def _preprocessing_text(processor: dict[str, Any] | None) -> str:
    """Describes the image processor's settings (read from its config, so the card cannot drift from it)."""
    if not processor:
        return "Preprocessing: use the image processor saved with the model (`preprocessor_config.json`)."
    steps = []
    size = processor.get("size") or {}
    if processor.get("do_resize", True) and size:
        if "shortest_edge" in size:
            steps.append(f"resize the shortest edge to {size['shortest_edge']} px")
        else:
            steps.append(f"resize to {size.get('height')} x {size.get('width')} px")
    crop = processor.get("crop_size") or {}
    if processor.get("do_center_crop") and crop:
        steps.append(f"center crop {crop.get('height')} x {crop.get('width')} px")
    if processor.get("do_rescale", True):
        factor = processor.get("rescale_factor", 1 / 255)
        steps.append("scale to [0, 1]" if math.isclose(factor, 1 / 255) else f"multiply by {factor:g}")
    if processor.get("do_normalize", True):
        mean = tuple(round(float(v), 4) for v in processor.get("image_mean", ()))
        std = tuple(round(float(v), 4) for v in processor.get("image_std", ()))
        imagenet = mean == (0.485, 0.456, 0.406)
        steps.append(
            f"normalise with mean {mean} and std {std}"
            + ("" if imagenet else " (**not** the ImageNet statistics)")
        )
    intro = "Preprocessing (done by the image processor; state it when you report numbers): "
    return intro + ", ".join(steps) + "."


def build_model_card(
    info: ModelCardInfo | dict[str, Any] | None,
    model_config: dict[str, Any] | None = None,
    processor_config: dict[str, Any] | None = None,
) -> ModelCard:
    """Builds the model card of an exported teacher backbone.

    Args:
        info: what the run knows (see `ModelCardInfo`); a dict is checked for unknown keys.
        model_config: the backbone's ``PathFMViTConfig.to_dict()``, used for the architecture summary.
        processor_config: the image processor's ``to_dict()``, used to describe the preprocessing.

    Returns:
        A ``huggingface_hub.ModelCard``; ``card.save(folder / "README.md")`` writes it.

    Raises:
        ValueError / TypeError: on a malformed ``info`` (see `ModelCardInfo.from_dict`).
    """
    info = ModelCardInfo.coerce(info)
    tags = list(dict.fromkeys([*DEFAULT_TAGS, *info.tags]))
    data = ModelCardData(
        license=info.license,
        library_name="transformers",
        pipeline_tag="image-feature-extraction",
        tags=tags,
        base_model=info.base_model,
        model_name=info.model_name,
    )
    repo = info.repo_id or "<namespace>/<model-name>"
    mpps = sorted(info.mpps)
    mpp_text = ", ".join(f"{m:g} µm/px (~{_magnification(m)})" for m in mpps) if mpps else None
    slides = None
    if info.slide_ids and len(info.slide_ids) <= 50:
        slides = ", ".join(f"`{s}`" for s in info.slide_ids)
    data_rows: list[tuple[str, Any]] = [
        ("slide collections", _short_list(info.datasets)),
        ("whole-slide images", len(info.slide_ids) or None if info.num_slides is None else info.num_slides),
        ("slides", slides),
        ("tiles seen", f"{info.tiles_seen:,}" if info.tiles_seen is not None else None),
        ("resolutions (sampled at random)", mpp_text),
        ("tile size read from the slide", f"{info.tile_size} px" if info.tile_size else None),
        ("minimum tissue fraction per tile", info.min_tissue),
    ]
    run_rows: list[tuple[str, Any]] = [
        ("initialisation", info.init),
        ("optimizer steps", info.steps),
        ("epochs", info.epochs),
        (f"final {OBJECTIVE_TEXT[info.objective][2]} loss", info.final_loss),
        *[(f"{name} (end of training)", value) for name, value in sorted(info.metrics.items())],
    ]
    hyper_rows = sorted(_flatten(info.hyperparameters).items())
    compute_rows = sorted(info.compute.items())
    notes = f"\n{info.notes}\n" if info.notes else ""
    if info.objective not in OBJECTIVE_TEXT:
        raise ValueError(
            f"model card: objective must be one of {sorted(OBJECTIVE_TEXT)}, got {info.objective!r}"
        )
    method, procedure, method_name, citation = OBJECTIVE_TEXT[info.objective]

    body = f"""
# {info.model_name}

{_architecture_text(model_config, info.architecture)} Pretrained with self-supervised {method} on tiles
read on the fly from H&E whole-slide images at several resolutions, following "Towards Large-Scale Training
of Pathology Foundation Models" (kaiko.ai, arXiv 2404.15217), with the pathfm training code. This repository
holds the {method_name} **teacher backbone only** (no projection head, no student) in fp32 safetensors, its
image processor and the modeling code.

## How to load

```python
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel

model = AutoModel.from_pretrained("{repo}", trust_remote_code=True).eval()
processor = AutoImageProcessor.from_pretrained("{repo}", trust_remote_code=True)

tile = Image.open("tile.png").convert("RGB")  # an H&E tile, ideally at a resolution seen in training
inputs = processor(images=tile, return_tensors="pt")
with torch.no_grad():
    embedding = model(**inputs).pooler_output  # (1, hidden_size)
```

{_preprocessing_text(processor_config)} `last_hidden_state` is (batch, 1 + registers + patches,
hidden_size) for dense tasks; inputs of any size that is a multiple of the patch size are accepted.

## Training data

{_table(data_rows)}

## Training procedure

{procedure}

{_table(run_rows)}
{notes}
### Hyperparameters

{_table(hyper_rows)}

### Compute

{_table(compute_rows)}

## Intended use and limitations

- Intended use: a frozen feature extractor for research on H&E histopathology tiles (linear probing,
  k-NN, multiple-instance learning on slide-level tasks, segmentation heads on the patch tokens).
- Not a medical device and not validated for diagnosis or any clinical decision.
- The features reflect the slides, stains, scanners and resolutions seen in training (see above); expect
  weaker features on other stains (IHC), on cytology, or at resolutions far from the training ones.
- The label-free monitors above ({method_name} loss, RankMe) are not downstream accuracies. Evaluate on your
  task (e.g. with eva's protocols) and report the protocol with the number.
- The licence of the weights does not override the terms of the slide collections they were trained on.

## Citation

The training recipe:

```bibtex
{PAPER_CITATION}
```

{method_name}:

```bibtex
{citation}
```
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")
