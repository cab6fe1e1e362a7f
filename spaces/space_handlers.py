"""The Space's event handlers: gradio inputs in, pictures / files / text out.

Each public method of :class:`SpaceHandlers` is one API endpoint of ``spaces/app.py`` (its ``api_name`` is
the method name). User mistakes (bad upload, unreadable slide, unloadable model) raise ``gr.Error`` with a
message naming the file and the problem, which gradio shows in the page (and gradio_client raises as
``AppError``) without a stack trace.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from pathfm.datasets_scripts.slide import MissingMppError, SlideError
from pathfm.spaces.image_input import InputError, load_rgb_image
from pathfm.spaces.model_store import (
    LoadedModel,
    ModelCache,
    ModelLoadError,
    center_crop_display,
    center_square,
    embed_tiles,
    resize_note,
)
from pathfm.spaces.slide_views import SLIDE_SUFFIXES, SlideSettings, analyze_slide
from pathfm.spaces.space_config import SpaceConfig
from pathfm.spaces.tile_gallery import GalleryTile, build_gallery, cosine_neighbours
from pathfm.spaces.tile_views import attention_overlays, pca_rgb_image

LOGGER = logging.getLogger(__name__)

try:  # openslide's own error type, for failures the slide reader does not wrap
    from openslide import OpenSlideError
except ImportError:  # pragma: no cover - openslide-python is a dependency
    OpenSlideError = OSError  # type: ignore[misc,assignment]

SLIDE_ERRORS = (SlideError, ValueError, OSError, OpenSlideError)


def payload_path(value: Any) -> str | None:
    """The server-side file path in a gradio file payload (FileData / ImageData model, dict or str)."""
    if value is None:
        return None
    if isinstance(value, (str, Path)):
        return str(value)
    if isinstance(value, dict):
        return value.get("path")
    return getattr(value, "path", None)


class SpaceHandlers:
    """State shared by the endpoints: settings, model cache, gallery and its per-model embeddings.

    Args:
        config: Space settings.
    """

    def __init__(self, config: SpaceConfig) -> None:
        self.config = config
        self.models = ModelCache(capacity=2)
        self.gallery, self.gallery_note = build_gallery(
            config.cache_dir / "gallery", config.gallery_tiles_per_slide, config.examples_dir
        )
        self._gallery_embeddings: dict[str, np.ndarray] = {}
        try:
            from pathfm.datasets_scripts.embedded import embedded_slides

            self.embedded = {record.slide_id: record for record in embedded_slides()}
            self.embedded_note = None
        except (ImportError, OSError, ValueError) as error:  # e.g. an uploaded Space without data/slides
            self.embedded, self.embedded_note = {}, f"No embedded slides available ({error})."
        self.downloads = config.cache_dir / "downloads"
        self.downloads.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ helpers
    def _model(self, name: str) -> LoadedModel:
        try:
            return self.models.get(name)
        except ModelLoadError as error:
            raise gr.Error(str(error), title="Model not loaded") from None

    def _tile(self, image: Any) -> tuple[np.ndarray, str]:
        path = payload_path(image)
        if path is None:
            raise gr.Error("Upload a tile image or click an example first.", title="No image")
        try:
            return load_rgb_image(path, self.config.max_tile_pixels), Path(path).name
        except InputError as error:
            raise gr.Error(str(error), title="Unusable image") from None

    def _gallery_matrix(self, loaded: LoadedModel) -> np.ndarray:
        if loaded.name not in self._gallery_embeddings:
            tiles = [load_rgb_image(t.path) for t in self.gallery]
            self._gallery_embeddings = {loaded.name: embed_tiles(loaded, tiles).pooled}
        return self._gallery_embeddings[loaded.name]

    def _new_download_dir(self, request: gr.Request | None) -> Path:
        """A fresh folder for one response's files, under the browser session's folder (swept first)."""
        self.sweep_downloads()
        session = self.downloads / _session_name(request)
        session.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=session))

    def sweep_downloads(self, now: float | None = None) -> list[Path]:
        """Delete download folders older than ``config.max_file_age_s`` (by modification time).

        Args:
            now: Current time (``time.time()`` when None).

        Returns:
            The folders deleted.
        """
        now = time.time() if now is None else now
        removed = []
        for folder in self.downloads.glob("*/*"):
            try:
                too_old = now - folder.stat().st_mtime > self.config.max_file_age_s
            except OSError:  # deleted by a concurrent sweep
                continue
            if too_old:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        for session in self.downloads.iterdir():
            try:
                if now - session.stat().st_mtime > self.config.max_file_age_s and not any(session.iterdir()):
                    session.rmdir()
            except OSError:  # a concurrent request just used it
                continue
        return removed

    def end_session(self, request: gr.Request) -> None:
        """Delete every file made for a browser session (gradio calls this when the tab is closed)."""
        shutil.rmtree(self.downloads / _session_name(request), ignore_errors=True)

    def refresh(self, model_name: str) -> tuple[Any, str, Any]:
        """Page (re)load: the dropdown with model folders saved since start-up, and the chosen model's banner.

        Args:
            model_name: The dropdown's value.

        Returns:
            Dropdown update (choices), Markdown banner and the Classify tab's visibility update.
        """
        banner, tab = self.load_model(model_name)
        return gr.update(choices=self.config.current_model_choices()), banner, tab

    # ------------------------------------------------------------------ endpoints
    def load_model(self, model_name: str) -> tuple[str, Any]:
        """Load (or fetch from cache) a model and describe it.

        Args:
            model_name: Folder, Hub id or "tiny (random weights)".

        Returns:
            Markdown banner (description, warnings) and a visibility update of the Classify tab (visible when
            the model folder holds a probe head).
        """
        try:
            loaded = self.models.get(model_name)
        except ModelLoadError as error:
            return f"❌ **Model not loaded.** {error}", gr.update(visible=False)
        return self.model_banner(loaded), gr.update(visible=loaded.probe is not None)

    @staticmethod
    def model_banner(loaded: LoadedModel) -> str:
        """Markdown describing a loaded model (description, probe head, warning)."""
        lines = [f"**Model:** {loaded.description}; embedding dim {loaded.embedding_dim}."]
        if loaded.smoke_test:
            lines.insert(
                0,
                "⚠️ **Smoke test model.** Its model card says it comes from a smoke-test run (a few steps "
                "on a few slides): the pictures show that the pipeline works, not what a trained model sees.",
            )
        if loaded.probe is not None:
            labels = ", ".join(loaded.probe.id2label.values())
            lines.append(
                f"Probe head found ({loaded.probe.pooling} features → {labels}): see the Classify tab."
            )
        if loaded.warning:
            lines.append(loaded.warning)
        return "\n\n".join(lines)

    def analyze_tile(
        self, image: Any, model_name: str, request: gr.Request = None
    ) -> tuple[list[tuple[np.ndarray, str]], np.ndarray, list[tuple[str, str]], str, str]:
        """Attention, PCA, nearest gallery tiles and the embedding of one tile.

        Args:
            image: Uploaded image file (any size; the model sees its resized center crop).
            model_name: Model to use.
            request: The browser session (gradio injects it); its files are deleted when it ends.

        Returns:
            Attention overlays (heads + mean, each (S, S, 3) with S the model input size), the PCA-as-RGB
            image (S, S, 3), the nearest gallery tiles (path, caption with cosine similarity), the path of a
            ``.npy`` file holding the pooled embedding (D,) float32, and a Markdown summary.
        """
        rgb, name = self._tile(image)
        loaded = self._model(model_name)
        size = loaded.image_size
        tile = center_crop_display(rgb, size)
        features = embed_tiles(loaded, [center_square(rgb)], output_attentions=True)
        overlays = attention_overlays(tile, features.cls_attention[0])
        pca_image, explained = pca_rgb_image(features.patch_tokens[0], features.grid, size)
        gallery = self._gallery_matrix(loaded)
        order, sims = cosine_neighbours(features.pooled[0], gallery, self.config.neighbours)
        neighbours = [
            (self.gallery[i].path, f"cos {s:.3f} · {self.gallery[i].caption}") for i, s in zip(order, sims)
        ]
        out = self._new_download_dir(request) / f"{Path(name).stem}_embedding.npy"
        np.save(out, features.pooled[0])
        summary = (
            f"**{name}**: {rgb.shape[1]} x {rgb.shape[0]} px → model input {size} x {size} px "
            f"({features.grid[0]} x {features.grid[1]} patches of {loaded.model.config.patch_size} px). "
            f"Embedding: {features.pooled.shape[1]} floats (`{out.name}`). PCA of the patch tokens explains "
            f"{', '.join(f'{r:.0%}' for r in explained)} of their variance (R, G, B). Nearest gallery tile: "
            f"{self.gallery[order[0]].caption} (cosine {sims[0]:.3f}; gallery of {len(self.gallery)} real tiles)."
        )
        note = resize_note(rgb.shape[0], rgb.shape[1], size)
        if note:
            summary += f"\n\n{note}"
        if self.gallery_note:
            summary += f"\n\n{self.gallery_note}"
        return overlays, pca_image, neighbours, str(out), summary

    def analyze_slide(
        self,
        upload: Any,
        embedded_slide: str | None,
        mpp: float,
        min_tissue: float,
        max_tiles: float,
        mpp_override: float | None,
        model_name: str,
        request: gr.Request = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008  (gradio injects the bar through this default)
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, str]], np.ndarray, str, str]:
        """Tissue mask, sampled tiles and PCA painting of a whole slide.

        Args:
            upload: Uploaded slide file (wins over ``embedded_slide``).
            embedded_slide: Slide id of an embedded slide (used when nothing is uploaded).
            mpp: Tile resolution, µm/px.
            min_tissue: Minimum tissue fraction of a tile (0-1).
            max_tiles: Cap on tiles embedded (also capped by PATHFM_SPACE_MAX_SLIDE_TILES).
            mpp_override: Level-0 µm/px when the slide lacks (or has a wrong) resolution; 0/None = metadata.
            model_name: Model to use.
            request: The browser session (gradio injects it); its files are deleted when it ends.
            progress: gradio progress bar (injected).

        Returns:
            Thumbnail with the tissue mask (h, w, 3), thumbnail with the sampled tiles outlined (h, w, 3), up to
            24 sampled tiles (tile, caption), the PCA painting (h, w, 3), the path of an ``.npz`` with
            ``embeddings`` (N, D), ``x``/``y`` (N,) level-0 px, ``colours`` (N, 3) and ``mpp``, and a Markdown
            summary.
        """
        path, source = self._slide_path(upload, embedded_slide)
        override = float(mpp_override) if mpp_override else None
        if override is None and upload is None and embedded_slide in self.embedded:
            override = self.embedded[embedded_slide].mpp
        settings = SlideSettings(
            mpp=float(mpp),
            min_tissue=float(min_tissue),
            max_tiles=max(1, min(int(max_tiles), self.config.max_slide_tiles)),
            mpp_override=override,
        )
        loaded = self._model(model_name)
        try:
            result = analyze_slide(path, loaded, settings, progress=lambda f, d: progress(f, desc=d))
        except SLIDE_ERRORS as error:
            message = str(error)
            if Path(path).name not in message and str(path) not in message:
                message = f"{source}: {message}"
            if isinstance(error, MissingMppError):  # point to this page's field, not the Python API
                message += " In this demo: set 'Level-0 µm/px override' to the slide's µm/px."
            raise gr.Error(
                message.replace(str(Path(path).parent) + "/", ""), title="Unreadable slide"
            ) from None
        tiles = [
            (tile, f"({c.x}, {c.y}) tissue {c.tissue_fraction:.0%}")
            for tile, c in zip(result.tiles, result.tile_coords)
        ]
        out = self._new_download_dir(request) / f"{result.slide_id}_tile_embeddings.npz"
        np.savez(
            out,
            embeddings=result.embeddings,
            x=np.array([c.x for c in result.coords]),
            y=np.array([c.y for c in result.coords]),
            colours=result.colours,
            mpp=np.float32(settings.mpp),
        )
        summary = (
            f"**{source}** ({result.slide_id}): thumbnail at {result.thumbnail_mpp:.2f} µm/px, tissue "
            f"{result.tissue_fraction:.0%} of the slide area; {len(result.coords)} tiles of {settings.tile_size} px "
            f"at {settings.mpp:g} µm/px embedded (grid: {result.grid_total} tissue tiles). PCA explains "
            f"{', '.join(f'{r:.0%}' for r in result.explained)} of the embedding variance (R, G, B)."
        )
        if result.notes:
            summary += "\n\n" + " ".join(result.notes)
        return result.mask_overlay, result.grid_overlay, tiles, result.painted, str(out), summary

    def _slide_path(self, upload: Any, embedded_slide: str | None) -> tuple[str, str]:
        """Validate the slide choice; returns (path, display name)."""
        path = payload_path(upload)
        if path is not None:
            name = Path(path).name
            if Path(path).suffix.lower() not in SLIDE_SUFFIXES:
                raise gr.Error(
                    f"{name}: not a slide file type OpenSlide reads ({', '.join(SLIDE_SUFFIXES)}).",
                    title="Unreadable slide",
                )
            size = Path(path).stat().st_size
            if size > self.config.max_slide_bytes:
                raise gr.Error(
                    f"{name}: {size / 2**20:.0f} MB is over the {self.config.max_slide_bytes / 2**20:.0f} "
                    "MB limit of this Space.",
                    title="Slide too large",
                )
            return path, name
        if embedded_slide:
            if embedded_slide not in self.embedded:
                raise gr.Error(
                    f"{embedded_slide}: not one of the embedded slides {sorted(self.embedded)}.",
                    title="Unknown slide",
                )
            return self.embedded[embedded_slide].path, embedded_slide
        raise gr.Error("Upload a slide or pick an embedded one.", title="No slide")

    def classify_tile(self, image: Any, model_name: str) -> dict[str, float]:
        """Class probabilities of a tile from the model folder's linear probe head.

        Args:
            image: Uploaded image file.
            model_name: Model whose folder holds probe_head.safetensors + probe_head.json.

        Returns:
            {label: probability} over every class (sums to 1).
        """
        rgb, _ = self._tile(image)
        loaded = self._model(model_name)
        if loaded.probe is None:
            raise gr.Error(
                f"{model_name}: no probe head (probe_head.safetensors + probe_head.json) next to this model; "
                "write one with `python evaluation/linear_probe.py ... --save_head`.",
                title="No probe head",
            )
        features = embed_tiles(loaded, [center_square(rgb)])
        inputs = loaded.probe.features(features.pooled, features.cls_token, features.patch_tokens)
        return loaded.probe.predict(inputs)[0]


def _session_name(request: gr.Request | None) -> str:
    """Folder name of a browser session's files ("no-session" for direct Python calls)."""
    session = getattr(request, "session_hash", None) or "no-session"
    return "".join(c for c in str(session) if c.isalnum() or c in "-_") or "no-session"


def gallery_paths(tiles: list[GalleryTile]) -> list[str]:
    """Paths of gallery tiles (for gr.Examples)."""
    return [t.path for t in tiles]
