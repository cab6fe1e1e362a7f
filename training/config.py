"""Configuration of DINO pretraining: three dataclasses parsed by ``HfArgumentParser``.

Defaults reproduce facebookresearch/dino ``main_dino.py`` (ViT-S/16 recipe) unless a field says otherwise.
A run is configured by an optional preset file (YAML or JSON, flat ``key: value`` over the fields below, or a
bare preset name from ``training/presets/``) and command-line ``--key value`` overrides, in that order of
precedence (command line wins). ``parse_config`` returns the three dataclasses; ``save_config`` writes the
resolved values next to the run's outputs.

Epochs on a streaming set: there is no natural epoch when tiles are read at random positions, so an *epoch*
is defined as ``steps_per_epoch`` optimizer steps. Every warm-up or freeze given in epochs by DINO (lr
warm-up, teacher-temperature warm-up, last-layer freeze) is converted to optimizer steps with it.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pathfm.datasets_scripts.flag_ranges import TISSUE_POSITIVE, TISSUE_RANGES, ranges_problems
from pathfm.datasets_scripts.mpp import given_mpp_problem
from pathfm.training import hf_aliases
from transformers import HfArgumentParser

__all__ = [
    "DINOModelArguments",
    "DINODataArguments",
    "DINOTrainingArguments",
    "PRESETS_DIR",
    "DEFAULT_PRESET",
    "parse_config",
    "load_preset",
    "save_config",
    "resolve_preset_path",
]

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
DEFAULT_PRESET = "cpu_tiny"
# Fields written out as "<redacted>" by config_dict (config.yaml, tracker hyperparameters, model card).
SECRET_FIELDS = frozenset({"hub_token"})


@dataclass
class DINOModelArguments:
    """Backbone and DINO head."""

    backbone_preset: str = field(
        default="vits16",
        metadata={"help": "PathFMViTConfig preset: tiny, vits16, vits8, vitb16, vitb8, vitl14_reg4."},
    )
    pretrained_weights: str | None = field(
        default=None,
        metadata={
            "help": "Local ImageNet (or other) weights for the student and teacher backbones: a timm "
            ".pth/.bin/.safetensors file or a pathfm model folder (converted by "
            "pathfm.modeling.convert_timm_to_pathfm). None = random initialisation."
        },
    )
    drop_path_rate: float = field(
        default=0.1, metadata={"help": "Stochastic depth rate of the student (DINO 0.1)."}
    )
    out_dim: int = field(default=65536, metadata={"help": "DINO head output size K (prototypes)."})
    head_hidden_dim: int = field(default=2048, metadata={"help": "DINO head MLP hidden size."})
    head_bottleneck_dim: int = field(default=256, metadata={"help": "DINO head bottleneck size."})
    head_nlayers: int = field(default=3, metadata={"help": "DINO head MLP layers."})
    norm_last_layer: bool = field(
        default=True, metadata={"help": "Fix the weight-norm magnitude of the head's last layer (DINO True)."}
    )
    use_bn_in_head: bool = field(
        default=False, metadata={"help": "BatchNorm in the DINO head MLP (DINO False)."}
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Activation checkpointing in the student."}
    )
    objective: str = field(
        default="dino",
        metadata={
            "help": "dino (facebookresearch/dino: CLS self-distillation) or dinov2 (facebookresearch/dinov2: "
            "DINO CLS loss + iBOT masked-patch loss + KoLeo, layer-wise lr decay; training/objectives/)."
        },
    )
    drop_path_uniform: bool = field(
        default=False,
        metadata={
            "help": "Same drop path rate in every block (dinov2 student.drop_path_uniform) instead of a ramp."
        },
    )
    ibot_separate_head: bool = field(
        default=False,
        metadata={
            "help": "dinov2: a separate iBOT head (ibot.separate_head; ViT-L/g configs) instead of sharing "
            "the DINO head."
        },
    )
    ibot_head_n_prototypes: int = field(
        default=65536,
        metadata={"help": "dinov2: iBOT head prototypes when separate (ibot.head_n_prototypes)."},
    )
    ibot_head_hidden_dim: int = field(default=2048, metadata={"help": "dinov2: iBOT head MLP hidden size."})
    ibot_head_bottleneck_dim: int = field(
        default=256, metadata={"help": "dinov2: iBOT head bottleneck size."}
    )
    ibot_head_nlayers: int = field(default=3, metadata={"help": "dinov2: iBOT head MLP layers."})
    attn_implementation: str = field(
        default="sdpa",
        metadata={
            "help": "Attention kernel (transformers attn_implementation): sdpa (flash / memory-efficient "
            "scaled_dot_product_attention) or eager."
        },
    )


@dataclass
class DINODataArguments:
    """Slides, online tile sampling and multi-crop."""

    slides: list[str] = field(
        default_factory=lambda: ["embedded"],
        metadata={
            "help": "Slide sources: slide files, folders (searched for slides), manifest files (.csv/.tsv), "
            "GDC manifests, a slide catalogue (.parquet, from pathfm.datasets_scripts.catalogue: no slide is "
            "opened before the first batch), or the keyword 'embedded' (the three real slides shipped with pathfm)."
        },
    )
    mpps: list[float] = field(
        default_factory=lambda: [0.25, 0.5, 1.0, 2.0],
        metadata={"help": "Magnifications (µm/px) sampled at random per tile (kaiko: 0.25, 0.5, 1, 2)."},
    )
    mpp_override: float | None = field(
        default=None,
        metadata={
            "help": "Level-0 µm/px for every slide: wins over a manifest/catalogue mpp and the slide "
            "metadata (a scanner that writes a wrong resolution)."
        },
    )
    default_mpp: float | None = field(
        default=None,
        metadata={
            "help": "Level-0 µm/px for slides whose metadata has none (after OpenSlide, vendor properties "
            "and TIFF resolution tags with their unit); without it such slides are skipped as 'no mpp'."
        },
    )
    icc_profile: str = field(
        default="ignore",
        metadata={
            "help": "Embedded ICC colour profiles: ignore (default: stored RGB values, as the tile "
            "benchmarks probes use) or apply (convert every region to sRGB with Pillow's ImageCms)."
        },
    )
    tile_size: int = field(default=256, metadata={"help": "Tile side in px read from the slide."})
    min_tissue: float = field(default=0.4, metadata={"help": "Minimum tissue fraction of a kept tile."})
    min_object_um2: float = field(
        default=10_000.0,
        metadata={
            "help": "Smallest tissue piece kept in a slide's tissue mask, µm² (lower it for needle biopsies "
            "and TMA cores). Give the value the catalogue was built with, or its masks are computed again."
        },
    )
    saturation_floor: float = field(
        default=20.0,
        metadata={"help": "Tissue mask: the most saturated the glass can be, 0-255 (as the catalogue's flag)."},
    )
    mask_mpp: float = field(
        default=8.0, metadata={"help": "Tissue mask resolution, µm/px (as the catalogue's flag)."}
    )
    mask_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder for the tissue masks of slides given as files, folders or manifests (.npz, keyed "
            "by path, size, mtime and mask settings): later visits and epochs read them back instead of "
            "computing them again (seconds per TCGA slide). A catalogue's rows already hold their masks."
        },
    )
    tiles_per_slide: int = field(
        default=1000,
        metadata={"help": "Tiles drawn per slide per pass of the stream (a new pass is re-seeded)."},
    )
    num_workers: int = field(
        default=2, metadata={"help": "DataLoader workers per process (read + decode only)."}
    )
    reader: str = field(
        default="auto",
        metadata={
            "help": "Pixel reader: auto (stored JPEG tiles of TIFF/SVS pyramids decoded directly, OpenSlide for "
            "every other format), tiff (the fast reader or an error naming why not) or openslide (reference).",
            "choices": ["auto", "openslide", "tiff"],
        },
    )
    reader_threads: int = field(
        default=1, metadata={"help": "Decoder threads per region inside each DataLoader worker."}
    )
    global_crop_size: int = field(default=224, metadata={"help": "Global crop side in px (DINO 224)."})
    local_crop_size: int = field(default=96, metadata={"help": "Local crop side in px (DINO 96)."})
    local_crops_number: int = field(default=8, metadata={"help": "Local crops per tile (DINO 8)."})
    global_crops_scale: list[float] = field(
        default_factory=lambda: [0.4, 1.0],
        metadata={"help": "Area range of the global crops (DINO 0.4 1.0)."},
    )
    local_crops_scale: list[float] = field(
        default_factory=lambda: [0.05, 0.4],
        metadata={"help": "Area range of the local crops (DINO 0.05 0.4)."},
    )
    random_rot90: bool = field(
        default=False,
        metadata={
            "help": "Also turn every crop by a random multiple of 90 degrees: with DINO's horizontal flip, "
            "each of the square's 8 rotations/mirrors (vertical flips included) with probability 1/8. "
            "Tissue has no up or down (Elphick et al. 2024, arXiv 2412.11938). Not in DINO: default off."
        },
    )


@dataclass
class DINOTrainingArguments:
    """Optimisation, schedules, checkpoints, logging, export."""

    output_dir: str = field(
        default="outputs/dino", metadata={"help": "Run folder (checkpoints, logs, model/)."}
    )
    seed: int = field(default=0, metadata={"help": "Global seed (also seeds the tile sampler)."})
    per_device_batch_size: int = field(
        default=64, metadata={"help": "Tiles per process per micro-batch (DINO 64)."}
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches per optimizer step."}
    )
    epochs: int = field(
        default=100, metadata={"help": "Epochs of steps_per_epoch optimizer steps (DINO 100)."}
    )
    steps_per_epoch: int = field(
        default=5000,
        metadata={
            "help": "Optimizer steps in one 'epoch' of the stream (defines every epoch-based schedule)."
        },
    )
    max_steps: int = field(
        default=-1, metadata={"help": "Total optimizer steps; > 0 overrides epochs * steps_per_epoch."}
    )
    lr: float = field(
        default=5e-4, metadata={"help": "Base lr at global batch 256 (scaled linearly, DINO 5e-4)."}
    )
    min_lr: float = field(default=1e-6, metadata={"help": "Final lr of the cosine decay (DINO 1e-6)."})
    warmup_epochs: float = field(default=10, metadata={"help": "Linear lr warm-up in epochs (DINO 10)."})
    weight_decay: float = field(default=0.04, metadata={"help": "Initial weight decay (DINO 0.04)."})
    weight_decay_end: float = field(default=0.4, metadata={"help": "Final weight decay, cosine (DINO 0.4)."})
    clip_grad: float = field(default=3.0, metadata={"help": "Max gradient norm; 0 disables (DINO 3.0)."})
    lr_scaling_rule: str = field(
        default="linear_wrt_256",
        metadata={
            "help": "Peak lr from --lr and the global batch: linear_wrt_256 (DINO: lr * batch / 256) or "
            "sqrt_wrt_1024 (dinov2 optim.scaling_rule: lr * sqrt(batch / 1024))."
        },
    )
    layerwise_decay: float = field(
        default=0.9,
        metadata={"help": "dinov2: layer-wise lr decay per block (optim.layerwise_decay; 1 = off)."},
    )
    patch_embed_lr_mult: float = field(
        default=0.2,
        metadata={"help": "dinov2: lr multiplier of the patch embedding (optim.patch_embed_lr_mult)."},
    )
    dino_loss_weight: float = field(
        default=1.0, metadata={"help": "dinov2: DINO CLS loss weight (dino.loss_weight)."}
    )
    ibot_loss_weight: float = field(
        default=1.0, metadata={"help": "dinov2: iBOT loss weight (ibot.loss_weight)."}
    )
    koleo_loss_weight: float = field(
        default=0.1, metadata={"help": "dinov2: KoLeo weight on the student CLS (dino.koleo_loss_weight)."}
    )
    kde_loss_weight: float = field(
        default=0.0,
        metadata={
            "help": "dinov2: KDE regulariser weight (Midnight / OpenMidnight dino.kde_loss_weight, 0.05 "
            "with KoLeo off); 0 = off."
        },
    )
    mask_sample_probability: float = field(
        default=0.5,
        metadata={"help": "dinov2: share of global crops masked for iBOT (ibot.mask_sample_probability)."},
    )
    mask_ratio_min_max: list[float] = field(
        default_factory=lambda: [0.1, 0.5],
        metadata={"help": "dinov2: masked-patch ratio range (ibot.mask_ratio_min_max)."},
    )
    freeze_last_layer: float = field(
        default=1, metadata={"help": "Epochs during which the head's last layer is not updated (DINO 1)."}
    )
    momentum_teacher: float = field(
        default=0.996, metadata={"help": "Initial teacher EMA momentum, cosine to 1."}
    )
    warmup_teacher_temp: float = field(default=0.04, metadata={"help": "Teacher temperature at step 0."})
    teacher_temp: float = field(default=0.04, metadata={"help": "Teacher temperature after warm-up."})
    warmup_teacher_temp_epochs: float = field(
        default=0, metadata={"help": "Teacher temperature warm-up (epochs)."}
    )
    teacher_temp_per_epoch: bool = field(
        default=False,
        metadata={
            "help": "Teacher temperature warm-up in epoch steps, as facebookresearch/dino and dinov2 (one "
            "value per epoch); default False: a linear ramp per optimizer step."
        },
    )
    student_temp: float = field(default=0.1, metadata={"help": "Student temperature (DINO 0.1)."})
    center_momentum: float = field(default=0.9, metadata={"help": "Center EMA momentum (DINO 0.9)."})
    centering: str = field(
        default="centering",
        metadata={
            "help": "Teacher targets: centering (DINO: EMA center + sharpening) or sinkhorn_knopp (DINOv2: "
            "3 Sinkhorn-Knopp iterations over the global batch)."
        },
    )
    mixed_precision: str = field(
        default="auto", metadata={"help": "auto (bf16 on GPU, fp32 on CPU), no, bf16 or fp16."}
    )
    torch_compile: bool | None = field(
        default=None,
        metadata={
            "help": "torch.compile the student's and teacher's backbone and head (static shapes: global and "
            "local crops). Default: on with CUDA, off on CPU."
        },
    )
    torch_compile_backend: str = field(
        default="inductor", metadata={"help": "torch.compile backend (inductor; aot_eager for debugging)."}
    )
    fsdp: str = field(
        default="",
        metadata={
            "help": "Shard student and teacher with FSDP2 through Accelerate (GPU launches): full_shard or "
            "shard_grad_op (transformers.TrainingArguments names; auto_wrap accepted, always on). Empty: "
            "DDP. accelerate launch --use_fsdp --fsdp_version 2 means full_shard. See training/sharding.py."
        },
    )
    optim: str = field(
        default="auto",
        metadata={"help": "adamw_torch_fused, adamw_torch, or auto (fused with CUDA, plain on CPU)."},
    )
    sync_free_step: bool | None = field(
        default=None,
        metadata={
            "help": "No host-device sync inside the step: loss, grad norm and monitors stay on the device "
            "and are read at logging steps (a NaN stops the run at the next logging step). Default: on "
            "with CUDA, off on CPU (every step checked)."
        },
    )
    save_steps: int = field(
        default=1000,
        metadata={"help": "Save the full state every N optimizer steps (0: at the end only; -1: never)."},
    )
    save_total_limit: int = field(
        default=2, metadata={"help": "Keep at most this many checkpoints (0: keep all)."}
    )
    logging_steps: int = field(default=10, metadata={"help": "Log metrics every N optimizer steps."})
    probe_size: int = field(
        default=32, metadata={"help": "Tiles in the fixed probe batch for RankMe (0: off)."}
    )
    report_to: str = field(
        default="tensorboard", metadata={"help": "Accelerate tracker(s), comma-separated, or none."}
    )
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "'latest' or a checkpoint folder written by this script."}
    )
    save_on_interrupt: bool | None = field(
        default=None,
        metadata={
            "help": "Save a checkpoint when stopped by Ctrl-C / SIGTERM (default: on SIGTERM only, as SLURM "
            "sends before a time limit)."
        },
    )
    expected_world_size: int | None = field(
        default=None,
        metadata={"help": "Fail unless exactly this many processes run (else compared to WORLD_SIZE)."},
    )
    export: bool = field(
        default=True, metadata={"help": "Export the teacher backbone to <output_dir>/model at the end."}
    )
    push_to_hub: bool = field(
        default=False, metadata={"help": "Upload <output_dir>/model to the Hub at the end."}
    )
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repo id for --push_to_hub."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace the run already in output_dir (its checkpoints/ and model/); without it such "
            "a folder is refused unless --resume_from_checkpoint is given."
        },
    )
    hub_token: str | None = field(
        default=None,
        metadata={"help": "Hub token (default: HF_TOKEN / login cache). Never written out (SECRET_FIELDS)."},
    )

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the run: ``max_steps`` if > 0, else ``epochs * steps_per_epoch``."""
        return self.max_steps if self.max_steps > 0 else self.epochs * self.steps_per_epoch


