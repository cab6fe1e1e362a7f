"""The DINO training loop run in-process on a real slide: accumulation, freeze, exact resume, faults.

Each run is tiny (tiny ViT, 32/16 px crops, batch 2-4, one real slide) so the whole file takes about a minute.
"""

import json

import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_file

from pathfm.training import dino as dino_module
from pathfm.training.augmentations import DINOMultiCrop
from pathfm.training.config import parse_config
from pathfm.training.losses.dino import DINOLoss
from pathfm.training.networks import build_student_teacher
from pathfm.training.optim import build_optimizer, set_lr_wd
from pathfm.training.step import NonFiniteLossError, train_step


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def _args(cmu_svs, out, *extra):
    return [
        "cpu_tiny",
        "--slides",
        str(cmu_svs),
        "--mpps",
        "0.5",
        "1.0",
        "--tile_size",
        "64",
        "--tiles_per_slide",
        "12",
        "--num_workers",
        "0",
        "--global_crop_size",
        "32",
        "--local_crop_size",
        "16",
        "--local_crops_number",
        "2",
        "--out_dim",
        "64",
        "--head_hidden_dim",
        "32",
        "--head_bottleneck_dim",
        "16",
        "--per_device_batch_size",
        "2",
        "--steps_per_epoch",
        "2",
        "--report_to",
        "none",
        "--probe_size",
        "4",
        "--logging_steps",
        "1",
        "--export",
        "false",
        "--output_dir",
        str(out),
        "--save_total_limit",
        "0",
        *extra,
    ]


def _run(argv):
    m, d, t, p = parse_config(argv)
    return dino_module.train(m, d, t, p)


def _step_parts(cmu_svs, tmp_path, k):
    """A prepared tiny student/teacher/loss/optimizer and k fixed micro-batches of crops."""
    m, d, t, _ = parse_config(_args(cmu_svs, tmp_path, "--drop_path_rate", "0"))
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=k)
    set_seed(0)
    student, teacher = build_student_teacher(m)
    augment = DINOMultiCrop(
        d.global_crop_size, d.local_crop_size, d.local_crops_number, d.global_crops_scale, d.local_crops_scale
    )
    loss = DINOLoss(m.out_dim, augment.ncrops, t.student_temp, t.center_momentum)
    optimizer = build_optimizer(student)
    set_lr_wd(optimizer, 1e-3, 0.04)
    student, optimizer = accelerator.prepare(student, optimizer)
    tiles = torch.randint(0, 256, (k, 2, 3, 64, 64), dtype=torch.uint8)
    micro = [augment(tiles[i]) for i in range(k)]
    return accelerator, student, teacher, loss, optimizer, micro


def test_step_updates_center_and_teacher_once_per_optimizer_step(cmu_svs, tmp_path):
    k = 3
    accelerator, student, teacher, loss, optimizer, micro = _step_parts(cmu_svs, tmp_path, k)
    with torch.no_grad():  # the teacher does not change before the step's single EMA update
        teacher_outputs = [teacher(crops[:2]) for crops in micro]
    teacher_before = {n: p.clone() for n, p in teacher.state_dict().items()}
    student_before = {n: p.clone() for n, p in accelerator.unwrap_model(student).state_dict().items()}
    feed = iter(micro)
    out = train_step(
        accelerator,
        student,
        teacher,
        loss,
        optimizer,
        lambda: next(feed),
        teacher_temp=0.04,
        momentum=0.9,
        freeze_last_layer=False,
        clip_grad=3.0,
        step_index=0,
    )
    assert next(feed, None) is None  # exactly k micro-batches per optimizer step
    # center = 0.9 * 0 + 0.1 * mean of the teacher outputs of all k micro-batches (one update, not k)
    want = 0.1 * torch.cat(teacher_outputs).mean(0, keepdim=True)
    torch.testing.assert_close(loss.center, want, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out.teacher_output, teacher_outputs[-1])
    # one EMA update after one optimizer step: teacher = 0.9 * teacher_before + 0.1 * student_after
    student_after = accelerator.unwrap_model(student).state_dict()
    changed = [n for n in student_after if not torch.equal(student_after[n], student_before[n])]
    assert changed  # the optimizer stepped
    for name, value in teacher.state_dict().items():
        if value.is_floating_point():
            want_p = 0.9 * teacher_before[name] + 0.1 * student_after[name]
            torch.testing.assert_close(value, want_p, rtol=1e-5, atol=1e-6, msg=name)


def test_step_stops_on_non_finite_loss_naming_step_and_checkpoint(cmu_svs, tmp_path):
    accelerator, student, teacher, loss, optimizer, micro = _step_parts(cmu_svs, tmp_path, 1)
    bad = [c.clone() for c in micro[0]]
    bad[2][0] = float("nan")  # one local crop of one tile: the student output and the loss become NaN
    with pytest.raises(NonFiniteLossError, match=r"at step 7 .*checkpoint-6"):
        train_step(
            accelerator,
            student,
            teacher,
            loss,
            optimizer,
            lambda: bad,
            teacher_temp=0.04,
            momentum=0.9,
            freeze_last_layer=False,
            clip_grad=3.0,
            step_index=7,
            last_good=tmp_path / "checkpoint-6",
        )


def test_full_run_accumulates(cmu_svs, tmp_path):
    k = 3
    summary = _run(
        _args(cmu_svs, tmp_path, "--max_steps", "2", "--gradient_accumulation_steps", str(k), "--save_steps", "0")
    )
    assert summary["steps"] == 2 and len(summary["losses"]) == 2
    assert summary["tiles_seen"] == 2 * k * 2


