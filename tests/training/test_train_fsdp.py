"""FSDP2 sharding over 2 real CPU processes (gloo) against one unsharded process on the concatenated batch.

``fsdp_worker.py`` runs under ``ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2`` and
shards with ``fully_shard`` itself: a TEST-ONLY SHIM, because Accelerate keeps CPU launches on DDP (its
docstring says more). Checks: world size 2 and each rank holding part of the teacher; losses and the
gathered student / teacher after 3 steps within 1e-5 of one process; a resume from the sharded checkpoint
(started from other weights) reproduces the next losses; the end-of-run export and ``export.py --checkpoint``
on the sharded checkpoint load with ``AutoModel.from_pretrained`` and hold the teacher.
Slow (three 2-process launches on two shared cores, about 1 minute): run with ``-m slow``.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

from pathfm.training.export import export_checkpoint
from tests.training import fsdp_worker

ATOL = 1e-5


def _launch(repo_root: Path, mode: str, out: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--main_process_port", str(port), "tests/training/fsdp_worker.py", mode, str(out),
    ]  # fmt: skip
    res = subprocess.run(cmd, cwd=repo_root, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]


def _ranks(out: Path, mode: str) -> list[dict]:
    return [json.loads((out / f"{mode}_rank{r}.json").read_text()) for r in range(2)]


def _comparable(name: str, value: torch.Tensor) -> torch.Tensor:
    """The tensor without the key third of ``qkv.bias``: softmax ignores a key bias, so its gradient is
    rounding noise (~1e-12) that AdamW normalises into lr-sized steps of either sign (as in
    test_dinov2_step.py, which leaves it out for the same reason)."""
    if name.endswith("attention.qkv.bias"):
        third = value.shape[0] // 3
        return torch.cat([value[:third], value[2 * third :]])
    return value


def _assert_close_states(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for name, value in want.items():
        torch.testing.assert_close(
            _comparable(name, got[name]), _comparable(name, value), rtol=0, atol=ATOL, msg=name
        )


@pytest.mark.slow
def test_fsdp2_two_processes_equal_one_process_and_resume(repo_root, tmp_path, fresh_accelerate_state):
    _launch(repo_root, "train", tmp_path)
    train = _ranks(tmp_path, "train")
    assert [r["world_size"] for r in train] == [2, 2]
    losses = train[0]["losses"]
    assert train[1]["losses"] == losses  # the all-rank mean loss
    ref_losses, snapshots = fsdp_worker.run_reference()
    ref_student, ref_teacher = snapshots[fsdp_worker.SAVE_AT]
    full_numel = sum(v.numel() for v in ref_teacher.values())
    # every rank keeps only its shards of the teacher (Shard(0) of each parameter)
    assert all(r["local_numel"] < 0.7 * full_numel for r in train)
    assert sum(r["local_numel"] for r in train) == full_numel

    # 2 sharded processes == 1 process on the concatenated batch (losses of all 5 steps; weights after 3)
    torch.testing.assert_close(losses, ref_losses, rtol=0, atol=ATOL)
    gathered = torch.load(tmp_path / f"after_{fsdp_worker.SAVE_AT}.pt")
    _assert_close_states(gathered["student"], ref_student)
    _assert_close_states(gathered["teacher"], ref_teacher)
    assert not torch.equal(ref_teacher["head.mlp.0.weight"], ref_student["head.mlp.0.weight"])

    # resume from the sharded checkpoint-3 (other initial weights) gives the losses of steps 4 and 5
    _launch(repo_root, "resume", tmp_path)
    for rank in _ranks(tmp_path, "resume"):
        assert rank["world_size"] == 2 and rank["resumed_step"] == fsdp_worker.SAVE_AT
        assert rank["resumed_position"] == fsdp_worker.SAVE_AT
        assert rank["losses"] == losses[fsdp_worker.SAVE_AT :]

    # the end-of-run export gathers the teacher: it loads as a transformers model equal to the one-process
    # teacher after 5 steps; export.py --checkpoint reads the sharded teacher of checkpoint-3 alone
    exported = export_checkpoint(tmp_path / "checkpoints" / "checkpoint-3", tmp_path / "model_ckpt3")
    for folder, step in ((tmp_path / "model", fsdp_worker.TOTAL), (exported, fsdp_worker.SAVE_AT)):
        model = AutoModel.from_pretrained(folder, trust_remote_code=True)
        assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
        teacher = snapshots[step][1]
        backbone = {k[len("backbone.") :]: v for k, v in teacher.items() if k.startswith("backbone.")}
        _assert_close_states(model.state_dict(), backbone)
    # the sharded teacher backbone called alone (the loop's RankMe probe) gives the full model's output
    with torch.no_grad():
        want = AutoModel.from_pretrained(tmp_path / "model", trust_remote_code=True)(
            pixel_values=fsdp_worker.probe_batch()
        ).pooler_output
    torch.testing.assert_close(torch.load(tmp_path / "probe.pt"), want, rtol=0, atol=ATOL)
