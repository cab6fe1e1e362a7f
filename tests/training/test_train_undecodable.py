"""A slide whose every stored tile fails to decode (real SVS, tile bytes scrambled): the training CLI skips
and counts the failing regions, then ends in one line naming the slide and the fix, exit 2, no traceback."""

import os
import shutil
import subprocess
import sys

import numpy as np
import tifffile


def test_slide_with_no_decodable_tile_is_one_line(repo_root, tmp_path):
    slide = tmp_path / "scrambled.svs"
    shutil.copy(repo_root / "data" / "slides" / "CMU-1-Small-Region.svs", slide)
    with tifffile.TiffFile(slide) as tif:
        spans = [(o, n) for o, n in zip(tif.pages[0].dataoffsets, tif.pages[0].databytecounts) if n > 64]
    rng = np.random.default_rng(0)
    with open(slide, "r+b") as f:
        for offset, count in spans:  # keep each tile's first bytes (markers), scramble the entropy-coded rest
            f.seek(offset + 32)
            f.write(rng.integers(0, 256, count - 32, dtype=np.uint8).tobytes())
    cmd = [sys.executable, "training/dino.py", "--slides", str(slide), "--output_dir", str(tmp_path / "out")]
    cmd += ["--max_steps", "2", "--num_workers", "0", "--probe_size", "8", "--per_device_batch_size", "4"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(cmd, cwd=repo_root, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("training/dino.py: error:") and "scrambled" in last and "--reader" in last, last
    assert "3 passes: 1 slide(s) unreadable or missing" in last, last