def test_last_layer_frozen_during_first_epoch_then_trained(cmu_svs, tmp_path):
    # steps_per_epoch 2, freeze 1 epoch -> optimizer steps 1, 2 leave the last layer alone, step 3 changes it
    _run(_args(cmu_svs, tmp_path, "--max_steps", "3", "--save_steps", "1", "--warmup_epochs", "0"))
    ckpts = [load_file(tmp_path / "checkpoints" / f"checkpoint-{s}" / "model.safetensors") for s in (1, 2, 3)]
    last = [k for k in ckpts[0] if "last_layer" in k and k.endswith("original1")]
    backbone = [k for k in ckpts[0] if k.startswith("backbone.") and "weight" in k]
    assert last and backbone
    for key in last:
        assert torch.equal(ckpts[0][key], ckpts[1][key]), key
        assert not torch.equal(ckpts[1][key], ckpts[2][key]), key
    assert any(not torch.equal(ckpts[0][k], ckpts[1][k]) for k in backbone)  # the rest trains meanwhile


def test_resume_continues_exactly(cmu_svs, tmp_path):
    full_dir, resumed_dir = tmp_path / "full", tmp_path / "resumed"
    common = [
        "--max_steps",
        "6",
        "--save_steps",
        "3",
        "--gradient_accumulation_steps",
        "2",
        "--warmup_epochs",
        "1",
        "--tiles_per_slide",
        "5",
    ]  # 5 tiles per pass: the resumed stream restarts mid-pass, across passes
    full = _run(_args(cmu_svs, full_dir, *common))
    # resume from the step-3 state (as if the first run had been killed after saving it)
    ckpt = full_dir / "checkpoints" / "checkpoint-3"
    resumed = _run(_args(cmu_svs, resumed_dir, *common, "--resume_from_checkpoint", str(ckpt)))
    assert resumed["resumed_from"] == str(ckpt) and len(resumed["losses"]) == 3
    for a, b in zip(full["losses"][3:], resumed["losses"], strict=True):
        assert abs(a - b) <= 1e-6, (full["losses"], resumed["losses"])
    a = load_file(full_dir / "checkpoints" / "checkpoint-6" / "model.safetensors")
    b = load_file(resumed_dir / "checkpoints" / "checkpoint-6" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    sa = json.loads((full_dir / "checkpoints" / "checkpoint-6" / "data_state_rank0.json").read_text())
    sb = json.loads((resumed_dir / "checkpoints" / "checkpoint-6" / "data_state_rank0.json").read_text())
    assert sa["pass_index"] == sb["pass_index"] and sa["batches_in_pass"] == sb["batches_in_pass"]
    # resuming in the same folder cuts metrics.jsonl back to the checkpoint: every step is logged once
    _run(_args(cmu_svs, full_dir, *common, "--resume_from_checkpoint", str(ckpt)))
    rows = [json.loads(line) for line in (full_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    # "latest" finds the newest checkpoint of the output folder; nothing left to do there
    latest = _run(_args(cmu_svs, full_dir, *common, "--resume_from_checkpoint", "latest"))
    assert latest["resumed_from"].endswith("checkpoint-6") and latest["losses"] == []


def test_outputs_and_metrics(cmu_svs, tmp_path):
    summary = _run(
        _args(cmu_svs, tmp_path, "--max_steps", "2", "--save_steps", "0", "--report_to", "tensorboard")
    )
    assert (tmp_path / "config.yaml").is_file()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for key in (
        "loss",
        "lr",
        "weight_decay",
        "momentum",
        "teacher_temp",
        "grad_norm",
        "teacher_entropy",
        "rankme",
        "images_per_s",
        "data_wait_share",
        "corrupt_slides_midrun",
    ):
        assert key in rows[0], key
    assert rows[0]["loss"] == pytest.approx(summary["losses"][0])
    assert list((tmp_path / "logs").rglob("events.out.tfevents.*"))
    assert (tmp_path / "checkpoints" / "checkpoint-2" / "train_complete.json").is_file()  # saved at the end


def test_no_slides_and_unreadable_slides_fail_before_training(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"empty: no slide files found"):
        _run(_args(empty, tmp_path / "o1", "--max_steps", "1"))
    bad = tmp_path / "broken.svs"
    bad.write_bytes(b"this is not a slide")
    with pytest.raises(ValueError, match=r"none of the 1 slides is readable.*broken.svs"):
        _run(_args(bad, tmp_path / "o2", "--max_steps", "1"))
    assert not (tmp_path / "o2" / "checkpoints").exists()


def test_world_size_mismatch_is_refused(cmu_svs, tmp_path):
    with pytest.raises(RuntimeError, match="world size mismatch"):
        _run(_args(cmu_svs, tmp_path, "--max_steps", "1", "--expected_world_size", "2"))


def test_non_finite_loss_stops_with_step_and_keeps_last_checkpoint(cmu_svs, tmp_path, monkeypatch):
    real_forward = DINOLoss.forward
    calls = {"n": 0}

    def forward(self, student_output, teacher_output, teacher_temp):
        calls["n"] += 1
        loss = real_forward(self, student_output, teacher_output, teacher_temp)
        return loss * float("nan") if calls["n"] == 3 else loss  # the 3rd optimizer step diverges

    monkeypatch.setattr(DINOLoss, "forward", forward)
    with pytest.raises(dino_module.NonFiniteLossError, match=r"at step 2 .*checkpoint-2"):
        _run(_args(cmu_svs, tmp_path, "--max_steps", "5", "--save_steps", "2"))
    assert [p.name for p in dino_module.checkpoint_dirs(tmp_path)] == ["checkpoint-2"]
