"""The Space's building blocks on hand-worked examples (no server): image conversion and size checks, PCA
colours, cosine search, the probe head, slide box geometry, settings and model loading errors."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import tifffile
import torch
from pathfm.datasets_scripts.samplers import TileCoord
from pathfm.spaces.image_input import InputError, array_to_rgb_uint8, load_rgb_image
from pathfm.spaces.model_store import TINY_RANDOM, ModelLoadError, center_crop_display, load_model
from pathfm.spaces.probe_head import ProbeHeadError, read_probe_head
from pathfm.spaces.slide_views import paint_boxes, thumbnail_mpp_for, tile_boxes
from pathfm.spaces.space_config import SpaceConfig
from pathfm.spaces.tile_gallery import cosine_neighbours, example_tiles, tile_file_name
from pathfm.spaces.tile_views import pca_components, pca_rgb_image, scores_to_rgb
from safetensors.torch import save_file
from sklearn.decomposition import PCA


# ------------------------------------------------------------------------------------------- image input
def test_alpha_is_composited_on_white():
    rgba = np.array([[[100, 0, 200, 255], [100, 0, 200, 0], [100, 0, 200, 128]]], dtype=np.uint8)
    out = array_to_rgb_uint8(rgba)
    # alpha a = 128/255: c * a + 255 * (1 - a): 100 -> 177.2, 0 -> 127.0, 200 -> 227.4
    np.testing.assert_array_equal(out, [[[100, 0, 200], [255, 255, 255], [177, 127, 227]]])


def test_16_bit_float_and_gray_are_rescaled():
    np.testing.assert_array_equal(
        array_to_rgb_uint8(np.array([[0, 257, 65535]], np.uint16))[0, :, 0], [0, 1, 255]
    )
    np.testing.assert_array_equal(array_to_rgb_uint8(np.array([[-1.0, 0.0, 1.0]]))[0, :, 1], [0, 128, 255])
    gray = array_to_rgb_uint8(np.array([[7, 9]], np.uint8))
    assert gray.shape == (1, 2, 3) and (gray[..., 0] == gray[..., 2]).all()
    with pytest.raises(InputError, match="unsupported image array shape"):
        array_to_rgb_uint8(np.zeros((2, 2, 5), np.uint8))


def test_load_rgb_image_modes(tmp_path):
    palette = PIL.Image.new("P", (4, 3))
    palette.putpalette([0, 0, 0, 250, 10, 20] + [0] * 762)
    palette.putpixel((1, 1), 1)
    palette.save(tmp_path / "p.png")
    out = load_rgb_image(tmp_path / "p.png")
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8 and tuple(out[1, 1]) == (250, 10, 20)
    PIL.Image.new("1", (5, 2), 1).save(tmp_path / "bw.png")
    assert (load_rgb_image(tmp_path / "bw.png") == 255).all()
    planar = np.stack([np.full((6, 5), v * 257, np.uint16) for v in (10, 20, 30)])
    tifffile.imwrite(tmp_path / "planar16.tif", planar, photometric="rgb", planarconfig="separate")
    out = load_rgb_image(tmp_path / "planar16.tif")
    assert out.shape == (6, 5, 3) and tuple(out[0, 0]) == (10, 20, 30)


def _png_header(path: Path, width: int, height: int) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def test_size_is_checked_on_the_header(tmp_path):
    _png_header(tmp_path / "wide.png", 5000, 3000)  # 15 MP, pixel data missing
    with pytest.raises(
        InputError, match=r"wide.png: image is 5000 x 3000 px \(15.0 MP\), over the 10 MP limit"
    ):
        load_rgb_image(tmp_path / "wide.png", max_pixels=10_000_000)
    with pytest.raises(InputError, match="wide.png: image data is corrupt or truncated"):
        load_rgb_image(tmp_path / "wide.png", max_pixels=20_000_000)
    (tmp_path / "x.jpg").write_bytes(b"GIF89a nonsense")
    with pytest.raises(InputError, match="x.jpg: not an image"):
        load_rgb_image(tmp_path / "x.jpg")
    with pytest.raises(InputError, match="missing.png: file not found"):
        load_rgb_image(tmp_path / "missing.png")


def test_center_crop_display_geometry():
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, 50:150] = 255  # the central square of a 2:1 image is white
    out = center_crop_display(image, 50)
    assert out.shape == (50, 50, 3) and out[5:45, 5:45].min() == 255


# ----------------------------------------------------------------------------------------------- PCA, search
def test_pca_components_match_sklearn_up_to_sign():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(40, 6)) * np.array([5.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    scores, ratios = pca_components(features, 3)
    reference = PCA(n_components=3).fit(features)
    expected = reference.transform(features)
    for k in range(3):
        sign = np.sign(scores[:, k] @ expected[:, k])
        np.testing.assert_allclose(scores[:, k], sign * expected[:, k], atol=1e-8)
    np.testing.assert_allclose(ratios, reference.explained_variance_ratio_, atol=1e-10)


def test_scores_to_rgb_and_pca_image():
    scores = np.array([[0.0, 10.0, 5.0], [1.0, 20.0, 5.0], [2.0, 30.0, 5.0]])
    rgb = scores_to_rgb(scores, low_q=0.0, high_q=1.0)
    np.testing.assert_array_equal(rgb, [[0, 0, 0], [128, 128, 0], [255, 255, 0]])
    tokens = np.random.default_rng(1).normal(size=(4, 8))
    image, ratios = pca_rgb_image(tokens, (2, 2), 8)
    assert image.shape == (8, 8, 3) and (image[:4, :4] == image[0, 0]).all() and ratios.sum() <= 1 + 1e-9


def test_cosine_neighbours_hand_example():
    gallery = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [-1.0, 0.0]])
    order, sims = cosine_neighbours(np.array([1.0, 1.0]), gallery, 3)
    np.testing.assert_array_equal(order, [2, 0, 1])  # cos 1, then a tie at 1/sqrt(2) broken by index
    np.testing.assert_allclose(sims, [1.0, 2**-0.5, 2**-0.5])


def test_example_tile_names_round_trip(tmp_path):
    name = tile_file_name("CMU-1-Small-Region", 898, 224, 0.5)
    assert name == "CMU-1-Small-Region__x898_y224_mpp0.5.png"
    PIL.Image.new("RGB", (4, 4)).save(tmp_path / name)
    (tile,) = example_tiles(tmp_path)
    assert (tile.slide_id, tile.x, tile.y, tile.mpp) == ("CMU-1-Small-Region", 898, 224, 0.5)
    committed = example_tiles()
    assert len(committed) >= 4 and all(PIL.Image.open(t.path).size == (224, 224) for t in committed)


# ------------------------------------------------------------------------------------------------ probe head
def _write_head(folder: Path, weight, bias, meta: dict) -> None:
    save_file(
        {"head.weight": torch.tensor(weight), "head.bias": torch.tensor(bias)}, str(folder / "h.safetensors")
    )
    (folder / "h.json").write_text(json.dumps(meta))


def test_probe_head_softmax_and_binary(tmp_path):
    _write_head(
        tmp_path,
        [[1.0, 0.0], [0.0, 1.0]],
        [0.0, 0.0],
        {"id2label": ["a", "b"], "input_dim": 2, "pooling": "cls"},
    )
    head = read_probe_head(tmp_path / "h.safetensors", tmp_path / "h.json")
    (probs,) = head.predict(np.array([[np.log(3.0), 0.0]]))
    assert probs == pytest.approx({"a": 0.75, "b": 0.25})
    _write_head(
        tmp_path,
        [[2.0, 0.0]],
        [0.0],
        {"id2label": {"0": "neg", "1": "pos"}, "input_dim": 2, "pooling": "mean"},
    )
    head = read_probe_head(tmp_path / "h.safetensors", tmp_path / "h.json")
    features = head.features(
        np.zeros((1, 2)), np.zeros((1, 2)), np.array([[[0.0, 0.0], [np.log(4.0), 0.0]]])
    )  # mean = (ln2, 0)
    assert head.predict(features)[0] == pytest.approx({"neg": 1 / 5, "pos": 4 / 5})  # sigmoid(2 ln 2) = 4/5


def test_probe_head_inconsistent_files_are_named(tmp_path):
    _write_head(tmp_path, [[1.0, 0.0]] * 3, [0.0] * 3, {"id2label": ["a", "b"], "input_dim": 2})
    with pytest.raises(ProbeHeadError, match="h.json: id2label has 2 entries, the head has 3 output"):
        read_probe_head(tmp_path / "h.safetensors", tmp_path / "h.json")
    _write_head(tmp_path, [[1.0, 0.0]] * 2, [0.0] * 2, {"id2label": ["a", "b"], "input_dim": 5})
    with pytest.raises(ProbeHeadError, match="do not match input_dim 5"):
        read_probe_head(tmp_path / "h.safetensors", tmp_path / "h.json")


# ------------------------------------------------------------------------------------------- slide geometry
def test_tile_boxes_and_painting():
    assert thumbnail_mpp_for((2000, 4000), 0.25, long_side=1000) == 1.0
    assert thumbnail_mpp_for((100, 100), 0.5) == 0.5  # never finer than the slide
    coords = [TileCoord("s", x=100, y=300, mpp=2.0, level=0, tile_size=10, tissue_fraction=1.0)]
    # slide 0.5 µm/px, thumbnail 4 µm/px: origin (100, 100) -> (0, 25); side 10 px * 2 / 4 = 5 px
    (box,) = tile_boxes(coords, (100, 100), 0.5, 4.0)
    assert box == pytest.approx((0.0, 25.0, 5.0, 30.0))
    thumb = np.full((40, 10, 3), 255, np.uint8)
    painted = paint_boxes(thumb, [box], np.array([[0, 100, 200]], np.uint8))
    np.testing.assert_array_equal(painted[27, 2], [76, 146, 216])  # 0.3 * 255 + 0.7 * colour, rounded
    np.testing.assert_array_equal(painted[10, 2], [255, 255, 255])


# ---------------------------------------------------------------------------------------- settings, models
def test_space_config_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7999")
    monkeypatch.setenv("PATHFM_SPACE_MODEL", "org/model")
    monkeypatch.setenv("PATHFM_SPACE_MODELS", " a/b , /some/folder ")
    monkeypatch.setenv("PATHFM_SPACE_MAX_TILE_MP", "12")
    monkeypatch.setenv("PATHFM_SPACE_CACHE", str(tmp_path))
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    config = SpaceConfig.from_env()
    assert (config.host, config.port, config.default_model) == ("127.0.0.1", 7999, "org/model")
    assert (
        config.model_choices[:3] == ["org/model", "a/b", "/some/folder"]
        and TINY_RANDOM in config.model_choices
    )
    assert config.max_tile_pixels == 12_000_000 and config.cache_dir == tmp_path
    monkeypatch.setenv("GRADIO_SERVER_PORT", "eighty")
    with pytest.raises(ValueError, match="GRADIO_SERVER_PORT='eighty' is not an integer"):
        SpaceConfig.from_env()


def test_model_loading_errors_name_the_source(tmp_path):
    with pytest.raises(ModelLoadError, match="/no/such/folder: not a model folder"):
        load_model("/no/such/folder")
    with pytest.raises(ModelLoadError, match=f"{tmp_path}: cannot load a pathfm model from this folder"):
        load_model(str(tmp_path))
    with pytest.raises(ModelLoadError, match="cannot load a pathfm model from this Hub id"):
        load_model("nobody-here/not-cached-model")  # HF_HUB_OFFLINE=1: only cached ids load
    loaded = load_model(TINY_RANDOM)
    assert loaded.warning and "Random weights" in loaded.warning and loaded.embedding_dim == 64


def test_reads_the_head_the_evaluation_writes(tmp_path):
    """Round trip with pathfm.evaluation.head_export (the writer behind ``linear_probe.py --save_head``)."""
    head_export = pytest.importorskip("pathfm.evaluation.head_export")
    torch.manual_seed(0)
    for classes in (["ADI", "TUM", "STR"], ["benign", "tumour"]):
        linear = torch.nn.Linear(8, 1 if len(classes) == 2 else len(classes))
        results = {
            "task": {"classes": classes, "name": "toy", "proxy_labels": False},
            "best_run": {"seed": 0},
            "protocol": {"pooling": "pooler_output", "name": "pathfm-linear/1"},
            "model": {"id": "toy-model", "revision": None},
            "runs": {0: {"validation": {"balanced_accuracy": 0.5}}},
        }
        folder = tmp_path / str(len(classes))
        head_export.save_probe_head(folder, linear, results)
        head = read_probe_head(folder / "probe_head.safetensors", folder / "probe_head.json")
        assert head.pooling == "pooler_output" and list(head.id2label.values()) == classes
        x = torch.randn(5, 8)
        logits = linear(x).detach()
        expected = (
            torch.softmax(logits, 1)
            if len(classes) > 2
            else torch.cat([1 - torch.sigmoid(logits), torch.sigmoid(logits)], 1)
        )
        got = head.predict(head.features(x.numpy(), None, None))
        np.testing.assert_allclose([[p[c] for c in classes] for p in got], expected.numpy(), atol=1e-6)


def test_default_model_is_the_main_job_export_when_present(monkeypatch, tmp_path):
    from pathfm.spaces import space_config

    for name in ("PATHFM_SPACE_MODEL", "PATHFM_SPACE_MODELS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(space_config, "DEFAULT_EXPORT", tmp_path / "outputs" / "dino" / "model")
    assert SpaceConfig.from_env().default_model == TINY_RANDOM
    (tmp_path / "outputs" / "dino" / "model").mkdir(parents=True)
    (tmp_path / "outputs" / "dino" / "model" / "config.json").write_text("{}")
    config = SpaceConfig.from_env()
    assert config.default_model == str(tmp_path / "outputs" / "dino" / "model")
    assert config.model_choices == [config.default_model, TINY_RANDOM]
