"""The converter CLI: a checkpoint that does not match fails with the key list, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import torch

from pathfm.modeling.convert_timm_to_pathfm import cli


def test_mismatched_checkpoint_exits_2_and_writes_nothing(tmp_path: Path, capsys) -> None:
    ckpt = tmp_path / "wrong.pth"
    torch.save({"hello": torch.zeros(3)}, ckpt)
    out = tmp_path / "out"
    assert cli(["--checkpoint", str(ckpt), "--arch", "vits16", "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "wrong.pth" in err and "Traceback" not in err
    assert not out.exists()
