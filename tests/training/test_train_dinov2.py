"""``--objective dinov2`` through the real entry point on real slides: the logged loss terms, an export that
``AutoModel`` loads (the teacher backbone of the last checkpoint), exact resume (in process, and after a
``kill -9`` of a real run), a 2-process CPU DDP run; all slow. Default suite: config errors, the KDE option,
the mask generator's saved state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

from tests.training.test_train_ddp import SMALL
from tests.training.test_train_loop import _args, _run

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")

# the cpu_tiny test sizes plus the dinov2 objective with a separate iBOT head and Sinkhorn-Knopp centering
DINOV2 = [
    "--objective",
    "dinov2",
    "--centering",
    "sinkhorn_knopp",
    "--norm_last_layer",
    "false",
    "--ibot_separate_head",
    "true",
    "--ibot_head_n_prototypes",
    "32",
    "--ibot_head_hidden_dim",
    "16",
    "--ibot_head_bottleneck_dim",
    "8",
    "--lr_scaling_rule",
    "sqrt_wrt_1024",
    "--lr",
    "0.004",
]
TERMS = ("dino_local_crops_loss", "dino_global_crops_loss", "koleo_loss", "ibot_loss")


def _rows(out: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {row["step"]: row for row in rows}


def test_mask_sampler_state_round_trip_and_ranks_differ():
    """The per-rank mask generator state saved with checkpoints (JSON) restores the same next masks."""
    from pathfm.training.masking import MaskSampler

    sampler = MaskSampler((8, 8), seed=0, rank=0)
    sampler(8)
    state = json.loads(json.dumps(sampler.state_dict()))
    expected = [sampler(8).masks for _ in range(3)]
    restored = MaskSampler((8, 8), seed=0, rank=0)
    restored.load_state_dict(state)
    for want in expected:
        assert torch.equal(restored(8).masks, want)
    other_rank = MaskSampler((8, 8), seed=0, rank=1)
    assert not torch.equal(other_rank(8).masks, MaskSampler((8, 8), seed=0, rank=0)(8).masks)
    assert int(expected[0].any(dim=1).sum()) == 4  # mask_sample_probability 0.5 of 8 crops


@pytest.mark.slow  # ~25 s on 2 idle cores (two in-process runs and an export)
def test_dinov2_run_logs_terms_exports_and_resumes_exactly(cmu_svs, tmp_path):
    full_dir, resumed_dir = tmp_path / "full", tmp_path / "resumed"
    common = [
        *DINOV2,
        "--max_steps",
        "3",
        "--save_steps",
        "2",
        "--gradient_accumulation_steps",
        "2",
        "--global_crop_size",
        "48",  # a 3 x 3 patch grid, room for mask blocks
        "--warmup_epochs",
        "1",
        "--tiles_per_slide",
        "5",
    ]
    full = _run(_args(cmu_svs, full_dir, *common, "--export", "true"))  # the later flag wins
    rows = _rows(full_dir)
    assert sorted(rows) == [1, 2, 3]
    for row in rows.values():
        assert row["loss"] == pytest.approx(sum(row[t] for t in TERMS), rel=1e-5)  # the loss is the sum
        assert row["ibot_loss"] > 0 and row["koleo_loss"] != 0

    # the export is the teacher backbone of the last checkpoint, loadable with AutoModel
    model = AutoModel.from_pretrained(full_dir / "model").eval()
    teacher = torch.load(
        full_dir / "checkpoints" / "checkpoint-3" / "custom_checkpoint_0.pkl", weights_only=True
    )
    exported = model.state_dict()
    assert {f"backbone.{k}" for k in exported} == {k for k in teacher if k.startswith("backbone.")}
    for key, value in exported.items():
        assert torch.equal(value, teacher[f"backbone.{key}"]), key
    assert {"ibot_head.mlp.0.weight", "dino_head.mlp.0.weight"} <= set(teacher)  # EMA over both heads
    with torch.no_grad():
        out = model(pixel_values=torch.rand(2, 3, 32, 32))
    assert out.pooler_output.shape == (2, 64) and torch.isfinite(out.pooler_output).all()
    card = (full_dir / "model" / "README.md").read_text()
    assert "# pathfm ViT (DINOv2)" in card and "iBOT loss" in card and "| final DINOv2 loss |" in card
    assert "self-supervised DINO (" not in card

    # resume from step 2: same loss and the same mask generator state at step 3
    ckpt = full_dir / "checkpoints" / "checkpoint-2"
    resumed = _run(_args(cmu_svs, resumed_dir, *common, "--resume_from_checkpoint", str(ckpt)))
    assert len(resumed["losses"]) == 1
    for a, b in zip(full["losses"][2:], resumed["losses"], strict=True):
        assert abs(a - b) <= 1e-6, (full["losses"], resumed["losses"])
    masks = [
        json.loads((d / "checkpoints" / "checkpoint-3" / "masks_state_rank0.json").read_text())
        for d in (full_dir, resumed_dir)
    ]
    assert masks[0] == masks[1]
    assert masks[0] != json.loads((ckpt / "masks_state_rank0.json").read_text())


def test_bad_dinov2_values_are_one_line_errors(tmp_path):
    from pathfm.training.config import parse_config

    for flags, named in (
        (["--objective", "dinov3"], "--objective must be dino or dinov2, got 'dinov3'"),
        (["--mask_ratio_min_max", "0.5", "0.1"], "--mask_ratio_min_max takes two ratios"),
        (["--mask_sample_probability", "1.5"], "--mask_sample_probability must be in [0, 1]"),
        (["--koleo_loss_weight", "-1"], "loss weights must be >= 0, got --koleo_loss_weight -1.0"),
        (["--lr_scaling_rule", "sqrt"], "--lr_scaling_rule must be linear_wrt_256 or sqrt_wrt_1024"),
    ):
        with pytest.raises(ValueError, match="invalid DINO config") as err:
            parse_config(["cpu_tiny_dinov2", "--output_dir", str(tmp_path), *flags])
        assert named in str(err.value) and "\n" not in str(err.value)


def test_dinov2_loss_kde_option_and_no_local_crops():
    """KDE replaces KoLeo when weighted (Midnight), each term is its weight times the module's value, and the
    DINO term works without local crops."""
    from pathfm.training.heads import DINOv2Output
    from pathfm.training.losses.dino_v2 import DINOv2CLSLoss
    from pathfm.training.losses.dinov2_loss import DINOv2Loss
    from pathfm.training.losses.kde import kde_per_crop
    from tests.training.dinov2_inputs import wave

    loss_fn = DINOv2Loss(
        8, 8, weights={"koleo_loss_weight": 0.0, "kde_loss_weight": 0.05, "ibot_loss_weight": 0}
    )
    teacher = DINOv2Output(wave(4, 8, 0.1), None, wave(4, 6, 0.2))
    student = DINOv2Output(wave(4, 8, 0.5), None, wave(4, 6, 0.9))
    cls_targets, patch_targets = loss_fn.targets(teacher, 0.04)
    assert patch_targets is None
    terms = loss_fn(student, cls_targets, None, None)
    assert set(terms) == {"loss", "dino_local_crops_loss", "dino_global_crops_loss", "kde_loss"}
    assert float(terms["kde_loss"]) == pytest.approx(0.05 * float(kde_per_crop(student.cls_tokens)), abs=1e-7)
    local, global_ = DINOv2CLSLoss(8)(student.cls_logits, None, cls_targets)
    assert float(terms["dino_local_crops_loss"]) == 0.0 and float(local) == 0.0
    assert float(terms["dino_global_crops_loss"]) == pytest.approx(float(global_), abs=1e-7)
    assert float(terms["loss"]) == pytest.approx(float(global_) + float(terms["kde_loss"]), abs=1e-6)


def _launch(repo_root: Path, out: Path, *extra: str, nproc: int = 1) -> subprocess.Popen:
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if nproc > 1:
        cmd += ["--multi_gpu", "--num_processes", str(nproc), "--main_process_port", "29561"]
    else:
        cmd += ["--num_processes", "1"]
    cmd += ["training/dino.py", "cpu_tiny_dinov2", *SMALL, *DINOV2, "--output_dir", str(out), *extra]
    return subprocess.Popen(
        cmd,
        cwd=repo_root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


@pytest.mark.slow
def test_kill_9_after_a_checkpoint_then_resume_latest_reproduces_the_losses(repo_root, tmp_path):
    steps = ["--max_steps", "8", "--save_steps", "3", "--export", "false"]
    reference = _launch(repo_root, tmp_path / "reference", *steps)
    _, err = reference.communicate(timeout=900)
    assert reference.returncode == 0, err[-3000:]
    expected = {step: row["loss"] for step, row in _rows(tmp_path / "reference").items()}

    out = tmp_path / "run"
    run = _launch(repo_root, out, *steps)
    deadline = time.monotonic() + 600
    while not (out / "metrics.jsonl").exists() or len(_rows(out)) < 4:  # past the step-3 checkpoint
        assert run.poll() is None, run.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the run did not reach step 4"
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)  # no handler, no checkpoint at the stop
    run.communicate(timeout=60)
    assert run.returncode == -signal.SIGKILL

    resumed = _launch(repo_root, out, *steps, "--resume_from_checkpoint", "latest")
    _, err = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, err[-3000:]
    got = {step: row["loss"] for step, row in _rows(out).items()}
    assert got == expected  # bit for bit: same weights, optimizer, centers, RNGs, tile stream and masks


@pytest.mark.slow
def test_two_process_cpu_ddp_dinov2(repo_root, tmp_path):
    out = tmp_path / "ddp"
    run = _launch(repo_root, out, "--expected_world_size", "2", nproc=2)
    _, err = run.communicate(timeout=900)
    assert run.returncode == 0, err[-4000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4
    digests = [json.loads((out / f"param_digest_rank{r}.json").read_text()) for r in (0, 1)]
    assert digests[0] == digests[1]  # student and teacher equal on both ranks
    ckpt = out / "checkpoints" / "checkpoint-4"
    masks = [json.loads((ckpt / f"masks_state_rank{r}.json").read_text()) for r in (0, 1)]
    assert masks[0] != masks[1]  # each rank draws its own masks, and both states are saved
    assert AutoModel.from_pretrained(out / "model").config.num_hidden_layers == 2
