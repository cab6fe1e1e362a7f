"""FSDP2 sharding over 2 real CPU processes (gloo) against one unsharded process on the concatenated batch,
for DINO and DINOv2 (iBOT masks, Sinkhorn-Knopp targets, per-submodule clipping; separate or shared iBOT
head).

``fsdp_worker.py`` runs under ``ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2`` and
shards with ``fully_shard`` itself: a TEST-ONLY SHIM, because Accelerate keeps CPU launches on DDP (its
docstring says more). Checks: world size 2 and each rank holding part of the teacher; the losses of 5 steps
within 1e-5 and the gathered student / teacher after 3 steps within 5e-5 of one process; a resume from the
sharded checkpoint (started from other weights) reproduces the losses of steps 4 and 5 exactly; the export
at the end and ``export.py --checkpoint`` on the sharded checkpoint load with ``AutoModel.from_pretrained``
and hold the one-process teacher; the sharded backbone called alone (the RankMe probe) gives the exported
model's output.
Slow (two 2-process launches per objective on two shared cores, about 1 minute each): run with ``-m slow``.
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

ATOL = 1e-5  # losses and outputs
# weights: AdamW divides each gradient element by its running RMS, so an element whose gradient is ~0 moves by
# a visible part of lr (1e-3) on rounding-level differences of the reduction order (reduce-scatter over 2
# ranks vs one process's sum); 5e-5 is 5 % of one lr step (most elements agree within 3e-6)
WEIGHT_ATOL = 5e-5


def _launch(repo_root: Path, objective: str, mode: str, out: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--main_process_port", str(port), "tests/training/fsdp_worker.py", objective, mode, str(out),
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
            _comparable(name, got[name]), _comparable(name, value), rtol=0, atol=WEIGHT_ATOL, msg=name
        )


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["dino", "dinov2", "dinov2_shared_head"])
def test_fsdp2_two_processes_equal_one_process_and_resume(
    objective, repo_root, tmp_path, fresh_accelerate_state
):
    _launch(repo_root, objective, "train", tmp_path)
    train = _ranks(tmp_path, "train")
    assert [r["world_size"] for r in train] == [2, 2]
    losses = train[0]["losses"]
    assert train[1]["losses"] == losses  # the all-rank mean loss
    ref_losses, snapshots = fsdp_worker.run_reference(objective)
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
    # the EMA moved the teacher away from the student
    assert any(not torch.equal(ref_teacher[k], ref_student[k]) for k in ref_teacher if "head" in k)

    # resume from the sharded checkpoint-3 (other initial weights) gives the losses of steps 4 and 5
    _launch(repo_root, objective, "resume", tmp_path)
    for rank in _ranks(tmp_path, "resume"):
        masks_drawn = 0 if objective == "dino" else fsdp_worker.SAVE_AT
        assert rank["world_size"] == 2
        step, crops = fsdp_worker.SAVE_AT, fsdp_worker.SAVE_AT
        assert rank["resumed"] == [step, crops, masks_drawn]
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
    torch.testing.assert_close(gathered["probe"], want, rtol=0, atol=ATOL)
