"""Push an exported tiny model to the local Hub server and load it back with AutoModel (remote code).

huggingface_hub's real upload code (create_repo + upload_folder, LFS flow with HF_HUB_DISABLE_XET=1) and
transformers' real download + remote-code path run against tests/hub_server.py. The load runs in a fresh
interpreter that never imports pathfm, as a user of the Hub repo would, so the model class must come from
the uploaded modeling code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from transformers import AutoModel

from pathfm.modeling import PathFMViTConfig, PathFMViTModel
from pathfm.training.export import export_teacher
from pathfm.training.hub import push_to_hub
from tests.hub_server import LocalHub, use_local_hub

# huggingface_hub's own LFS PUT passes `data=<file>` to httpx; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
TOKEN = "hf_local_push_token"
REPO_ID = "pathfm-tests/tiny-dino"

_LOADER = textwrap.dedent(
    """
    import sys
    import torch
    from transformers import AutoImageProcessor, AutoModel

    repo_id, pixels_path, out_path = sys.argv[1:4]
    model = AutoModel.from_pretrained(repo_id, trust_remote_code=True).eval()
    processor = AutoImageProcessor.from_pretrained(repo_id, trust_remote_code=True)
    assert not any(name.split(".")[0] == "pathfm" for name in sys.modules), "pathfm was imported"
    with torch.no_grad():
        out = model(pixel_values=torch.load(pixels_path))
    tile = torch.arange(224 * 224 * 3, dtype=torch.int64).reshape(224, 224, 3).remainder(251).to(torch.uint8)
    torch.save({
        "pooler_output": out.pooler_output,
        "last_hidden_state": out.last_hidden_state,
        "model_module": type(model).__module__,
        "processor_module": type(processor).__module__,
        "processed": processor(images=tile.numpy(), return_tensors="pt")["pixel_values"],
    }, out_path)
    """
)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[LocalHub]:
    with LocalHub(token=TOKEN) as server:
        with use_local_hub(monkeypatch, server, tmp_path / "hf_home", token=TOKEN):
            yield server
    assert server.unhandled == [], f"client used routes the local hub does not implement: {server.unhandled}"


def test_push_then_load_with_remote_code(hub: LocalHub, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = PathFMViTModel(PathFMViTConfig.from_preset("tiny", image_size=32)).eval()
    folder = export_teacher(model, tmp_path / "model", {"repo_id": REPO_ID, "steps": 5, "mpps": [0.5]})

    commit_url = push_to_hub(folder, REPO_ID)
    assert commit_url.startswith(f"{hub.url}/{REPO_ID}/commit/")
    remote = hub.files(REPO_ID)
    local_names = {p.name for p in folder.iterdir()}
    assert set(remote) == local_names | {".gitattributes"}
    for name in local_names:
        assert remote[name].content == (folder / name).read_bytes(), name
    assert remote["model.safetensors"].lfs  # went through the LFS batch/upload/verify flow

    # In this process (pathfm registered locally): weights come from the server's /resolve/ endpoint.
    card = ModelCard.load(REPO_ID)
    assert card.data.pipeline_tag == "image-feature-extraction" and card.data.library_name == "transformers"
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(pixel_values=pixels)
        in_process = AutoModel.from_pretrained(REPO_ID, trust_remote_code=True).eval()(pixel_values=pixels)
    torch.testing.assert_close(in_process.pooler_output, expected.pooler_output, rtol=0, atol=0)
    assert any(path.startswith(f"/{REPO_ID}/resolve/") for _, path in hub.requests)

    # A fresh interpreter that never imports pathfm: the uploaded code must define the model.
    torch.save(pixels, tmp_path / "pixels.pt")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and k != "TRANSFORMERS_OFFLINE"}
    env.update({"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1",
                "HF_HOME": str(tmp_path / "hf_home_user"), "HF_HUB_DISABLE_TELEMETRY": "1"})
    result = subprocess.run(
        [sys.executable, "-c", _LOADER, REPO_ID, str(tmp_path / "pixels.pt"), str(tmp_path / "out.pt")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    loaded = torch.load(tmp_path / "out.pt")
    assert loaded["model_module"].startswith("transformers_modules.")
    assert loaded["processor_module"].startswith("transformers_modules.")
    torch.testing.assert_close(loaded["pooler_output"], expected.pooler_output, rtol=0, atol=0)
    torch.testing.assert_close(loaded["last_hidden_state"], expected.last_hidden_state, rtol=0, atol=0)
    # The processor on a 224 px tile (resize and crop are identities): (x / 255 - 0.5) / 0.5, channels first.
    tile = torch.arange(224 * 224 * 3, dtype=torch.int64).reshape(224, 224, 3).remainder(251).float()
    manual = ((tile / 255.0 - 0.5) / 0.5).permute(2, 0, 1)[None]
    torch.testing.assert_close(loaded["processed"], manual, rtol=0, atol=1e-6)


def test_repush_updates_and_card_metadata_from_hub(hub: LocalHub, tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = PathFMViTModel(PathFMViTConfig.from_preset("tiny", image_size=32)).eval()
    folder = export_teacher(model, tmp_path / "model", {"repo_id": REPO_ID, "license": "apache-2.0"})
    first = push_to_hub(folder, REPO_ID, private=True)
    # New weights (e.g. a later export of the same run) replace the old ones in a new commit.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    export_teacher(model, folder, {"repo_id": REPO_ID, "license": "apache-2.0"})
    second = push_to_hub(folder, REPO_ID, commit_message="step 200")
    assert first != second
    info = HfApi().model_info(REPO_ID)
    assert info.private is True and info.sha == second.rsplit("/", 1)[1]
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reloaded = AutoModel.from_pretrained(REPO_ID, trust_remote_code=True).eval()(pixel_values=pixels)
        expected = model(pixel_values=pixels).pooler_output
    torch.testing.assert_close(reloaded.pooler_output, expected, rtol=0, atol=0)
    config = json.loads(hub.files(REPO_ID)["config.json"].content)
    assert config["auto_map"]["AutoModel"] == "modeling_pathfm_vit.PathFMViTModel"
