"""`training/dino.py --push_to_hub` end to end against the local Hub server (slow: a real 1-step run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

from tests.hub_server import LocalHub, use_local_hub

REPO_ROOT = Path(__file__).resolve().parents[2]
# huggingface_hub's own LFS PUT passes `data=<file>` to httpx; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
TOKEN = "hf_local_dino_token"


@pytest.mark.slow
def test_dino_run_pushes_its_export(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with LocalHub(token=TOKEN) as hub, use_local_hub(monkeypatch, hub, tmp_path / "hf_home", token=TOKEN):
        env = {k: v for k, v in os.environ.items() if k != "TRANSFORMERS_OFFLINE"}
        run = subprocess.run(
            [sys.executable, str(REPO_ROOT / "training" / "dino.py"), "--output_dir", str(tmp_path / "run"),
             "--max_steps", "1", "--save_steps", "1", "--logging_steps", "1", "--report_to", "none",
             "--push_to_hub", "true", "--hub_model_id", "pathfm-tests/dino-run"],
            capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=480,
        )
        assert run.returncode == 0, run.stderr[-4000:]
        summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
        assert summary["hub_url"].startswith(f"{hub.url}/pathfm-tests/dino-run/commit/")
        folder = tmp_path / "run" / "model"
        remote = hub.files("pathfm-tests/dino-run")
        assert set(remote) == {p.name for p in folder.iterdir()} | {".gitattributes"}
        assert remote["model.safetensors"].content == (folder / "model.safetensors").read_bytes()
        assert TOKEN not in remote["README.md"].content.decode()

        pixels = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            from_hub = AutoModel.from_pretrained("pathfm-tests/dino-run", trust_remote_code=True).eval()
            local = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
            torch.testing.assert_close(from_hub(pixel_values=pixels).pooler_output,
                                       local(pixel_values=pixels).pooler_output, rtol=0, atol=0)
    assert hub.unhandled == []
