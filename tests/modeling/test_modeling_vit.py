"""PathFMViT config, backbone, classification head and image processor: shapes, options and saved files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pathfm.modeling import (
    PRESETS,
    PathFMViTConfig,
    PathFMViTForImageClassification,
    PathFMViTImageProcessor,
    PathFMViTModel,
    register_auto_classes,
)
from PIL import Image
from safetensors import safe_open
from torchvision import transforms as T
from torchvision.transforms.v2 import functional as tvF
from transformers import AutoConfig, AutoModelForImageClassification

from tests.modeling.conftest import make_tiny_model

# --------------------------------------------------------------------------------------------- config


# (hidden, layers, heads, mlp, patch, image, registers, layerscale) of timm's architectures, written out by hand
TIMM_FACTS = {
    "vits16": (384, 12, 6, 1536, 16, 224, 0, None),
    "vits8": (384, 12, 6, 1536, 8, 224, 0, None),
    "vitb16": (768, 12, 12, 3072, 16, 224, 0, None),
    "vitb8": (768, 12, 12, 3072, 8, 224, 0, None),
    "vitl14_reg4": (1024, 24, 16, 4096, 14, 518, 4, 1e-5),
    "tiny": (64, 2, 4, 256, 16, 224, 0, None),
}


@pytest.mark.parametrize("name", sorted(TIMM_FACTS))
def test_presets_match_reference_architectures(name: str) -> None:
    c = PathFMViTConfig.from_preset(name)
    got = (
        c.hidden_size,
        c.num_hidden_layers,
        c.num_attention_heads,
        c.intermediate_size,
        c.patch_size,
        c.image_size,
        c.num_register_tokens,
        c.layerscale_value,
    )
    assert got == TIMM_FACTS[name]
    assert c.preset == name and c.model_type == "pathfm_vit"
    assert c.pos_embed_has_prefix_tokens is (name != "vitl14_reg4")
    assert set(PRESETS) == set(TIMM_FACTS)


def test_default_config_is_vits16_and_overrides_apply() -> None:
    c = PathFMViTConfig()
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.patch_size, c.image_size) == (
        384,
        12,
        6,
        16,
        224,
    )
    assert c.layer_norm_eps == 1e-6 and c.qkv_bias and c.pooling == "cls" and c.hidden_act == "gelu"
    o = PathFMViTConfig.from_preset("vitb8", drop_path_rate=0.1, pooling="cls_mean")
    assert (o.hidden_size, o.patch_size, o.drop_path_rate, o.pooling) == (768, 8, 0.1, "cls_mean")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(hidden_size=64, num_attention_heads=5), "divisible by num_attention_heads"),
        (dict(pooling="mean"), "pooling must be one of"),
        (dict(interpolate_mode="nearest"), "interpolate_mode"),
        (dict(image_size=225), "multiple of patch_size"),
        (dict(drop_path_rate=1.0), "drop_path_rate"),
    ],
)
def test_config_rejects_bad_fields(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PathFMViTConfig(**kwargs)


def test_unknown_preset_names_the_choices() -> None:
    with pytest.raises(KeyError, match="vits16"):
        PathFMViTConfig.from_preset("vit_huge")


def test_config_round_trip_keeps_every_custom_field(tmp_path) -> None:
    custom = dict(
        image_size=[96, 64],
        patch_size=8,
        num_channels=4,
        hidden_size=48,
        num_hidden_layers=3,
        num_attention_heads=3,
        intermediate_size=100,
        hidden_act="gelu_new",
        qkv_bias=False,
        layer_norm_eps=1e-5,
        num_register_tokens=3,
        layerscale_value=0.25,
        pos_embed_has_prefix_tokens=False,
        drop_path_rate=0.3,
        attention_probs_dropout_prob=0.1,
        hidden_dropout_prob=0.2,
        initializer_range=0.05,
        pooling="cls_mean",
        interpolate_mode="bilinear",
        interpolate_antialias=False,
        preset="custom",
    )
    # every custom field of the class is non-default here, so a dropped field cannot go unnoticed
    defaults = PathFMViTConfig()
    assert all(getattr(defaults, k) != v for k, v in custom.items())
    config = PathFMViTConfig(**custom, id2label={0: "tumor", 1: "stroma"})
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is PathFMViTConfig
    for key, value in custom.items():
        assert saved[key] == value, key
        assert getattr(loaded, key) == value, key
    assert loaded.id2label == {0: "tumor", 1: "stroma"}
    assert saved["auto_map"]["AutoConfig"] == "configuration_pathfm_vit.PathFMViTConfig"
    assert PathFMViTConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()


def test_register_auto_classes_is_idempotent() -> None:
    register_auto_classes()
    register_auto_classes()
    assert type(AutoConfig.for_model("pathfm_vit")) is PathFMViTConfig


# --------------------------------------------------------------------------------------------- backbone


def test_output_shapes_with_registers_and_pooling() -> None:
    x = torch.randn(2, 3, 224, 224)
    model = make_tiny_model()
    out = model(x)
    assert out.last_hidden_state.shape == (2, 1 + 196, 64)
    assert out.pooler_output.shape == (2, 64)
    assert out.hidden_states is None and out.attentions is None
    torch.testing.assert_close(out.pooler_output, out.last_hidden_state[:, 0], rtol=0, atol=0)

    reg = make_tiny_model(num_register_tokens=4, pooling="cls_mean")
    out = reg(x)
    assert out.last_hidden_state.shape == (2, 1 + 4 + 196, 64)
    assert out.pooler_output.shape == (2, 128)
    tokens = out.last_hidden_state
    torch.testing.assert_close(out.pooler_output[:, :64], tokens[:, 0])
    torch.testing.assert_close(out.pooler_output[:, 64:], tokens[:, 5:].sum(1) / 196)
    # registers really are excluded from the mean
    assert not torch.allclose(out.pooler_output[:, 64:], tokens[:, 1:].mean(1), atol=1e-4)


def test_final_norm_and_hidden_states() -> None:
    model = make_tiny_model(num_register_tokens=1)
    x = torch.randn(1, 3, 64, 48)
    out = model(x, output_hidden_states=True)
    assert len(out.hidden_states) == 3
    torch.testing.assert_close(out.hidden_states[0], model.embeddings(x))
    torch.testing.assert_close(model.layernorm(out.hidden_states[-1]), out.last_hidden_state)
    # final LayerNorm without affine change: each token has mean 0, var 1
    assert out.last_hidden_state.mean(-1).abs().max() < 1e-5
    as_tuple = model(x, return_dict=False)
    torch.testing.assert_close(as_tuple[0], out.last_hidden_state)
    torch.testing.assert_close(as_tuple[1], out.pooler_output)


def test_attentions_are_eager_softmax_and_match_sdpa() -> None:
    model = make_tiny_model()
    x = torch.randn(2, 3, 64, 64)
    out = model(x, output_attentions=True, output_hidden_states=True)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 4, 17, 17)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(2, 4, 17))
    # independent attention of layer 0: softmax(q k^T / sqrt(d)) from the raw qkv weights
    layer = model.layers[0]
    h = F.layer_norm(out.hidden_states[0], (64,), layer.norm1.weight, layer.norm1.bias, 1e-6)
    q, k, _ = (h @ layer.attention.qkv.weight.T + layer.attention.qkv.bias).split(64, dim=-1)
    q = q.reshape(2, 17, 4, 16).transpose(1, 2)
    k = k.reshape(2, 17, 4, 16).transpose(1, 2)
    expected = torch.softmax(q @ k.transpose(-1, -2) / 4.0, dim=-1)
    torch.testing.assert_close(out.attentions[0], expected, atol=1e-5, rtol=1e-5)
    # eager path (taken for attentions) and the default SDPA path agree
    torch.testing.assert_close(out.last_hidden_state, model(x).last_hidden_state, atol=1e-5, rtol=1e-5)


def test_native_size_needs_no_interpolation_bit_exact() -> None:
    model = make_tiny_model()
    emb = model.embeddings
    assert emb.interpolate_pos_encoding(14, 14) is emb.position_embeddings
    x = torch.randn(1, 3, 224, 224)
    patches = emb.patch_embeddings(x).reshape(1, 196, 64)
    manual = torch.cat([emb.cls_token, patches], 1) + emb.position_embeddings
    assert torch.equal(emb(x), manual)


@pytest.mark.parametrize("size", [(96, 160), (320, 256)])
def test_other_sizes_interpolate_the_grid_bicubic(size: tuple[int, int]) -> None:
    """A model run at another size equals a model built natively at that size whose position grid was
    resampled by hand with bicubic F.interpolate."""
    model = make_tiny_model()
    rows, cols = size[0] // 16, size[1] // 16
    pos = model.embeddings.position_embeddings.detach()
    grid = pos[:, 1:].reshape(1, 14, 14, 64).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", align_corners=False, antialias=True)
    resized = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, rows * cols, 64)], 1)

    native = PathFMViTModel(PathFMViTConfig.from_preset("tiny", image_size=list(size))).eval()
    state = {k: v for k, v in model.state_dict().items()}
    state["embeddings.position_embeddings"] = resized
    native.load_state_dict(state)
    x = torch.randn(2, 3, *size)
    out = model(x).last_hidden_state
    assert out.shape == (2, 1 + rows * cols, 64)
    torch.testing.assert_close(out, native(x).last_hidden_state, rtol=0, atol=1e-6)


def test_size_not_multiple_of_patch_raises_clear_error() -> None:
    model = make_tiny_model()
    with pytest.raises(ValueError, match=r"225x224 px is not a multiple of patch_size 16"):
        model(torch.randn(1, 3, 225, 224))
    with pytest.raises(ValueError, match="3 input channels, got 1"):
        model(torch.randn(1, 1, 224, 224))
    with pytest.raises(ValueError, match="batch, channels, height, width"):
        model(torch.randn(3, 224, 224))
    with pytest.raises(ValueError, match="needs pixel_values"):
        model()


def test_gradient_checkpointing_recomputes_and_keeps_gradients() -> None:
    x = torch.randn(2, 3, 64, 64)

    def grads(model: PathFMViTModel) -> dict[str, torch.Tensor]:
        model.train()
        model.zero_grad()
        model(x).pooler_output.pow(2).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    model = make_tiny_model()
    reference = grads(model)
    calls = []
    # hooks on the layer itself sit outside the checkpoint; the attention inside it runs twice when recomputed
    model.layers[0].attention.register_forward_hook(lambda *args: calls.append(1))
    model.gradient_checkpointing_enable()  # the contract's name (transformers 5.x also offers activation_...)
    assert all(layer.gradient_checkpointing for layer in model.layers)
    checkpointed = grads(model)
    assert len(calls) == 2  # forward + recomputation in backward
    for name, grad in reference.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-6)


def test_drop_path_rates_and_behaviour() -> None:
    model = make_tiny_model(num_hidden_layers=3, drop_path_rate=0.5)
    assert [getattr(layer.drop_path, "drop_prob", 0.0) for layer in model.layers] == [0.0, 0.25, 0.5]
    drop = model.layers[2].drop_path
    drop.train()
    torch.manual_seed(0)
    y = drop(torch.ones(20000, 3, 2))
    kept = y[:, 0, 0] != 0
    assert abs(kept.float().mean().item() - 0.5) < 0.02
    assert torch.all(y[kept] == 2.0)  # scaled by 1 / keep probability
    assert torch.all(y[kept.logical_not()] == 0.0)
    # eval: deterministic and identical to the same weights without drop path
    model.eval()
    x = torch.randn(4, 3, 32, 32)
    plain = make_tiny_model(num_hidden_layers=3)
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(model(x).last_hidden_state, plain(x).last_hidden_state, rtol=0, atol=0)
    model.train()
    assert not torch.allclose(model(x).last_hidden_state, plain(x).last_hidden_state)


# --------------------------------------------------------------------------------------------- head + saving


@pytest.mark.parametrize("pooling", ["cls", "cls_mean"])
def test_classification_head_logits_and_loss(pooling: str) -> None:
    torch.manual_seed(0)
    config = PathFMViTConfig.from_preset("tiny", pooling=pooling, id2label={0: "a", 1: "b", 2: "c"})
    model = PathFMViTForImageClassification(config).eval()
    x, labels = torch.randn(3, 3, 32, 32), torch.tensor([0, 2, 1])
    out = model(x, labels=labels)
    width = 128 if pooling == "cls_mean" else 64
    assert model.classifier.in_features == width and out.logits.shape == (3, 3)
    logits = model.vit(x).pooler_output @ model.classifier.weight.T + model.classifier.bias
    torch.testing.assert_close(out.logits, logits)
    torch.testing.assert_close(out.loss, -torch.log_softmax(logits, -1)[torch.arange(3), labels].mean())


def test_save_pretrained_writes_code_auto_map_and_fp32(tmp_path) -> None:
    model = make_tiny_model().to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "configuration_pathfm_vit.py",
        "modeling_pathfm_vit.py",
    } <= names
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_pathfm_vit.PathFMViTConfig",
        "AutoModel": "modeling_pathfm_vit.PathFMViTModel",
        "AutoModelForImageClassification": "modeling_pathfm_vit.PathFMViTForImageClassification",
    }
    assert config["dtype"] == "float32"
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
        assert dtypes == {torch.float32}
        assert torch.equal(f.get_tensor("embeddings.cls_token"), model.embeddings.cls_token.detach().float())
    # a backbone folder loads as a classifier: same backbone, new head
    clf = AutoModelForImageClassification.from_pretrained(tmp_path, num_labels=5)
    assert type(clf) is PathFMViTForImageClassification and clf.classifier.out_features == 5
    assert torch.equal(clf.vit.embeddings.position_embeddings, model.embeddings.position_embeddings.float())


# --------------------------------------------------------------------------------------------- image processor


def test_preprocessor_config_holds_kaiko_stats(tmp_path) -> None:
    PathFMViTImageProcessor().save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_mean"] == [0.5, 0.5, 0.5] and saved["image_std"] == [0.5, 0.5, 0.5]
    assert saved["size"] == {"shortest_edge": 224} and saved["crop_size"] == {"height": 224, "width": 224}
    assert saved["do_resize"] and saved["do_center_crop"] and saved["do_rescale"] and saved["do_normalize"]
    assert saved["rescale_factor"] == pytest.approx(1 / 255)
    assert saved["auto_map"] == {"AutoImageProcessor": "image_processing_pathfm_vit.PathFMViTImageProcessor"}
    assert (tmp_path / "image_processing_pathfm_vit.py").is_file()

    imagenet = PathFMViTImageProcessor(image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    imagenet.save_pretrained(tmp_path / "imagenet")
    saved = json.loads((tmp_path / "imagenet" / "preprocessor_config.json").read_text())
    assert saved["image_mean"] == [0.485, 0.456, 0.406] and saved["image_std"] == [0.229, 0.224, 0.225]


def test_processor_reproduces_kaiko_transforms() -> None:
    rng = np.random.default_rng(0)
    array = (rng.random((256, 300, 3)) * 255).astype(np.uint8)  # H 256, W 300
    pixels = PathFMViTImageProcessor()(Image.fromarray(array), return_tensors="pt").pixel_values
    assert pixels.shape == (1, 3, 224, 224) and pixels.dtype == torch.float32
    # torchvision on the uint8 tensor: Resize(224) bilinear antialias, CenterCrop(224), /255, (x - .5) / .5
    t = torch.from_numpy(array).permute(2, 0, 1)
    t = tvF.center_crop(
        tvF.resize(t, [224], interpolation=tvF.InterpolationMode.BILINEAR, antialias=True), [224]
    )
    torch.testing.assert_close(pixels[0], (t.float() / 255 - 0.5) / 0.5, rtol=0, atol=1e-6)
    # kaiko's PIL pipeline differs by uint8 rounding at most (one grey level = 2/255 after normalisation)
    kaiko = T.Compose([T.Resize(224), T.CenterCrop(224), T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)])
    assert (pixels[0] - kaiko(Image.fromarray(array))).abs().max() <= 2 / 255 + 1e-6


def test_fresh_weights_follow_timm_init() -> None:
    model = make_tiny_model(num_register_tokens=2, layerscale_value=0.25)
    emb = model.embeddings
    assert emb.cls_token.abs().max() < 1e-4 and emb.register_tokens.abs().max() < 1e-4
    assert 0.015 < emb.position_embeddings.std().item() < 0.025  # truncated normal, std 0.02
    layer = model.layers[0]
    assert torch.all(layer.layer_scale1.gamma == 0.25) and torch.all(layer.layer_scale2.gamma == 0.25)
    assert torch.all(layer.attention.qkv.bias == 0) and torch.all(layer.norm1.weight == 1)
    assert 0.015 < layer.mlp.fc1.weight.std().item() < 0.025