CONFIG_CLASSES = (DINOModelArguments, DINODataArguments, DINOTrainingArguments)


def resolve_preset_path(preset: str) -> Path:
    """Find a preset: an existing file, or a name in ``training/presets`` (``cpu_tiny`` -> cpu_tiny.yaml).

    Raises:
        FileNotFoundError: Naming the path tried and the available presets.
    """
    path = Path(preset)
    if path.is_file():
        return path
    for suffix in (".yaml", ".yml", ".json"):
        candidate = PRESETS_DIR / f"{preset}{suffix}"
        if candidate.is_file():
            return candidate
    available = sorted(p.stem for p in PRESETS_DIR.glob("*.y*ml")) + sorted(
        p.stem for p in PRESETS_DIR.glob("*.json")
    )
    close = difflib.get_close_matches(preset, available, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise FileNotFoundError(
        f"preset {preset!r} not found (no such file, not in {PRESETS_DIR}: {available}){hint}"
    )


def load_preset(path: str | Path) -> dict[str, Any]:
    """Read a preset and check its keys against the config fields.

    Two layouts are read: a flat ``key: value`` mapping (``training/presets/*.yaml``), and the ``config.yaml``
    a run writes (``save_config``; ``model:`` / ``data:`` / ``training:`` groups, ``run:`` facts), so that
    ``accelerate launch training/dino.py <run>/config.yaml --resume_from_checkpoint latest`` repeats a run's
    settings. From the latter, ``run:`` and the run-control fields of :data:`NOT_FROM_SAVED_CONFIG` are left
    out (a saved config starts no resume by itself and holds no token).

    Raises:
        ValueError: The file is not valid YAML/JSON, not a mapping (named: a list, a string, ...), or has keys
            that are not config fields (named).
    """
    path = Path(path)
    text = path.read_text()
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        where = getattr(err, "problem_mark", None) or getattr(err, "lineno", None)
        line = f" (line {where.line + 1})" if hasattr(where, "line") else (f" (line {where})" if where else "")
        raise ValueError(
            f"preset {path}: not valid {kind}{line}; "
            "fix the syntax (a flat mapping of config keys, e.g. `max_steps: 100`)"
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        example = '{"max_steps": 100}' if kind == "JSON" else "one `key: value` per line, e.g. `max_steps: 100`"
        raise ValueError(
            f"preset {path}: the file holds {_describe(data, kind)}, not a mapping of config keys; write "
            f"{example} (the keys are the --flags without the dashes, see --help)"
        )
    if _is_saved_config(data):
        data = {
            key: value
            for group in SAVED_GROUPS
            for key, value in (data.get(group) or {}).items()
            if key not in NOT_FROM_SAVED_CONFIG
        }
    known = {f.name for cls in CONFIG_CLASSES for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"preset {path}: unknown keys {unknown}; valid keys: {sorted(known)}")
    return data


SAVED_GROUPS = ("model", "data", "training")
"""The groups of a run's ``config.yaml`` that hold config fields (``config_dict``)."""
NOT_FROM_SAVED_CONFIG = frozenset({"resume_from_checkpoint", "overwrite_output_dir", *SECRET_FIELDS})
"""Fields of a run's ``config.yaml`` that are not read back when it is used as a preset."""


def _is_saved_config(data: dict[str, Any]) -> bool:
    """Whether ``data`` has the layout ``save_config`` writes (groups of fields, not fields)."""
    groups = {*SAVED_GROUPS, "run"}
    return bool(data) and set(data) <= groups and all(isinstance(v, dict) or v is None for v in data.values())


def _describe(value: Any, kind: str) -> str:
    """What a preset file holds instead of a mapping: ``a YAML list (3 items)``, ``a YAML string ('x')``."""
    if isinstance(value, list):
        items = f"{len(value)} item{'s' * (len(value) != 1)}"
        return f"a {kind} {'array' if kind == 'JSON' else 'list'} ({items})"
    names = {str: "string", int: "number", float: "number", bool: "boolean"}
    return f"a {kind} {names.get(type(value), type(value).__name__)} ({value!r:.40})"


def parse_config(
    argv: list[str] | None = None,
) -> tuple[DINOModelArguments, DINODataArguments, DINOTrainingArguments, Path]:
    """Parse ``[preset] [--key value ...]``.

    The first argument, if it does not start with ``--``, is a preset file or name; otherwise the default
    preset ``cpu_tiny`` is used. Preset values become parser defaults, so command-line flags override them.

    Args:
        argv: Arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        ``(model_args, data_args, training_args, preset_path)``.

    Raises:
        FileNotFoundError: Unknown preset. ValueError: bad preset keys or values.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    preset = DEFAULT_PRESET
    if argv and not argv[0].startswith("-"):
        preset = argv.pop(0)
    preset_path = resolve_preset_path(preset)
    argv, warmup = hf_aliases.rewrite(argv)
    parser = HfArgumentParser(
        CONFIG_CLASSES,
        allow_abbrev=False,  # `--max_step 2` must be an unknown flag with a suggestion, not --max_steps
        usage=f"%(prog)s [PRESET] [--flag value ...]   (PRESET: a name in {sorted(preset_names())} or a "
        f"YAML file; default {DEFAULT_PRESET})",
        description=f"DINO pretraining. Defaults below are those of preset {preset_path.stem!r} "
        f"({preset_path}); "
        "transformers.TrainingArguments names are accepted where they mean the same: "
        + ", ".join(f"--{a} (= --{b})" for a, b in hf_aliases.RENAMED.items())
        + ", --warmup_steps / --warmup_ratio (converted to --warmup_epochs), --bf16 / --fp16.",
    )
    parser.set_defaults(**load_preset(preset_path))
    *parsed, remaining = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    model_args, data_args, training_args = parsed
    if remaining:
        hf_aliases.check_flags(remaining, known_flags())
        raise ValueError(f"unexpected argument(s) {remaining}: a PRESET goes first, flags take --name value")
    warmup_epochs = hf_aliases.apply_warmup(warmup, training_args.total_steps, training_args.steps_per_epoch)
    if warmup_epochs is not None:
        training_args.warmup_epochs = warmup_epochs
    _validate(model_args, data_args, training_args)
    return model_args, data_args, training_args, preset_path


def preset_names() -> list[str]:
    """Presets shipped in ``training/presets``."""
    return sorted({p.stem for p in PRESETS_DIR.iterdir() if p.suffix in (".yaml", ".yml", ".json")})


def known_flags() -> list[str]:
    """Every ``--flag`` the parser accepts (``--no_x`` for boolean fields that default to True)."""
    flags = []
    for cls in CONFIG_CLASSES:
        for f in dataclasses.fields(cls):
            flags.append(f"--{f.name}")
            if f.type in (bool, "bool") and f.default is True:
                flags.append(f"--no_{f.name}")
    return flags


def _check_crops(m: DINOModelArguments, d: DINODataArguments) -> list[str]:
    """Crop sides must be multiples of the backbone's patch size (else the last partial patch is dropped)."""
    from pathfm.modeling import PRESETS

    if m.backbone_preset not in PRESETS:
        close = difflib.get_close_matches(m.backbone_preset, list(PRESETS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return [f"--backbone_preset {m.backbone_preset!r} is not one of {sorted(PRESETS)}{hint}"]
    patch = int(PRESETS[m.backbone_preset].get("patch_size", 16))
    problems = []
    for name, size in (("global_crop_size", d.global_crop_size), ("local_crop_size", d.local_crop_size)):
        if size % patch:
            nearest = max(patch, round(size / patch) * patch)
            problems.append(
                f"--{name} {size} is not a multiple of the patch size {patch} of {m.backbone_preset!r}: "
                f"use {nearest}"
            )
    return problems


def _check_fsdp(t: DINOTrainingArguments) -> list[str]:
    """``--fsdp`` words, and the fast paths that sharding does not support yet."""
    from pathfm.training.sharding import fsdp_mode

    try:
        mode = fsdp_mode(t.fsdp)
    except ValueError as err:
        return [str(err)]
    if mode is None:
        return []
    problems = []
    if t.torch_compile:
        problems.append("--fsdp with --torch_compile true is not supported yet; pass --torch_compile false")
    if t.mixed_precision == "fp16":
        problems.append("--fsdp with --mixed_precision fp16 is not supported; use bf16")
    return problems


def _check_dinov2(m: DINOModelArguments, t: DINOTrainingArguments) -> list[str]:
    """The objective and the dinov2-only fields (checked for every run: a preset may set them)."""
    problems = []
    if m.objective not in ("dino", "dinov2"):
        problems.append(f"--objective must be dino or dinov2, got {m.objective!r}")
    if t.lr_scaling_rule not in ("linear_wrt_256", "sqrt_wrt_1024"):
        problems.append(
            f"--lr_scaling_rule must be linear_wrt_256 or sqrt_wrt_1024, got {t.lr_scaling_rule!r}"
        )
    if not 0.0 <= t.mask_sample_probability <= 1.0:
        problems.append(
            f"--mask_sample_probability must be in [0, 1] (dinov2 0.5), got {t.mask_sample_probability}"
        )
    ratios = t.mask_ratio_min_max
    if len(ratios) != 2 or not 0.0 <= ratios[0] <= ratios[1] <= 1.0:
        problems.append(
            f"--mask_ratio_min_max takes two ratios 0 <= min <= max <= 1 (dinov2 0.1 0.5), got {ratios}"
        )
    weights = ("dino_loss_weight", "ibot_loss_weight", "koleo_loss_weight", "kde_loss_weight")
    negative = [f"--{name} {getattr(t, name)}" for name in weights if getattr(t, name) < 0]
    if negative:
        problems.append(f"loss weights must be >= 0, got {', '.join(negative)}")
    return problems


# (field, lowest, highest, what it is): numeric fields outside their range are named one by one; the tissue
# flags' bounds are shared with the catalogue CLI (datasets_scripts/flag_ranges.py)
RANGES: tuple[tuple[str, float, float | None, str], ...] = (
    ("per_device_batch_size", 1, None, "tiles per process per micro-batch"),
    ("gradient_accumulation_steps", 1, None, "micro-batches per optimizer step"),
    ("steps_per_epoch", 1, None, "optimizer steps per epoch"),
    ("tile_size", 1, None, "tile side in px"),
    ("tiles_per_slide", 1, None, "tiles per slide per pass"),
    *TISSUE_RANGES,
    ("global_crop_size", 1, None, "crop side in px"),
    ("local_crop_size", 1, None, "crop side in px"),
    ("local_crops_number", 0, None, "local crops per tile"),
    ("num_workers", 0, None, "DataLoader workers per process"),
    ("reader_threads", 1, None, "decoder threads"),
    ("logging_steps", 1, None, "optimizer steps between log rows"),
    ("save_steps", -1, None, "steps between checkpoints; 0: at the end only, -1: never"),
    ("save_total_limit", 0, None, "checkpoints kept; 0: all"),
    ("probe_size", 0, None, "RankMe probe tiles; 0: off"),
    ("out_dim", 1, None, "prototypes"),
    ("head_hidden_dim", 1, None, "head MLP width"),
    ("head_bottleneck_dim", 1, None, "head bottleneck width"),
    ("head_nlayers", 1, None, "head MLP layers"),
    ("ibot_head_n_prototypes", 1, None, "iBOT prototypes"),
    ("ibot_head_hidden_dim", 1, None, "iBOT head MLP width"),
    ("ibot_head_bottleneck_dim", 1, None, "iBOT head bottleneck width"),
    ("ibot_head_nlayers", 1, None, "iBOT head MLP layers"),
    ("drop_path_rate", 0, 0.99, "stochastic depth rate"),
    ("min_lr", 0, None, "final lr"),
    ("warmup_epochs", 0, None, "epochs"),
    ("weight_decay", 0, None, "weight decay"),
    ("weight_decay_end", 0, None, "weight decay"),
    ("clip_grad", 0, None, "max gradient norm; 0: off"),
    ("freeze_last_layer", 0, None, "epochs"),
    ("warmup_teacher_temp_epochs", 0, None, "epochs"),
    ("momentum_teacher", 0, 1, "EMA momentum"),
    ("center_momentum", 0, 1, "EMA momentum"),
    ("layerwise_decay", 0, 1, "lr factor per block"),
    ("patch_embed_lr_mult", 0, None, "lr multiplier"),
)
POSITIVE = (
    *TISSUE_POSITIVE,
    ("lr", "base lr"),
    ("teacher_temp", "temperature"),
    ("warmup_teacher_temp", "temperature"),
    ("student_temp", "temperature"),
)
"""Fields that must be > 0 (0 itself is refused)."""


def _check_ranges(*args: Any) -> list[str]:
    """Each numeric field of :data:`RANGES` / :data:`POSITIVE` outside its range, named with its value."""
    values = {f.name: getattr(a, f.name) for a in args for f in dataclasses.fields(a)}
    problems = ranges_problems(values, RANGES, POSITIVE)
    expected = values["expected_world_size"]
    if expected is not None and expected < 1:
        problems.append(f"--expected_world_size must be >= 1 (processes), got {expected}")
    for name in ("global_crops_scale", "local_crops_scale"):
        scale = values[name]
        if len(scale) == 2 and not 0 < scale[0] <= scale[1] <= 1:
            problems.append(f"--{name} takes two area fractions 0 < min <= max <= 1, got {scale}")
    return problems


def _validate(m: DINOModelArguments, d: DINODataArguments, t: DINOTrainingArguments) -> None:
    problems = _check_crops(m, d)
    if t.max_steps == 0 or t.max_steps < -1:
        problems.append(f"max_steps must be >= 1 (or -1: epochs * steps_per_epoch), got {t.max_steps}")
    elif t.total_steps < 1:
        problems.append(f"total steps must be >= 1 (max_steps={t.max_steps}, epochs={t.epochs})")
    problems += _check_dinov2(m, t)
    if t.centering not in ("centering", "sinkhorn_knopp"):
        problems.append(f"centering must be centering or sinkhorn_knopp, got {t.centering!r}")
    problems += _check_ranges(m, d, t)
    if t.mixed_precision not in {"auto", "no", "bf16", "fp16"}:
        problems.append(f"mixed_precision must be auto/no/bf16/fp16, got {t.mixed_precision!r}")
    if t.optim not in {"auto", "adamw_torch", "adamw_torch_fused"}:
        problems.append(f"optim must be auto/adamw_torch/adamw_torch_fused, got {t.optim!r}")
    if m.attn_implementation not in {"sdpa", "eager"}:
        problems.append(f"attn_implementation must be sdpa or eager, got {m.attn_implementation!r}")
    if len(d.global_crops_scale) != 2 or len(d.local_crops_scale) != 2:
        problems.append("global_crops_scale and local_crops_scale take two numbers (min max)")
    if not d.mpps:
        problems.append("mpps must list at least one magnification")
    elif any(not 0.05 <= mpp <= 20 for mpp in d.mpps):
        problems.append(f"--mpps must be µm/px between 0.05 and 20 (kaiko: 0.25 0.5 1 2), got {d.mpps}")
    for name in ("mpp_override", "default_mpp"):
        problem = given_mpp_problem(name, getattr(d, name))
        if problem:
            problems.append(problem)
    if d.icc_profile not in ("ignore", "apply"):
        problems.append(f"--icc_profile must be ignore or apply, got {d.icc_profile!r}")
    if not 0.0 <= d.min_tissue <= 1.0:
        problems.append(f"--min_tissue is a tissue fraction in [0, 1] (default 0.4), got {d.min_tissue}")
    if d.mask_cache_dir and Path(d.mask_cache_dir).exists() and not Path(d.mask_cache_dir).is_dir():
        problems.append(f"--mask_cache_dir {d.mask_cache_dir} is a file: give a folder (created if missing)")
    problems += _check_fsdp(t)
    if t.push_to_hub and not t.hub_model_id:
        problems.append("--push_to_hub needs --hub_model_id")
    if problems:
        raise ValueError("invalid DINO config: " + "; ".join(problems))


def config_dict(*args: Any) -> dict[str, dict[str, Any]]:
    """The resolved config as ``{"model": {...}, "data": {...}, "training": {...}}``.

    Fields named in ``SECRET_FIELDS`` (the Hub token) are replaced by ``"<redacted>"`` when set, so
    the config file, the tracker's hyperparameters and the model card never hold them.
    """
    names = ("model", "data", "training")
    out: dict[str, dict[str, Any]] = {}
    for name, args_obj in zip(names, args, strict=True):
        values = dataclasses.asdict(args_obj)
        for key in SECRET_FIELDS & values.keys():
            if values[key] is not None:
                values[key] = "<redacted>"
        out[name] = values
    return out


def save_config(output_dir: str | Path, *args: Any, extra: dict[str, Any] | None = None) -> Path:
    """Write the resolved config (and ``extra`` run facts) to ``<output_dir>/config.yaml``.

    Returns:
        The written path.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = config_dict(*args)
    if extra:
        data["run"] = extra
    path = out / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
