"""Fixtures for the Space tests: a tiny model folder with a linear probe head, and the real app
(``python spaces/app.py``) served on a free local port in a subprocess for the whole session."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from pathfm.modeling import PathFMViTConfig, PathFMViTImageProcessor, PathFMViTModel
from safetensors.torch import save_file

PROBE_LABELS = {"0": "tumour", "1": "stroma", "2": "background"}
STARTUP_TIMEOUT_S = 180
MAX_SLIDE_MB = 3
"""Upload limit of the test server: the 1.9 MB embedded slides fit, the 3.9 MB TCGA slide does not."""


@dataclass
class SpaceServer:
    """A running app: its URL, the probe model folder it lists, its cache folder, its log file and the folder
    it searches for models saved after start-up (``PATHFM_SPACE_MODEL_DIRS``)."""

    url: str
    port: int
    model_dir: Path
    cache_dir: Path
    log_path: Path
    process: subprocess.Popen
    model_root: Path

    def log(self) -> str:
        """The server's stdout + stderr so far."""
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    """A TCP port nobody listens on right now (bound and released on 127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def save_tiny_model(folder: Path, seed: int = 0, **overrides) -> Path:
    """A tiny pathfm model folder (config.json, model.safetensors, preprocessor_config.json)."""
    torch.manual_seed(seed)
    model = PathFMViTModel(PathFMViTConfig.from_preset("tiny", **overrides)).eval()
    model.save_pretrained(folder)
    PathFMViTImageProcessor().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def probe_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny pathfm model folder (seed 1) plus probe_head.safetensors / probe_head.json (3 classes, softmax on
    ``pooler_output``: the layout pathfm.evaluation.head_export writes)."""
    folder = tmp_path_factory.mktemp("probe_model")
    torch.manual_seed(1)
    model = PathFMViTModel(PathFMViTConfig.from_preset("tiny")).eval()
    model.save_pretrained(folder)
    PathFMViTImageProcessor().save_pretrained(folder)
    generator = torch.Generator().manual_seed(2)
    hidden = model.config.hidden_size
    save_file(
        {
            "weight": torch.randn(3, hidden, generator=generator) * 2.0,
            "bias": torch.tensor([0.1, -0.2, 0.05]),
        },
        str(folder / "probe_head.safetensors"),
    )
    (folder / "probe_head.json").write_text(
        json.dumps(
            {
                "id2label": PROBE_LABELS,
                "num_labels": 3,
                "input_dim": hidden,
                "pooling": "pooler_output",
                "activation": "softmax",
            }
        )
    )
    return folder


@pytest.fixture(scope="session")
def space_server(
    tmp_path_factory: pytest.TempPathFactory, repo_root: Path, probe_model_dir: Path
) -> SpaceServer:
    """``python spaces/app.py`` on a free port, default model = random ``tiny``, probe model listed too."""
    port = free_port()
    cache_dir = tmp_path_factory.mktemp("space_cache")
    model_root = tmp_path_factory.mktemp("space_models")
    log_path = cache_dir / "server.log"
    env = dict(os.environ)
    env.update(
        GRADIO_SERVER_PORT=str(port),
        PATHFM_SPACE_CACHE=str(cache_dir),
        PATHFM_SPACE_MODELS=str(probe_model_dir),
        PATHFM_SPACE_MODEL_DIRS=str(model_root),
        PATHFM_SPACE_MODEL="tiny (random weights)",
        HF_HUB_OFFLINE="1",
        PATHFM_SPACE_MAX_SLIDE_MB=str(MAX_SLIDE_MB),
        OMP_NUM_THREADS="2",
    )
    env.pop("PATHFM_SPACE_MAX_TILE_MP", None)
    log = log_path.open("w")
    process = subprocess.Popen(
        [sys.executable, str(repo_root / "spaces" / "app.py")],
        cwd=repo_root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    server = SpaceServer(url, port, probe_model_dir, cache_dir, log_path, process, model_root)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"spaces/app.py exited with {process.returncode}:\n{server.log()[-4000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"spaces/app.py did not answer on {url} within {STARTUP_TIMEOUT_S} s:\n{server.log()[-4000:]}"
                )
            time.sleep(0.5)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="session")
def space_client(space_server: SpaceServer):
    """A gradio_client.Client connected to the running app."""
    from gradio_client import Client

    return Client(space_server.url, verbose=False)
