"""The converter CLI: a bad or mismatched checkpoint fails with one line naming it, exit 2, nothing written."""

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


def _tiny_folder(folder: Path) -> Path:
    from pathfm.modeling import PathFMViTConfig, PathFMViTModel

    torch.manual_seed(0)
    PathFMViTModel(PathFMViTConfig.from_preset("tiny")).save_pretrained(folder)
    return folder


def test_broken_inputs_name_the_file(tmp_path: Path, capsys) -> None:
    from safetensors.torch import save_file

    truncated_file = tmp_path / "truncated.safetensors"
    save_file({"cls_token": torch.zeros(1, 1, 64)}, str(truncated_file))
    truncated_file.write_bytes(truncated_file.read_bytes()[:20])
    truncated_pth = tmp_path / "truncated.pth"
    torch.save({"cls_token": torch.zeros(1, 1, 64)}, truncated_pth)
    truncated_pth.write_bytes(truncated_pth.read_bytes()[:100])
    truncated_folder = _tiny_folder(tmp_path / "truncated_folder")
    weights = truncated_folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:300])
    not_json = _tiny_folder(tmp_path / "not_json")
    (not_json / "config.json").write_text("{nope")
    other_arch = _tiny_folder(tmp_path / "other_arch")
    save_file({"encoder.weight": torch.zeros(4, 4)}, str(other_arch / "model.safetensors"))
    text = tmp_path / "notes.pth"  # a text file given by mistake: the unpickler fails with a KeyError
    text.write_text("hello world\nnot a checkpoint\n")
    cases = [
        (truncated_file, "truncated.safetensors: truncated or not a safetensors file"),
        (truncated_pth, "truncated.pth: not a readable torch checkpoint"),
        (truncated_folder, "model.safetensors is truncated or not a safetensors file"),
        (not_json, "config.json: not valid JSON"),
        (tmp_path / "missing.pth", "missing.pth does not exist"),
        (other_arch, "model.safetensors lacks"),
        (text, "notes.pth: not a readable torch checkpoint (KeyError: 101); expected a timm state dict"),
    ]
    capsys.readouterr()  # the progress bars of the set-up
    for source, needle in cases:
        out = tmp_path / f"out_{source.name}"
        assert cli(["--checkpoint", str(source), "--arch", "tiny", "--output_dir", str(out)]) == 2, source
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err, (source, err)
        assert not out.exists()


def test_unknown_arch_lists_the_presets(tmp_path: Path, capsys) -> None:
    """--arch is checked after parsing (the preset list costs the torch import); same argparse message."""
    import pytest

    from pathfm.modeling import PRESETS

    with pytest.raises(SystemExit) as stop:
        cli(["--checkpoint", "x.pth", "--arch", "vits61", "--output_dir", str(tmp_path / "out")])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.split(": error: ", 1)[1] == (  # the program name is pytest's here
        "argument --arch: invalid choice: 'vits61' "
        f"(choose from {', '.join(sorted(PRESETS))})"
    )
