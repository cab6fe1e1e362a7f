"""Settings of the Space, read once from environment variables (a Hugging Face Space sets them as "Variables").

| variable | default | meaning |
|---|---|---|
| ``GRADIO_SERVER_NAME`` | ``127.0.0.1`` | interface to bind (a hosted Space sets 0.0.0.0 itself) |
| ``GRADIO_SERVER_PORT`` | ``7860`` | port |
| ``PATHFM_SPACE_MODEL`` | ``outputs/dino/model`` if it exists, else ``tiny (random weights)`` | default model: folder or Hub id |
| ``PATHFM_SPACE_MODELS`` | (none) | extra dropdown entries, comma-separated folders / Hub ids |
| ``PATHFM_SPACE_MAX_TILE_MP`` | ``40`` | largest tile image accepted, megapixels (checked on the header) |
| ``PATHFM_SPACE_MAX_SLIDE_MB`` | ``2048`` | largest slide upload, MB |
| ``PATHFM_SPACE_MAX_SLIDE_TILES`` | ``256`` | tiles embedded per slide at most |
| ``PATHFM_SPACE_CACHE`` | ``<tmp>/pathfm_space`` | gallery tiles and downloadable files |
| ``PATHFM_SPACE_MODEL_DIRS`` | ``outputs`` (of the repo) | searched 3 levels deep for model folders |
| ``PATHFM_SPACE_FILE_AGE_S`` | ``3600`` | uploads and downloads older than this are deleted, seconds |

The dropdown is rebuilt each time the page is opened, so a model saved under ``PATHFM_SPACE_MODEL_DIRS``
after start-up is listed without a restart.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pathfm.spaces.model_store import TINY_RANDOM

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EXPORT = REPO_ROOT / "outputs" / "dino" / "model"
"""Where the main training job exports the teacher (``python training/dino.py`` then export)."""


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


@dataclass
class SpaceConfig:
    """Resolved settings (see the module docstring for the environment variables).

    Attributes:
        host: Interface to bind.
        port: TCP port.
        default_model: Dropdown default: folder path, Hub id or :data:`TINY_RANDOM`.
        model_choices: Dropdown entries (the default first).
        max_tile_pixels: Largest tile image (width x height px) decoded.
        max_slide_bytes: Largest slide upload in bytes.
        max_slide_tiles: Cap on tiles embedded per slide.
        cache_dir: Folder for gallery tiles and files offered for download.
        gallery_tiles_per_slide: Tiles cut from each embedded slide for the gallery.
        neighbours: Nearest tiles shown.
        examples_dir: Example tiles (``examples/`` next to app.py: in this repo ``spaces/examples``, in an
            uploaded Space the ``examples`` folder of the Space repo).
        model_dirs: Folders searched for model folders (a folder with config.json), up to 3 levels deep.
        max_file_age_s: Age in seconds after which uploads and generated downloads are deleted (also when the
            browser session ends).
    """

    host: str = "127.0.0.1"
    port: int = 7860
    default_model: str = TINY_RANDOM
    model_choices: list[str] = field(default_factory=lambda: [TINY_RANDOM])
    max_tile_pixels: int = 40_000_000
    max_slide_bytes: int = 2048 * 1024 * 1024
    max_slide_tiles: int = 256
    cache_dir: Path = Path(tempfile.gettempdir()) / "pathfm_space"
    gallery_tiles_per_slide: int = 8
    neighbours: int = 6
    examples_dir: Path = Path(__file__).resolve().parent / "examples"
    model_dirs: list[Path] = field(default_factory=list)
    max_file_age_s: int = 3600

    def current_model_choices(self) -> list[str]:
        """Dropdown entries now: the configured ones, then model folders found under :attr:`model_dirs`."""
        choices = list(self.model_choices)
        patterns = ["*/" * depth + "config.json" for depth in range(4)]
        found = [c for root in self.model_dirs for pattern in patterns for c in sorted(root.glob(pattern))]
        for config in found:
            if (config.parent / "model.safetensors").is_file() and str(config.parent) not in choices:
                choices.insert(len(choices) - (TINY_RANDOM in choices), str(config.parent))
        return choices

    @classmethod
    def from_env(cls, examples_dir: Path | None = None) -> SpaceConfig:
        """Read the environment.

        Args:
            examples_dir: Folder of the example tiles (default: ``examples`` next to this module).

        Returns:
            The settings.

        Raises:
            ValueError: a numeric variable is not an integer.
        """
        default = os.environ.get("PATHFM_SPACE_MODEL", "").strip()
        if not default:
            default = str(DEFAULT_EXPORT) if (DEFAULT_EXPORT / "config.json").is_file() else TINY_RANDOM
        choices = [default]
        extra = [m.strip() for m in os.environ.get("PATHFM_SPACE_MODELS", "").split(",") if m.strip()]
        for name in [
            *extra,
            str(DEFAULT_EXPORT) if (DEFAULT_EXPORT / "config.json").is_file() else "",
            TINY_RANDOM,
        ]:
            if name and name not in choices:
                choices.append(name)
        cache = os.environ.get("PATHFM_SPACE_CACHE", "").strip()
        dirs = os.environ.get("PATHFM_SPACE_MODEL_DIRS")
        dirs = str(REPO_ROOT / "outputs") if dirs is None else dirs
        model_dirs = [Path(d.strip()) for d in dirs.split(",") if d.strip()]
        return cls(
            host=os.environ.get("GRADIO_SERVER_NAME", "").strip() or "127.0.0.1",
            port=_env_int("GRADIO_SERVER_PORT", 7860),
            default_model=default,
            model_choices=choices,
            max_tile_pixels=_env_int("PATHFM_SPACE_MAX_TILE_MP", 40) * 1_000_000,
            max_slide_bytes=_env_int("PATHFM_SPACE_MAX_SLIDE_MB", 2048) * 1024 * 1024,
            max_slide_tiles=_env_int("PATHFM_SPACE_MAX_SLIDE_TILES", 256),
            cache_dir=Path(cache) if cache else Path(tempfile.gettempdir()) / "pathfm_space",
            examples_dir=examples_dir or Path(__file__).resolve().parent / "examples",
            model_dirs=model_dirs,
            max_file_age_s=_env_int("PATHFM_SPACE_FILE_AGE_S", 3600),
        )
